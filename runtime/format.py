"""Reading and writing ``.snn`` files (format version 1), hardened against hostile input.

A ``.snn`` file is a zip archive (deflated) holding ``header.json`` and one
``arrays/<i>.npy`` per parameter array, ``i`` counting from 0 in node order::

    {"magic": "snncompiler.snn", "format_version": 1, "producer": str,
     "timesteps": [int], "default_timesteps": int,
     "inputs": [{"name", "shape", "dtype"}], "outputs": [...],
     "nodes": [{"name", "op", "inputs", "output", "attrs", "shape",
                "arrays": {key: {"file": "arrays/<i>.npy", "shape": [...], "dtype": str}}}],
     "calibration": {...}, "metadata": {...}}

The reader treats a file as untrusted data. It never unpickles, bounds every size before it
reads or allocates (:class:`ReadLimits`), never reads more of an entry than the entry
declares, and validates the whole program (:func:`validate_program`) before returning it.
Every refusal is a :class:`FormatError` whose one-line message names the field or entry at
fault, e.g. ``header.nodes[3].arrays.weight: shape [16, 3] disagrees with arrays/7.npy
[16, 4]``. The writer runs the same validation first, so it never writes a file the reader
would refuse, and it writes atomically and deterministically.

``FORMAT_VERSION`` is independent of the package version. It changes only when old readers
could misread new files; golden files of every released version (``tests/runtime/golden``)
must keep loading.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import struct
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np

from snncompiler.runtime.errors import FormatError, InputError
from snncompiler.runtime.files import open_atomically
from snncompiler.runtime.graph import Node, Program, TensorSpec
from snncompiler.runtime.opset import NEURON_OPS, OPS, AttrSpec, OpSchema, infer_shape

MAGIC = "snncompiler.snn"
FORMAT_VERSION = 1

HEADER_NAME = "header.json"
# Exactly this, no leading zeros: one spelling per array, nothing that a path could resolve.
_ARRAY_NAME = re.compile(r"arrays/(?:0|[1-9][0-9]{0,8})\.npy")

# npy dtypes the reader accepts at all, little-endian only; the op schema narrows further.
_NPY_DTYPES = {"<f4": "float32", "<i4": "int32", "<i8": "int64"}

# Dimensions, timesteps and attribute values: small enough that shape arithmetic (including
# the float division in pooling) stays exact, and far above any real network.
_MAX_INT = 2**31 - 1
# Free JSON (calibration, metadata): int64 range, so json.loads never hits its digit limit.
_MAX_JSON_INT = 2**63 - 1

_HEADER_FIELDS = ("magic", "format_version", "producer", "timesteps", "default_timesteps",
                  "inputs", "outputs", "nodes", "calibration", "metadata")
_SPEC_FIELDS = ("name", "shape", "dtype")
_NODE_FIELDS = ("name", "op", "inputs", "output", "attrs", "shape", "arrays")
_REF_FIELDS = ("file", "shape", "dtype")

_READ_CHUNK = 1 << 20  # bytes per read of a zip entry
_CHECK_CHUNK = 1 << 20  # elements per finiteness check, to bound the temporary mask
# A central-directory record is 46 bytes plus name, extra field and comment; ours stay under
# 100, and 256 leaves room for the extra fields other zip tools add.
_MAX_DIRECTORY_RECORD = 256
# The writer stores (does not deflate) any entry that deflate shrinks more than this, so its
# files stay far below the reader's compression-ratio limit.
_WRITE_MAX_RATIO = 100
_MEASURE_BELOW = 1 << 20  # arrays up to this size are test-deflated before writing
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: same program, same bytes

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")

# What zipfile, zlib and numpy's npy parser (which tokenizes and literal_evals the header)
# raise on a corrupt archive; _zip_errors turns these into FormatError. It wraps only the zip
# and npy calls, so our own bugs still surface as themselves.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
               ValueError, struct.error, RuntimeError, OverflowError, IndexError, KeyError,
               SyntaxError, tokenize.TokenError)

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True)
class ReadLimits:
    """Bounds the reader checks before it reads or allocates anything.

    Attributes:
        max_header_bytes: Largest ``header.json``, uncompressed.
        max_json_depth: Deepest nesting of JSON arrays and objects in the header.
        max_entries: Most entries the archive may hold.
        max_array_bytes: Largest ``.npy`` entry, uncompressed.
        max_total_bytes: Largest sum of all entries, uncompressed.
        max_compression_ratio: Largest uncompressed/compressed size of a deflated entry.
            Deflate tops out near 1032, so this trips only on near-constant data, the stuff
            of zip bombs; the writer stores such entries rather than deflating them.
    """

    max_header_bytes: int = 16 << 20
    max_json_depth: int = 64
    max_entries: int = 100_000
    max_array_bytes: int = 2 << 30
    max_total_bytes: int = 4 << 30
    max_compression_ratio: float = 1000.0

    def __post_init__(self):
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"ReadLimits.{spec.name} must be a positive number, "
                                 f"got {value!r}")


# What the writer guarantees its files fit: any reader with default limits accepts them.
_WRITE_LIMITS = ReadLimits()


# ---------------------------------------------------------------------------------------------
# Validation, shared by the writer, the reader and the engine.
# ---------------------------------------------------------------------------------------------


def validate_program(program: Program) -> None:
    """Checks that ``program`` is complete and consistent, as the ``.snn`` reader requires.

    Checks types and ranges of every field, every node against its op schema
    (:data:`~snncompiler.runtime.opset.OPS`: attributes, arrays, ranks, dtypes), array
    values (finite; neuron thresholds positive, one row per timestep), the wiring (each
    node reads graph inputs or earlier outputs, names and tensors unique, outputs produced)
    and every node's shape against :func:`~snncompiler.runtime.opset.infer_shape`.

    Args:
        program: The program to check.

    Raises:
        FormatError: The first problem found, naming the field, e.g.
            ``program.nodes[3].attrs.strides: expected 2 ints, got 1 (node 'c1', conv)``.
    """
    _validate(program, "program.")


def _validate(program: Program, prefix: str) -> None:
    # ``prefix`` is "header." when reading, so messages name the field in the file.
    if not isinstance(program, Program):
        raise FormatError(f"expected a Program, got {type(program).__name__}")
    if not isinstance(program.producer, str):
        raise FormatError(f"{prefix}producer: expected a string, got {_show(program.producer)}")
    timesteps = program.timesteps
    if not isinstance(timesteps, (list, tuple)) or not timesteps:
        raise FormatError(f"{prefix}timesteps: expected a non-empty list of positive ints, "
                          f"got {_show(timesteps)}")
    for i, steps in enumerate(timesteps):
        _check_int(steps, f"{prefix}timesteps[{i}]", minimum=1)
    if len(set(timesteps)) != len(timesteps):
        raise FormatError(f"{prefix}timesteps: {list(timesteps)} repeats a value; "
                          "each calibrated T appears once")
    _check_int(program.default_timesteps, f"{prefix}default_timesteps", minimum=1)
    for key in ("calibration", "metadata"):
        value = getattr(program, key)
        if not isinstance(value, dict):
            raise FormatError(f"{prefix}{key}: expected a dict, got {_show(value)}")
        _check_jsonable(value, f"{prefix}{key}", depth=2)

    shapes: dict[str, tuple[int, ...]] = {}  # tensor name -> per-sample shape, so far
    inputs = _check_specs(program.inputs, f"{prefix}inputs")
    for i, (name, shape) in enumerate(inputs):
        if name in shapes:
            raise FormatError(f"{prefix}inputs[{i}].name: duplicate input {name!r}")
        shapes[name] = shape
    nodes = program.nodes
    if not isinstance(nodes, (list, tuple)):
        raise FormatError(f"{prefix}nodes: expected a list of Node, got {_show(nodes)}")
    names: set[str] = set()
    for i, node in enumerate(nodes):
        _validate_node(node, f"{prefix}nodes[{i}]", shapes, names, len(timesteps))
    seen: set[str] = set()
    for i, (name, shape) in enumerate(_check_specs(program.outputs, f"{prefix}outputs")):
        where = f"{prefix}outputs[{i}]"
        if name in seen:
            raise FormatError(f"{where}.name: duplicate output {name!r}")
        seen.add(name)
        if name not in shapes:
            raise FormatError(f"{where}.name: {name!r} is not produced by any node "
                              "nor a graph input")
        if shape != shapes[name]:
            raise FormatError(f"{where}.shape: {list(shape)} disagrees with tensor {name!r} "
                              f"{list(shapes[name])}")


def _check_specs(specs, where: str) -> list[tuple[str, tuple[int, ...]]]:
    if not isinstance(specs, (list, tuple)) or not specs:
        raise FormatError(f"{where}: expected a non-empty list of TensorSpec, got {_show(specs)}")
    checked = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, TensorSpec):
            raise FormatError(f"{at}: expected a TensorSpec, got {_show(spec)}")
        _check_name(spec.name, f"{at}.name")
        if spec.dtype != "float32":
            raise FormatError(f"{at}.dtype: {_show(spec.dtype)} not supported; "
                              "graph inputs and outputs are float32")
        checked.append((spec.name, _check_shape(spec.shape, f"{at}.shape")))
    return checked


def _validate_node(node: Node, where: str, shapes: dict, names: set, n_timesteps: int) -> None:
    if not isinstance(node, Node):
        raise FormatError(f"{where}: expected a Node, got {_show(node)}")
    _check_name(node.name, f"{where}.name")
    if node.name in names:
        raise FormatError(f"{where}.name: duplicate node name {node.name!r}")
    names.add(node.name)
    if not isinstance(node.op, str) or node.op not in OPS:
        raise FormatError(f"{where}.op: unknown op {_show(node.op)}; "
                          f"known ops: {', '.join(sorted(OPS))}")
    schema = OPS[node.op]
    try:
        inputs = node.inputs
        count_fits = isinstance(inputs, (list, tuple)) and (
            len(inputs) >= schema.n_inputs if schema.variadic else len(inputs) == schema.n_inputs)
        if not count_fits:
            least = "at least " if schema.variadic else ""
            raise FormatError(f"{where}.inputs: expected {least}{schema.n_inputs} tensor "
                              f"name(s), got {_show(inputs)}")
        for j, name in enumerate(inputs):
            if not isinstance(name, str) or name not in shapes:
                raise FormatError(f"{where}.inputs[{j}]: {_show(name)} is neither a graph "
                                  "input nor the output of an earlier node")
        _check_name(node.output, f"{where}.output")
        if node.output in shapes:
            raise FormatError(f"{where}.output: tensor {node.output!r} is already produced "
                              "(duplicate output tensor)")
        _check_attrs(node.attrs, schema, f"{where}.attrs")
        _check_arrays(node.arrays, schema, f"{where}.arrays")
        if node.op in NEURON_OPS:
            _check_neuron(node.arrays, f"{where}.arrays", n_timesteps)
        shape = _check_shape(node.shape, f"{where}.shape")
        in_shapes = [shapes[name] for name in inputs]
        inferred = tuple(infer_shape(node, in_shapes))
        if shape != inferred:
            raise FormatError(f"{where}.shape: {list(shape)} disagrees with {list(inferred)} "
                              f"inferred from inputs {[list(s) for s in in_shapes]}")
    except FormatError as err:
        # Field paths locate the problem in the file, the node name in the model.
        raise FormatError(f"{where}: {err}" if str(err).startswith("node ") else
                          f"{err} (node {node.name!r}, {node.op})") from None
    shapes[node.output] = shape


def _check_attrs(attrs, schema: OpSchema, where: str) -> None:
    if not isinstance(attrs, dict):
        raise FormatError(f"{where}: expected a dict, got {_show(attrs)}")
    known = ", ".join(sorted(schema.attrs)) or "none"
    for key in attrs:
        if key not in schema.attrs:
            raise FormatError(f"{where}: unknown attribute {_show(key)}; known: {known}")
    for key, spec in schema.attrs.items():
        if key not in attrs:
            raise FormatError(f"{where}: missing attribute {key!r}")
        _check_attr(attrs[key], spec, f"{where}.{key}")


def _check_attr(value, spec: AttrSpec, where: str) -> None:
    if spec.kind == "ints":
        if not isinstance(value, (list, tuple)):
            raise FormatError(f"{where}: expected a list of ints, got {_show(value)}")
        if spec.length is not None and len(value) != spec.length:
            raise FormatError(f"{where}: expected {spec.length} ints, got {len(value)}")
        items, kind = [(f"{where}[{j}]", v) for j, v in enumerate(value)], "int"
    else:
        items, kind = [(where, value)], spec.kind
    for at, item in items:
        if kind == "int":
            _check_int(item, at, minimum=-_MAX_INT)
        elif kind == "float":
            if (isinstance(item, bool) or not isinstance(item, (int, float))
                    or not math.isfinite(item)):
                raise FormatError(f"{at}: expected a finite number, got {_show(item)}")
        elif kind == "str":
            if not isinstance(item, str):
                raise FormatError(f"{at}: expected a string, got {_show(item)}")
        else:
            raise FormatError(f"{at}: attribute kind {kind!r} is unknown to this reader")
        if spec.choices and item not in spec.choices:
            raise FormatError(f"{at}: {item!r} is not one of {', '.join(map(repr, spec.choices))}")
        if spec.minimum is not None and item < spec.minimum:
            raise FormatError(f"{at}: {item} is below the minimum {spec.minimum}")


def _check_arrays(arrays, schema: OpSchema, where: str) -> None:
    if not isinstance(arrays, dict):
        raise FormatError(f"{where}: expected a dict of numpy arrays, got {_show(arrays)}")
    known = ", ".join(sorted(schema.arrays)) or "none"
    for key in arrays:
        if key not in schema.arrays:
            raise FormatError(f"{where}: unknown array {_show(key)}; known: {known}")
    for key, spec in schema.arrays.items():
        at = f"{where}.{key}"
        if key not in arrays:
            raise FormatError(f"{where}: missing array {key!r}")
        array = arrays[key]
        if not isinstance(array, np.ndarray):
            raise FormatError(f"{at}: expected a numpy array, got {type(array).__name__}")
        if array.dtype != np.dtype(spec.dtype):
            raise FormatError(f"{at}: dtype {array.dtype.str} not allowed; expected {spec.dtype}")
        if spec.ndim is not None and array.ndim != spec.ndim:
            raise FormatError(f"{at}: expected {spec.ndim} dimensions, got shape "
                              f"{list(array.shape)}")
        if array.size == 0:
            raise FormatError(f"{at}: empty array, shape {list(array.shape)}")
        if array.dtype.kind == "f" and not _all_finite(array):
            raise FormatError(f"{at}: holds non-finite values (NaN or infinity)")


def _check_neuron(arrays: dict, where: str, n_timesteps: int) -> None:
    for key in ("theta", "v0"):
        rows = arrays[key].shape[0]
        if rows != n_timesteps:
            raise FormatError(f"{where}.{key}: {rows} rows, but the program has {n_timesteps} "
                              "timesteps; one row per calibrated T")
    theta = arrays["theta"]
    bad = np.argwhere(~(theta > 0))
    if bad.size:
        at = tuple(int(i) for i in bad[0])
        raise FormatError(f"{where}.theta: threshold {float(theta[at])} at {list(at)} is not "
                          "positive")


def _check_int(value, where: str, *, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where}: expected an int, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise FormatError(f"{where}: {value} is below the minimum {minimum}")
    if value > _MAX_INT:
        raise FormatError(f"{where}: {value} is above the maximum {_MAX_INT}")


def _check_shape(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise FormatError(f"{where}: expected a list of positive ints, got {_show(value)}")
    for j, dim in enumerate(value):
        _check_int(dim, f"{where}[{j}]", minimum=1)
    return tuple(value)


def _check_name(value, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise FormatError(f"{where}: expected a non-empty string, got {_show(value)}")


def _check_jsonable(value, where: str, depth: int) -> None:
    # Refuses what JSON would not give back unchanged, and cycles (through the depth bound,
    # counted like the reader counts brackets: ``depth`` is that of ``value`` if a container).
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_JSON_INT:
            raise FormatError(f"{where}: int {value} is outside the int64 range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FormatError(f"{where}: {value} is not allowed; values must be finite")
        return
    if not isinstance(value, (list, tuple, dict)):
        raise FormatError(f"{where}: {type(value).__name__} is not JSON-able; use None, bool, "
                          "int, float, str, lists and dicts")
    if depth > ReadLimits.max_json_depth:
        raise FormatError(f"{where}: nested deeper than {ReadLimits.max_json_depth}")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError(f"{where}: key {_show(key)} is not a string")
            _check_jsonable(item, f"{where}.{key}", depth + 1)
    else:
        for j, item in enumerate(value):
            _check_jsonable(item, f"{where}[{j}]", depth + 1)


def _all_finite(array: np.ndarray) -> bool:
    flat = array.reshape(-1)
    return all(np.isfinite(flat[i:i + _CHECK_CHUNK]).all()
               for i in range(0, flat.size, _CHECK_CHUNK))


def _show(value) -> str:
    """A short, one-line repr for messages."""
    return _one_line(repr(value), 80)


def _one_line(text: str, limit: int = 200) -> str:
    # Messages stay on one line and short, whatever a hostile file puts in them.
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


def save_program(program: Program, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Writes ``program`` to a ``.snn`` file, atomically and deterministically.

    The program is validated first (:func:`validate_program`) and checked against the
    default :class:`ReadLimits`, so the file written always loads. The archive is written to
    a temporary file in the destination folder, then moved into place with ``os.replace``;
    on any error the temporary file is removed and an existing destination is untouched.
    The same program always gives the same bytes (fixed timestamps, sorted JSON keys,
    arrays numbered in node order then array name order).

    Args:
        program: The program to write.
        path: Destination file, by convention ending in ``.snn``.
        overwrite: Replace an existing file instead of refusing.

    Raises:
        FormatError: The program is invalid; the message names the field.
        InputError: ``path`` exists and ``overwrite`` is false.
    """
    validate_program(program)
    target = os.fsdecode(path)
    if os.path.lexists(target) and not overwrite:
        raise InputError(f"{target} exists; pass overwrite=True (--force on the command line)")
    header, arrays = _header(program)
    text = _dump_header(header)
    header_bytes = text.encode("ascii")  # json.dumps escapes everything else
    sizes = _check_fits_reader(text, header_bytes, arrays)

    with open_atomically(target, "wb") as fp:
        # Small arrays are measured up front (zero biases are common); a large one found
        # near-constant while writing costs a second pass over the archive.
        stored = _squeezed_small_arrays(arrays)
        squeezed = _write_archive(fp, header_bytes, arrays, sizes, stored)
        if squeezed:
            fp.seek(0)
            fp.truncate()
            _write_archive(fp, header_bytes, arrays, sizes, stored | squeezed)


