"""The C++ path of an export: the libtorch runner shipped in gnnreco/export/cpp is built against the installed
torch and called on every task's TorchScript export; its outputs must equal the same program called from
Python, on an event of another size than the trace."""

from __future__ import annotations

import shutil

import pytest
import torch

from gnnreco.export.native import CppToolchainError, read_tensors, run_cpp, write_tensors
from tests.export._small import small_task_config

TASKS = ["tracking", "calo", "pflow", "dfei"]


def test_tensor_files_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g).double(), torch.arange(6).view(2, 3),
          torch.arange(4, dtype=torch.int32), torch.tensor([[True, False]]), torch.zeros(0, 3)]
    names = [f"t{i}" for i in range(len(ts))]
    write_tensors(tmp_path, names, ts, list_name="outputs.txt")
    back = read_tensors(tmp_path)
    assert len(back) == len(ts)
    for a, b in zip(ts, back):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


def test_tensor_files_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2 names for 1 tensors"):
        write_tensors(tmp_path, ["a", "b"], [torch.zeros(1)])
    with pytest.raises(ValueError, match="plain identifier"):
        write_tensors(tmp_path, ["../x"], [torch.zeros(1)])
    with pytest.raises(ValueError, match="dtype torch.float16"):
        write_tensors(tmp_path, ["h"], [torch.zeros(1, dtype=torch.float16)])


def _toolchain() -> bool:
    return shutil.which("cmake") is not None and any(shutil.which(c) for c in ("c++", "g++", "clang++"))


@pytest.fixture(scope="module")
def runner():
    from gnnreco.export.native import build_cpp_runner

    if not _toolchain():
        pytest.skip("needs CMake and a C++ compiler")
    try:
        return build_cpp_runner()
    except CppToolchainError as err:  # e.g. a torch build without its CMake files
        pytest.skip(f"C++ runner could not be built here: {err}")


@pytest.mark.slow
def test_runner_reports_bad_inputs(runner, tmp_path):
    """A missing model file and a buffer of the wrong size give the runner's own error, not a crash."""
    import subprocess

    with pytest.raises(RuntimeError, match="gnnreco_run failed"):
        run_cpp(tmp_path / "missing.pt", [torch.zeros(2)], runner=runner)
    torch.jit.trace(torch.nn.Linear(3, 2), torch.zeros(1, 3)).save(str(tmp_path / "lin.pt"))
    d = tmp_path / "io"
    write_tensors(d, ["x"], [torch.zeros(4, 3)])
    (d / "x.bin").write_bytes(b"\0" * 7)
    res = subprocess.run([str(runner), str(tmp_path / "lin.pt"), str(d)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "7 bytes, expected 48" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_cpp_call_equals_python(task, runner, tmp_path):
    from gnnreco.cli.common import build_model
    from gnnreco.export import example_batches, export_task

    cfg = small_task_config(task, tmp_path)
    torch.manual_seed(0)
    batches = example_batches(cfg, 2)
    model = build_model(cfg).eval()
    export_task(model, batches[0], tmp_path / "export", cfg=cfg, formats=("torchscript",), check_batches=[])
    inputs = [t for t in model.export_inputs(batches[1]) if t is not None]  # another size than the trace
    prog = torch.jit.load(str(tmp_path / "export" / "model.pt"))
    with torch.no_grad():
        ref = prog(*inputs)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    outs, ms = run_cpp(tmp_path / "export" / "model.pt", inputs, runner=runner, repeat=2,
                       threads=torch.get_num_threads())
    assert len(outs) == len(ref)
    for a, b in zip(outs, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        # the same libtorch; after its warm-up calls TorchScript's executor may run an optimised graph whose
        # float32 sums are ordered differently from the first Python call (differences ~1e-6)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert ms > 0
