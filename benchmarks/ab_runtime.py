"""Is a change to the runtime faster? Times two versions of it on one network, in turns.

    .venv/bin/python benchmarks/ab_runtime.py model.snn views.npz [--base HEAD]
        [--head WORKTREE] [--rounds 6] [--steps 32] [--views 1] [--threads 1]

A shared VM changes speed from minute to minute by more than most kernel changes gain, so
two versions timed one after the other tell nothing. This script runs
them in turns, ``--rounds`` times each, so that both see the same minutes, and reports the
median of each side and of the per-round ratio, with the range of the ratios. A change whose
ratios straddle 1 has not been shown to be faster.

Each version is an importable copy of the package (``snncompiler``, with ``runtime`` and
``passes`` in it, as the package-dir mapping installs them): ``--base`` and ``--head`` are
a git revision (exported with ``git archive``) or ``WORKTREE`` (the checkout's files as
they are). Each round of each side is a fresh process with its own numba cache (a kernel
that inlines another file's kernel would otherwise run stale machine code), which
simulates ``--views`` views of the ``.npz`` for ``--steps`` steps (the best of
``--repeat`` runs after an untimed one). The first round of each side compiles its
kernels and is not counted. The readouts of the two sides are compared bit for bit: a
change that should not move a result must print "identical".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKTREE = "WORKTREE"
PACKAGE_DIRS = {"snncompiler": "snncompiler", "runtime": "snncompiler/runtime",
                "passes": "snncompiler/passes"}

# One timed run, in a fresh process whose sys.path starts at the copy of the package.
CHILD = """
import hashlib, json, sys, time
import numpy as np
import snncompiler.runtime as runtime
snn, data, steps, views, repeat = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
net = runtime.load(snn)
with np.load(data, allow_pickle=False) as archive:
    x = (archive["x"] if "x" in archive.files else archive[archive.files[0]])[:views]
readout = net.run(x, steps)
seconds = []
for _ in range(repeat):
    start = time.perf_counter()
    net.run(x, steps)
    seconds.append(time.perf_counter() - start)
print(json.dumps({"seconds": min(seconds), "package": runtime.__file__,
                  "readout": hashlib.sha256(np.ascontiguousarray(readout).tobytes()).hexdigest()}))
"""


def export(version: str, into: Path) -> Path:
    """An importable copy of the package as it is at ``version``, under ``into``."""
    into.mkdir(parents=True)
    source = into / "source"
    if version == WORKTREE:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for folder in PACKAGE_DIRS:
            shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    else:
        source.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", version, *PACKAGE_DIRS],
                                 capture_output=True, check=False)
        if archive.returncode:
            sys.exit(f"error: git archive {version}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    root = into / "path"
    for folder, target in PACKAGE_DIRS.items():
        shutil.move(source / folder, root / target)
    return root


def time_once(root: Path, cache: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(cache),
           "NUMBA_NUM_THREADS": str(args.threads)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.snn.resolve()), str(args.data.resolve()),
         str(args.steps), str(args.views), str(args.repeat)],
        capture_output=True, text=True, env=env, cwd=root)
    if done.returncode:
        sys.exit(f"error: the timed run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(root)):
        sys.exit(f"error: the run imported {result['package']}, not the copy in {root}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snn", type=Path)
    parser.add_argument("data", type=Path, help=".npz of input views (its x, or only array)")
    parser.add_argument("--base", default="HEAD", help=f"git revision or {WORKTREE}")
    parser.add_argument("--head", default=WORKTREE, help=f"git revision or {WORKTREE}")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for name in ("rounds", "steps", "views", "repeat", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for path in (args.snn, args.data):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    from snncompiler.machine import cpu_name

    sides = {"base": args.base, "head": args.head}
    times: dict[str, list[float]] = {side: [] for side in sides}
    readouts: dict[str, set[str]] = {side: set() for side in sides}
    with tempfile.TemporaryDirectory(prefix="ab_runtime_") as scratch:
        roots = {side: export(version, Path(scratch) / side) for side, version in sides.items()}
        print(f"{args.snn.name}: {args.views} view(s) x {args.steps} steps, "
              f"{args.threads} thread(s); {cpu_name()}. base = {args.base}, head = "
              f"{args.head}.", flush=True)
        for round_ in range(args.rounds + 1):  # round 0 compiles
            line = []
            for side, root in roots.items():
                result = time_once(root, Path(scratch) / f"{side}-cache", args)
                readouts[side].add(result["readout"])
                if round_:
                    times[side].append(result["seconds"])
                    line.append(f"{side} {result['seconds'] * 1e3 / args.steps:.2f}")
            if round_:
                ratio = times["head"][-1] / times["base"][-1]
                print(f"round {round_}: ms a step: {', '.join(line)}; head / base {ratio:.3f}",
                      flush=True)
    ratios = [h / b for h, b in zip(times["head"], times["base"])]
    per_step = {side: statistics.median(t) * 1e3 / args.steps for side, t in times.items()}
    print(f"median ms a step: base {per_step['base']:.2f}, head {per_step['head']:.2f}; "
          f"head / base: median {statistics.median(ratios):.3f}, range "
          f"{min(ratios):.3f} to {max(ratios):.3f}")
    if readouts["base"] == readouts["head"] and len(readouts["base"]) == 1:
        print("readouts: identical")
    else:
        print("readouts: DIFFERENT (SHA-256 prefixes: base "
              f"{', '.join(h[:12] for h in sorted(readouts['base']))}; head "
              f"{', '.join(h[:12] for h in sorted(readouts['head']))})")

if __name__ == "__main__":
    main()
