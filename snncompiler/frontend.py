"""ONNX front end: load and validate a model, import it into onnx-graphsurgeon, export it back.

Protobuf stays here: the passes see only the onnx-graphsurgeon graph that
:func:`import_graph` returns. That graph is at opset :data:`TARGET_OPSET`, its nodes have
unique names, its constant subgraphs are folded into constants, and its only dynamic
dimension is the leading batch dimension, called :data:`BATCH_DIM`.

Folding strategy (see :func:`import_graph`): PyTorch's ``x.view(x.size(0), -1)`` computes a
Reshape shape from the batch size at run time, so it cannot be folded while the batch is
symbolic. The graph is therefore folded twice, with the batch fixed to two different sizes;
constants that come out equal are batch-independent, and a Reshape shape that differs only
where it names the batch size is rewritten with Reshape's "copy this input dim" 0 (or -1).
Any other batch-dependent constant is refused, so the folded graph runs at every batch size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import external_data_helper, shape_inference, version_converter
from onnx_graphsurgeon.util.exception import OnnxGraphSurgeonException

from snncompiler.errors import ModelError, SnnError, UnsupportedOpError

TARGET_OPSET = 17
"""Opset of the default ONNX domain that every later stage assumes."""

BATCH_DIM = "N"
"""Name of the symbolic batch dimension on the imported graph's inputs and outputs."""

# Two distinct batch sizes to fold at: a constant that differs between them depends on the
# batch. Neither is 1, so a batch dim cannot be mistaken for a broadcast or unit dim.
_FOLD_BATCHES = (2, 3)
# Folding a Reshape shape can make a later Shape static; a few rounds reach the fixed point
# of every exporter pattern we know (one round per nested flatten would be the worst case).
_MAX_FOLD_ROUNDS = 4

_DEFAULT_DOMAINS = ("", "ai.onnx")
_QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
    }
)


_MAX_MESSAGE = 1000  # characters of an error message, whatever a hostile file puts in it


