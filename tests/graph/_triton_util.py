"""Shared by the Triton kernel tests: a check script run under ``TRITON_INTERPRET=1``, and a kernel
compiled to an sm_90 cubin without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def run_interpreted(script: str, marker: str) -> None:
    """Run ``tests/graph/<script>`` with ``TRITON_INTERPRET=1`` (a subprocess: the variable must precede
    the import of triton) and assert it succeeded and printed ``marker``."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(HERE / script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert marker in proc.stdout


def compile_for_hopper(kernel, signature: dict, constexprs: dict) -> None:
    """Compile ``kernel`` for sm_90 (H100/H200) and assert a cubin came out: the constructs that only
    the interpreter would accept fail here. ``signature`` maps every argument to its Triton type
    (``"constexpr"`` for the compile-time ones, whose values are in ``constexprs``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(signature)
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(names.index(n),): v for n, v in constexprs.items()})
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    except (FileNotFoundError, RuntimeError) as e:  # pragma: no cover - a triton build without ptxas
        if "ptxas" in str(e):
            pytest.skip(f"no ptxas in this triton build: {e}")
        raise
    assert "cubin" in compiled.asm and len(compiled.asm["cubin"]) > 1000