def _header(program: Program) -> tuple[dict, list[np.ndarray]]:
    """The header dict and the arrays in file order (``arrays/<i>.npy`` is ``arrays[i]``)."""
    arrays: list[np.ndarray] = []
    nodes = []
    for node in program.nodes:
        refs = {}
        for key in sorted(node.arrays):
            # Little-endian and C order on disk, whatever the machine or the array's layout.
            array = np.asarray(node.arrays[key], dtype=node.arrays[key].dtype.newbyteorder("<"),
                               order="C")
            refs[key] = {"file": f"arrays/{len(arrays)}.npy", "shape": list(array.shape),
                         "dtype": array.dtype.name}
            arrays.append(array)
        nodes.append({"name": node.name, "op": node.op, "inputs": list(node.inputs),
                      "output": node.output, "attrs": node.attrs, "shape": list(node.shape),
                      "arrays": refs})
    header = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "producer": program.producer,
        "timesteps": list(program.timesteps),
        "default_timesteps": program.default_timesteps,
        "inputs": [_spec_json(spec) for spec in program.inputs],
        "outputs": [_spec_json(spec) for spec in program.outputs],
        "nodes": nodes,
        "calibration": program.calibration,
        "metadata": program.metadata,
    }
    return header, arrays


def _dump_header(header: dict) -> str:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def _spec_json(spec: TensorSpec) -> dict:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}