def _one_line_errors(function):
    """Makes the SnnErrors ``function`` raises one printable line of bounded length.

    Messages quote node names and onnx's own (multi-line) checker output, and both come
    from the file: newlines and terminal escapes must not reach the user's terminal as is.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SnnError as err:
            text = _printable(str(err))
            if text == str(err):
                raise
            raise type(err)(text) from err

    return wrapper


def _printable(text: str) -> str:
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


@_one_line_errors
def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Reads, validates and normalises an ONNX model file.

    The steps, in order: read the protobuf without its external data; refuse external data
    stored outside the model's folder (before anything opens it); load the external data;
    check the graph's structure and run ``onnx.checker``; refuse non-float32 inputs and
    weights and quantized ops; convert to :data:`TARGET_OPSET`; infer shapes strictly.

    Args:
        path: The ``.onnx`` file. External data files are looked up next to it.

    Returns:
        The model at opset :data:`TARGET_OPSET` with inferred shapes in ``value_info``.
        Graph inputs that are also initializers (IR < 4 models) are dropped from the inputs:
        the compiler treats weights as constants.

    Raises:
        ModelError: The file is missing, unreadable, truncated, invalid, unsafe, not float32,
            or cannot be converted to opset 17.
        UnsupportedOpError: The model is quantized.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        # External data is loaded separately, after its locations have been vetted.
        model = onnx.load_model(path, load_external_data=False)
    except (OSError, DecodeError, ValueError) as err:
        raise ModelError(
            f"{path}: not a readable ONNX model (truncated or corrupt?): {err}"
        ) from err
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"{path}: the file holds no graph (empty or truncated ONNX file?)")
    _check_text(model, path)

    _check_external_data(model, path)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise ModelError(f"{path}: could not load external data: {err}") from err

    _drop_initializer_inputs(model.graph)
    if model.ir_version < 4:
        # IR 3 wants every initializer listed as a graph input too; with them dropped the
        # model is a valid IR 4 model (the first IR where initializers are plain constants).
        model.ir_version = 4
    _check_structure(model.graph)
    _check_tensor_data(model, str(path))
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as err:
        raise ModelError(f"{path}: the ONNX checker refused the model: {err}") from err
    _check_dtypes(model, str(path))

    opset = _default_opset(model)
    if opset != TARGET_OPSET:
        try:
            model = version_converter.convert_version(model, TARGET_OPSET)
        except (version_converter.ConvertError, shape_inference.InferenceError, RuntimeError,
                ValueError) as err:  # the converter runs shape inference of its own
            raise ModelError(
                f"{path}: could not convert opset {opset} to {TARGET_OPSET}: {err}"
            ) from err
        _drop_stale_attributes(model.graph)
    return _infer_shapes(model, str(path))


def _drop_stale_attributes(graph: onnx.GraphProto) -> None:
    """Removes attributes that down-conversion left behind and the target opset lacks.

    onnx's converter turns ReduceMean(x, axes) of opset 18 into ReduceMean(x, axes=...) of
    opset 17 but keeps ``noop_with_empty_axes``, which only opset 18 defines (onnxruntime
    then refuses the model). With the axes given, the attribute has no effect.
    """
    for node in graph.node:
        if node.domain not in _DEFAULT_DOMAINS or not node.op_type.startswith("Reduce"):
            continue
        schema = onnx.defs.get_schema(node.op_type, TARGET_OPSET)
        stale = [a for a in node.attribute
                 if a.name == "noop_with_empty_axes" and a.name not in schema.attributes]
        for attribute in stale:
            node.attribute.remove(attribute)


@_one_line_errors
def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """Imports a model (as :func:`load_model` returns it) into onnx-graphsurgeon.

    Every graph input must be ``(batch, static dims...)``. Constant subgraphs are folded,
    ``Constant`` nodes included, by folding the graph at two fixed batch sizes and keeping
    what does not depend on the batch; batch-dependent Reshape shapes become batch-free
    (``[0, -1]`` for ``x.view(x.size(0), -1)``). When the model's batch is static (exported
    without dynamic axes), Reshape shapes that spell that batch size out as their leading
    element are read as "keep the batch" too. Inputs and outputs get the symbolic batch
    :data:`BATCH_DIM` and shapes are inferred again, so the graph runs at any batch size.

    Args:
        model: A model at opset :data:`TARGET_OPSET`. It is not modified.

    Returns:
        The folded graph, cleaned up and topologically sorted, every node uniquely named
        (``<OpType>_<index>`` where the model had no name).

    Raises:
        ModelError: A dangling input or a cycle; an input that is not ``(batch, static
            dims...)``; a constant that depends on the batch size in a way no rewrite can
            remove; inconsistent shapes.
    """
    opset = _default_opset(model)
    if opset != TARGET_OPSET:
        raise ModelError(
            f"import_graph expects opset {TARGET_OPSET}, the model has {opset}; "
            "read the file with load_model, which converts it"
        )
    work = onnx.ModelProto()
    work.CopyFrom(model)
    _drop_initializer_inputs(work.graph)
    _check_structure(work.graph)
    _check_attributes(work)
    _name_nodes(work.graph)
    static_batch = _check_batch_inputs(work.graph)
    work = _infer_shapes(work, "import_graph")
    if static_batch is not None:
        # Fold the constant-only subgraphs first, so that a batch size assembled from
        # constants (Concat(Unsqueeze(Constant 1), ...)) becomes a literal Reshape shape to
        # unbake. Shape nodes stay: folding them here would bake the batch in everywhere.
        graph = gs.import_onnx(work)
        _fold_constants(graph)
        _unbake_static_batch(graph, static_batch)
        work = _infer_shapes(gs.export_onnx(graph), "after unbaking the export batch size")

    originals = {tensor.name for tensor in work.graph.initializer}
    graph_a, graph_b = (_fold_at_batch(work, batch) for batch in _FOLD_BATCHES)
    _generalise_batch(graph_a, graph_b, originals)

    exported = gs.export_onnx(graph_a)
    graph = gs.import_onnx(_infer_shapes(exported, "after folding constants"))
    try:
        graph.cleanup().toposort()
    except OnnxGraphSurgeonException as err:  # _check_structure should have caught it
        raise ModelError(f"the graph has a cycle: {err}") from err
    return graph


def export_model(graph: gs.Graph) -> onnx.ModelProto:
    """Exports an onnx-graphsurgeon graph to an ONNX model at :data:`TARGET_OPSET`.

    Args:
        graph: A graph as :func:`import_graph` or a pass leaves it.

    Returns:
        A model whose default domain is at opset :data:`TARGET_OPSET`, with the lowest IR
        version that opset needs (so that onnxruntime accepts it). Other domains used by
        nodes (e.g. ``snncompiler``) are imported at version 1 unless the graph says more.
    """
    imports = {"": TARGET_OPSET}
    for opset_id in graph.import_domains or ():
        if opset_id.domain not in _DEFAULT_DOMAINS:
            imports[opset_id.domain] = opset_id.version
    for node in graph.nodes:
        if node.domain and node.domain not in _DEFAULT_DOMAINS:
            imports.setdefault(node.domain, 1)
    opset_imports = [onnx.helper.make_opsetid(dom, ver) for dom, ver in imports.items()]
    model = gs.export_onnx(graph, opset_imports=opset_imports)
    model.ir_version = onnx.helper.find_min_ir_version_for(opset_imports, ignore_unknown=True)
    return model


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime CPU session that computes the model as written.

    Graph optimisations are off, so that fused or reordered kernels do not change the
    numbers the compiler compares against (calibration, tests).

    Args:
        model: Any model onnxruntime can run (at most 2 GB serialised).

    Returns:
        The session.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers etc.
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


# --- reading -----------------------------------------------------------------------------


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuses external data that would be read from outside the model's folder."""
    folder = os.path.realpath(path.parent)
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not _is_inside(folder, location):
            raise ModelError(
                f"{path}: tensor '{tensor.name}' keeps its data in '{location}', which is "
                f"outside the model's folder {folder}; refusing to read it. External data "
                "must be a relative path inside that folder (no '..', no absolute path, no "
                "symlink out of it)"
            )


