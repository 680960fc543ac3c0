"""ab_runtime's copies of the package are what the child processes import."""

import shutil
import subprocess
import sys

import pytest

from benchmarks import ab_runtime


def _imported_from(root, module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
        capture_output=True, text=True, check=True, cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""})
    return done.stdout.strip()


@pytest.mark.parametrize("version", [ab_runtime.WORKTREE, "HEAD"])
def test_a_version_is_exported_as_an_importable_package(tmp_path, version):
    if version != ab_runtime.WORKTREE and shutil.which("git") is None:
        pytest.skip("no git")
    root = ab_runtime.export(version, tmp_path / "copy")
    assert not list(root.rglob("__pycache__"))  # no machine code carried over
    for module in ("snncompiler.runtime.kernels", "snncompiler.passes.dni"):
        path = _imported_from(root, module)
        assert path.startswith(str(root)), (module, path)


def test_an_unknown_revision_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="git archive no-such-revision"):
        ab_runtime.export("no-such-revision", tmp_path / "copy")
