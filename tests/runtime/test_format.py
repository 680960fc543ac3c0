"""The ``.snn`` reader and writer: round trips, atomic writes, and hostile files.

Hostile files are crafted with :mod:`zipfile` (or by patching the bytes of a valid file),
and each is refused with a :class:`FormatError` naming the field or entry at fault.
Programs that are well-formed zips but invalid programs are written by
:func:`_write_unchecked`, which skips the writer's validation, so the same broken program
is checked through both doors: ``load_program`` (``header.`` paths) and ``save_program``
(``program.`` paths).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snncompiler.runtime import format as fmt
from snncompiler.runtime.errors import FormatError, InputError
from snncompiler.runtime.format import (
    FORMAT_VERSION,
    MAGIC,
    ReadLimits,
    load_program,
    save_program,
    validate_program,
)
from snncompiler.runtime.graph import Node, Program, TensorSpec
from snncompiler.runtime.opset import OPS

GOLDEN = Path(__file__).parent / "golden"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def every_op_program() -> Program:
    """One node of every op; the indices below are used in the expected messages.

    0 conv, 1 affine, 2 snm, 3 maxpool, 4 avgpool, 5 global_avgpool, 6 add, 7 reshape,
    8 gemm. Input x (2, 6, 6) -> output y (3,); calibrated for T in {4, 8}.
    """
    rng = np.random.default_rng(7)

    def values(*shape):
        return rng.normal(0, 0.5, shape).astype(np.float32)

    theta = rng.uniform(0.5, 1.5, (2, 4)).astype(np.float32)
    nodes = [
        Node("conv", "conv", ("x",), "c",
             {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
             {"weight": values(4, 2, 3, 3), "bias": values(4)}, (4, 6, 6)),
        Node("bn", "affine", ("c",), "b", {},
             {"scale": values(4, 1, 1), "shift": values(4, 1, 1)}, (4, 6, 6)),
        Node("sn", "snm", ("b",), "s", {"theta_neg": "zero", "max_spikes_per_step": 1},
             {"theta": theta, "v0": theta / 2}, (4, 6, 6)),
        Node("mp", "maxpool", ("s",), "m",
             {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "dilations": [1, 1]}, {}, (4, 3, 3)),
        Node("ap", "avgpool", ("s",), "a",
             {"kernel": [3, 3], "strides": [3, 3], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "count_include_pad": 1}, {}, (4, 2, 2)),
        Node("gap", "global_avgpool", ("m",), "g", {}, {}, (4, 1, 1)),
        Node("skip", "add", ("a", "g"), "r", {}, {}, (4, 2, 2)),
        Node("flat", "reshape", ("r",), "f", {"shape": [16]}, {}, (16,)),
        Node("fc", "gemm", ("f",), "y", {}, {"weight": values(16, 3), "bias": values(3)}, (3,)),
        # Ops of issue 4, after the nine above so that their indices stay.
        Node("clip", "snm_clip", ("b",), "sc",
             {"theta_neg": "zero", "max_spikes_per_step": 1, "upper": 1.0},
             {"theta": theta, "v0": theta / 2}, (4, 6, 6)),
        Node("leaky", "snm_leaky", ("b",), "sl", {"theta_neg": "zero", "max_spikes_per_step": 1},
             {"theta": theta, "v0": theta / 2, "slope": values(4)}, (4, 6, 6)),
        Node("cat", "concat", ("sc", "sl"), "cc", {"axis": 0}, {}, (8, 6, 6)),
        Node("tr", "transpose", ("cc",), "tt", {"perm": [1, 2, 0]}, {}, (6, 6, 8)),
        Node("pd", "pad", ("tt",), "pp", {"pads": [1, 0, 0, 0, -1, 0], "mode": "constant",
                                         "value": 0.5}, {}, (7, 5, 8)),
        Node("rs", "resize", ("s",), "rz", {},
             {"rows": np.repeat(np.eye(6, dtype=np.float32), 2, axis=0),
              "cols": np.full((3, 6), 1 / 6, np.float32)}, (4, 12, 3)),
        Node("rd", "reduce", ("rz",), "rr", {"mode": "mean", "axes": [1, 2], "keepdims": 0}, {},
             (4,)),
        Node("an", "analog", ("rr",), "aa", {"function": "softmax", "axis": 0, "alpha": 0.0,
                                             "beta": 0.0, "bias": 0.0, "size": 1}, {}, (4,)),
    ]
    return Program([TensorSpec("x", (2, 6, 6))], [TensorSpec("y", (3,))], nodes, [4, 8], 4,
                   producer="test", calibration={"method": "dni", "percentile": 99.5},
                   metadata={"source": "every_op", "readout": ["y"], "note": None})


def assert_programs_equal(got: Program, want: Program) -> None:
    assert got.inputs == want.inputs
    assert got.outputs == want.outputs
    assert (got.timesteps, got.default_timesteps) == (want.timesteps, want.default_timesteps)
    assert (got.producer, got.calibration, got.metadata) == (
        want.producer, want.calibration, want.metadata)
    assert len(got.nodes) == len(want.nodes)
    for a, b in zip(got.nodes, want.nodes):
        assert (a.name, a.op, tuple(a.inputs), a.output, a.attrs, tuple(a.shape)) == (
            b.name, b.op, tuple(b.inputs), b.output, b.attrs, tuple(b.shape))
        assert sorted(a.arrays) == sorted(b.arrays)
        for key in a.arrays:
            assert a.arrays[key].dtype == b.arrays[key].dtype
            np.testing.assert_array_equal(a.arrays[key], b.arrays[key])


def entries_of(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def pack(path: Path, entries, compression=zipfile.ZIP_DEFLATED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate names we want
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return path


def npy_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, **options)
    return buffer.getvalue()


@pytest.fixture
def valid(tmp_path) -> Path:
    path = tmp_path / "valid.snn"
    save_program(every_op_program(), path)
    return path


def craft(tmp_path: Path, valid: Path, header=None, entries=None, **pack_options) -> Path:
    """A copy of ``valid`` with ``header(dict)`` and ``entries(list)`` applied in place."""
    items = entries_of(valid)
    if header is not None:
        parsed = json.loads(dict(items)["header.json"])
        header(parsed)
        items = [(name, json.dumps(parsed).encode() if name == "header.json" else data)
                 for name, data in items]
    if entries is not None:
        entries(items)
    return pack(tmp_path / "crafted.snn", items, **pack_options)


def write_unchecked(program: Program, path: Path) -> Path:
    """Writes ``program`` as the writer would, minus validation, to test the reader's."""
    header, arrays = fmt._header(program)
    sizes = [fmt._npy_size(array) for array in arrays]
    with open(path, "wb") as fp:
        fmt._write_archive(fp, fmt._dump_header(header).encode(), arrays, sizes)
    return path


