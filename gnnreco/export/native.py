"""Call a TorchScript export from C++: build the libtorch runner shipped with gnnreco and run it.

A reconstruction framework calls an export through libtorch (``torch::jit::load`` and ``forward``, see
``docs/export.md``). gnnreco ships that call as a small C++ program, ``gnnreco/export/cpp/gnnreco_run.cpp``,
so the C++ path is compiled and checked rather than only documented:

* :func:`build_cpp_runner` configures and builds it with CMake against the libtorch inside the installed
  ``torch`` wheel (``torch.utils.cmake_prefix_path``: headers, ``libtorch.so`` and ``TorchConfig.cmake``
  come with every ``pip install torch``); the binary is cached per torch version.
* :func:`run_cpp` writes the inputs as raw buffers plus a text list (:func:`write_tensors`), runs the program
  and reads its outputs back (:func:`read_tensors`), with the median call time measured inside C++.

Needs a C++17 compiler and CMake ≥ 3.18; without them :func:`build_cpp_runner` raises
:class:`CppToolchainError` saying which one is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["CppToolchainError", "build_cpp_runner", "run_cpp", "write_tensors", "read_tensors", "CPP_SOURCE_DIR"]

#: The C++ runner's sources (CMakeLists.txt, gnnreco_run.cpp), installed with the package.
CPP_SOURCE_DIR = Path(__file__).with_name("cpp")

_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64", torch.int32: "int32",
           torch.bool: "bool"}
_NUMPY = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


class CppToolchainError(RuntimeError):
    """CMake or a C++ compiler is missing, or the runner failed to build."""


def _default_build_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gnnreco" / f"cpp-runner-torch-{torch.__version__.replace('+', '_')}"


def build_cpp_runner(build_dir: str | Path | None = None, jobs: int = 2, force: bool = False) -> Path:
    """Build ``gnnreco_run`` against the installed torch's libtorch and return the executable's path.

    Args:
        build_dir: CMake build directory (default ``~/.cache/gnnreco/cpp-runner-torch-<version>``); an
            existing binary there newer than the sources is reused unless ``force``.
        jobs: parallel compile jobs.
        force: rebuild even if a binary exists.

    Raises:
        CppToolchainError: ``cmake`` or a C++ compiler is not on PATH, or configuring/building failed (the
            message ends with the tail of the build log).
    """
    build = Path(build_dir) if build_dir is not None else _default_build_dir()
    exe = build / "gnnreco_run"
    sources = [CPP_SOURCE_DIR / "gnnreco_run.cpp", CPP_SOURCE_DIR / "CMakeLists.txt"]
    if exe.exists() and not force and exe.stat().st_mtime >= max(s.stat().st_mtime for s in sources):
        return exe
    if shutil.which("cmake") is None:
        raise CppToolchainError("building the C++ runner needs CMake >= 3.18 on PATH (not found)")
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "c++", "g++", "clang++")):
        raise CppToolchainError("building the C++ runner needs a C++17 compiler (c++, g++ or clang++; none found)")
    build.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(CPP_SOURCE_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"]
    for cmd in (configure, ["cmake", "--build", str(build), "-j", str(max(1, jobs))]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            log = (res.stdout + res.stderr).strip().splitlines()[-25:]
            raise CppToolchainError(f"`{' '.join(cmd)}` failed (exit {res.returncode}):\n" + "\n".join(log))
    if not exe.exists():
        raise CppToolchainError(f"the build finished but {exe} does not exist")
    return exe


def write_tensors(directory: str | Path, names: Sequence[str], tensors: Sequence[torch.Tensor],
                  list_name: str = "inputs.txt") -> None:
    """Write ``tensors`` as ``<name>.bin`` raw C-order buffers plus ``list_name`` (``name dtype ndim dims...``).

    Raises:
        ValueError: names and tensors differ in number, a name is not a plain identifier, or a dtype is not
            one of float32, float64, int64, int32, bool.
    """
    if len(names) != len(tensors):
        raise ValueError(f"write_tensors: {len(names)} names for {len(tensors)} tensors")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, t in zip(names, tensors):
        if not name.isidentifier():
            raise ValueError(f"write_tensors: name {name!r} must be a plain identifier (it becomes a file name)")
        if t.dtype not in _DTYPES:
            raise ValueError(f"write_tensors: {name} has dtype {t.dtype}; supported: {sorted(_DTYPES.values())}")
        a = t.detach().cpu().contiguous().numpy()
        (d / f"{name}.bin").write_bytes(a.tobytes(order="C"))
        lines.append(" ".join([name, _DTYPES[t.dtype], str(a.ndim), *map(str, a.shape)]))
    (d / list_name).write_text("\n".join(lines) + "\n")


def read_tensors(directory: str | Path, list_name: str = "outputs.txt") -> list[torch.Tensor]:
    """Read the tensors listed in ``list_name`` (format of :func:`write_tensors`), in order."""
    d = Path(directory)
    out = []
    for lineno, line in enumerate((d / list_name).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        name, dtype, ndim = parts[0], parts[1], int(parts[2])
        shape = tuple(int(v) for v in parts[3:3 + ndim])
        if dtype not in _NUMPY or len(shape) != ndim:
            raise ValueError(f"{d / list_name}:{lineno}: cannot parse {line!r}")
        a = np.fromfile(d / f"{name}.bin", dtype=_NUMPY[dtype])
        out.append(torch.from_numpy(a.reshape(shape)))
    return out


def run_cpp(model_path: str | Path, inputs: Sequence[torch.Tensor], names: Sequence[str] | None = None,
            runner: str | Path | None = None, repeat: int = 1, threads: int = 0,
            workdir: str | Path | None = None, warmup: int = 2) -> tuple[list[torch.Tensor], float]:
    """Run a TorchScript export through the C++ runner.

    Args:
        model_path: the export's ``model.pt``.
        inputs: the call's input tensors, in the order of the export's signature.
        names: input names (default ``in0, in1, ...``; only file names).
        runner: the ``gnnreco_run`` executable (default: :func:`build_cpp_runner`).
        repeat: timed calls; the returned time is their median in milliseconds, measured in C++.
        threads: libtorch intra-op threads (0: libtorch's default).
        workdir: where the buffers go (default: a temporary directory, removed afterwards).
        warmup: untimed calls first (TorchScript optimises the graph during its first calls).

    Returns:
        ``(outputs, median_ms)``; ``outputs`` flattens a tuple output into its elements.

    Raises:
        RuntimeError: the runner exited with an error (its message is included).
    """
    import tempfile

    exe = Path(runner) if runner is not None else build_cpp_runner()
    names = list(names) if names is not None else [f"in{i}" for i in range(len(inputs))]
    with tempfile.TemporaryDirectory(prefix="gnnreco_cpp_") as tmp:
        d = Path(workdir) if workdir is not None else Path(tmp)
        write_tensors(d, names, inputs)
        res = subprocess.run([str(exe), str(model_path), str(d), str(max(1, repeat)), str(threads),
                              str(max(0, warmup))],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{exe.name} failed (exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
        stats = dict(kv.split("=", 1) for kv in res.stdout.split() if "=" in kv)
        return read_tensors(d), float(stats.get("median_ms", "nan"))