def _check_text(message, path: Path) -> None:
    """Refuses text fields that are not UTF-8 (names, locations, ...), anywhere in the model.

    ONNX is proto2, so protobuf parses such a field without complaint and hands it over as
    bytes, which onnx-graphsurgeon cannot write back.
    """
    for field in message.DESCRIPTOR.fields:
        if field.type not in (field.TYPE_STRING, field.TYPE_MESSAGE):
            continue  # bytes fields (raw tensor data) are never materialised here
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf before 6.30
            repeated = field.label == field.LABEL_REPEATED
        if not repeated and field.type == field.TYPE_MESSAGE and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        values = value if repeated else [value]
        if field.type == field.TYPE_STRING:
            if any(isinstance(item, bytes) for item in values):
                raise ModelError(f"{path}: a {message.DESCRIPTOR.name}.{field.name} is not valid "
                                 "UTF-8 text (corrupt or hostile file?)")
        elif field.type == field.TYPE_MESSAGE:
            for item in values:
                _check_text(item, path)


def _is_inside(folder: str, location: str) -> bool:
    """Whether ``location`` names a file strictly inside ``folder`` once links are resolved."""
    if not location or "\0" in location:
        return False
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    # Checked on both spellings: a model written on Windows may use backslashes or drives.
    if posix.is_absolute() or windows.drive or windows.root:
        return False
    if ".." in posix.parts or ".." in windows.parts:
        return False
    # realpath only stats and reads links; the data file itself is not opened here.
    resolved = os.path.realpath(os.path.join(folder, location))
    return resolved != folder and os.path.commonpath([folder, resolved]) == folder


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model: initializers, node attributes, subgraphs and functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node.attribute)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes) -> Iterator[onnx.TensorProto]:
    for attr in attributes:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = list(attr.sparse_tensors)
        if attr.HasField("sparse_tensor"):
            sparse.append(attr.sparse_tensor)
        for tensor in sparse:
            yield from (tensor.values, tensor.indices)
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for subgraph in attr.graphs:
            yield from _graph_tensors(subgraph)


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    """Removes graph inputs that are initializers (IR < 4 style): weights are constants."""
    weights = {tensor.name for tensor in graph.initializer}
    kept = [value for value in graph.input if value.name not in weights]
    if len(kept) != len(graph.input):
        del graph.input[:]
        graph.input.extend(kept)


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"'{node.name}' ({node.op_type})" if node.name else f"#{index} ({node.op_type})"


