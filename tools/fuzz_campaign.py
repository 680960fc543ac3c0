"""Fuzz campaign over the three doors hostile files come in by: ``.snn``, ONNX and ``.npz``.

Each case mutates a valid file (bytes, zip entries, the JSON header, npy headers, protobuf
fields, arrays) and hands it to the loader. The only acceptable outcomes are a clean load
(then the result must be consistent: a valid program that runs, a model without unresolved
external data, a dataset that passes the shape and label checks) or an ``SnnError``. Any
other exception, a hard crash of the process, a hang, a read of a planted file outside the
model's folder, or code run from a file (a planted pickle that creates ``PWNED``) is a crash.

Usage::

    python tools/fuzz_campaign.py --targets snn,onnx,npz --seconds 600 --seed 1 \\
        --report docs/results/fuzz.md
    python tools/fuzz_campaign.py --replay onnx:1:4711      # one case, with its traceback

A case is a pure function of (target, seed, index), so any crash replays exactly. Cases run
in a worker process (restarted after a crash or a hang, with its address space capped), so a
segfault in a C extension is recorded rather than ending the campaign.

The test suite drives the same mutators with hypothesis' random source, one test per
target (``tests/tools/test_fuzz_campaign.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import random
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PWNED = "PWNED"  # what the planted pickles create when they are unpickled
NOTES = "## Notes"  # a report's hand-written tail, kept when the campaign is rerun

# --------------------------------------------------------------------------------------------
# The folder a case runs in
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where a case's file lives, next to bait that a loader must never touch.

    ``folder`` holds the file under test, ``w.bin`` (legitimate external data) and
    ``link.bin``, a symlink to ``secret``, which lies outside ``folder``.
    """

    folder: Path
    secret: Path

    @classmethod
    def create(cls, root: Path) -> Layout:
        folder = root / "case"
        folder.mkdir(parents=True, exist_ok=True)
        secret = root / "secret.bin"
        secret.write_bytes(np.arange(64, dtype=np.float32).tobytes())
        (folder / "w.bin").write_bytes(np.linspace(-1, 1, 4096, dtype=np.float32).tobytes())
        link = folder / "link.bin"
        if not link.is_symlink():
            link.symlink_to(secret)
        return cls(folder, secret)

    def forbidden(self) -> set[str]:
        return {os.path.realpath(self.secret), "/etc/passwd", "/etc/hostname", "/dev/zero",
                "/dev/urandom", "/proc/self/environ"}


class ForbiddenRead(BaseException):
    """Raised by the audit hook when a loader opens a planted file outside the folder.

    A BaseException, so that a loader's ``except Exception`` cannot swallow it.
    """


class _Watch:
    forbidden: set[str] = set()
    seen: list[str] = []
    installed = False


def _audit(event: str, args) -> None:
    if event != "open" or not _Watch.forbidden:
        return
    path = args[0]
    if isinstance(path, (str, bytes, os.PathLike)):
        real = os.path.realpath(os.fsdecode(path))
        if real in _Watch.forbidden:
            _Watch.seen.append(real)
            raise ForbiddenRead(f"opened {real}")


@contextlib.contextmanager
def watching(layout: Layout):
    """Fails the case if a planted file outside ``layout.folder`` is opened meanwhile."""
    if not _Watch.installed:
        sys.addaudithook(_audit)  # hooks cannot be removed; this one is idle outside here
        _Watch.installed = True
    _Watch.forbidden, _Watch.seen = layout.forbidden(), []
    try:
        yield
    finally:
        seen, _Watch.forbidden = _Watch.seen, set()
        if seen:
            raise ForbiddenRead(f"the loader opened {seen[0]}, outside the model's folder")


# --------------------------------------------------------------------------------------------
# Generic mutations
# --------------------------------------------------------------------------------------------

_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x50, 0x4B, 0x22, 0x5B, 0x7B)
_INTS = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1,
         2**64 - 1, 1 << 40)


def mutate_bytes(rng: random.Random, data: bytes, hot: tuple[int, ...] = ()) -> bytes:
    """One to eight edits; half of them near the offsets in ``hot`` (headers, directories)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            out.append(rng.randrange(256))
            continue
        if hot and rng.random() < 0.5:
            at = min(len(out) - 1, max(0, rng.choice(hot) + rng.randint(-4, 48)))
        else:
            at = rng.randrange(len(out))
        action = rng.choice(("flip", "set", "insert", "delete", "repeat", "truncate", "int"))
        if action == "flip":
            out[at] ^= 1 << rng.randrange(8)
        elif action == "set":
            out[at] = rng.choice(_BYTES)
        elif action == "insert":
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif action == "delete":
            del out[at:at + rng.randint(1, 16)]
        elif action == "repeat":
            out[at:at] = out[at:at + rng.randint(1, 64)] * rng.randint(1, 4)
        elif action == "truncate":
            del out[at:]
        else:
            width = rng.choice((2, 4, 8))
            value = rng.choice(_INTS) & ((1 << (8 * width)) - 1)
            out[at:at + width] = value.to_bytes(width, "little")
    return bytes(out)


def zip_hot_spots(data: bytes) -> tuple[int, ...]:
    """Offsets of every local header, directory record and end record of a zip."""
    spots, at = [], data.find(b"PK")
    while at >= 0:
        if data[at + 2:at + 4] in (b"\x03\x04", b"\x01\x02", b"\x05\x06", b"\x06\x06"):
            spots.append(at)
        at = data.find(b"PK", at + 1)
    return tuple(spots)


def unzip(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def rezip(entries, compression: dict | None = None, comment: bytes = b"") -> bytes:
    """A zip of ``(name, content)`` with valid checksums; ``compression`` by entry index."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are on purpose
        with zipfile.ZipFile(buffer, "w") as archive:
            for i, (name, content) in enumerate(entries):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = (compression or {}).get(i, zipfile.ZIP_DEFLATED)
                archive.writestr(info, content)
            archive.comment = comment
    return buffer.getvalue()


def _central_records(data: bytes) -> list[int]:
    return [at for at in zip_hot_spots(data) if data[at + 2:at + 4] == b"\x01\x02"]


def _local_records(data: bytes) -> list[int]:
    return [at for at in zip_hot_spots(data) if data[at + 2:at + 4] == b"\x03\x04"]


