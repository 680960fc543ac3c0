"""Eight float32 lanes as one numba value, so that a kernel can keep accumulators in registers.

LLVM vectorises numba loops well, but it cannot keep an accumulator array in registers
across a loop that also reads another array: it cannot prove the two never overlap, so
every step loads and stores the accumulator (a store per eight additions). A ``Float32x8``
value is an LLVM ``<8 x float>`` held in a variable, which never touches memory. The
event-driven ``conv`` and ``gemm`` use four of them for 32 output channels.

The operations are plain float32 arithmetic, lane by lane: ``mul_add8`` rounds the product
then the sum (no fused multiply-add), so a kernel gives the same bits as the same loop
written with scalars. Loads and stores are unaligned and unchecked: the caller guarantees
that ``index .. index + 7`` lies inside the array.

``list_nonzero8`` appends the indices of the nonzero lanes of eight float32 values to an
event list without a branch; it uses one AVX2 instruction, and falls back to a lane-by-lane
loop on a CPU without AVX2.

Under ``NUMBA_DISABLE_JIT=1`` the same names are numpy functions on arrays of eight.
"""

from __future__ import annotations

import numba
import numpy as np

LANES = 8

if numba.config.DISABLE_JIT:

    def zeros8():
        return np.zeros(LANES, dtype=np.float32)

    def load8(array, index):
        return array[index:index + LANES].copy()

    def mul_add8(acc, value, array, index):
        """``acc + value * array[index:index + 8]``."""
        return acc + np.float32(value) * array[index:index + LANES]

    def add8(acc, array, index):
        """``acc + array[index:index + 8]``."""
        return acc + array[index:index + LANES]

    def add_vectors8(a, b):
        """``a + b``, lane by lane."""
        return a + b

    def load8_float(array, index):
        """``array[index:index + 8]`` (int32) as float32 lanes."""
        return array[index:index + LANES].astype(np.float32)

    def max8(a, b):
        return np.where(a > b, a, b)

    def sub8(a, b):
        return a - b

    def mul8(a, array, index):
        """``a * array[index:index + 8]``."""
        return a * array[index:index + LANES]

    def store8(array, index, vec):
        array[index:index + LANES] = vec

    def list_nonzero8(x, index, events, count):
        """Appends the indices of the nonzero entries of ``x[index:index + 8]`` to
        ``events`` from ``events[count]`` (writing all eight slots); returns the new count."""
        found = index + np.flatnonzero(x[index:index + LANES])
        events[count:count + LANES] = 0
        events[count:count + found.size] = found
        return count + found.size

