"""Compile-on-first-use C++ kernels shared as package data, loaded with ctypes.

gnnreco ships a few plain C/C++ kernels (no torch headers, C ABI on raw pointers) next to the Python
code that calls them. :class:`NativeLibrary` compiles one with the system C++ compiler (``$CXX``,
``c++``, ``g++`` or ``clang++``; ``-O3 -std=c++17 -shared -fPIC -pthread``, no ``-march=native`` so the
cached library stays portable) the first time it is needed and caches the shared library as
``~/.cache/gnnreco/native-<stem>-<hash>.so`` (``$XDG_CACHE_HOME`` respected; ``$GNNRECO_NATIVE_CACHE``
overrides the directory). The hash covers the source, the flags and the compiler's version; the
library is compiled under a temporary name and renamed into place atomically, so concurrent processes
(``pytest -n 2``) never load a half-written file.

With ``GNNRECO_NO_NATIVE=1``, without a compiler, or when compiling or loading fails, :meth:`get`
returns ``None`` (the reason logged once at INFO level) and callers use their torch implementation.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["NativeLibrary", "compile_shared", "compiler", "cache_dir", "disabled", "FLAGS"]

log = logging.getLogger(__name__)

#: Compiler flags of every native kernel.
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread"]


def disabled() -> bool:
    """Whether ``GNNRECO_NO_NATIVE`` switches the native kernels off (read on every call)."""
    return os.environ.get("GNNRECO_NO_NATIVE", "") not in ("", "0")


def cache_dir() -> Path:
    """Directory of the compiled libraries (``$GNNRECO_NATIVE_CACHE`` or ``<cache>/gnnreco``)."""
    env = os.environ.get("GNNRECO_NATIVE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gnnreco"


def compiler() -> str | None:
    """Path of the C++ compiler (``$CXX``, ``c++``, ``g++``, ``clang++``), or None."""
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def compile_shared(source: Path, stem: str, flags: list[str] | None = None) -> Path:
    """Compile ``source`` into a cached shared library and return its path (reused when present)."""
    flags = list(FLAGS if flags is None else flags)
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++, clang++)")
    ver = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(Path(source).read_bytes() + ver.encode() + " ".join(flags).encode()).hexdigest()[:16]
    cache = cache_dir()
    target = cache / f"native-{stem}-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".native-{stem}-{key}-", suffix=".so", dir=cache)
    os.close(fd)
    try:
        res = subprocess.run([cxx, *flags, str(source), "-o", tmp], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"compiling {Path(source).name} failed (exit {res.returncode}):\n{tail}")
        os.replace(tmp, target)  # atomic: a concurrent build of the same key writes identical bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class NativeLibrary:
    """One lazily compiled and loaded native kernel library.

    Args:
        source: the C++ file (package data).
        stem: name in the cache file and in log messages.
        version_symbol / version: a C function returning the API version the bindings expect.
        bind: sets ``restype``/``argtypes`` on the loaded ``ctypes.CDLL``.
        what: human name for the log line (e.g. "native kNN engine").
    """

    def __init__(self, source: Path, stem: str, version_symbol: str, version: int,
                 bind: Callable[[ctypes.CDLL], None], what: str) -> None:
        self.source, self.stem, self.what = Path(source), stem, what
        self.version_symbol, self.version, self.bind = version_symbol, int(version), bind
        self._lock = threading.Lock()
        self._tried = False
        self._lib: ctypes.CDLL | None = None
        self.reason: str | None = None
        self._logged_env = False

    def _load(self) -> ctypes.CDLL:
        path = compile_shared(self.source, self.stem)
        so = ctypes.CDLL(str(path))
        fn = getattr(so, self.version_symbol)
        fn.restype = ctypes.c_int
        if fn() != self.version:
            raise RuntimeError(f"{path} has API version {fn()}, expected {self.version}")
        self.bind(so)
        return so

    def get(self) -> ctypes.CDLL | None:
        """The loaded library, or None (disabled, no compiler, build or load failed; logged once)."""
        if disabled():
            if not self._logged_env:
                log.info("gnnreco: %s disabled by GNNRECO_NO_NATIVE; using the torch implementation", self.what)
                self._logged_env = True
            return None
        if self._tried:
            return self._lib
        with self._lock:
            if not self._tried:
                try:
                    self._lib = self._load()
                except Exception as exc:  # noqa: BLE001 - any failure means: use the torch implementation
                    self.reason = str(exc)
                    log.info("gnnreco: %s unavailable (%s); using the torch implementation", self.what, exc)
                self._tried = True
        return self._lib

    def reset(self) -> None:
        """Forget the loaded library (tests: retry after changing the environment)."""
        with self._lock:
            self._tried, self._lib, self.reason, self._logged_env = False, None, None, False