class _ByteCounter:
    """A write-only sink that counts the bytes written to it."""

    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        self.size += size
        return size


def _npy_size(array: np.ndarray) -> int:
    sink = _ByteCounter()
    np.lib.format.write_array(sink, array, allow_pickle=False)
    return sink.size


def _squeezed_small_arrays(arrays: list) -> frozenset:
    """Entry names of the small arrays that deflate would shrink over ``_WRITE_MAX_RATIO``."""
    squeezed = set()
    for i, array in enumerate(arrays):
        if array.nbytes <= _MEASURE_BELOW:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            data = buffer.getvalue()
            # Raw deflate at zipfile's default level: exactly the size zipfile will write.
            deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
            if len(data) > _WRITE_MAX_RATIO * len(deflate.compress(data) + deflate.flush()):
                squeezed.add(f"arrays/{i}.npy")
    return frozenset(squeezed)


def _check_fits_reader(text: str, header_bytes: bytes, arrays: list) -> list[int]:
    """Refuses what a reader with default limits would refuse; returns the npy sizes."""
    limits = _WRITE_LIMITS
    if len(header_bytes) > limits.max_header_bytes:
        raise FormatError(f"program.header: {len(header_bytes)} bytes of JSON; readers refuse "
                          f"more than {limits.max_header_bytes} (ReadLimits.max_header_bytes)")
    depth = _json_depth(text)
    if depth > limits.max_json_depth:
        raise FormatError(f"program.header: JSON nested {depth} deep; readers refuse more than "
                          f"{limits.max_json_depth} (ReadLimits.max_json_depth)")
    if len(arrays) + 1 > limits.max_entries:
        raise FormatError(f"program.nodes: {len(arrays)} arrays; readers refuse more than "
                          f"{limits.max_entries - 1} (ReadLimits.max_entries)")
    sizes = [_npy_size(array) for array in arrays]
    for i, size in enumerate(sizes):
        if size > limits.max_array_bytes:
            raise FormatError(f"arrays/{i}.npy: {size} bytes; readers refuse more than "
                              f"{limits.max_array_bytes} (ReadLimits.max_array_bytes)")
    total = len(header_bytes) + sum(sizes)
    if total > limits.max_total_bytes:
        raise FormatError(f"program: {total} bytes in all; readers refuse more than "
                          f"{limits.max_total_bytes} (ReadLimits.max_total_bytes)")
    return sizes


