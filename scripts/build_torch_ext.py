#!/usr/bin/env python
"""Build torch_scatter / torch_cluster from their source packages for the torch that runs this script.

Used on GPU machines where no wheel matches the installed torch/CUDA (the benchmarks compare gnnreco
with them, side by side). ``pip install`` builds one extension after the other; this script builds every
extension of both packages in its own process at the same time with
:func:`torch.utils.cpp_extension.load`, so the wall time is that of the slowest extension::

    TORCH_CUDA_ARCH_LIST=9.0 python scripts/build_torch_ext.py --target /tmp/ext \\
        torch_scatter-2.1.2.tar.gz torch_cluster-1.6.3.tar.gz
    PYTHONPATH=/tmp/ext python -c "import torch_scatter, torch_cluster"

Each package's Python sources are copied to ``<target>/<package>/`` and its compiled libraries are
written beside them as ``_<name>_cuda.so`` (``_<name>_cpu.so`` without CUDA), the names the packages'
``__init__`` look for. The compile flags are the ones of the packages' own ``setup.py`` (``-O3`` /
``--expt-relaxed-constexpr``, ``WITH_PYTHON``, ``WITH_CUDA``). A failed extension is reported with its
log and the others still build; the exit status is the number of failures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_CHILD = r"""
import os, sys, time
import torch
from torch.utils.cpp_extension import load
name, build_dir, csrc, cuda, opt = sys.argv[1:6]
cuda = cuda == "1"
base = name[1:].rsplit("_", 1)[0]
sources = [os.path.join(csrc, base + ".cpp")]
cpu = os.path.join(csrc, "cpu", base + "_cpu.cpp")
if os.path.exists(cpu):
    sources.append(cpu)
cu = os.path.join(csrc, "cuda", base + "_cuda.cu")
if cuda and os.path.exists(cu):
    sources.append(cu)
defs = ["-DWITH_PYTHON"] + (["-DWITH_CUDA"] if cuda else [])
t0 = time.time()
load(name=name, sources=sources, extra_include_paths=[csrc], build_directory=build_dir, is_python_module=False,
     extra_cflags=[opt, "-Wno-sign-compare"] + defs, extra_cuda_cflags=[opt, "--expt-relaxed-constexpr"] + defs,
     extra_ldflags=["-s"], with_cuda=cuda, verbose=False)
print(f"{name}: built in {time.time() - t0:.0f} s")
"""


def _unpack(sdist: Path, work: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    roots = [p for p in work.iterdir() if p.is_dir() and (p / "csrc").is_dir()]
    root = next(p for p in roots if sdist.name.startswith(p.name))
    return root


def build(sdists: list[Path], target: Path, cuda: bool, jobs: int, only: list[str] | None = None) -> int:
    """Build every extension of every source package; return the number of failed extensions."""
    target.mkdir(parents=True, exist_ok=True)
    work = target / "_build"
    work.mkdir(exist_ok=True)
    tasks = []
    for sdist in sdists:
        root = _unpack(sdist, work)
        pkg = next(p for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()
                   and p.name.startswith("torch_"))
        dest = work / f"{pkg.name}.pkg"  # assembled here, moved to the target once every library built
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(pkg, dest)
        opt = "-O2" if pkg.name == "torch_cluster" else "-O3"  # as in each package's setup.py
        for main in sorted((root / "csrc").glob("*.cpp")):
            name = f"_{main.stem}_{'cuda' if cuda else 'cpu'}"
            if only and main.stem not in only:
                continue
            bdir = work / f"{pkg.name}{name}"
            bdir.mkdir(exist_ok=True)
            tasks.append((pkg.name, name, bdir, root / "csrc", dest, opt))
    # each extension has 2-3 sources: let every build run them side by side
    env = dict(os.environ, MAX_JOBS=str(max(1, min(3, 2 * jobs // max(1, len(tasks))))))

    def one(task) -> tuple[str, bool, str]:
        pkg, name, bdir, csrc, dest, opt = task
        p = subprocess.run([sys.executable, "-c", _CHILD, name, str(bdir), str(csrc), "1" if cuda else "0", opt],
                           capture_output=True, text=True, env=env)
        so = bdir / f"{name}.so"
        ok = p.returncode == 0 and so.exists()
        if ok:
            shutil.copy2(so, dest / f"{name}.so")
        return f"{pkg}.{name}", ok, (p.stdout + p.stderr)[-4000:]

    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, min(len(tasks), jobs))) as ex:
        results = list(ex.map(one, tasks))
    fails = 0
    broken = set()
    for label, ok, log in results:
        print(f"{'built ' if ok else 'FAILED'} {label}" + ("" if ok else f"\n{log}"), flush=True)
        fails += not ok
        if not ok:
            broken.add(label.split(".")[0])
    # a package appears on the target path only whole: a half-built one would fail every import of it
    # (its __init__ loads all libraries); the libraries of a broken one stay in <target>/_build
    for pkg in {t[0] for t in tasks}:
        src = work / f"{pkg}.pkg"
        if pkg in broken:
            print(f"{pkg}: not installed (see the failures above); its libraries are in {src}", flush=True)
            continue
        if (target / pkg).exists():
            shutil.rmtree(target / pkg)
        src.rename(target / pkg)
    print(f"{len(results) - fails}/{len(results)} extensions in {time.time() - t0:.0f} s wall", flush=True)
    return fails


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sdists", nargs="+", type=Path)
    p.add_argument("--target", type=Path, required=True)
    p.add_argument("--cpu", action="store_true", help="build the CPU libraries even when CUDA is available")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--only", default=None, help="comma-separated extension names (e.g. version,knn)")
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not a.cpu
    sys.exit(build(a.sdists, a.target, cuda, a.jobs, a.only.split(",") if a.only else None))


if __name__ == "__main__":
    main()