def _check_structure(graph: onnx.GraphProto) -> None:
    """Refuses dangling inputs, doubly produced tensors and cycles, naming the node."""
    known = {value.name for value in graph.input}
    known.update(tensor.name for tensor in graph.initializer)
    known.update(sparse.values.name for sparse in graph.sparse_initializer)
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if not name:
                continue
            if name in producer or name in known:
                raise ModelError(
                    f"node {_node_label(node, index)} writes '{name}', which is already a "
                    "graph input, an initializer or another node's output"
                )
            producer[name] = index

    dependencies: list[set[int]] = []
    for index, node in enumerate(graph.node):
        sources = set()
        for name in node.input:
            if name and name not in known and name not in producer:
                raise ModelError(
                    f"node {_node_label(node, index)} reads '{name}', which is neither a "
                    "graph input, an initializer nor the output of another node"
                )
            if name in producer:
                sources.add(producer[name])
        dependencies.append(sources)
    for value in graph.output:
        if value.name not in known and value.name not in producer:
            raise ModelError(f"graph output '{value.name}' is not produced by any node")

    # Kahn's algorithm: whatever never becomes ready lies on (or after) a cycle.
    users: list[list[int]] = [[] for _ in graph.node]
    for index, sources in enumerate(dependencies):
        for source in sources:
            users[source].append(index)
    waiting = [len(sources) for sources in dependencies]
    ready = [index for index, count in enumerate(waiting) if count == 0]
    while ready:
        for user in users[ready.pop()]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    stuck = [_node_label(graph.node[i], i) for i, count in enumerate(waiting) if count]
    if stuck:
        listed = ", ".join(stuck[:5]) + (", ..." if len(stuck) > 5 else "")
        raise ModelError(f"the graph has a cycle through {listed}")


_PACKED_4BIT = ("INT4", "UINT4", "FLOAT4E2M1")  # two values per byte (or per int32_data)


def _check_tensor_data(model: onnx.ModelProto, where: str) -> None:
    """Refuses tensors whose stored data does not fill their shape exactly.

    onnx's checker refuses too little raw data but not too much, nor segmented tensors or
    typed data of the wrong length; onnx-graphsurgeon would then fail (or misread) when a
    pass first touches the values. Only sizes are compared: nothing is converted here.
    """
    for tensor in _all_tensors(model):
        what = f"{where}: weight '{tensor.name}'"
        if tensor.HasField("segment"):
            raise ModelError(f"{what} is stored in segments, which snncompiler does not read")
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue  # only tensors that load_external_data did not visit; the checker says
        try:
            type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
            field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except (KeyError, ValueError):
            raise ModelError(f"{what} has data type {tensor.data_type}, which is not an ONNX "
                             "tensor type") from None
        if type_name in ("STRING", "UNDEFINED") or any(d < 0 for d in tensor.dims):
            continue  # left to the checker (strings are never weights we read)
        count = int(np.prod(tensor.dims, dtype=object))
        shape = list(tensor.dims)
        if tensor.raw_data:
            need = (count + 1) // 2 if type_name in _PACKED_4BIT else count * itemsize
            if len(tensor.raw_data) != need:
                raise ModelError(f"{what} holds {len(tensor.raw_data)} bytes of data; its "
                                 f"shape {shape} of {type_name.lower()} needs {need}")
            continue
        stored = len(getattr(tensor, field))
        need = (count + 1) // 2 if type_name in _PACKED_4BIT else count
        need *= 2 if type_name.startswith("COMPLEX") else 1
        if stored != need and (stored or count):
            raise ModelError(f"{what} holds {stored} values; its shape {shape} needs {need}")