def _zip_info(name: str, size: int, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = compression
    info.file_size = size  # known up front, so zipfile picks zip64 where an entry needs it
    info.create_system = 3  # zipfile's default depends on the OS; fix it for identical bytes
    info.external_attr = 0o644 << 16
    return info


def _write_archive(fp, header_bytes: bytes, arrays: list, sizes: list,
                   stored: frozenset = frozenset()) -> frozenset:
    """Writes the archive, deflating all but ``stored``.

    Returns:
        The entries deflate shrank more than ``_WRITE_MAX_RATIO`` times: near-constant data,
        which readers cannot tell from a zip bomb, so the caller rewrites them stored.
    """
    contents = [(HEADER_NAME, header_bytes, len(header_bytes))]
    contents += [(f"arrays/{i}.npy", array, size)
                 for i, (array, size) in enumerate(zip(arrays, sizes))]
    with zipfile.ZipFile(fp, "w", allowZip64=True) as archive:
        for name, content, size in contents:
            info = _zip_info(name, size, zipfile.ZIP_STORED if name in stored
                             else zipfile.ZIP_DEFLATED)
            if isinstance(content, bytes):
                archive.writestr(info, content)
            else:
                with archive.open(info, "w") as entry:
                    np.lib.format.write_array(entry, content, allow_pickle=False)
        return frozenset(info.filename for info in archive.infolist()
                         if info.file_size > _WRITE_MAX_RATIO * info.compress_size)


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


def load_program(path: str | os.PathLike, *, limits: ReadLimits | None = None) -> Program:
    """Reads and validates a ``.snn`` file.

    The file is treated as untrusted: sizes are checked against ``limits`` before anything
    is read or allocated, no entry is read past its declared size, arrays are parsed as
    plain ``.npy`` data (never unpickled), and the program is validated as by
    :func:`validate_program` before it is returned.

    Args:
        path: The ``.snn`` file.
        limits: Size bounds; the defaults suit models up to a few GiB.

    Returns:
        The program, its arrays in native little-endian C order.

    Raises:
        FormatError: The file is not a valid ``.snn`` v1 file, or exceeds ``limits``; the
            one-line message starts with the path and names the field or entry at fault.
        OSError: The file cannot be opened (missing, a directory, no permission).
    """
    limits = ReadLimits() if limits is None else limits
    name = os.fsdecode(path)
    with open(name, "rb") as fp:
        try:
            return _read(fp, limits)
        except FormatError as err:
            raise FormatError(f"{name}: {err}") from err


def _read(fp, limits: ReadLimits) -> Program:
    _check_directory_size(fp, limits)
    with _zip_errors("archive"):
        archive = zipfile.ZipFile(fp)
    with archive:
        entries = _check_entries(archive.infolist(), limits)
        if HEADER_NAME not in entries:
            raise FormatError(f"archive has no {HEADER_NAME}; is this a .snn file?")
        info = entries[HEADER_NAME]
        with _zip_errors(f"entry {HEADER_NAME!r}"), archive.open(info) as stream:
            data = _read_exactly(stream, info.file_size, HEADER_NAME)
        header = _parse_json(data, limits)
        program = _program(header, archive, entries)
    _validate(program, "header.")
    return program


@contextlib.contextmanager
def _zip_errors(what: str) -> Iterator[None]:
    try:
        yield
    except _ZIP_ERRORS as err:
        raise FormatError(f"{what}: corrupt or unreadable ({type(err).__name__}: "
                          f"{_one_line(err)})") from err


def _check_directory_size(fp, limits: ReadLimits) -> None:
    """Refuses too many entries before zipfile builds one object per directory record.

    The end-of-central-directory record (zip64's where present) states the entry count and
    the directory's size up front; zipfile would otherwise parse the whole directory first.
    """
    size = fp.seek(0, os.SEEK_END)
    window = min(size, _EOCD64_LOCATOR.size + _EOCD.size + 0xFFFF)  # 0xFFFF: longest comment
    fp.seek(size - window)
    tail = fp.read(window)
    at = len(tail) - _EOCD.size
    if at < 0 or tail[at:at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        # The record is not at the very end, so the archive has a comment: search for it.
        at = tail.rfind(b"PK\x05\x06", 0, len(tail) - _EOCD.size + 4)
    if at < 0:
        raise FormatError("not a zip archive, or truncated (no end-of-central-directory "
                          "record); is this a .snn file?")
    record = _EOCD.unpack_from(tail, at)
    count, directory = record[4], record[5]
    locator = at - _EOCD64_LOCATOR.size
    if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
        offset = _EOCD64_LOCATOR.unpack_from(tail, locator)[2]
        if offset + _EOCD64.size <= size:
            fp.seek(offset)
            record64 = fp.read(_EOCD64.size)
            if record64[:4] == b"PK\x06\x06":
                count, directory = _EOCD64.unpack(record64)[7:9]
    if count > limits.max_entries:
        raise FormatError(f"archive declares {count} entries; the limit is "
                          f"{limits.max_entries} (ReadLimits.max_entries)")
    if directory > limits.max_entries * _MAX_DIRECTORY_RECORD:
        raise FormatError(f"archive declares a {directory}-byte central directory, more than "
                          f"{limits.max_entries} entries need (ReadLimits.max_entries)")


def _check_entries(infos: list[zipfile.ZipInfo], limits: ReadLimits) -> dict:
    """Checks names, flags and declared sizes of every entry; returns them by name."""
    if len(infos) > limits.max_entries:
        raise FormatError(f"archive holds {len(infos)} entries; the limit is "
                          f"{limits.max_entries} (ReadLimits.max_entries)")
    entries: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.orig_filename  # before zipfile's clean-up, so nothing is hidden
        where = f"entry {name!r}"
        if name != HEADER_NAME and not _ARRAY_NAME.fullmatch(name):
            raise FormatError(f"{where}: not a .snn entry name; expected {HEADER_NAME!r} or "
                              "'arrays/<i>.npy'")
        if name in entries:
            raise FormatError(f"{where}: duplicate entry name")
        if info.flag_bits & 0x1:
            raise FormatError(f"{where}: encrypted entries are not supported")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(f"{where}: compression method {info.compress_type} not "
                              "supported; expected stored (0) or deflated (8)")
        if name == HEADER_NAME:
            limit, knob = limits.max_header_bytes, "max_header_bytes"
        else:
            limit, knob = limits.max_array_bytes, "max_array_bytes"
        if info.file_size > limit:
            raise FormatError(f"{where}: declares {info.file_size} bytes uncompressed; the "
                              f"limit is {limit} (ReadLimits.{knob})")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise FormatError(f"{where}: stored entry declares {info.compress_size} bytes "
                              f"stored but {info.file_size} uncompressed")
        if info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            raise FormatError(f"{where}: compression ratio {info.file_size}/"
                              f"{info.compress_size} exceeds {limits.max_compression_ratio} "
                              "(ReadLimits.max_compression_ratio)")
        total += info.file_size
        entries[name] = info
    if total > limits.max_total_bytes:
        raise FormatError(f"archive declares {total} bytes uncompressed; the limit is "
                          f"{limits.max_total_bytes} (ReadLimits.max_total_bytes)")
    # Entries sharing bytes are how some zip bombs multiply their output.
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for first, second in zip(ordered, ordered[1:]):
        # 30 bytes of local header plus the name: a lower bound of where the data ends.
        end = first.header_offset + 30 + len(first.orig_filename) + first.compress_size
        if end > second.header_offset:
            raise FormatError(f"entries {first.orig_filename!r} and "
                              f"{second.orig_filename!r} overlap")
    return entries


def _read_exactly(stream, size: int, what: str) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(min(left, _READ_CHUNK))
        if not chunk:
            raise FormatError(f"entry {what!r}: ends after {size - left} of its {size} "
                              "declared bytes")
        chunks.append(chunk)
        left -= len(chunk)
    if stream.read(1):
        raise FormatError(f"entry {what!r}: holds more than its {size} declared bytes")
    return b"".join(chunks)


def _parse_json(data: bytes, limits: ReadLimits) -> dict:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FormatError(f"{HEADER_NAME}: not valid UTF-8 ({err.reason} at byte "
                          f"{err.start})") from None
    depth = _json_depth(text)  # before json.loads, which recurses once per level
    if depth > limits.max_json_depth:
        raise FormatError(f"{HEADER_NAME}: JSON nested {depth} deep; the limit is "
                          f"{limits.max_json_depth} (ReadLimits.max_json_depth)")
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys, parse_float=_finite_float,
                            parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise FormatError(f"{HEADER_NAME}: not valid JSON ({_one_line(err)})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{HEADER_NAME}: expected a JSON object, got {type(header).__name__}")
    return header


def _json_depth(text: str) -> int:
    """Deepest nesting of ``[`` and ``{`` outside JSON strings, without parsing."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _unique_keys(pairs: list) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise FormatError(f"{HEADER_NAME}: duplicate key {_show(key)} in one object")
        obj[key] = value
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FormatError(f"{HEADER_NAME}: number {_one_line(text, 40)} overflows a float")
    return value


def _no_constant(name: str):
    raise FormatError(f"{HEADER_NAME}: {name} is not allowed; values must be finite")


def _program(header: dict, archive: zipfile.ZipFile, entries: dict) -> Program:
    """Builds the Program from a parsed header, reading each referenced array once."""
    _check_version(header)
    _check_fields(header, _HEADER_FIELDS, "header")
    inputs = [_spec(raw, f"header.inputs[{i}]")
              for i, raw in enumerate(_list(header["inputs"], "header.inputs"))]
    outputs = [_spec(raw, f"header.outputs[{i}]")
               for i, raw in enumerate(_list(header["outputs"], "header.outputs"))]
    # First every reference, cheaply; then the data, once the set of files is known good.
    used: dict[str, str] = {}  # file -> the field referencing it
    raw_nodes = _list(header["nodes"], "header.nodes")
    for i, raw in enumerate(raw_nodes):
        where = f"header.nodes[{i}]"
        _check_fields(raw, _NODE_FIELDS, where)
        if not isinstance(raw["arrays"], dict):
            raise FormatError(f"{where}.arrays: expected an object, got {_show(raw['arrays'])}")
        for key, ref in raw["arrays"].items():
            _check_ref(ref, f"{where}.arrays.{key}", entries, used)
    unused = sorted(name for name in entries if name != HEADER_NAME and name not in used)
    if unused:
        raise FormatError(f"entry {unused[0]!r}: not referenced by any node's arrays")
    nodes = []
    for i, raw in enumerate(raw_nodes):
        arrays = {key: _read_npy(archive, entries[ref["file"]], ref,
                                 f"header.nodes[{i}].arrays.{key}")
                  for key, ref in raw["arrays"].items()}
        nodes.append(Node(name=raw["name"], op=raw["op"], inputs=_tuple(raw["inputs"]),
                          output=raw["output"], attrs=raw["attrs"], arrays=arrays,
                          shape=_tuple(raw["shape"])))
    return Program(inputs=inputs, outputs=outputs, nodes=nodes, timesteps=header["timesteps"],
                   default_timesteps=header["default_timesteps"], producer=header["producer"],
                   calibration=header["calibration"], metadata=header["metadata"])


def _check_version(header: dict) -> None:
    # Checked before anything else, so a newer file says "upgrade" rather than listing the
    # fields this version does not know.
    magic = header.get("magic")
    if magic != MAGIC:
        raise FormatError(f"header.magic: expected {MAGIC!r}, got {_show(magic)}; "
                          "not a .snn file")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"header.format_version: expected an int, got {_show(version)}")
    if version > FORMAT_VERSION:
        raise FormatError(f"header.format_version: {version} was written by a newer "
                          f"snncompiler; upgrade (this one reads up to {FORMAT_VERSION})")
    if version < 1:
        raise FormatError(f"header.format_version: {version} is not a known version "
                          f"(1 to {FORMAT_VERSION})")


def _check_fields(obj, names: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: expected an object, got {_show(obj)}")
    for name in names:
        if name not in obj:
            raise FormatError(f"{where}: missing field {name!r}")
    for name in obj:
        if name not in names:
            raise FormatError(f"{where}: unknown field {_show(name)}; expected "
                              f"{', '.join(names)}")


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise FormatError(f"{where}: expected a list, got {_show(value)}")
    return value


def _tuple(value):
    # Lists become the tuples Program uses; anything else is left for _validate to name.
    return tuple(value) if isinstance(value, list) else value


def _spec(raw, where: str) -> TensorSpec:
    _check_fields(raw, _SPEC_FIELDS, where)
    return TensorSpec(raw["name"], _tuple(raw["shape"]), raw["dtype"])


def _check_ref(ref, where: str, entries: dict, used: dict) -> None:
    _check_fields(ref, _REF_FIELDS, where)
    file = ref["file"]
    if not isinstance(file, str) or not _ARRAY_NAME.fullmatch(file):
        raise FormatError(f"{where}.file: expected 'arrays/<i>.npy', got {_show(file)}")
    if file in used:
        raise FormatError(f"{where}.file: {file} is already used by {used[file]}")
    if file not in entries:
        raise FormatError(f"{where}.file: {file} is missing from the archive")
    used[file] = where
    shape = ref["shape"]
    if not isinstance(shape, list):
        raise FormatError(f"{where}.shape: expected a list of ints, got {_show(shape)}")
    for j, dim in enumerate(shape):
        _check_int(dim, f"{where}.shape[{j}]", minimum=0)
    if ref["dtype"] not in _NPY_DTYPES.values():
        raise FormatError(f"{where}.dtype: {_show(ref['dtype'])} not supported; expected one "
                          f"of {', '.join(sorted(_NPY_DTYPES.values()))}")


@contextlib.contextmanager
def _npy_header_warnings_ignored() -> Iterator[None]:
    """numpy parses an npy header with ``literal_eval``: a damaged one can make Python warn
    about its escapes before numpy refuses it, noise on top of our FormatError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        yield


def _read_npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, ref: dict,
              where: str) -> np.ndarray:
    """Reads one ``.npy`` entry, refusing anything but plain numeric data before reading it."""
    entry = info.orig_filename
    with (_zip_errors(f"entry {entry!r}"), archive.open(info) as stream,
          _npy_header_warnings_ignored()):
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise FormatError(f"entry {entry!r}: npy format version {version} not supported; "
                              "expected 1.0 or 2.0")
        if dtype.hasobject:
            raise FormatError(f"entry {entry!r}: holds Python objects (dtype {dtype}); "
                              "refusing to unpickle")
        if dtype.names is not None or dtype.subdtype is not None:
            raise FormatError(f"entry {entry!r}: structured dtype {dtype} not supported")
        name = _NPY_DTYPES.get(dtype.str)
        if name is None:
            raise FormatError(f"entry {entry!r}: dtype {dtype.str} not supported; expected "
                              "little-endian float32, int32 or int64")
        if fortran_order:
            raise FormatError(f"entry {entry!r}: Fortran order not supported; expected C order")
        if list(shape) != ref["shape"]:
            raise FormatError(f"{where}: shape {ref['shape']} disagrees with {entry} "
                              f"{list(shape)}")
        if name != ref["dtype"]:
            raise FormatError(f"{where}: dtype {ref['dtype']} disagrees with {entry} {name}")
        expected = stream.tell() + math.prod(shape) * dtype.itemsize
        if expected != info.file_size:
            raise FormatError(f"entry {entry!r}: declares {info.file_size} bytes, but its npy "
                              f"header describes {expected}")
        stream.seek(0)  # read_array parses the header again, now known to be plain data
        array = np.lib.format.read_array(stream, allow_pickle=False)
        if stream.read(1):
            raise FormatError(f"entry {entry!r}: holds more than its {info.file_size} declared "
                              "bytes")
    return array