def central_records(data: bytes) -> dict[str, int]:
    """Offsets of each entry's central-directory record, by name."""
    offset = struct.unpack_from("<L", data, len(data) - 6)[0]  # EOCD: directory offset
    records = {}
    while data[offset:offset + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, offset + 28)
        records[data[offset + 46:offset + 46 + name_len].decode()] = offset
        offset += 46 + name_len + extra_len + comment_len
    return records


def patch(path: Path, at: int, fmt_: str, value) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt_, data, at, value)
    path.write_bytes(bytes(data))
    return path


def patch_central(path: Path, name: str, field: str, value: int) -> Path:
    """Overwrites one field of ``name``'s central-directory record (what zipfile trusts)."""
    offsets = {"flags": (8, "<H"), "method": (10, "<H"), "crc": (16, "<L"),
               "compressed": (20, "<L"), "size": (24, "<L"), "local_offset": (42, "<L")}
    at, code = offsets[field]
    return patch(path, central_records(path.read_bytes())[name] + at, code, value)


# ---------------------------------------------------------------------------------------------
# Round trips and the writer
# ---------------------------------------------------------------------------------------------


def test_round_trip_every_op(tmp_path):
    program = every_op_program()
    assert {node.op for node in program.nodes} == set(OPS), "add the new op to this program"
    save_program(program, tmp_path / "m.snn")
    loaded = load_program(tmp_path / "m.snn")
    assert_programs_equal(loaded, program)
    for node in loaded.nodes:
        for array in node.arrays.values():
            assert array.flags.c_contiguous and array.flags.writeable
            assert array.dtype.byteorder in ("=", "<")


def test_validate_program_accepts_built_programs():
    validate_program(every_op_program())
    validate_program(_golden_builder()())


def test_header_layout(valid):
    names = [name for name, _ in entries_of(valid)]
    header = json.loads(dict(entries_of(valid))["header.json"])
    assert header["magic"] == MAGIC and header["format_version"] == FORMAT_VERSION
    files = [ref["file"] for node in header["nodes"] for _, ref in sorted(node["arrays"].items())]
    assert files == [f"arrays/{i}.npy" for i in range(len(files))]
    assert names == ["header.json", *files]
    conv = header["nodes"][0]["arrays"]
    assert conv["weight"] == {"file": "arrays/1.npy", "shape": [4, 2, 3, 3], "dtype": "float32"}


def test_save_is_deterministic(tmp_path):
    program = every_op_program()
    save_program(program, tmp_path / "a.snn")
    # Same program, arrays inserted in another order: still the same bytes.
    for node in program.nodes:
        node.arrays = dict(reversed(list(node.arrays.items())))
    save_program(program, tmp_path / "b.snn")
    assert (tmp_path / "a.snn").read_bytes() == (tmp_path / "b.snn").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.snn") as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_writer_normalises_array_layout(tmp_path):
    program = every_op_program()
    fc = program.nodes[8]
    fc.arrays["weight"] = np.asfortranarray(fc.arrays["weight"])
    save_program(program, tmp_path / "m.snn")
    with zipfile.ZipFile(tmp_path / "m.snn") as archive, archive.open("arrays/7.npy") as f:
        np.lib.format.read_magic(f)
        _, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    assert not fortran_order and dtype.str == "<f4"
    assert_programs_equal(load_program(tmp_path / "m.snn"), program)


@pytest.mark.parametrize("measure_below", [fmt._MEASURE_BELOW, 0])
def test_near_constant_arrays_are_stored_within_the_ratio_limit(tmp_path, monkeypatch,
                                                                measure_below):
    # measure_below=0: no array is test-deflated up front, so the writer finds the zeros
    # while writing and rewrites the archive; the bytes must not depend on which path ran.
    monkeypatch.setattr(fmt, "_MEASURE_BELOW", measure_below)
    program = every_op_program()
    flat, fc = program.nodes[7], program.nodes[8]
    flat.attrs["shape"], flat.shape = [16, 1], (16, 1)
    fc.arrays["weight"] = np.zeros((1, 65536), np.float32)  # deflates about 1000:1
    fc.arrays["bias"] = np.zeros(65536, np.float32)
    fc.shape = (16, 65536)
    program.outputs[0] = TensorSpec("y", (16, 65536))
    save_program(program, tmp_path / "m.snn")
    with zipfile.ZipFile(tmp_path / "m.snn") as archive:
        assert archive.getinfo("arrays/7.npy").compress_type == zipfile.ZIP_STORED
        assert archive.getinfo("arrays/0.npy").compress_type == zipfile.ZIP_DEFLATED
    loaded = load_program(tmp_path / "m.snn", limits=ReadLimits(max_compression_ratio=100))
    assert_programs_equal(loaded, program)
    monkeypatch.undo()
    save_program(program, tmp_path / "again.snn")
    assert (tmp_path / "again.snn").read_bytes() == (tmp_path / "m.snn").read_bytes()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_file_has_ordinary_permissions(tmp_path):
    # The temporary file is created 0o666 & ~umask, like open() would, not mkstemp's 0o600.
    umask = os.umask(0o022)
    try:
        save_program(every_op_program(), tmp_path / "m.snn")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.snn").stat().st_mode & 0o777 == 0o644


def test_save_refuses_existing_file(valid):
    before = valid.read_bytes()
    with pytest.raises(InputError, match=r"exists; pass overwrite=True \(--force on the "):
        save_program(every_op_program(), valid)
    assert valid.read_bytes() == before