_LIST_ATTRIBUTES = ("ints", "floats", "strings", "tensors", "graphs", "sparse_tensors",
                    "type_protos")


def _check_attributes(model: onnx.ModelProto) -> None:
    """Refuses empty list attributes, in the graph, its subgraphs and local functions.

    onnx-graphsurgeon writes an attribute back by inferring its type from its values, which
    an empty list does not have (the checker lets such attributes through on calls of
    model-local functions).
    """
    nodes = [(node, index) for index, node in enumerate(model.graph.node)]
    nodes += [(node, index) for f in model.functions for index, node in enumerate(f.node)]
    while nodes:
        node, index = nodes.pop()
        for attr in node.attribute:
            if attr.type in _LIST_ATTRIBUTE_TYPES and not any(
                    len(getattr(attr, name)) for name in _LIST_ATTRIBUTES):
                raise ModelError(f"node {_node_label(node, index)}: attribute '{attr.name}' is "
                                 "an empty list, which snncompiler cannot carry through; drop "
                                 "it or give it values")
            for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                nodes += [(sub, i) for i, sub in enumerate(graph.node)]


_LIST_ATTRIBUTE_TYPES = frozenset(
    getattr(onnx.AttributeProto, name.upper()) for name in _LIST_ATTRIBUTES)


def _float_name(data_type: int) -> str | None:
    """The type's name when it is a floating type other than float32, else None."""
    name = onnx.TensorProto.DataType.Name(data_type)
    if name != "FLOAT" and ("FLOAT" in name or name in ("DOUBLE", "COMPLEX64", "COMPLEX128")):
        return name.lower()
    return None


def _check_dtypes(model: onnx.ModelProto, where: str) -> None:
    """Refuses non-float32 inputs and floating weights, and quantized ops."""
    graph = model.graph
    for value in graph.input:
        elem_type = value.type.tensor_type.elem_type
        if not value.type.HasField("tensor_type") or elem_type != onnx.TensorProto.FLOAT:
            known = elem_type in onnx.TensorProto.DataType.values()
            found = (onnx.TensorProto.DataType.Name(elem_type).lower() if known
                     else f"of unknown type {elem_type}")
            raise ModelError(
                f"{where}: graph input '{value.name}' is {found}; snncompiler computes in "
                "float32: export the model with float32 inputs"
            )
    first_user: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        if node.op_type in _QUANTIZED_OPS or node.op_type.startswith(("QLinear", "QGemm")):
            raise UnsupportedOpError(
                f"{where}: node {_node_label(node, index)} is a quantized op; snncompiler "
                "converts float32 models: convert the float32 model before quantizing it"
            )
        for name in node.input:
            first_user.setdefault(name, _node_label(node, index))
    constants = list(graph.initializer)
    constants += [
        attr.t
        for node in graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.HasField("t")
    ]
    for tensor in constants:
        found = _float_name(tensor.data_type)
        if found is not None:
            used_by = first_user.get(tensor.name, "a Constant node")
            raise ModelError(
                f"{where}: weight '{tensor.name}' (used by {used_by}) is {found}; "
                "snncompiler computes in float32: convert the model to float32 first"
            )