def lie_about_sizes(rng: random.Random, data: bytes) -> bytes:
    """Patches declared sizes or flags of one entry in its local and directory records."""
    out = bytearray(data)
    central, local = _central_records(data), _local_records(data)
    if not central:
        return data
    i = rng.randrange(len(central))
    field_, value = rng.choice((("size", rng.choice(_INTS)), ("compressed", rng.choice(_INTS)),
                                ("flags", rng.choice((1, 8, 0x41, 0x800))),
                                ("method", rng.choice((0, 8, 12, 14, 99)))))
    # (offset in the directory record, offset in the local header, width)
    at_central, at_local, width = {"size": (24, 22, 4), "compressed": (20, 18, 4),
                                   "flags": (8, 6, 2), "method": (10, 8, 2)}[field_]
    value &= (1 << (8 * width)) - 1
    targets = [central[i] + at_central]
    if i < len(local) and rng.random() < 0.7:
        targets.append(local[i] + at_local)
    for at in targets:
        out[at:at + width] = value.to_bytes(width, "little")
    return bytes(out)


# --------------------------------------------------------------------------------------------
# npy
# --------------------------------------------------------------------------------------------

_DESCRS = ("<f4", ">f4", "<f8", "<f2", "<i4", "<i8", ">i8", "|u1", "|i1", "|b1", "|O", "<c8",
           "|V4", "<U1", "|S3", "<M8[s]", "[('a', '<f4')]", "('<f4', (2,))", "'<f4'")


def npy(header: str, payload: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """An npy file from a literal header text (padded as numpy pads it) and raw data."""
    length_format = "<H" if version[0] == 1 else "<I"
    prefix = 6 + 2 + struct.calcsize(length_format)
    text = header + " " * ((64 - (prefix + len(header) + 1) % 64) % 64) + "\n"
    encoded = text.encode("latin1")
    return (b"\x93NUMPY" + bytes(version) + struct.pack(length_format, len(encoded)) + encoded
            + payload)


def npy_of(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _split_npy(data: bytes) -> tuple[tuple, bool, np.dtype, bytes]:
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(stream)
    return shape, fortran, dtype, data[stream.tell():]


class _Planted:
    """Unpickling this creates the file ``PWNED`` in the working folder."""

    def __reduce__(self):
        return (open, (PWNED, "w"))


def planted_pickle_npy() -> bytes:
    """An npy of dtype object whose unpickling would run code (create ``PWNED``)."""
    return npy_of(np.array([_Planted(), 1.0], dtype=object), allow_pickle=True)


def mutate_npy(rng: random.Random, data: bytes) -> bytes:
    """Rewrites a valid npy's header fields, version or payload."""
    shape, fortran, dtype, payload = _split_npy(data)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
              "shape": tuple(shape)}
    version = (1, 0)
    action = rng.choice(("descr", "shape", "fortran", "version", "values", "payload", "text",
                         "pickle"))
    if action == "descr":
        header["descr"] = rng.choice(_DESCRS)
    elif action == "shape":
        dims = list(shape)
        kind = rng.choice(("dim", "add", "drop", "scalar"))
        if kind == "dim" and dims:
            dims[rng.randrange(len(dims))] = rng.choice((0, 1, 2, -1, 2**31, 2**40, 2**62))
        elif kind == "add":
            dims.insert(rng.randint(0, len(dims)), rng.choice((1, 2, 0)))
        elif kind == "drop" and dims:
            dims.pop(rng.randrange(len(dims)))
        else:
            dims = []
        header["shape"] = tuple(dims)
    elif action == "fortran":
        header["fortran_order"] = True
    elif action == "version":
        version = rng.choice(((2, 0), (3, 0), (0, 9), (9, 9)))
    elif action == "values" and dtype.kind == "f" and payload:
        values = np.frombuffer(payload, dtype=dtype).copy()
        special = (np.nan, np.inf, -np.inf, -1.0, 0.0, 1e-45, 3.4e38, -3.4e38)
        for _ in range(rng.randint(1, 4)):
            values.flat[rng.randrange(values.size)] = rng.choice(special)
        payload = values.tobytes()
    elif action == "payload":
        cut = rng.randint(0, len(payload) + 8)
        payload = payload[:cut] if rng.random() < 0.6 else payload + bytes(cut % 9 + 1)
    elif action == "text":
        text = rng.choice((
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'extra': 1}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (10**10,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': [4]}",
            f"__import__('pathlib').Path('{PWNED}').touch()",
            "{", "", "[1, 2]", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}" * 40,
            "(" * 200 + ")" * 200,
        ))
        return npy(text, payload, rng.choice(((1, 0), (2, 0))))
    else:
        return planted_pickle_npy()
    body = repr(header)
    return npy(body, payload, version)


# --------------------------------------------------------------------------------------------
# JSON trees
# --------------------------------------------------------------------------------------------