else:
    from llvmlite import binding as llvm
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic, models, register_model

    class Float32x8(types.Type):
        """Eight float32 lanes in one LLVM vector register."""

        def __init__(self):
            super().__init__(name="Float32x8")

    float32x8 = Float32x8()
    _VECTOR = ir.VectorType(ir.FloatType(), LANES)

    @register_model(Float32x8)
    class _Float32x8Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, _VECTOR)

    def _is_float32_array(array) -> bool:
        return isinstance(array, types.Array) and array.dtype == types.float32

    def _address(context, builder, array_type, array, index):
        data = context.make_array(array_type)(context, builder, array).data
        return builder.bitcast(builder.gep(data, [index]), _VECTOR.as_pointer())

    def _splat(builder, value):
        lane = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value,
                                      ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        return builder.shuffle_vector(lane, ir.Constant(_VECTOR, ir.Undefined), zeros)

    @intrinsic
    def zeros8(typingctx):
        def codegen(context, builder, signature, args):
            return ir.Constant(_VECTOR, [0.0] * LANES)

        return float32x8(), codegen

    @intrinsic
    def load8(typingctx, array, index):
        if not (_is_float32_array(array) and isinstance(index, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            return builder.load(_address(context, builder, signature.args[0], *args), align=4)

        return float32x8(array, index), codegen

    @intrinsic
    def mul_add8(typingctx, acc, value, array, index):
        """``acc + value * array[index:index + 8]``, product and sum each rounded."""
        if not (acc == float32x8 and isinstance(value, types.Float)
                and _is_float32_array(array) and isinstance(index, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            acc_value, scalar, array_value, index_value = args
            scalar = context.cast(builder, scalar, signature.args[1], types.float32)
            row = builder.load(_address(context, builder, signature.args[2], array_value,
                                        index_value), align=4)
            return builder.fadd(acc_value, builder.fmul(_splat(builder, scalar), row))

        return float32x8(acc, value, array, index), codegen

    @intrinsic
    def add8(typingctx, acc, array, index):
        """``acc + array[index:index + 8]``."""
        if not (acc == float32x8 and _is_float32_array(array)
                and isinstance(index, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            row = builder.load(_address(context, builder, signature.args[1], *args[1:]),
                               align=4)
            return builder.fadd(args[0], row)

        return float32x8(acc, array, index), codegen

    @intrinsic
    def add_vectors8(typingctx, a, b):
        """``a + b``, lane by lane."""
        if not (a == float32x8 and b == float32x8):
            return None

        def codegen(context, builder, signature, args):
            return builder.fadd(args[0], args[1])

        return float32x8(a, b), codegen

    @intrinsic
    def load8_float(typingctx, array, index):
        """``array[index:index + 8]`` (int32) converted to float32 lanes."""
        if not (isinstance(array, types.Array) and array.dtype == types.int32
                and isinstance(index, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            ints = ir.VectorType(ir.IntType(32), LANES)
            address = builder.bitcast(builder.gep(data, [args[1]]), ints.as_pointer())
            return builder.sitofp(builder.load(address, align=4), _VECTOR)

        return float32x8(array, index), codegen

    @intrinsic
    def max8(typingctx, a, b):
        """Lane-wise ``a if a > b else b``."""
        if not (a == float32x8 and b == float32x8):
            return None

        def codegen(context, builder, signature, args):
            return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0],
                                  args[1])

        return float32x8(a, b), codegen

    @intrinsic
    def sub8(typingctx, a, b):
        """Lane-wise ``a - b``."""
        if not (a == float32x8 and b == float32x8):
            return None

        def codegen(context, builder, signature, args):
            return builder.fsub(args[0], args[1])

        return float32x8(a, b), codegen

    @intrinsic
    def mul8(typingctx, a, array, index):
        """``a * array[index:index + 8]``."""
        if not (a == float32x8 and _is_float32_array(array)
                and isinstance(index, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            row = builder.load(_address(context, builder, signature.args[1], *args[1:]),
                               align=4)
            return builder.fmul(args[0], row)

        return float32x8(a, array, index), codegen

    @intrinsic
    def store8(typingctx, array, index, vec):
        if not (_is_float32_array(array) and isinstance(index, types.Integer)
                and vec == float32x8):
            return None

        def codegen(context, builder, signature, args):
            address = _address(context, builder, signature.args[0], args[0], args[1])
            builder.store(args[2], address, align=4)
            return context.get_dummy_value()

        return types.none(array, index, vec), codegen

    HAS_AVX2 = bool(llvm.get_host_cpu_features().get("avx2", False))

    def _compaction_table(module):
        """The constant table of :func:`list_nonzero8`: for each 8-bit mask, the positions
        of its set bits first (then zeros), as an ``<8 x i32>`` per mask."""
        name = "snncompiler_compaction_table"
        table_type = ir.ArrayType(ir.VectorType(ir.IntType(32), LANES), 256)
        if name in module.globals:
            return module.globals[name]
        rows = []
        for mask in range(256):
            lanes = [j for j in range(LANES) if mask >> j & 1]
            rows.append(ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                    lanes + [0] * (LANES - len(lanes))))
        table = ir.GlobalVariable(module, table_type, name)
        table.initializer = ir.Constant(table_type, rows)
        table.global_constant = True
        table.linkage = "internal"
        return table

    @intrinsic
    def _list_nonzero8_avx2(typingctx, x, index, events, count):
        """Appends the indices of the nonzero entries of ``x[index:index + 8]`` (float32) to
        ``events`` (uint32) from ``events[count]``; returns the new count.

        One vector compare gives the lanes' mask; a table gives, for that mask, the order
        that moves the nonzero lanes first; one AVX2 lane permutation (``vpermd``) applies it
        to the eight indices, stored at once (all eight slots are written). No branch.
        """
        if not (_is_float32_array(x) and isinstance(index, types.Integer)
                and isinstance(events, types.Array) and events.dtype == types.uint32
                and isinstance(count, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            x_value, index_value, events_value, count_value = args
            lanes = builder.load(_address(context, builder, signature.args[0], x_value,
                                          index_value), align=4)
            nonzero = builder.fcmp_unordered("!=", lanes, ir.Constant(_VECTOR, [0.0] * LANES))
            mask = builder.zext(builder.bitcast(nonzero, ir.IntType(LANES)), ir.IntType(32))
            table = _compaction_table(builder.module)
            order = builder.load(builder.gep(table, [ir.Constant(ir.IntType(32), 0), mask]),
                                 align=32)
            ints = ir.VectorType(ir.IntType(32), LANES)
            first = builder.trunc(context.cast(builder, index_value, signature.args[1],
                                               types.int64), ir.IntType(32))
            indices = builder.add(_splat_int(builder, first),
                                  ir.Constant(ints, list(range(LANES))))
            permute = builder.module.declare_intrinsic(
                "llvm.x86.avx2.permd", fnty=ir.FunctionType(ints, [ints, ints]))
            packed = builder.call(permute, [indices, order])
            data = context.make_array(signature.args[2])(context, builder, events_value).data
            builder.store(packed, builder.bitcast(builder.gep(data, [count_value]),
                                                  ints.as_pointer()), align=4)
            popcount = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(32)])
            added = builder.call(popcount, [mask])
            total = context.cast(builder, count_value, signature.args[3], types.int64)
            return builder.add(total, builder.zext(added, ir.IntType(64)))

        return types.int64(x, index, events, count), codegen

    def _splat_int(builder, value):
        ints = ir.VectorType(ir.IntType(32), LANES)
        lane = builder.insert_element(ir.Constant(ints, ir.Undefined), value,
                                      ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ints, [0] * LANES)
        return builder.shuffle_vector(lane, ir.Constant(ints, ir.Undefined), zeros)

    @numba.njit(inline="always")
    def list_nonzero8_lanes(x, index, events, count):
        """:func:`list_nonzero8` lane by lane, for a CPU without AVX2."""
        for j in range(LANES):
            events[count] = np.uint32(index + j)
            count += x[index + j] != 0
        return count

    list_nonzero8 = _list_nonzero8_avx2 if HAS_AVX2 else list_nonzero8_lanes