def _default_opset(model: onnx.ModelProto) -> int:
    versions = [entry.version for entry in model.opset_import if entry.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise ModelError("the model imports no opset of the default ONNX domain")
    return versions[0]


def _infer_shapes(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Strict shape inference; data propagation lets Shape -> Gather -> ... chains resolve."""
    try:
        return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except (shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError) as err:
        raise ModelError(f"{where}: shape inference found an inconsistency: {err}") from err


# --- importing ---------------------------------------------------------------------------


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Gives every node a unique, non-empty name; ``<OpType>_<index>`` for unnamed ones."""
    taken = {node.name for node in graph.node if node.name}
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or f"{node.op_type}_{index}"
        name, suffix = base, 1
        while name in taken or name in seen:
            name, suffix = f"{base}_{suffix}", suffix + 1
        node.name = name
        seen.add(name)
        taken.add(name)


def _check_batch_inputs(graph: onnx.GraphProto) -> int | None:
    """Checks that every input is (batch, static dims...); returns a static batch size if any."""
    static = set()
    for value in graph.input:
        tensor_type = value.type.tensor_type
        dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        spelled = "unknown" if dims is None else "(" + ", ".join(_spell_dim(d) for d in dims) + ")"
        if not dims or any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims[1:]):
            raise ModelError(
                f"graph input '{value.name}' has shape {spelled}; the batch must be the only "
                "dynamic dimension: export the model with inputs (batch, static dims...)"
            )
        if dims[0].HasField("dim_value"):
            static.add(dims[0].dim_value)
    if len(static) > 1:
        raise ModelError(f"the graph inputs disagree on the batch size: {sorted(static)}")
    return static.pop() if static else None


def _spell_dim(dim: onnx.TensorShapeProto.Dimension) -> str:
    if dim.HasField("dim_value"):
        return str(dim.dim_value)
    return dim.dim_param or "?"


def _unbake_static_batch(graph: gs.Graph, batch: int) -> None:
    """Rewrites Reshape shapes that spell out a static export batch as "keep the batch".

    A model exported without dynamic axes may carry ``Reshape(x, [1, -1])``. When the
    Reshape's input and output both lead with that batch size, the leading 1 is read as the
    batch and becomes 0 ("copy input dim 0"). A non-batch leading dim that happens to equal
    the export batch would be misread; CNN exporters do not produce that.
    """
    taken = set(graph.tensors())
    for node in graph.nodes:
        if node.op != "Reshape" or not isinstance(node.inputs[1], gs.Constant):
            continue
        target = np.asarray(node.inputs[1].values)
        data, out = node.inputs[0].shape, node.outputs[0].shape
        if target.ndim != 1 or not target.size or not data or not out:
            continue
        if target[0] == data[0] == out[0] == batch:
            fixed = _copy_batch_dim(node, target)
            if fixed is not None:
                node.inputs[1] = gs.Constant(_unique(f"{node.name}_shape", taken), fixed)
                if node.attrs.get("allowzero", 0):
                    node.attrs["allowzero"] = 0  # _copy_batch_dim found no literal zero


def _copy_batch_dim(node: gs.Node, shape: np.ndarray) -> np.ndarray | None:
    """``shape`` with its first entry 0 ("copy input dim 0"), or None where 0 would be read
    as a literal zero.

    With ``allowzero=1`` 0 is literal; the caller may switch it off when no other entry is
    0, which leaves the Reshape's meaning unchanged (the dynamo exporter sets it on every
    view).
    """
    if node.attrs.get("allowzero", 0) and (shape[1:] == 0).any():
        return None
    fixed = shape.astype(np.int64)
    fixed[0] = 0
    return fixed


def _unique(base: str, taken: set[str]) -> str:
    name, suffix = base, 1
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(name)
    return name


def _fold_at_batch(model: onnx.ModelProto, batch: int) -> gs.Graph:
    """Folds every constant subgraph with the batch dimension fixed to ``batch``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for value in fixed.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = batch
    for value in fixed.graph.output:
        value.type.tensor_type.ClearField("shape")
    where = f"folding with the batch size set to {batch} (does the model bake its batch in?)"
    graph = gs.import_onnx(_infer_shapes(fixed, where))
    for _ in range(_MAX_FOLD_ROUNDS):
        count = len(graph.nodes)
        _fold_shape_nodes(graph)
        # gs's own shape folding ignores Shape's start/end (opset 15), so it stays off.
        _fold_constants(graph)
        if len(graph.nodes) == count:
            break
        # New constants make more shapes static, which may let more Shape nodes fold.
        exported = gs.export_onnx(graph)
        del exported.graph.value_info[:]
        graph = gs.import_onnx(_infer_shapes(exported, where))
    return graph


def _fold_constants(graph: gs.Graph) -> None:
    """gs's constant folding, with a subgraph onnxruntime cannot evaluate made a ModelError.

    With ``error_ok`` (gs's default) "basic" partitioning retries a failing subgraph
    unchanged until Python's recursion limit; without it, the failure surfaces at once.
    Without partitioning, one onnxruntime session folds everything: "basic" partitioning
    copies the graph, weights included, once per partition, which took minutes on
    DenseNet-121 for no gain once failures raise anyway.
    """
    try:
        graph.fold_constants(fold_shapes=False, partitioning=None, error_ok=False).cleanup()
    except Exception as err:  # onnxruntime's errors have no common base to name
        raise ModelError(f"onnxruntime cannot evaluate the constant subgraph {graph.name!r} "
                         f"while folding it: {err}") from err


def _fold_shape_nodes(graph: gs.Graph) -> None:
    """Replaces every Shape of a statically shaped tensor by its value (start/end honoured)."""
    for node in graph.nodes:
        source = node.inputs[0] if node.op == "Shape" else None
        if source is None or not _is_static(source.shape):
            continue
        rank = len(source.shape)
        # ONNX Shape: negative bounds count from the end; both are clamped to [0, rank].
        start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
        start = min(max(start + rank if start < 0 else start, 0), rank)
        end = min(max(end + rank if end < 0 else end, 0), rank)
        output = node.outputs[0]
        output.to_constant(np.array(source.shape[start:end], dtype=np.int64))
        output.inputs.clear()


def _generalise_batch(graph: gs.Graph, other: gs.Graph, originals: set[str]) -> None:
    """Makes ``graph`` (folded at one batch) batch-free by comparing it with ``other``.

    Both were folded from the same model at batch sizes ``_FOLD_BATCHES``, so they have the
    same nodes; a folded constant that differs between them depends on the batch.
    """
    batch_a, batch_b = _FOLD_BATCHES
    if [n.name for n in graph.nodes] != [n.name for n in other.nodes]:
        raise ModelError(
            f"constant folding kept different nodes at batch sizes {batch_a} and {batch_b}: "
            "the model's structure depends on the batch size"
        )
    taken = set(graph.tensors())
    for node, twin in zip(graph.nodes, other.nodes):
        for index, (tensor, twin_tensor) in enumerate(zip(node.inputs, twin.inputs)):
            if not isinstance(tensor, gs.Constant) or tensor.name in originals:
                continue
            if not isinstance(twin_tensor, gs.Constant):
                raise ModelError(
                    f"node '{node.name}' ({node.op}): input '{tensor.name}' folds to a constant "
                    f"at batch size {batch_a} but not at {batch_b}"
                )
            values, twin_values = tensor.values, twin_tensor.values
            same_shape = values.shape == twin_values.shape
            if same_shape and np.array_equal(values, twin_values, equal_nan=True):
                continue
            if node.op == "Reshape" and index == 1 and same_shape:
                fixed = _batch_free_shape(node, twin, values, twin_values)
                node.inputs[1] = gs.Constant(_unique(f"{node.name}_shape", taken), fixed)
                continue
            raise ModelError(
                f"node '{node.name}' ({node.op}): input '{tensor.name}' depends on the batch "
                f"size ({_brief(values)} at batch {batch_a}, {_brief(twin_values)} at batch "
                f"{batch_b}); only Reshape shapes can be made batch-independent"
            )

    for value in graph.outputs:
        if isinstance(value, gs.Constant):
            raise ModelError(f"graph output '{value.name}' does not depend on the graph inputs "
                             "(it folds to a constant): there is nothing to convert")
    for value in graph.inputs:
        value.shape = [BATCH_DIM, *value.shape[1:]]
    outputs = {id(t) for t in graph.outputs}
    for value, twin in zip(graph.outputs, other.outputs):
        value.shape = _batch_free_output(value, twin)
    inputs = {id(t) for t in graph.inputs}
    for tensor in graph.tensors().values():
        # Intermediate shapes were inferred at a fixed batch: forget them, inference redoes it.
        if isinstance(tensor, gs.Variable) and id(tensor) not in inputs | outputs:
            tensor.shape = None


def _batch_free_shape(
    node: gs.Node, twin: gs.Node, values: np.ndarray, twin_values: np.ndarray
) -> np.ndarray:
    """A Reshape shape valid at every batch size, from the Reshape folded at two sizes.

    First from the shape constants themselves (which keeps the model's -1), then from the
    Reshape's inferred output shapes (which spell every static dim out, for when the
    model's own -1 is taken, e.g. ``view(size(0), -1)`` of a tensor whose batch is not
    leading).
    """
    out, twin_out = node.outputs[0].shape, twin.outputs[0].shape
    candidates = [(values, twin_values)]
    if _is_static(out) and _is_static(twin_out) and len(out) == len(twin_out) and 0 not in out:
        candidates.append((np.array(out), np.array(twin_out)))
    for shape, twin_shape in candidates:
        fixed = _without_batch(node, twin, shape, twin_shape)
        if fixed is not None:
            return fixed
    batch_a, batch_b = _FOLD_BATCHES
    raise ModelError(
        f"node '{node.name}' (Reshape): shape {_brief(values)} at batch {batch_a} and "
        f"{_brief(twin_values)} at batch {batch_b} depends on the batch size in a way that "
        "neither 0 (copy the batch) nor -1 can express"
    )


def _without_batch(
    node: gs.Node, twin: gs.Node, shape: np.ndarray, twin_shape: np.ndarray
) -> np.ndarray | None:
    """``shape`` with its batch-dependent entries made 0 or -1, or None if it cannot be."""
    fixed = shape.astype(np.int64)
    varies = shape != twin_shape
    data, twin_data = node.inputs[0].shape, twin.inputs[0].shape
    batch_leading = bool(data) and bool(twin_data) and (data[0], twin_data[0]) == _FOLD_BATCHES
    copied = None
    if varies[0] and (shape[0], twin_shape[0]) == _FOLD_BATCHES and batch_leading:
        copied = _copy_batch_dim(node, fixed)
        if copied is not None:
            fixed, varies[0] = copied, False
    rest = np.flatnonzero(varies)
    if len(rest) > 1 or (len(rest) == 1 and -1 in fixed):
        return None
    if len(rest) == 1:
        # The only batch-dependent entry: -1 makes Reshape compute it from the element count.
        fixed[rest[0]] = -1
    if copied is not None and node.attrs.get("allowzero", 0):
        node.attrs["allowzero"] = 0  # _copy_batch_dim found no literal zero
    return fixed


def _is_static(shape) -> bool:
    return shape is not None and all(isinstance(dim, int) and dim >= 0 for dim in shape)


def _batch_free_output(value: gs.Variable, twin: gs.Variable) -> list | None:
    if value.shape is None or twin.shape is None:
        return None  # shape inference fills it in from the inputs
    shape = list(value.shape)
    for axis, (size, twin_size) in enumerate(zip(value.shape, twin.shape)):
        if size == twin_size:
            continue
        if axis == 0 and (size, twin_size) == _FOLD_BATCHES:
            shape[0] = BATCH_DIM
            continue
        raise ModelError(
            f"graph output '{value.name}' has shape {value.shape} at batch {_FOLD_BATCHES[0]} "
            f"and {twin.shape} at batch {_FOLD_BATCHES[1]}: only the leading dimension may "
            "depend on the batch size"
        )
    return shape


def _brief(values: np.ndarray) -> str:
    return np.array2string(np.asarray(values), threshold=8, edgeitems=3)