_JSON_VALUES = (0, -1, 1, 2, 3, 7, 2**31 - 1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 10**400,
                1e308, -0.0, 0.5, 1e-320, "", "x", "snm", "conv", "reshape", "zero",
                "arrays/0.npy", "arrays/99999.npy", "arrays/00.npy", "../header.json",
                "/etc/passwd", "\u0000", "\ud800", "\x1b[2J", "x" * 5000, None, True, False,
                [], {}, [1, 2], [[[[]]]], {"a": 1}, list(range(40)), "float32", "float64")


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _json_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _json_paths(value, (*prefix, i))


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def mutate_json(rng: random.Random, obj):
    """One to three edits anywhere in a JSON tree: replace, delete, insert, splice, swap."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _json_paths(obj) if p]
        if not paths:
            return rng.choice(_JSON_VALUES)
        path = rng.choice(paths)
        parent, key = _get(obj, path[:-1]), path[-1]
        action = rng.choice(("replace", "replace", "splice", "delete", "insert", "swap",
                             "nest", "number"))
        if action == "replace":
            parent[key] = copy.deepcopy(rng.choice(_JSON_VALUES))
        elif action == "splice":
            parent[key] = copy.deepcopy(_get(obj, rng.choice(paths)))
        elif action == "delete":
            del parent[key]
        elif action == "insert":
            if isinstance(parent, list):
                parent.insert(key, copy.deepcopy(rng.choice(_JSON_VALUES)))
            else:
                parent[rng.choice(("extra", "name", "op", "__proto__", "shape"))] = 1
        elif action == "swap":
            other = rng.choice(paths)
            if other[:len(path)] != path and path[:len(other)] != other:
                value = _get(obj, other)
                _get(obj, other[:-1])[other[-1]] = parent[key]
                parent[key] = value
        elif action == "nest":
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"v": parent[key]}
        else:
            value = parent[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parent[key] = rng.choice((value + 1, value - 1, -value, value * 2**20,
                                          float(value), value + 0.5))
    return obj


def mutate_json_text(rng: random.Random, text: str) -> str:
    """Token-level damage the JSON parser itself must face (NaN, deep nesting, bad escapes)."""
    tokens = ("NaN", "Infinity", "-Infinity", "1e999", "[" * 5000, "{" * 70, '"\\ud800"',
              '"\\x"', "\x00", ",", ":", "}", "]", '"', "\\", "00", "-", "1" * 5000, "\u2028")
    out = text
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(out))
        if rng.random() < 0.7:
            out = out[:at] + rng.choice(tokens) + out[at:]
        else:
            out = out[:at] + out[at + rng.randint(1, 20):]
    return out


# --------------------------------------------------------------------------------------------
# Target: .snn files
# --------------------------------------------------------------------------------------------


def base_program():
    """A small valid program with one node of every op the engine runs."""
    from snncompiler.runtime import Node, Program, TensorSpec

    rng = np.random.default_rng(11)

    def normal(*shape):
        return rng.normal(0, 0.4, shape).astype(np.float32)

    theta = rng.uniform(0.4, 1.2, (2, 3)).astype(np.float32)
    pool = {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0}
    nodes = [
        Node("conv", "conv", ("x",), "c1",
             {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
             {"weight": normal(3, 2, 3, 3), "bias": normal(3)}, (3, 4, 4)),
        Node("norm", "affine", ("c1",), "n1", {},
             {"scale": normal(3, 1, 1), "shift": normal(3, 1, 1)}, (3, 4, 4)),
        Node("spike", "snm", ("n1",), "s1", {"theta_neg": "zero", "max_spikes_per_step": 1},
             {"theta": theta, "v0": theta / 2}, (3, 4, 4)),
        Node("mpool", "maxpool", ("s1",), "m1", {**pool, "dilations": [1, 1]}, {}, (3, 2, 2)),
        Node("apool", "avgpool", ("s1",), "a1", {**pool, "count_include_pad": 1}, {}, (3, 2, 2)),
        Node("sum", "add", ("m1", "a1"), "r1", {}, {}, (3, 2, 2)),
        Node("gap", "global_avgpool", ("r1",), "g1", {}, {}, (3, 1, 1)),
        Node("flat", "reshape", ("g1",), "f1", {"shape": [3]}, {}, (3,)),
        Node("fc", "gemm", ("f1",), "y", {}, {"weight": normal(3, 4), "bias": normal(4)}, (4,)),
    ]
    return Program([TensorSpec("x", (2, 4, 4))], [TensorSpec("y", (4,))], nodes, [4, 16], 4,
                   producer="fuzz", calibration={"method": "DNI", "samples": 8},
                   metadata={"source": "fuzz_campaign"})


def base_snn() -> bytes:
    import tempfile

    from snncompiler.runtime.format import save_program

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "base.snn"
        save_program(base_program(), path)
        return path.read_bytes()


def _snn_bytes(rng, data, layout):
    return mutate_bytes(rng, data, zip_hot_spots(data))


def _snn_entry(rng, data, layout):
    entries = unzip(data)
    i = 0 if rng.random() < 0.4 else rng.randrange(len(entries))
    name, content = entries[i]
    if name == "header.json" and rng.random() < 0.5:
        content = mutate_json_text(rng, content.decode("latin1")).encode("utf-8", "surrogatepass")
    else:
        content = mutate_bytes(rng, content)
    entries[i] = (name, content)
    return rezip(entries)


def _snn_header(rng, data, layout):
    entries = unzip(data)
    header = json.loads(entries[0][1])
    entries[0] = ("header.json", json.dumps(mutate_json(rng, header)).encode())
    return rezip(entries)


def _snn_npy(rng, data, layout):
    entries = unzip(data)
    i = rng.randrange(1, len(entries))
    entries[i] = (entries[i][0], mutate_npy(rng, entries[i][1]))
    return rezip(entries)


def _snn_archive(rng, data, layout):
    return mutate_archive(rng, data, ("header.json", "arrays/0.npy"))


def mutate_archive(rng: random.Random, data: bytes, names: tuple[str, ...]) -> bytes:
    """Changes the entry list: drop, duplicate, rename, add, reorder, recompress, bombs, lies."""
    entries = unzip(data)
    compression = {}
    comment = b""
    action = rng.choice(("drop", "duplicate", "rename", "add", "reorder", "compression",
                         "comment", "bomb", "lie", "pickle"))
    i = rng.randrange(len(entries))
    if action == "drop":
        del entries[i]
    elif action == "duplicate":
        entries.insert(rng.randint(0, len(entries)), entries[i])
    elif action == "rename":
        bad = ("../" + entries[i][0], "/" + entries[i][0], "a/../" + entries[i][0],
               entries[i][0].upper(), entries[i][0] + "\x00", "C:\\x", rng.choice(names),
               "arrays/01.npy", "arrays/-1.npy", "arrays/999999999.npy", "x" * 300)
        entries[i] = (rng.choice(bad), entries[i][1])
    elif action == "add":
        entries.append((rng.choice(("extra.txt", "arrays/77.npy", *names)),
                        rng.choice((b"", b"junk", npy_of(np.zeros(3, np.float32))))))
    elif action == "reorder":
        rng.shuffle(entries)
    elif action == "compression":
        compression = {i: rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA))}
    elif action == "comment":
        comment = rng.choice((b"PK\x05\x06" + bytes(18), b"x" * 65535, b"\x00"))
    elif action == "bomb":
        # 24 MiB of zeros deflates about 1000-fold: a small file that expands enormously.
        size = 24 << 20
        header = repr({"descr": "<f4", "fortran_order": False, "shape": (size // 4,)})
        entries[i] = (entries[i][0], npy(header, bytes(size)))
    elif action == "lie":
        return lie_about_sizes(rng, data)
    else:
        entries[i] = (entries[i][0], planted_pickle_npy())
    return rezip(entries, compression, comment)


def check_snn(path: Path) -> str:
    """Loads a ``.snn`` file; a loaded program must validate and run on a tiny input."""
    from snncompiler.runtime.engine import SpikingNetwork
    from snncompiler.runtime.format import load_program, validate_program

    program = load_program(path)
    validate_program(program)  # a FormatError here would be a reader bug: not an SnnError
    net = SpikingNetwork(program)
    sizes = [int(np.prod(n.shape)) for n in program.nodes] + [
        int(np.prod(s.shape)) for s in program.inputs]
    if sum(sizes) > 1 << 20:
        return "accepted (too big to run)"
    rng = np.random.default_rng(0)
    feeds = {s.name: rng.random((2, *s.shape), dtype=np.float32) for s in program.inputs}
    with np.errstate(all="ignore"):
        net.run(feeds if len(feeds) > 1 else next(iter(feeds.values())), 3)
        net.step(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    return "accepted"


# --------------------------------------------------------------------------------------------
# Target: ONNX models
# --------------------------------------------------------------------------------------------


def base_onnx() -> bytes:
    """A small CNN in the shapes exporters produce: BN, residual Add, view-style flatten."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(5)

    def tensor(name, array):
        array = np.asarray(array)
        return numpy_helper.from_array(
            array.astype(np.float32 if array.dtype.kind == "f" else np.int64), name)

    def make(op, inputs, outputs, **attrs):
        return helper.make_node(op, inputs, outputs, name=f"{op}_{outputs[0]}", **attrs)

    nodes = [
        make("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        make("BatchNormalization", ["c1", "s", "t", "m", "v"], ["n1"], epsilon=1e-5),
        make("Relu", ["n1"], ["r1"]),
        make("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        make("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        make("Add", ["c2", "p1"], ["a2"]),
        make("Relu", ["a2"], ["r2"]),
        make("Dropout", ["r2"], ["d2"]),
        make("Shape", ["d2"], ["shape"]),
        make("Constant", [], ["zero"], value=helper.make_tensor("zv", 7, [], [0])),
        make("Gather", ["shape", "zero"], ["batch"], axis=0),
        make("Unsqueeze", ["batch", "axes"], ["batch1"]),
        make("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        make("Reshape", ["d2", "target"], ["flat"]),
        make("Gemm", ["flat", "fw", "fb"], ["g"], transB=1),
        make("Identity", ["g"], ["y"]),
    ]
    weights = [
        tensor("w1", rng.normal(0, 0.4, (4, 1, 3, 3))), tensor("b1", rng.normal(0, 0.1, 4)),
        tensor("s", rng.uniform(0.5, 1.5, 4)), tensor("t", rng.normal(0, 0.1, 4)),
        tensor("m", rng.normal(0, 0.1, 4)), tensor("v", rng.uniform(0.5, 1.5, 4)),
        tensor("w2", rng.normal(0, 0.3, (4, 4, 3, 3))), tensor("b2", rng.normal(0, 0.1, 4)),
        tensor("axes", [0]), tensor("minus_one", [-1]),
        tensor("fw", rng.normal(0, 0.3, (5, 64))), tensor("fb", rng.normal(0, 0.1, 5)),
    ]
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])], weights)
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8, producer_name="fuzz")
    return model.SerializeToString()