def test_save_overwrite_replaces(valid):
    program = every_op_program()
    program.producer = "second"
    save_program(program, valid, overwrite=True)
    assert load_program(valid).producer == "second"


@pytest.mark.parametrize("existing", [False, True])
def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch, existing):
    target = tmp_path / "m.snn"
    if existing:
        save_program(every_op_program(), target)
    before = target.read_bytes() if existing else None
    real_writestr = zipfile.ZipFile.writestr

    def writestr_then_fail(self, *args, **kwargs):
        real_writestr(self, *args, **kwargs)  # the temporary file now holds real bytes
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_program(every_op_program(), target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m.snn"] if existing else [])
    if existing:
        assert target.read_bytes() == before


def test_save_validates_before_touching_disk(tmp_path):
    program = every_op_program()
    program.nodes[2].arrays["theta"][0, 0] = -1.0
    with pytest.raises(FormatError, match=r"program\.nodes\[2\]\.arrays\.theta: threshold"):
        save_program(program, tmp_path / "m.snn")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_what_default_readers_would(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "_WRITE_LIMITS", ReadLimits(max_header_bytes=500))
    with pytest.raises(FormatError, match=r"readers refuse more than 500 \(ReadLimits\.max_h"):
        save_program(every_op_program(), tmp_path / "m.snn")
    monkeypatch.setattr(fmt, "_WRITE_LIMITS", ReadLimits(max_array_bytes=200))
    with pytest.raises(FormatError, match=r"arrays/1\.npy: \d+ bytes; readers refuse"):
        save_program(every_op_program(), tmp_path / "m.snn")
    assert list(tmp_path.iterdir()) == []


def test_brackets_inside_json_strings_do_not_count_as_depth(tmp_path):
    program = every_op_program()
    program.metadata["tricky"] = "[" * 500 + '\\"{' * 100
    save_program(program, tmp_path / "m.snn")
    assert load_program(tmp_path / "m.snn").metadata == program.metadata


def test_writer_and_reader_agree_on_the_depth_limit(tmp_path):
    # The header is 1 deep and metadata 2, so 62 nested lists inside reach the limit of 64.
    program = every_op_program()
    program.metadata["deep"] = _nested(62)
    save_program(program, tmp_path / "m.snn")
    assert load_program(tmp_path / "m.snn").metadata == program.metadata
    program.metadata["deep"] = _nested(63)
    with pytest.raises(FormatError, match="nested deeper than 64"):
        save_program(program, tmp_path / "n.snn")


def test_archive_comment_is_tolerated(valid):
    # The end-of-directory record is then not at the very end: the reader must search for it.
    with zipfile.ZipFile(valid, "a") as archive:
        archive.comment = b"written by a test " * 20
    assert_programs_equal(load_program(valid), every_op_program())


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_program(tmp_path / "absent.snn")


@pytest.mark.parametrize("bad", [{"max_entries": 0}, {"max_json_depth": -1},
                                 {"max_compression_ratio": True}])
def test_read_limits_must_be_positive(bad):
    with pytest.raises(InputError, match="must be a positive number"):
        ReadLimits(**bad)


# ---------------------------------------------------------------------------------------------
# Golden files
# ---------------------------------------------------------------------------------------------


def _golden_builder():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_v1_small


def test_golden_v1_small_still_loads():
    assert_programs_equal(load_program(GOLDEN / "v1_small.snn"), _golden_builder()())


# ---------------------------------------------------------------------------------------------
# Hostile archives
# ---------------------------------------------------------------------------------------------


def test_refuses_non_zip(tmp_path):
    path = tmp_path / "m.snn"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle, of all things
    with pytest.raises(FormatError, match=r"m\.snn: not a zip archive"):
        load_program(path)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_refuses_truncated_file(valid, keep):
    data = valid.read_bytes()
    valid.write_bytes(data[:int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(FormatError, match="not a zip archive, or truncated"):
        load_program(valid)


def test_refuses_crc_mismatch(tmp_path, valid):
    path = craft(tmp_path, valid, compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("arrays/1.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + info.file_size - 1] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"entry 'arrays/1\.npy': corrupt .*CRC"):
        load_program(path)


@pytest.mark.parametrize("name", [
    "../evil", "/etc/passwd", "arrays\\0.npy", "arrays/../header.json", "arrays/01.npy",
    "arrays/1.NPY", "arrays/", "Header.json", "header.json/", "arrays/\uff11.npy",
    "C:/arrays/1.npy",
])
def test_refuses_bad_entry_name(tmp_path, valid, name):
    path = craft(tmp_path, valid, entries=lambda items: items.append((name, b"x")))
    with pytest.raises(FormatError, match=r"not a \.snn entry name"):
        load_program(path)


def test_refuses_nul_in_entry_name(tmp_path, valid):
    # zipfile cuts names at NUL when writing, so patch the name into the directory.
    path = craft(tmp_path, valid, entries=lambda items: items.append(("arrays/9.npy", b"x")))
    patch(path, central_records(path.read_bytes())["arrays/9.npy"] + 46 + 8, "<c", b"\0")
    with pytest.raises(FormatError, match=r"entry 'arrays/9\\x00npy': not a \.snn entry name"):
        load_program(path)


def test_refuses_duplicate_entry(tmp_path, valid):
    path = craft(tmp_path, valid, entries=lambda items: items.append(items[2]))
    with pytest.raises(FormatError, match=r"entry 'arrays/1\.npy': duplicate entry name"):
        load_program(path)


def test_refuses_too_many_entries(valid):
    # Counted from the end-of-directory record, before zipfile parses the directory ...
    with pytest.raises(FormatError, match=r"archive declares 16 entries; the limit is 5"):
        load_program(valid, limits=ReadLimits(max_entries=5))
    # ... and again after, for an archive whose record understates the count.
    size = valid.stat().st_size
    patch(patch(valid, size - 14, "<H", 1), size - 12, "<H", 1)
    with pytest.raises(FormatError, match=r"archive holds 16 entries; the limit is 5"):
        load_program(valid, limits=ReadLimits(max_entries=5))


def test_refuses_too_many_entries_in_zip64_record(valid):
    # Large archives keep their counts in the zip64 end record; 0xFFFF in the classic one
    # sends the reader there.
    data = valid.read_bytes()
    body, end = data[:-22], bytearray(data[-22:])
    directory_size, directory_offset = struct.unpack_from("<2L", end, 12)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1 << 40, 1 << 40,
                         directory_size, directory_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    struct.pack_into("<2H", end, 8, 0xFFFF, 0xFFFF)
    valid.write_bytes(body + record + locator + bytes(end))
    with pytest.raises(FormatError, match=r"archive declares 1099511627776 entries"):
        load_program(valid)


def test_refuses_oversized_central_directory(valid):
    size = valid.stat().st_size
    patch(valid, size - 10, "<L", 0xFFFFFFF0)  # EOCD: directory size
    with pytest.raises(FormatError, match=r"byte central directory, more than 100000 entries"):
        load_program(valid)


def test_refuses_declared_size_over_the_array_limit(valid):
    patch_central(valid, "arrays/1.npy", "size", 3 << 30)
    with pytest.raises(FormatError, match=r"entry 'arrays/1\.npy': declares 3221225472 bytes "
                                          r"uncompressed; the limit is 2147483648"):
        load_program(valid)


def test_refuses_one_gigabyte_declared_in_a_small_entry(valid):
    patch_central(valid, "arrays/1.npy", "size", 1 << 30)
    with pytest.raises(FormatError, match=r"arrays/1\.npy': compression ratio 1073741824/"):
        load_program(valid)


def test_refuses_zip_bomb_by_ratio(tmp_path, valid):
    bomb = npy_bytes(np.zeros(1 << 18, np.float32))  # 1 MiB of zeros, about 1 KiB deflated

    def swap(items):
        items[1] = ("arrays/0.npy", bomb)

    path = craft(tmp_path, valid, entries=swap)
    with pytest.raises(FormatError, match=r"compression ratio .* exceeds 100"):
        load_program(path, limits=ReadLimits(max_compression_ratio=100))


def test_refuses_total_size_over_limit(valid):
    with pytest.raises(FormatError, match=r"archive declares \d+ bytes uncompressed; the limit "
                                          r"is 2000 \(ReadLimits\.max_total_bytes\)"):
        load_program(valid, limits=ReadLimits(max_total_bytes=2000))


def test_refuses_header_over_limit(valid):
    with pytest.raises(FormatError, match=r"entry 'header\.json': declares \d+ bytes "
                                          r"uncompressed; the limit is 100"):
        load_program(valid, limits=ReadLimits(max_header_bytes=100))


def test_never_reads_past_the_declared_size(tmp_path, valid):
    # The directory understates the size and carries the checksum of the shortened data:
    # the reader stops at the declared size, so the checksum passes and the npy header,
    # which describes 8 more bytes, is what gives the lie away.
    path = craft(tmp_path, valid, compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(path) as archive:
        short = archive.read("arrays/1.npy")[:-8]
    patch_central(path, "arrays/1.npy", "size", len(short))
    patch_central(path, "arrays/1.npy", "compressed", len(short))
    patch_central(path, "arrays/1.npy", "crc", zlib.crc32(short))
    with pytest.raises(FormatError, match=r"entry 'arrays/1\.npy': declares \d+ bytes, but its "
                                          r"npy header describes"):
        load_program(path)


def test_refuses_stored_entry_with_two_sizes(tmp_path, valid):
    path = craft(tmp_path, valid, compression=zipfile.ZIP_STORED)
    patch_central(path, "arrays/1.npy", "compressed", 10)
    with pytest.raises(FormatError, match=r"'arrays/1\.npy': stored entry declares 10 bytes "
                                          r"stored but \d+ uncompressed"):
        load_program(path)


def test_refuses_encrypted_entry(valid):
    patch_central(valid, "arrays/1.npy", "flags", 0x1)
    with pytest.raises(FormatError, match=r"'arrays/1\.npy': encrypted entries are not"):
        load_program(valid)


def test_refuses_unsupported_compression(tmp_path, valid):
    path = craft(tmp_path, valid, compression=zipfile.ZIP_BZIP2)
    with pytest.raises(FormatError, match=r"compression method 12 not supported"):
        load_program(path)


def test_refuses_overlapping_entries(valid):
    offset = zipfile.ZipFile(valid).getinfo("arrays/0.npy").header_offset
    patch_central(valid, "arrays/1.npy", "local_offset", offset)
    with pytest.raises(FormatError, match=r"entries 'arrays/\d\.npy' and 'arrays/\d\.npy' "
                                          "overlap"):
        load_program(valid)


def test_refuses_missing_header(tmp_path, valid):
    path = craft(tmp_path, valid, entries=lambda items: items.pop(0))
    with pytest.raises(FormatError, match=r"archive has no header\.json"):
        load_program(path)


# ---------------------------------------------------------------------------------------------
# Hostile header.json
# ---------------------------------------------------------------------------------------------


def with_header_text(tmp_path, valid, text: bytes) -> Path:
    def swap(items):
        items[0] = ("header.json", text)

    return craft(tmp_path, valid, entries=swap)


def test_refuses_deep_json_before_parsing(tmp_path, valid, monkeypatch):
    path = with_header_text(tmp_path, valid, b"[" * 100_000 + b"]" * 100_000)

    def never(*args, **kwargs):
        raise AssertionError("json.loads must not see a deep document")

    monkeypatch.setattr(json, "loads", never)
    with pytest.raises(FormatError, match=r"header\.json: JSON nested 100000 deep; the limit "
                                          r"is 64"):
        load_program(path)


@pytest.mark.parametrize("text, match", [
    (b"\xff\xfe{}", r"header\.json: not valid UTF-8"),
    (b'{"magic": ', r"header\.json: not valid JSON"),
    (b'{"magic": NaN}', r"header\.json: NaN is not allowed"),
    (b'{"magic": -Infinity}', r"header\.json: -Infinity is not allowed"),
    (b'{"magic": 1e999}', r"header\.json: number 1e999 overflows a float"),
    (b'{"magic": 1, "magic": 2}', r"header\.json: duplicate key 'magic'"),
    (b'{"magic": ' + b"1" * 5000 + b"}", r"header\.json: not valid JSON"),
    (b"[]", r"header\.json: expected a JSON object, got list"),
    (b"\xef\xbb\xbf{}", r"header\.json: not valid JSON"),
])
def test_refuses_malformed_json(tmp_path, valid, text, match):
    with pytest.raises(FormatError, match=match):
        load_program(with_header_text(tmp_path, valid, text))


def test_refuses_wrong_magic(tmp_path, valid):
    path = craft(tmp_path, valid, header=lambda h: h.update(magic="onnx"))
    with pytest.raises(FormatError, match=r"header\.magic: expected 'snncompiler\.snn', got "
                                          r"'onnx'; not a \.snn file"):
        load_program(path)


@pytest.mark.parametrize("version", ["1", 1.0, True, None, [1]])
def test_refuses_format_version_not_int(tmp_path, valid, version):
    path = craft(tmp_path, valid, header=lambda h: h.update(format_version=version))
    with pytest.raises(FormatError, match=r"header\.format_version: expected an int"):
        load_program(path)


def test_refuses_newer_format_version(tmp_path, valid):
    def newer(header):
        header["format_version"] = FORMAT_VERSION + 1
        header["new_field"] = "only v2 knows"  # the version message must come first

    path = craft(tmp_path, valid, header=newer)
    with pytest.raises(FormatError, match=r"header\.format_version: 2 was written by a newer "
                                          r"snncompiler; upgrade"):
        load_program(path)


def test_refuses_unknown_old_format_version(tmp_path, valid):
    path = craft(tmp_path, valid, header=lambda h: h.update(format_version=0))
    with pytest.raises(FormatError, match=r"header\.format_version: 0 is not a known version"):
        load_program(path)


def _set(path: str, value):
    """A header mutation setting a dotted/indexed path like ``nodes.0.inputs``."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]

    def mutate(header):
        target = header
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize("mutate, match", [
    (_set("nodes.0.op", _DELETE), r"header\.nodes\[0\]: missing field 'op'"),
    (_set("nodes.0.extra", 1), r"header\.nodes\[0\]: unknown field 'extra'"),
    (_set("nodes.0.inputs", "x"), r"header\.nodes\[0\]\.inputs: expected 1 tensor name"),
    (_set("nodes.0.inputs", [3]), r"header\.nodes\[0\]\.inputs\[0\]: 3 is neither"),
    (_set("nodes.0.name", 3), r"header\.nodes\[0\]\.name: expected a non-empty string"),
    (_set("nodes.0.output", ""), r"header\.nodes\[0\]\.output: expected a non-empty string"),
    (_set("nodes.0.shape", ["4", 6, 6]), r"header\.nodes\[0\]\.shape\[0\]: expected an int"),
    (_set("nodes.0.shape", 4), r"header\.nodes\[0\]\.shape: expected a list"),
    (_set("nodes.0.attrs", []), r"header\.nodes\[0\]\.attrs: expected a dict"),
    (_set("nodes.0.arrays", []), r"header\.nodes\[0\]\.arrays: expected an object"),
    (_set("nodes.0", "conv"), r"header\.nodes\[0\]: expected an object"),
    (_set("nodes", {}), r"header\.nodes: expected a list"),
    (_set("inputs.0.shape", [0, 6, 6]), r"header\.inputs\[0\]\.shape\[0\]: 0 is below the "),
    (_set("inputs.0.name", _DELETE), r"header\.inputs\[0\]: missing field 'name'"),
    (_set("metadata", _DELETE), r"header: missing field 'metadata'"),
    (_set("extra", 1), r"header: unknown field 'extra'"),
    (_set("producer", 5), r"header\.producer: expected a string"),
    (_set("metadata", []), r"header\.metadata: expected a dict"),
    (_set("nodes.0.arrays.weight", []), r"header\.nodes\[0\]\.arrays\.weight: expected an obj"),
    (_set("nodes.0.arrays.weight.file", "arrays/1.npy\x00"),
     r"header\.nodes\[0\]\.arrays\.weight\.file: expected 'arrays/<i>\.npy'"),
    (_set("nodes.0.arrays.weight.file", "../arrays/1.npy"), r"\.weight\.file: expected 'arr"),
    (_set("nodes.0.arrays.weight.shape", "4x2"), r"\.arrays\.weight\.shape: expected a list"),
    (_set("nodes.0.arrays.weight.dtype", "float64"), r"\.weight\.dtype: 'float64' not sup"),
    (_set("nodes.0.arrays.weight.dtype", "object"), r"\.weight\.dtype: 'object' not supported"),
])
def test_refuses_bad_header_fields(tmp_path, valid, mutate, match):
    with pytest.raises(FormatError, match=match):
        load_program(craft(tmp_path, valid, header=mutate))


def test_refuses_array_shape_disagreeing_with_header(tmp_path, valid):
    path = craft(tmp_path, valid, header=_set("nodes.0.arrays.weight.shape", [4, 2, 3, 4]))
    with pytest.raises(FormatError, match=r"header\.nodes\[0\]\.arrays\.weight: shape "
                                          r"\[4, 2, 3, 4\] disagrees with arrays/1\.npy "
                                          r"\[4, 2, 3, 3\]"):
        load_program(path)


def test_refuses_array_dtype_disagreeing_with_header(tmp_path, valid):
    path = craft(tmp_path, valid, header=_set("nodes.0.arrays.weight.dtype", "int32"))
    with pytest.raises(FormatError, match=r"header\.nodes\[0\]\.arrays\.weight: dtype int32 "
                                          r"disagrees with arrays/1\.npy float32"):
        load_program(path)


def test_refuses_an_npy_header_with_a_bad_escape_without_python_warnings(tmp_path, valid):
    # numpy literal_evals the npy header: '\\o' in it made Python warn before the refusal
    def damage(items):
        name, data = items[2]
        assert name == "arrays/1.npy" and b"'<f4'" in data
        items[2] = (name, data.replace(b"'<f4'", b"'\\o4'", 1))  # same length

    path = craft(tmp_path, valid, entries=damage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(FormatError, match=r"entry 'arrays/1\.npy'"):
            load_program(path)
    assert [str(w.message) for w in caught] == []


def test_refuses_missing_array_entry(tmp_path, valid):
    path = craft(tmp_path, valid, entries=lambda items: items.pop(2))
    with pytest.raises(FormatError, match=r"header\.nodes\[0\]\.arrays\.weight\.file: "
                                          r"arrays/1\.npy is missing from the archive"):
        load_program(path)


def test_refuses_unreferenced_array_entry(tmp_path, valid):
    extra = ("arrays/99.npy", npy_bytes(np.ones(3, np.float32)))
    path = craft(tmp_path, valid, entries=lambda items: items.append(extra))
    with pytest.raises(FormatError, match=r"entry 'arrays/99\.npy': not referenced"):
        load_program(path)


def test_refuses_array_referenced_twice(tmp_path, valid):
    path = craft(tmp_path, valid, header=_set("nodes.1.arrays.scale.file", "arrays/1.npy"))
    with pytest.raises(FormatError, match=r"header\.nodes\[1\]\.arrays\.scale\.file: "
                                          r"arrays/1\.npy is already used by "
                                          r"header\.nodes\[0\]\.arrays\.weight"):
        load_program(path)


# ---------------------------------------------------------------------------------------------
# Hostile .npy entries
# ---------------------------------------------------------------------------------------------


def with_npy(tmp_path, valid, data: bytes, shape=(4,), dtype="float32") -> Path:
    """Replaces the conv bias (arrays/0.npy) with ``data``, the header agreeing."""
    def header(h):
        h["nodes"][0]["arrays"]["bias"].update(shape=list(shape), dtype=dtype)

    def swap(items):
        items[1] = ("arrays/0.npy", data)

    return craft(tmp_path, valid, header=header, entries=swap)


def test_refuses_pickled_object_array_without_reading_it(tmp_path, valid, monkeypatch):
    evil = npy_bytes(np.array([{"boom": 1}, None, 3, 4], dtype=object), allow_pickle=True)
    path = with_npy(tmp_path, valid, evil)

    def never(*args, **kwargs):
        raise AssertionError("the data of a refused array must not be read")

    monkeypatch.setattr(np.lib.format, "read_array", never)
    with pytest.raises(FormatError, match=r"entry 'arrays/0\.npy': holds Python objects "
                                          r"\(dtype object\); refusing to unpickle"):
        load_program(path)


def test_refuses_structured_npy(tmp_path, valid):
    data = npy_bytes(np.zeros(4, dtype=[("a", "<f4"), ("b", "<i4")]))
    with pytest.raises(FormatError, match=r"'arrays/0\.npy': structured dtype"):
        load_program(with_npy(tmp_path, valid, data))


@pytest.mark.parametrize("dtype", [">f4", "<f8", "<f2", "<c8", "u1", "?", "<U3", "<M8[s]"])
def test_refuses_unsupported_npy_dtype(tmp_path, valid, dtype):
    data = npy_bytes(np.zeros(4, dtype=dtype))
    with pytest.raises(FormatError, match=r"'arrays/0\.npy': dtype .* not supported; expected "
                                          "little-endian float32, int32 or int64"):
        load_program(with_npy(tmp_path, valid, data))


def test_refuses_fortran_ordered_npy(tmp_path, valid):
    data = npy_bytes(np.asfortranarray(np.ones((2, 2), np.float32)))
    with pytest.raises(FormatError, match=r"'arrays/0\.npy': Fortran order not supported"):
        load_program(with_npy(tmp_path, valid, data, shape=(2, 2)))


def test_refuses_npy_version_3(tmp_path, valid):
    data = npy_bytes(np.ones(4, np.float32), version=(3, 0))
    with pytest.raises(FormatError, match=r"npy format version \(3, 0\) not supported"):
        load_program(with_npy(tmp_path, valid, data))


def raw_npy(header: str, data: bytes = b"") -> bytes:
    """An npy 1.0 file with ``header`` as its (unchecked) header dict text."""
    text = header.encode() + b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


@pytest.mark.parametrize("data", [
    b"not an npy file at all",
    b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4",
    raw_npy("{'descr': '<f4'}"),
    raw_npy("{'descr': __import__('os').system('false'), 'fortran_order': False, 'shape': (4,)}"),
    raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", bytes(16)),
    raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", bytes(12)),
    npy_bytes(np.ones(4, np.float32))[:-3],
])
def test_refuses_corrupt_npy(tmp_path, valid, data):
    with pytest.raises(FormatError, match=r"entry 'arrays/0\.npy': (corrupt or unreadable|"
                                          r"declares \d+ bytes, but)|shape \[4\] disagrees"):
        load_program(with_npy(tmp_path, valid, data))


def test_refuses_npy_with_trailing_bytes(tmp_path, valid):
    data = npy_bytes(np.ones(4, np.float32)) + b"\0" * 16
    with pytest.raises(FormatError, match=r"'arrays/0\.npy': declares \d+ bytes, but its npy "
                                          r"header describes"):
        load_program(with_npy(tmp_path, valid, data))


# ---------------------------------------------------------------------------------------------
# Invalid programs in well-formed files (both doors: reader and writer)
# ---------------------------------------------------------------------------------------------


def _node(index, **changes):
    def mutate(program):
        for key, value in changes.items():
            setattr(program.nodes[index], key, value)
    return mutate


def _attr(index, key, value):
    def mutate(program):
        if value is _DELETE:
            del program.nodes[index].attrs[key]
        else:
            program.nodes[index].attrs[key] = value
    return mutate


def _array(index, key, value):
    def mutate(program):
        arrays = program.nodes[index].arrays
        if value is _DELETE:
            del arrays[key]
        elif callable(value):
            value(arrays[key])
        else:
            arrays[key] = value
    return mutate


def _program(**changes):
    def mutate(program):
        for key, value in changes.items():
            setattr(program, key, value)
    return mutate


def _poke(index, value):
    def poke(array):
        array[index] = value
    return poke


def _nested(depth: int) -> list:
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _swap_first_nodes(program):
    program.nodes[0], program.nodes[1] = program.nodes[1], program.nodes[0]


# (mutation, expected message without its "program."/"header." prefix, also via a file?)
INVALID = {
    "unknown op": (_node(0, op="relu"), r"nodes\[0\]\.op: unknown op 'relu'; known ops: add, "
                   r"affine, analog, avgpool, concat, conv, gemm, global_avgpool, maxpool, pad, "
                   r"reduce, reshape, resize, snm, snm_clip, snm_leaky, transpose", True),
    "attr length": (_attr(0, "strides", [1]),
                    r"nodes\[0\]\.attrs\.strides: expected 2 ints, got 1 \(node 'conv', conv\)",
                    True),
    "attr minimum": (_attr(0, "strides", [0, 1]),
                     r"nodes\[0\]\.attrs\.strides\[0\]: 0 is below the minimum 1", True),
    "attr kind float": (_attr(0, "group", 1.0), r"nodes\[0\]\.attrs\.group: expected an int",
                        True),
    "attr kind bool": (_attr(0, "group", True), r"nodes\[0\]\.attrs\.group: expected an int",
                       True),
    "attr not a list": (_attr(0, "pads", "1111"),
                        r"nodes\[0\]\.attrs\.pads: expected a list of ints", True),
    "attr huge": (_attr(0, "strides", [1, 2**40]),
                  r"nodes\[0\]\.attrs\.strides\[1\]: \d+ is above the maximum", True),
    "attr missing": (_attr(0, "group", _DELETE), r"nodes\[0\]\.attrs: missing attribute 'group'",
                     True),
    "attr unknown": (_attr(0, "alpha", 1), r"nodes\[0\]\.attrs: unknown attribute 'alpha'; "
                     r"known: dilations, group, pads, strides", True),
    "attr choice str": (_attr(2, "theta_neg", "sometimes"), r"nodes\[2\]\.attrs\.theta_neg: "
                        r"'sometimes' is not one of 'zero', 'minus_theta', 'off'", True),
    "attr choice int": (_attr(3, "ceil_mode", 2),
                        r"nodes\[3\]\.attrs\.ceil_mode: 2 is not one of 0, 1", True),
    "attr spikes": (_attr(2, "max_spikes_per_step", 0),
                    r"nodes\[2\]\.attrs\.max_spikes_per_step: 0 is below the minimum 1", True),
    "array missing": (_array(0, "bias", _DELETE), r"nodes\[0\]\.arrays: missing array 'bias'",
                      True),
    "array unknown": (_array(0, "scale", np.ones(4, np.float32)),
                      r"nodes\[0\]\.arrays: unknown array 'scale'; known: bias, weight", True),
    "array rank": (_array(8, "weight", np.ones((16, 3, 1), np.float32)),
                   r"nodes\[8\]\.arrays\.weight: expected 2 dimensions, got shape \[16, 3, 1\]",
                   True),
    "array dtype": (_array(8, "bias", np.ones(3, np.int32)),
                    r"nodes\[8\]\.arrays\.bias: dtype <i4 not allowed; expected float32", True),
    "array empty": (_array(1, "shift", np.ones((4, 0, 1), np.float32)),
                    r"nodes\[1\]\.arrays\.shift: empty array", True),
    "array not ndarray": (_array(8, "bias", [1.0, 2.0, 3.0]),
                          r"nodes\[8\]\.arrays\.bias: expected a numpy array, got list", False),
    "array big-endian": (_array(8, "bias", np.ones(3, ">f4")),
                         r"nodes\[8\]\.arrays\.bias: dtype >f4 not allowed", False),
    "weight NaN": (_array(0, "weight", _poke((1, 1, 1, 1), np.nan)),
                   r"nodes\[0\]\.arrays\.weight: holds non-finite values", True),
    "bias inf": (_array(8, "bias", _poke(2, -np.inf)),
                 r"nodes\[8\]\.arrays\.bias: holds non-finite values", True),
    "threshold NaN": (_array(2, "theta", _poke((1, 3), np.nan)),
                      r"nodes\[2\]\.arrays\.theta: holds non-finite values", True),
    "threshold zero": (_array(2, "theta", _poke((0, 1), 0.0)), r"nodes\[2\]\.arrays\.theta: "
                       r"threshold 0\.0 at \[0, 1\] is not positive \(node 'sn', snm\)", True),
    "threshold negative": (_array(2, "theta", _poke((1, 0), -0.5)),
                           r"nodes\[2\]\.arrays\.theta: threshold -0\.5 at \[1, 0\]", True),
    "theta rows": (_array(2, "theta", np.ones((3, 4), np.float32)),
                   r"nodes\[2\]\.arrays\.theta: 3 rows, but the program has 2 timesteps", True),
    "v0 rows": (_array(2, "v0", np.ones((1, 4), np.float32)),
                r"nodes\[2\]\.arrays\.v0: 1 rows, but the program has 2 timesteps", True),
    "theta channels": (_array(2, "theta", np.ones((2, 5), np.float32)),
                       r"nodes\[2\]: node 'sn' \(snm\): inputs \[4, 6, 6\]: theta has 5 channels",
                       True),
    "timesteps empty": (_program(timesteps=[]), r"timesteps: expected a non-empty list", True),
    "timesteps zero": (_program(timesteps=[0, 8]), r"timesteps\[0\]: 0 is below the minimum 1",
                       True),
    "timesteps negative": (_program(timesteps=[4, -8]), r"timesteps\[1\]: -8 is below", True),
    "timesteps float": (_program(timesteps=[4, 8.0]), r"timesteps\[1\]: expected an int", True),
    "timesteps str": (_program(timesteps=["4", 8]), r"timesteps\[0\]: expected an int", True),
    "timesteps bool": (_program(timesteps=[True, 8]), r"timesteps\[0\]: expected an int", True),
    "timesteps repeat": (_program(timesteps=[8, 8]), r"timesteps: \[8, 8\] repeats a value",
                         True),
    "timesteps not list": (_program(timesteps=8), r"timesteps: expected a non-empty list",
                           False),
    "default zero": (_program(default_timesteps=0),
                     r"default_timesteps: 0 is below the minimum 1", True),
    "default float": (_program(default_timesteps=4.0),
                      r"default_timesteps: expected an int, got 4\.0", True),
    "duplicate node name": (_node(1, name="conv"),
                            r"nodes\[1\]\.name: duplicate node name 'conv'", True),
    "duplicate tensor": (_node(1, output="c"), r"nodes\[1\]\.output: tensor 'c' is already "
                         r"produced \(duplicate output tensor\)", True),
    "output shadows input": (_node(0, output="x"), r"nodes\[0\]\.output: tensor 'x' is already",
                             True),
    "out of order": (_swap_first_nodes, r"nodes\[0\]\.inputs\[0\]: 'c' is neither a graph input "
                     r"nor the output of an earlier node \(node 'bn', affine\)", True),
    "cycle": (_node(0, inputs=("c",)), r"nodes\[0\]\.inputs\[0\]: 'c' is neither", True),
    "wrong input count": (_node(6, inputs=("a",)),
                          r"nodes\[6\]\.inputs: expected 2 tensor name\(s\), got \('a',\)", True),
    "output not produced": (_program(outputs=[TensorSpec("nowhere", (3,))]),
                            r"outputs\[0\]\.name: 'nowhere' is not produced", True),
    "output shape": (_program(outputs=[TensorSpec("y", (4,))]),
                     r"outputs\[0\]\.shape: \[4\] disagrees with tensor 'y' \[3\]", True),
    "output twice": (_program(outputs=[TensorSpec("y", (3,)), TensorSpec("y", (3,))]),
                     r"outputs\[1\]\.name: duplicate output 'y'", True),
    "no outputs": (_program(outputs=[]), r"outputs: expected a non-empty list", True),
    "node shape": (_node(8, shape=(4,)), r"nodes\[8\]\.shape: \[4\] disagrees with \[3\] "
                   r"inferred from inputs \[\[16\]\] \(node 'fc', gemm\)", True),
    "weight does not fit": (_array(8, "weight", np.ones((15, 3), np.float32)),
                            r"nodes\[8\]: node 'fc' \(gemm\): inputs \[16\]: weight \[15, 3\] "
                            r"needs a last axis of 15", True),
    "input dtype": (_program(inputs=[TensorSpec("x", (2, 6, 6), "float64")]),
                    r"inputs\[0\]\.dtype: 'float64' not supported", True),
    "input twice": (_program(inputs=[TensorSpec("x", (2, 6, 6))] * 2),
                    r"inputs\[1\]\.name: duplicate input 'x'", True),
    "metadata NaN": (_program(metadata={"x": [1.0, float("nan")]}),
                     r"metadata\.x\[1\]: nan is not allowed", False),
    "metadata set": (_program(metadata={"x": {1, 2}}), r"metadata\.x: set is not JSON-able",
                     False),
    "calibration int key": (_program(calibration={1: "a"}),
                            r"calibration: key 1 is not a string", False),
    "metadata numpy int": (_program(metadata={"n": np.int64(3)}),
                           r"metadata\.n: int64 is not JSON-able", False),
    "metadata too deep": (_program(metadata={"deep": _nested(70)}),
                          r"metadata\.deep(\[0\])+: nested deeper than 64", False),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_refuses_invalid_program(tmp_path, case):
    mutate, match, via_file = INVALID[case]
    program = every_op_program()
    mutate(program)
    with pytest.raises(FormatError, match=r"^program\." + match):
        validate_program(program)
    with pytest.raises(FormatError, match=r"^program\." + match):
        save_program(program, tmp_path / "m.snn")
    assert not (tmp_path / "m.snn").exists()
    if via_file:
        path = write_unchecked(program, tmp_path / "unchecked.snn")
        with pytest.raises(FormatError, match=r"unchecked\.snn: header\." + match):
            load_program(path)


def test_validate_program_refuses_non_programs():
    with pytest.raises(FormatError, match="expected a Program, got dict"):
        validate_program({})


# ---------------------------------------------------------------------------------------------
# Fuzzing: corruption gives an equal program or a FormatError, never anything else
# ---------------------------------------------------------------------------------------------


class _Quiet(tuple):
    def __repr__(self):  # hypothesis prints the fixture on failure: keep that readable
        return "fuzz_base(...)"


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    program = every_op_program()
    save_program(program, folder / "valid.snn")
    return _Quiet((folder, program, (folder / "valid.snn").read_bytes()))


def _load_or_format_error(path: Path):
    try:
        return load_program(path)
    except FormatError as err:
        assert "\n" not in str(err), "messages are one line"
        return None


_FUZZ = settings(max_examples=80, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.data())
def test_corrupted_files_load_equal_or_raise_format_error(fuzz_base, data):
    folder, program, valid = fuzz_base
    size = len(valid)
    # Half the flips land in the zip structure (local header, directory), where they bite.
    where = st.one_of(st.integers(0, size - 1), st.integers(max(0, size - 1200), size - 1),
                      st.integers(0, 80))
    flips = data.draw(st.lists(st.tuples(where, st.integers(1, 255)), max_size=4))
    keep = data.draw(st.one_of(st.just(size), st.integers(0, size)))
    corrupted = bytearray(valid)
    for at, mask in flips:
        corrupted[at] ^= mask
    path = folder / "corrupted.snn"
    path.write_bytes(bytes(corrupted[:keep]))
    loaded = _load_or_format_error(path)
    if loaded is not None:
        assert_programs_equal(loaded, program)


@_FUZZ
@given(data=st.data())
def test_mutated_entries_load_valid_or_raise_format_error(fuzz_base, data):
    # Mutations inside the entries, with checksums recomputed: the JSON and npy parsers and
    # the validation face the damage directly instead of the CRC catching it.
    folder, _, valid = fuzz_base
    items = entries_of(folder / "valid.snn")
    index = data.draw(st.sampled_from([0, 0, 1, 2, 5]))
    name, content = items[index]
    content = bytearray(content)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(content) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            content[at] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del content[at]
        else:
            content.insert(at, data.draw(st.sampled_from(b'[]{}",:0123456789-.eE\\ ntf')))
    items[index] = (name, bytes(content))
    loaded = _load_or_format_error(pack(folder / "mutated.snn", items))
    if loaded is not None:
        validate_program(loaded)
