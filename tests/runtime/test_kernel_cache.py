"""The runtime's numba cache follows every source file of the package, not only the one that
defines a kernel."""

from snncompiler.runtime import kernel_cache


def _package(tmp_path):
    (tmp_path / "kernels.py").write_text("def step(): return inlined()\n")
    (tmp_path / "inlined.py").write_text("def inlined(): return 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    return cache


def _cache_kernels(cache):
    for name in ("kernels.step-1.py311.nbi", "kernels.step-1.py311.1.nbc"):
        (cache / name).write_bytes(b"machine code")
    (cache / "kernels.cpython-311.pyc").write_bytes(b"bytecode")


def test_cached_kernels_survive_while_no_source_changes(tmp_path):
    cache = _package(tmp_path)
    kernel_cache.drop_stale(tmp_path)  # the first check stamps the sources
    _cache_kernels(cache)
    assert not kernel_cache.drop_stale(tmp_path)
    assert len(list(cache.glob("*.nb*"))) == 2


def test_an_edit_to_another_module_drops_every_cached_kernel_and_nothing_else(tmp_path):
    cache = _package(tmp_path)
    kernel_cache.drop_stale(tmp_path)
    _cache_kernels(cache)
    (tmp_path / "inlined.py").write_text("def inlined(): return 2\n")  # kernels.py untouched
    assert kernel_cache.drop_stale(tmp_path)
    assert not list(cache.glob("*.nb*"))
    assert (cache / "kernels.cpython-311.pyc").exists()
    assert not kernel_cache.drop_stale(tmp_path)  # stamped again: the next import keeps them


def test_a_cache_from_before_the_stamp_is_dropped_once(tmp_path):
    cache = _package(tmp_path)
    _cache_kernels(cache)
    assert kernel_cache.drop_stale(tmp_path)
    assert not list(cache.glob("*.nb*"))


def test_an_unwritable_cache_is_left_alone_without_an_error(tmp_path):
    (tmp_path / "kernels.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").write_text("a file where the folder would be")
    kernel_cache.drop_stale(tmp_path)  # must not raise
