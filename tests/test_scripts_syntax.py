"""The shell scripts of scripts/ parse (``bash -n``): the GPU ones run only on a lent machine, where a
syntax error would cost a lease."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.sh"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shell_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_gpu_scripts_are_there():
    names = {s.name for s in SCRIPTS}
    assert {"gpu_checks.sh", "gpu_train_tracking.sh", "gpu_train_calo.sh"} <= names