_OPS = ("Relu", "Conv", "Gemm", "MatMul", "Add", "Mul", "Sub", "Div", "MaxPool",
        "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Identity", "Dropout",
        "BatchNormalization", "Concat", "Transpose", "Softmax", "Sigmoid", "LeakyRelu", "Clip",
        "Pad", "Resize", "ReduceMean", "QLinearConv", "QuantizeLinear", "DequantizeLinear",
        "MatMulInteger", "ConvInteger", "Cast", "Loop", "If", "Scan", "NoSuchOp", "Constant",
        "Shape", "Gather", "Unsqueeze", "Squeeze", "Slice", "Split", "Expand", "Tile", "Where",
        "Einsum", "LSTM", "NonZero", "TopK", "Range", "ConstantOfShape", "Size")
_TYPES = (1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 16, 0, 99)  # float, u8, i8, i16, i32, i64, string,
# bool, float16, double, bfloat16, undefined, unknown
_LOCATIONS = ("w.bin", "link.bin", "../secret.bin", "sub/../../secret.bin", "..\\secret.bin",
              "SECRET", "/etc/passwd", "/dev/zero", "C:\\secret.bin", "", ".", "case",
              "w.bin\x00x", "missing.bin", "//etc/passwd", "/proc/self/environ")
_DIMS = (0, 1, 2, 3, 4, 5, 8, 64, -1, -5, 2**31, 2**62)


