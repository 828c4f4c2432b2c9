"""The glibc allocator settings for CPU inference (gnnreco.utils.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = "from gnnreco.utils.memory import tune_host_allocator as t; a = t(); b = t(); print(a, b)"


def _run(env_value: str | None) -> str:
    import os

    env = dict(os.environ)
    env.pop("GNNRECO_TUNE_MALLOC", None)
    if env_value is not None:
        env["GNNRECO_TUNE_MALLOC"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_applied_once_on_glibc_and_idempotent():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not a glibc system")
    assert _run(None) == ["True", "True"]


def test_environment_switch_leaves_the_allocator_alone():
    assert _run("0") == ["False", "False"]
