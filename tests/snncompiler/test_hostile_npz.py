"""User data (``.npz``) that is broken or hostile: refused with one InputError, never run.

Every case here once escaped as a raw exception, allocated what the file merely declared,
or was accepted silently; each test names the guard in ``snncompiler/npz.py`` it pins.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile

import numpy as np
import pytest

from snncompiler import npz
from snncompiler.errors import InputError
from snncompiler.npz import Dataset, Preprocessing, StreamedRows, check_labels, load_npz
from tools.fuzz_campaign import PWNED, npy, npy_of, planted_pickle_npy, rezip


@pytest.fixture(params=[False, True], ids=["whole", "streamed"])
def load(request):
    """load_npz, reading x whole or streaming it (as ``snnc compile`` does): the same guards."""
    def load(*args, **options):
        data = load_npz(*args, stream=request.param, **options)
        assert isinstance(data.x, StreamedRows) == request.param
        return data
    return load


X = np.linspace(0, 1, 2 * 16, dtype=np.float32).reshape(2, 1, 4, 4)


def write_npz(path, entries, method=zipfile.ZIP_STORED):
    path.write_bytes(rezip(entries, dict.fromkeys(range(len(entries)), method)))
    return path


def test_valid_file_loads(load, tmp_path):
    path = write_npz(tmp_path / "ok.npz", [("x.npy", npy_of(X)), ("y.npy", npy_of(np.arange(2)))])
    data = load(path)
    np.testing.assert_array_equal(data.x[0:len(data)], X)
    assert data.y.tolist() == [0, 1] and data.y.dtype == np.int64


def test_npy_instead_of_npz_is_refused(load, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, X)
    with pytest.raises(InputError, match="x.npy: a .npy file, not an .npz archive.*np.savez"):
        load(path)


def test_directory_is_refused(load, tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load(tmp_path)


def test_permission_denied_is_one_input_error(load, tmp_path, monkeypatch):
    path = write_npz(tmp_path / "ok.npz", [("x.npy", npy_of(X))])

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(npz.zipfile, "ZipFile", deny)
    with pytest.raises(InputError, match="ok.npz: cannot read it: Permission denied"):
        load(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_refused(load, tmp_path):
    path = write_npz(tmp_path / "ok.npz", [("x.npy", npy_of(X))])
    path.chmod(0)
    with pytest.raises(InputError, match="Permission denied"):
        load(path)


def test_pickled_array_is_refused_without_running_it(load, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the planted pickle would create PWNED here
    path = write_npz(tmp_path / "evil.npz", [("x.npy", planted_pickle_npy())])
    with pytest.raises(InputError, match="x: holds Python objects"):
        load(path)
    assert not (tmp_path / PWNED).exists()


def test_declared_size_is_checked_before_allocating(load, tmp_path):
    # 2**40 float32 declared in a 100-byte file: refused from the header (numpy would try
    # to allocate 4 TiB first and fail with a MemoryError).
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (2**40,)})
    path = write_npz(tmp_path / "huge.npz", [("x.npy", npy(header, b""))])
    with pytest.raises(InputError, match="x: declares 4398046511104 bytes"):
        load(path)


def test_declared_size_must_match_the_entry(load, tmp_path):
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (2, 1, 4, 4)})
    path = write_npz(tmp_path / "short.npz", [("x.npy", npy(header, bytes(12)))])
    with pytest.raises(InputError, match="x: .*holds 12"):
        load(path)


def test_size_limit_is_enforced(load, tmp_path):
    path = write_npz(tmp_path / "ok.npz", [("x.npy", npy_of(X))])
    with pytest.raises(InputError, match="more than the limit of 100 bytes"):
        load(path, max_bytes=100)


@pytest.mark.parametrize(
    "text", ["(" * 300 + ")" * 300, "{", f"__import__('os').system('touch {PWNED}')"])
def test_corrupt_npy_header_is_refused(load, tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    path = write_npz(tmp_path / "bad.npz", [("x.npy", npy(text, b""))])
    with pytest.raises(InputError, match="bad.npz: x: not a readable .npy array"):
        load(path)
    assert not (tmp_path / PWNED).exists()


def test_unsupported_compression_is_refused(load, tmp_path):
    path = write_npz(tmp_path / "bz.npz", [("x.npy", npy_of(X))], zipfile.ZIP_BZIP2)
    data = bytearray(path.read_bytes())
    # Claim a compression method zipfile does not implement (12 -> 99) in both records.
    for at in (8, data.rfind(b"PK\x01\x02") + 10):
        data[at:at + 2] = (99).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="bz.npz"):
        load(path)


def test_corrupt_deflate_stream_is_refused(load, tmp_path):
    path = write_npz(tmp_path / "z.npz", [("x.npy", npy_of(X))], zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    data[60:70] = bytes(10)  # inside the compressed data
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="z.npz"):
        load(path)


def test_overflow_to_inf_is_one_error_without_warnings(load, tmp_path):
    path = write_npz(tmp_path / "big.npz", [("x.npy", npy_of(np.full((2, 3), 1e300)))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would print a second line
        with pytest.raises(InputError, match="NaN or Inf"):
            load(path)
        with pytest.raises(InputError, match="NaN or Inf"):
            load(write_npz(tmp_path / "u8.npz", [("x.npy", npy_of(np.ones((2, 3), "u1")))]),
                     Preprocessing(scale=1e39))


def test_unchecked_open_still_refuses_a_bad_row_when_it_is_read(tmp_path):
    # A Dask worker opens a file its client has checked without reading it all again
    # (check_rows=False); a row that no longer converts is still refused where it is read.
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    path = write_npz(tmp_path / "nan.npz", [("x.npy", npy_of(x))])
    with pytest.raises(InputError, match="NaN or Inf"):
        load_npz(path, stream=True)
    data = load_npz(path, stream=True, check_rows=False)
    np.testing.assert_array_equal(data.x[0:2], x[:2])
    with pytest.raises(InputError, match="NaN or Inf"):
        data.x[2:4]


def test_unsigned_labels_beyond_int64_are_refused(load, tmp_path):
    path = write_npz(tmp_path / "u64.npz", [("x.npy", npy_of(X)),
                                            ("y.npy", npy_of(np.full(2, 2**64 - 1, np.uint64)))])
    with pytest.raises(InputError, match="labels up to 18446744073709551615"):
        load(path)


def test_labels_out_of_range_name_the_max_label_and_the_outputs():
    data = Dataset(X, np.array([0, 12]), "test.npz")
    with pytest.raises(InputError, match="test.npz: labels go up to 12 but the model has 10 "
                                         "outputs \\(labels 0..9\\)"):
        check_labels(data, 10)
    check_labels(Dataset(X, np.array([0, 9]), "test.npz"), 10)
    check_labels(Dataset(X, None, "test.npz"), 10)


def test_zip_bomb_is_refused_before_inflating(load, tmp_path):
    size = 64 << 20
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (size // 4,)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy(header, bytes(size)))
    path = tmp_path / "bomb.npz"
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < size / 500
    with pytest.raises(InputError, match="more than the limit"):
        load(path, max_bytes=size // 2)


@pytest.mark.parametrize(("x", "y", "match"), [
    (np.float32(3.0), None, "x has shape \\[\\]"),
    (X, np.int64(1), "y must be integer labels of shape \\[2\\], got int64 \\[\\]"),
])
def test_scalars_are_refused_even_with_a_limit(load, tmp_path, x, y, match):
    entries = [("x.npy", npy_of(np.asarray(x)))]
    if y is not None:
        entries.append(("y.npy", npy_of(np.asarray(y))))
    path = write_npz(tmp_path / "scalar.npz", entries)
    with pytest.raises(InputError, match=match):
        load(path, limit=1)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_only_stored_or_deflated_members_are_read(load, tmp_path, method):
    # np.savez stores, np.savez_compressed deflates; nothing writes bzip2 or lzma members,
    # whose decompressors raise errors of their own on corrupt data (found by fuzzing).
    path = write_npz(tmp_path / "packed.npz", [("x.npy", npy_of(X))], method)
    with pytest.raises(InputError, match=f"x: compression method {method} is not supported"):
        load(path)