def _random_value(rng, model):
    from onnx import helper

    names = [t for n in model.graph.node for t in n.output] + [i.name for i in model.graph.input]
    kind = rng.choice(("int", "ints", "float", "string", "tensor", "graph", "floats"))
    if kind == "int":
        return rng.choice(_DIMS)
    if kind == "ints":
        return [rng.choice(_DIMS) for _ in range(rng.choice((0, 1, 2, 4, 7)))]
    if kind == "float":
        return rng.choice((0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf")))
    if kind == "floats":
        return [rng.choice((0.0, 2.0, -1.0)) for _ in range(rng.randint(0, 4))]
    if kind == "string":
        return rng.choice(("", "NOTSET", "SAME_UPPER", "x" * 300, "\x1b[31m"))
    if kind == "tensor":
        return helper.make_tensor("t", rng.choice((1, 7, 10, 11)), [2], [1, 2])
    body_in = rng.choice(names) if names else "x"
    node = helper.make_node(rng.choice(("Relu", "Identity", "Add")), [body_in], ["body_out"])
    return helper.make_graph([node], "sub", [], [helper.make_tensor_value_info(
        "body_out", 1, None)])


def mutate_model(rng: random.Random, model, layout: Layout | None) -> None:
    """One structural edit of a ModelProto, in place."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    names = [t for n in graph.node for t in n.output] + [t.name for t in graph.initializer]
    action = rng.choice(("op", "domain", "input", "output", "delete", "duplicate", "reorder",
                         "attribute", "attribute", "initializer", "initializer", "external",
                         "io_type", "io_shape", "value_info", "opset", "ir", "strings",
                         "sparse", "function"))
    node = graph.node[rng.randrange(len(graph.node))] if graph.node else None
    if node is None:
        action = rng.choice(("opset", "ir", "initializer"))
    if action == "op":
        node.op_type = rng.choice(_OPS)
    elif action == "domain":
        node.domain = rng.choice(("com.microsoft", "snncompiler", "custom", "ai.onnx.ml", ""))
    elif action == "input":
        choice = rng.choice((*names, "ghost", "", "x"))
        if node.input and rng.random() < 0.7:
            node.input[rng.randrange(len(node.input))] = choice
        elif rng.random() < 0.5:
            node.input.append(choice)
        elif node.input:
            del node.input[-1]
    elif action == "output":
        if node.output:
            node.output[rng.randrange(len(node.output))] = rng.choice((*names, "y", "x", "new"))
        if rng.random() < 0.3:
            node.output.append("extra_out")
    elif action == "delete":
        graph.node.remove(node)
    elif action == "duplicate":
        graph.node.insert(rng.randrange(len(graph.node) + 1), copy.deepcopy(node))
    elif action == "reorder":
        nodes = list(graph.node)
        rng.shuffle(nodes)
        del graph.node[:]
        graph.node.extend(nodes)
    elif action == "attribute":
        if node.attribute and rng.random() < 0.3:
            del node.attribute[rng.randrange(len(node.attribute))]
        else:
            key = rng.choice(("kernel_shape", "pads", "strides", "dilations", "group", "axis",
                              "transB", "alpha", "epsilon", "auto_pad", "ceil_mode", "perm",
                              "to", "then_branch", "body", "value", "allowzero", "mode"))
            kept = [a for a in node.attribute if a.name != key]
            del node.attribute[:]
            node.attribute.extend(kept)
            value = _random_value(rng, model)
            kind = onnx.AttributeProto.INTS if isinstance(value, list) and not value else None
            node.attribute.append(helper.make_attribute(key, value, attr_type=kind))
    elif action in ("initializer", "external") and graph.initializer:
        _mutate_tensor(rng, graph, layout, external=action == "external")
    elif action == "io_type":
        value = rng.choice(list(graph.input) + list(graph.output))
        value.type.tensor_type.elem_type = rng.choice(_TYPES)
    elif action == "io_shape":
        value = rng.choice(list(graph.input) + list(graph.output))
        dims = value.type.tensor_type.shape.dim
        kind = rng.choice(("value", "param", "clear", "add", "drop"))
        if kind == "value" and dims:
            dims[rng.randrange(len(dims))].dim_value = rng.choice(_DIMS[:8])
        elif kind == "param" and dims:
            dims[rng.randrange(len(dims))].dim_param = rng.choice(("N", "H", "", "batch"))
        elif kind == "clear":
            value.type.tensor_type.ClearField("shape")
        elif kind == "add":
            dims.add().dim_value = rng.choice((1, 2, 3))
        elif dims:
            del dims[-1]
    elif action == "value_info":
        shape = [rng.choice((1, 2, 3, 8, "N")) for _ in range(rng.randint(0, 4))]
        graph.value_info.append(helper.make_tensor_value_info(
            rng.choice((*names, "nothing")), rng.choice(_TYPES[:11]), shape))
    elif action == "opset":
        entry = model.opset_import[0] if model.opset_import else model.opset_import.add()
        kind = rng.choice(("version", "domain", "drop", "add"))
        if kind == "version":
            entry.version = rng.choice((1, 6, 7, 9, 11, 13, 15, 16, 17, 18, 19, 21, 23, 99, 0,
                                        -1))
        elif kind == "domain":
            entry.domain = rng.choice(("ai.onnx", "custom", "com.microsoft"))
        elif kind == "drop":
            del model.opset_import[0]
        else:
            model.opset_import.append(helper.make_opsetid(rng.choice(("custom", "")), 1))
    elif action == "ir":
        model.ir_version = rng.choice((0, 1, 3, 4, 7, 8, 9, 10, 11, 99, -1))
    elif action == "strings":
        text = rng.choice(("\x1b[2J\x1b[31mred", "\n\nTraceback", "x" * 10000, "\x00"))
        target = rng.choice(("node", "graph", "producer", "doc"))
        if target == "node" and node is not None:
            node.name = text
        elif target == "graph":
            graph.name = text
        elif target == "producer":
            model.producer_name = text
        else:
            model.doc_string = text
    elif action == "sparse":
        values = helper.make_tensor("sv", TensorProto.FLOAT, [2], [1.0, 2.0])
        indices = helper.make_tensor("si", TensorProto.INT64, [2], [0, rng.choice((1, 9, -1))])
        sparse = helper.make_sparse_tensor(values, indices, [rng.choice((4, 1, 0))])
        graph.sparse_initializer.append(sparse)
        if node is not None and rng.random() < 0.5:
            node.input.append("sv")
    elif action == "function":
        body = [helper.make_node("Relu", ["fx"], ["fy"])]
        function = helper.make_function("local", "Act", ["fx"], ["fy"], body,
                                        [helper.make_opsetid("", rng.choice((17, 13, 1)))])
        model.functions.append(function)
        model.opset_import.append(helper.make_opsetid("local", 1))
        if node is not None:
            node.op_type, node.domain = "Act", "local"


def _mutate_tensor(rng, graph, layout, *, external: bool) -> None:
    """Edits one initializer: type, dims, data, name, external location; or drops or
    duplicates it (missing weights, doubly defined names)."""
    from onnx import TensorProto

    index = rng.randrange(len(graph.initializer))
    tensor = graph.initializer[index]
    if external:
        location = rng.choice(_LOCATIONS)
        if location == "SECRET" and layout is not None:
            location = str(layout.secret)
        for name in ("raw_data", "float_data", "int64_data"):
            tensor.ClearField(name)
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.add(key="location", value=location)
        for key in ("offset", "length"):
            if rng.random() < 0.4:
                value = rng.choice(("0", "4", "-1", "99999999", "abc", "1e3", ""))
                tensor.external_data.add(key=key, value=value)
        return
    kind = rng.choice(("type", "dims", "raw", "float_data", "name", "delete", "duplicate",
                       "segment"))
    if kind == "type":
        tensor.data_type = rng.choice(_TYPES)
    elif kind == "dims":
        if tensor.dims and rng.random() < 0.7:
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(_DIMS)
        else:
            tensor.dims.append(rng.choice((1, 2, 0)))
    elif kind == "raw":
        raw = tensor.raw_data
        tensor.raw_data = raw[:rng.randrange(len(raw) + 1)] if rng.random() < 0.6 else raw * 2
    elif kind == "float_data":
        tensor.ClearField("raw_data")
        tensor.float_data.extend([1.0] * rng.choice((0, 1, 3)))
    elif kind == "name":
        tensor.name = rng.choice(("ghost", "x", "y", "w1", ""))
    elif kind == "segment":
        tensor.segment.begin, tensor.segment.end = 0, rng.choice((1, 10**9))
    elif kind == "delete":
        del graph.initializer[index]
    else:
        graph.initializer.append(copy.deepcopy(tensor))


def _onnx_proto(rng, data, layout):
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(data)
    for _ in range(rng.randint(1, 3)):
        mutate_model(rng, model, layout)
    return model.SerializeToString()


def _onnx_bytes(rng, data, layout):
    return mutate_bytes(rng, data)


def _onnx_missing(rng, data, layout):
    """Drops initializers, graph inputs or whole nodes: missing weights and dangling inputs."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(data)
    graph = model.graph
    what = rng.choice(("initializer", "input", "node", "all_initializers"))
    if what == "initializer":
        del graph.initializer[rng.randrange(len(graph.initializer))]
    elif what == "input":
        del graph.input[:]
    elif what == "node":
        del graph.node[rng.randrange(len(graph.node))]
    else:
        del graph.initializer[:]
    return model.SerializeToString()


def check_onnx(path: Path) -> str:
    """Loads, imports and dry-run converts a model (what ``snnc inspect`` does)."""
    import onnx

    from snncompiler import frontend
    from snncompiler.context import CompileConfig
    from snncompiler.pipeline import check_convertible

    model = frontend.load_model(path)
    for tensor in frontend._all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise AssertionError(f"tensor {tensor.name!r} still refers to external data "
                                 "after loading: onnxruntime would resolve it from the cwd")
    graph = frontend.import_graph(model)
    check_convertible(graph, CompileConfig(progress=False))
    return "accepted"


# --------------------------------------------------------------------------------------------
# Target: .npz data
# --------------------------------------------------------------------------------------------

NPZ_SAMPLE = (1, 4, 4)
NPZ_CLASSES = 5


def npz_of(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    """What ``np.savez`` writes, with fixed timestamps (so that a case replays exactly)."""
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    entries = [(f"{name}.npy", npy_of(array, allow_pickle=array.dtype.hasobject))
               for name, array in arrays.items()]
    return rezip(entries, dict.fromkeys(range(len(entries)), method))


def base_npz() -> bytes:
    rng = np.random.default_rng(3)
    return npz_of({"x": rng.random((6, *NPZ_SAMPLE), dtype=np.float32),
                   "y": rng.integers(0, NPZ_CLASSES, 6)})


def _npz_bytes(rng, data, layout):
    return mutate_bytes(rng, data, zip_hot_spots(data))


def _npz_entry(rng, data, layout):
    entries = unzip(data)
    i = rng.randrange(len(entries))
    if rng.random() < 0.5:
        entries[i] = (entries[i][0], mutate_npy(rng, entries[i][1]))
    else:
        entries[i] = (entries[i][0], mutate_bytes(rng, entries[i][1]))
    return rezip(entries, dict.fromkeys(range(len(entries)), zipfile.ZIP_STORED))


def _npz_archive(rng, data, layout):
    return mutate_archive(rng, data, ("x.npy", "y.npy"))


def _npz_arrays(rng, data, layout):
    """Well-formed files holding the wrong arrays: dtypes, shapes, values, labels."""
    x = np.random.default_rng(1).random((6, *NPZ_SAMPLE))
    y = np.arange(6) % NPZ_CLASSES
    arrays = {}
    kind = rng.choice(("x_dtype", "x_shape", "x_values", "y", "names", "other"))
    if kind == "x_dtype":
        dtype = rng.choice((np.float16, np.float64, np.int8, np.uint8, np.uint64, np.bool_,
                            np.complex64, ">f4", "<U3", "V4", np.int64))
        arrays = {"x": (x * 300).astype(dtype), "y": y}
    elif kind == "x_shape":
        shape = rng.choice(((0, *NPZ_SAMPLE), (6,), (6, 4, 4), (), (6, 1, 4, 4, 1),
                            (6, 4, 4, 1), (1, *NPZ_SAMPLE), (6, 1, 4, 5)))
        arrays = {"x": np.zeros(shape, np.float32), "y": y[:shape[0]] if shape else y}
    elif kind == "x_values":
        x = x.astype(np.float32)
        x.flat[rng.randrange(x.size)] = rng.choice((np.nan, np.inf, -np.inf))
        arrays = {"x": x, "y": y}
    elif kind == "y":
        arrays = {"x": x.astype(np.float32), "y": rng.choice((
            y.astype(np.float32), np.full(6, 2**64 - 1, np.uint64), -y - 1, y.astype(bool),
            y.reshape(6, 1), y[:3], y + NPZ_CLASSES, np.full(6, 2**63 - 1), np.array([], int),
            y.astype(np.int8), y.astype("<U2"), np.full(6, NPZ_CLASSES - 1)))}
    elif kind == "names":
        arrays = {rng.choice(("X", "data", "y", "x ")): x.astype(np.float32)}
    else:
        arrays = {"x": x.astype(np.float32), "y": y, "extra": np.zeros(2)}
    return npz_of(arrays, compressed=rng.random() < 0.5)


def check_npz(path: Path) -> str:
    """Loads data as ``snnc eval`` does (float as is, and uint8 with preprocessing) and checks
    it against a (1, 4, 4) -> 5 classes model; refused only if both ways are refused."""
    from snncompiler.errors import InputError
    from snncompiler.npz import Preprocessing, check_input_shape, check_labels, load_npz

    refusal = None
    for preprocessing in (Preprocessing(), Preprocessing(1 / 255, 0.5, 0.25)):
        try:
            dataset = load_npz(path, preprocessing, limit=5)
            check_input_shape(dataset, "x", NPZ_SAMPLE)
            check_labels(dataset, NPZ_CLASSES)
        except InputError as error:
            refusal = error
            continue
        assert dataset.x.dtype == np.float32 and np.isfinite(dataset.x).all()
        assert dataset.y is None or dataset.y.dtype == np.int64
        return "accepted"
    raise refusal


# --------------------------------------------------------------------------------------------
# Targets and cases
# --------------------------------------------------------------------------------------------

Mutator = Callable[[random.Random, bytes, Layout], bytes]


@dataclass(frozen=True)
class Target:
    name: str
    file_name: str
    base: Callable[[], bytes]
    mutators: dict[str, Mutator]
    check: Callable[[Path], str]


TARGETS = {
    "snn": Target("snn", "model.snn", base_snn, {
        "bytes": _snn_bytes, "entry": _snn_entry, "header": _snn_header, "header2": _snn_header,
        "npy": _snn_npy, "archive": _snn_archive}, check_snn),
    "onnx": Target("onnx", "model.onnx", base_onnx, {
        "bytes": _onnx_bytes, "proto": _onnx_proto, "proto2": _onnx_proto,
        "missing": _onnx_missing}, check_onnx),
    "npz": Target("npz", "data.npz", base_npz, {
        "bytes": _npz_bytes, "entry": _npz_entry, "archive": _npz_archive,
        "arrays": _npz_arrays}, check_npz),
}


class Crash(Exception):
    """A case ended in something other than a clean load or an SnnError."""


def run_case(target: Target, data: bytes, layout: Layout) -> str:
    """Writes ``data`` into the layout and loads it.

    Returns:
        ``"accepted"`` (or a variant) or ``"refused: <SnnError subclass>"``.

    Raises:
        Exception: Anything the loader raised that is not an SnnError (the crash itself).
        ForbiddenRead: The loader opened a planted file outside the folder.
        Crash: The file ran code (``PWNED`` appeared).
    """
    from snncompiler.errors import SnnError

    path = layout.folder / target.file_name
    path.write_bytes(data)
    pwned = layout.folder / PWNED
    pwned.unlink(missing_ok=True)
    cwd = os.getcwd()
    os.chdir(layout.folder)  # planted pickles write relative to the working folder
    try:
        with watching(layout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = target.check(path)
    except SnnError as error:
        outcome = f"refused: {type(error).__name__}"
        if not str(error).isprintable():
            # Several lines (the converter lists every unsupported node) or characters from
            # the file; the command line escapes them into one line, a library caller
            # prints them as they are. Counted, not a crash.
            outcome += " (message not one printable line)"
    finally:
        os.chdir(cwd)
    if pwned.exists():
        raise Crash("loading the file ran code: it created PWNED")
    return outcome


def make_case(target: Target, base: bytes, seed: int, index: int,
              layout: Layout) -> tuple[str, bytes]:
    """The mutator name and the bytes of case ``index``: a pure function of its arguments."""
    rng = random.Random(f"{target.name}:{seed}:{index}")
    name = rng.choice(sorted(target.mutators))
    data = target.mutators[name](rng, base, layout)
    if rng.random() < 0.15:  # now and then, raw damage on top of a structured mutation
        data = mutate_bytes(rng, data)
    return name, data


# --------------------------------------------------------------------------------------------
# Worker process and campaign
# --------------------------------------------------------------------------------------------


def _worker(conn, target_name: str, seed: int, root: str, memory_gib: float) -> None:
    import resource

    # A cap on the address space turns a runaway allocation into a MemoryError (a crash
    # on record) instead of the machine swapping or the OOM killer picking a victim.
    limit = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import onnxruntime
    from onnx_graphsurgeon.logger import G_LOGGER

    G_LOGGER.severity = G_LOGGER.ERROR  # what failed is in the outcome; keep the log readable
    onnxruntime.set_default_logger_severity(4)
    target = TARGETS[target_name]
    layout = Layout.create(Path(root))
    base = target.base()
    outcome = run_case(target, base, layout)
    if not outcome.startswith("accepted"):
        raise RuntimeError(f"the unmutated {target_name} file is refused: {outcome}")
    conn.send("ready")
    while True:
        index = conn.recv()
        if index is None:
            return
        try:
            mutator, data = make_case(target, base, seed, index, layout)
        except Exception as error:  # a bug of the harness, not of the loader: say so
            conn.send(("?", "harness", f"{type(error).__name__}: {error}",
                       traceback.format_exc()))
            continue
        try:
            outcome = ("ok", run_case(target, data, layout), "")
        except (Exception, ForbiddenRead) as error:
            outcome = ("crash", f"{type(error).__name__}: {_one_line(str(error))}",
                       traceback.format_exc(limit=12))
        conn.send((mutator, *outcome))


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass
class Summary:
    target: str
    seed: int
    seconds: float = 0.0
    cases: int = 0
    by_mutator: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    crashes: list = field(default_factory=list)  # (index, mutator, what)
    restarts: int = 0


def campaign(target_name: str, seconds: float, seed: int, root: Path, crash_dir: Path,
             case_timeout: float = 60.0, memory_gib: float = 6.0, echo=print) -> Summary:
    """Runs cases 0, 1, 2, ... of a target in a worker process for ``seconds``.

    A case that raises anything but an SnnError, kills the worker or outlives
    ``case_timeout`` is a crash: its bytes go to ``crash_dir`` and its traceback (if any)
    next to them.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    summary = Summary(target_name, seed)
    target = TARGETS[target_name]
    base = target.base()
    # The worker's layout, rebuilt here without touching it: same paths, so same cases.
    layout = Layout(root / "case", root / "secret.bin")
    process = conn = None

    def launch():
        parent, child = context.Pipe()
        worker = context.Process(target=_worker, daemon=True,
                                 args=(child, target_name, seed, str(root), memory_gib))
        worker.start()
        if not parent.poll(600) or parent.recv() != "ready":
            raise RuntimeError(f"the {target_name} worker did not start")
        return worker, parent

    start = time.monotonic()
    index = 0
    try:
        while time.monotonic() - start < seconds:
            if process is None:
                process, conn = launch()
            conn.send(index)
            answer = None
            if conn.poll(case_timeout):
                with contextlib.suppress(EOFError):
                    answer = conn.recv()
            if answer is None:  # the worker died or hangs: end it, start a fresh one
                alive = process.is_alive()
                process.kill()
                process.join(10)
                what = (f"hang: no answer within {case_timeout:.0f} s" if alive
                        else f"worker died (exit code {process.exitcode})")
                process = None
                summary.restarts += 1
                answer = (make_case(target, base, seed, index, layout)[0], "crash", what, "")
            mutator, status, what, trace = answer
            if status == "harness":
                raise RuntimeError(f"mutator failed on case {index}: {what}\n{trace}")
            summary.cases += 1
            summary.by_mutator[mutator] += 1
            if status == "ok":
                summary.outcomes[what] += 1
            else:
                summary.outcomes["CRASH " + what.split(":")[0]] += 1
                summary.crashes.append((index, mutator, what))
                crash_dir.mkdir(parents=True, exist_ok=True)
                stem = crash_dir / f"{target_name}-{seed}-{index}"
                stem.with_suffix(".bin").write_bytes(
                    make_case(target, base, seed, index, layout)[1])
                stem.with_suffix(".txt").write_text(f"{what}\n\n{trace}")
                echo(f"  CRASH {target_name}:{seed}:{index} ({mutator}): {what}")
            index += 1
            if index % 500 == 0:
                echo(f"  {target_name}: {index} cases, {len(summary.crashes)} crashes, "
                     f"{time.monotonic() - start:.0f} s")
    finally:
        if process is not None and process.is_alive():
            conn.send(None)
            process.join(10)
            if process.is_alive():
                process.kill()
    summary.seconds = time.monotonic() - start
    return summary


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib import metadata

    names = ("numpy", "numba", "onnx", "onnxruntime", "onnx-graphsurgeon", "protobuf")
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _machine() -> str:
    from snncompiler.machine import cpu_name

    return f"{platform.system()} {platform.release()}, {cpu_name()}, {os.cpu_count()} CPUs"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def report(summaries: list[Summary], command: str) -> str:
    """The markdown report: machine, versions, figures per target, every crash."""
    lines = [
        "# Fuzz campaign",
        "",
        "Mutated `.snn`, ONNX and `.npz` files fed to the loaders by `tools/fuzz_campaign.py` "
        "(mutators: raw bytes, zip entries and directory records, the JSON header, npy "
        "headers, protobuf fields, external-data locations, arrays). A crash is anything "
        "but a clean load (which must then validate and run, or pass the data checks) or an "
        "`SnnError` with a one-line message: another exception, a dead or hung worker, a "
        "read of a planted file outside the model's folder, or code run from a planted "
        "pickle.",
        "",
        f"- machine: {_machine()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
        f"- commit: {_commit()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- rerun: `{command}`",
        "- replay one case: `python tools/fuzz_campaign.py --replay TARGET:SEED:INDEX`",
        "",
        "| target | seed | duration | cases tried | cases/s | unique exception types "
        "| crashes |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(f"| {s.target} | {s.seed} | {s.seconds:.0f} s | {s.cases} | "
                     f"{s.cases / max(s.seconds, 1e-9):.1f} | {len(_exception_types(s))} | "
                     f"{len(s.crashes)} |")
    for s in summaries:
        mutators = ", ".join(f"{k} {v}" for k, v in sorted(s.by_mutator.items()))
        lines += ["", f"## {s.target}", "", f"Cases per mutator: {mutators}.", "",
                  "| outcome | cases |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in s.outcomes.most_common()]
        lines += ["", f"Exception types seen: {', '.join(_exception_types(s)) or 'none'}.",
                  f"Crashes: {len(s.crashes)}; worker restarts: {s.restarts}."]
        lines += [f"- `{s.target}:{s.seed}:{index}` ({mutator}): {what}"
                  for index, mutator, what in s.crashes[:30]]
    return "\n".join(lines) + "\n"


def _exception_types(summary: Summary) -> list[str]:
    refused = {k.split()[1] for k in summary.outcomes if k.startswith("refused: ")}
    crashed = {what.split(":")[0] for _, _, what in summary.crashes}
    return sorted(refused | crashed)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def replay(spec: str) -> int:
    """Reruns one case in this process and prints its outcome or traceback."""
    import tempfile

    name, seed, index = spec.split(":")
    target = TARGETS[name]
    with tempfile.TemporaryDirectory() as root:
        layout = Layout.create(Path(root))
        mutator, data = make_case(target, target.base(), int(seed), int(index), layout)
        print(f"case {spec}: mutator {mutator}, {len(data)} bytes")
        try:
            print(run_case(target, data, layout))
        except (Exception, ForbiddenRead):
            traceback.print_exc()
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="snn,onnx,npz")
    parser.add_argument("--seconds", type=float, default=600, help="per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, help="write the markdown report here")
    parser.add_argument("--crash-dir", type=Path, default=Path("/tmp/snnc-fuzz-crashes"))
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--memory-gib", type=float, default=6.0,
                        help="address-space cap of the worker process")
    parser.add_argument("--replay", metavar="TARGET:SEED:INDEX")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    import tempfile

    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {sorted(TARGETS)}")
    summaries = []
    for name in names:
        print(f"{name}: fuzzing for {args.seconds:.0f} s with seed {args.seed}", flush=True)
        with tempfile.TemporaryDirectory(dir=args.work_dir) as root:
            summary = campaign(name, args.seconds, args.seed, Path(root), args.crash_dir,
                               memory_gib=args.memory_gib,
                               echo=lambda line: print(line, flush=True))
        summaries.append(summary)
        print(f"{name}: {summary.cases} cases in {summary.seconds:.0f} s, "
              f"{len(summary.crashes)} crashes", flush=True)
    command = (f"python tools/fuzz_campaign.py --targets {','.join(names)} "
               f"--seconds {args.seconds:g} --seed {args.seed}"
               + (f" --report {args.report}" if args.report else ""))
    text = report(summaries, command)
    if args.report:
        # A hand-written "## Notes" section at the end of an earlier report is kept.
        with contextlib.suppress(OSError):
            previous = args.report.read_text()
            if NOTES in previous:
                text += "\n" + previous[previous.index(NOTES):]
        from snncompiler.files import write_text_atomically

        args.report.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(args.report, text)
    print(text)
    return 1 if any(s.crashes for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
