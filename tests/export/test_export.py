"""`gnnreco export` for every task: TorchScript and ONNX files that match eager PyTorch on events of
several sizes (dynamic axes), loaded back with ``torch.jit.load`` and onnxruntime, and a complete manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import compose_config

from gnnreco.export import (
    MANIFEST_VERSION,
    ExportMismatchError,
    config_hash,
    export_network,
    export_task,
    load_export,
)
from tests.export._small import small_task_config

ort = pytest.importorskip("onnxruntime")

TASKS = ["tracking", "calo", "pflow", "dfei"]
#: the task sections every manifest fills (docs/export.md)
SECTIONS = ("features", "normalisation", "thresholds", "postprocessing")


@pytest.fixture(scope="module")
def task_setup(tmp_path_factory):
    """``setup(task) -> (cfg, module, [batch, batch, batch, batch])``: small quick-start model and
    four one-event test batches, built once per task for this module."""
    from gnnreco.cli.common import build_model
    from gnnreco.export import example_batches

    cache: dict[str, tuple] = {}

    def setup(task: str):
        if task not in cache:
            tmp = tmp_path_factory.mktemp(task)
            cfg = small_task_config(task, tmp)
            torch.manual_seed(0)
            batches = example_batches(cfg, 4)
            model = build_model(cfg).eval()
            cache[task] = (cfg, model, batches)
        return cache[task]

    return setup


def _numel_sig(inputs):
    return [tuple(t.shape) for t in inputs]


@pytest.mark.parametrize("task", TASKS)
def test_export_matches_eager_and_loads(task, task_setup, tmp_path):
    cfg, model, batches = task_setup(task)
    assert set(model.export_formats) == {"torchscript", "onnx"}
    out = tmp_path / "exp"
    manifest = export_task(model, batches[0], out, cfg=cfg, check_batches=batches[1:3])
    assert manifest["files"] == {"torchscript": "model.pt", "onnx": "model.onnx"}
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest, default=str))
    for fmt in ("torchscript", "onnx"):
        assert manifest["max_abs_diff"][fmt] < 1e-3, (fmt, manifest["max_abs_diff"])

    # an event the export never saw, of another size (it also differs from the trace example)
    inputs = model.export_inputs(batches[3])
    names = list(model.export_output_names)
    from gnnreco.export import as_exportable

    wrapped = as_exportable(model.net).eval()
    with torch.no_grad():
        ref = getattr(wrapped, "reference", wrapped)(*inputs)
    ref = [ref[n] for n in names] if isinstance(ref, dict) else ([ref] if torch.is_tensor(ref) else list(ref))

    scripted = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        got_ts = scripted(*inputs)
    got_ts = [got_ts[n] for n in names] if isinstance(got_ts, dict) else (
        [got_ts] if torch.is_tensor(got_ts) else list(got_ts))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(out / "model.onnx"), so, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(model.export_input_names)
    got_ox = sess.run(names, {n: t.numpy() for n, t in zip(model.export_input_names, inputs)})
    for name, r, a, b in zip(names, ref, got_ts, got_ox):
        b = torch.from_numpy(np.asarray(b))
        assert a.shape == r.shape and b.shape == r.shape, (name, a.shape, b.shape, r.shape)
        if not r.numel():
            continue
        tol = 1e-5 + 1e-3 * float(r.abs().max()) if r.is_floating_point() else 0.0
        allowed = int(manifest["max_outlier_fraction"] * r.shape[0])  # kNN near-ties (calo), else 0
        for got in (a, b):
            rows = (got.double() - r.double()).abs().reshape(r.shape[0], -1).amax(1)
            assert int((rows > tol).sum()) <= allowed, (name, float(rows.max()), tol)

    # the Python loader used by Reconstructor.from_export gives the same outputs by name
    for backend in ("torchscript", "onnx"):
        m = load_export(out, backend=backend)
        res = m(**dict(zip(model.export_input_names, inputs)))
        assert list(res) == names
        for name, r in zip(names, ref):
            assert res[name].shape == r.shape


@pytest.mark.parametrize("task", TASKS)
def test_manifest_is_complete(task, task_setup, tmp_path):
    import gnnreco

    cfg, model, batches = task_setup(task)
    m = export_task(model, batches[0], tmp_path, formats=["torchscript"], cfg=cfg, check_batches=batches[1:2])
    assert m["manifest_version"] == MANIFEST_VERSION
    assert m["task"] == task
    assert m["gnnreco_version"] == gnnreco.__version__ and m["torch_version"] == torch.__version__
    assert m["config_hash"] == config_hash(cfg) and len(m["config_hash"]) == 16
    assert m["model_class"] == f"{type(model.net).__module__}.{type(model.net).__qualname__}"
    assert m["module_class"].endswith(type(model).__qualname__)
    inputs = model.export_inputs(batches[0])
    assert [i["name"] for i in m["inputs"]] == list(model.export_input_names)
    for spec, t in zip(m["inputs"], inputs):
        assert spec["dtype"] == str(t.dtype).replace("torch.", "")
        assert spec["example_shape"] == list(t.shape)
        assert len(spec["shape"]) == t.dim()
        assert any(isinstance(s, str) for s in spec["shape"]) or t.dim() == 0 or t.numel() <= 1, spec
    assert [o["name"] for o in m["outputs"]] == list(model.export_output_names)
    assert m["signature"].startswith("forward(")
    assert m["torchscript_device"] == "cpu"
    # a CPU-traced program must not pin the CPU, so the same file runs on a GPU
    prog = torch.jit.load(str(tmp_path / m["files"]["torchscript"]))
    codes = [mod.code for _, mod in [("", prog), *prog.named_modules()] if hasattr(mod, "code")]
    assert not any('torch.device("cpu")' in c for c in codes), f"{task}: traced export pins the CPU"
    for key in SECTIONS:
        assert m[key], f"manifest section {key!r} is empty for {task}"
    assert set(m["config"]) >= {"data", "model"}
    assert len(m["checked_input_shapes"]) == 2


def test_task_thresholds_reach_the_manifest(task_setup, tmp_path):
    cfg, model, batches = task_setup("tracking")
    m = export_task(model, batches[0], tmp_path, formats=["torchscript"])
    assert m["thresholds"]["edge_cut"] == model.edge_cut
    assert list(m["normalisation"]["x"]) == list(model.features)
    _, calo, cb = task_setup("calo")
    mc = export_task(calo, cb[0], tmp_path / "c", formats=["torchscript"])
    assert mc["thresholds"]["t_beta"] == calo.hparams.t_beta and mc["thresholds"]["t_d"] == calo.hparams.t_d


def test_calo_wrapper_matches_gravnet_with_every_head():
    """All optional heads and the local distance scale, two events per call, three sizes."""
    from gnnreco.export.calo import CaloExportNet
    from gnnreco.tasks.calo.model import CaloGravNet

    torch.manual_seed(3)
    net = CaloGravNet(in_dim=9, hidden=16, n_blocks=2, k=6, local_scale=True, energy_quantiles=True,
                      predict_distance_scale=True).eval()
    w = CaloExportNet(net)
    assert w.output_names[-1] == "distance_scale" and "energy_q" in w.output_names
    for n0, n1 in ((20, 30), (7, 45), (60, 6)):
        x = torch.randn(n0 + n1, 9)
        b = torch.cat([torch.zeros(n0), torch.ones(n1)]).long()
        with torch.no_grad():
            got, ref = w(x, b), w.reference(x, b)
        for name, a, r in zip(w.output_names, got, ref):
            assert torch.allclose(a, r, atol=1e-4, rtol=1e-4), name


def test_mismatch_between_export_and_eager_is_an_error(tmp_path):
    """Data-dependent Python control flow is frozen by tracing: the check on another input catches it."""

    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2.0 if float(x.sum()) > 0 else x * 3.0

    with pytest.raises(ExportMismatchError, match="differs from eager"):
        export_network(Branchy(), (torch.ones(4),), tmp_path, input_names=["x"], formats=["torchscript"],
                       check_inputs=[(-torch.ones(5),)])


def test_bad_arguments_name_what_is_wrong(tmp_path):
    lin = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="unknown export format"):
        export_network(lin, (torch.ones(4, 3),), tmp_path, input_names=["x"], formats=["tflite"])
    with pytest.raises(ValueError, match="input_names"):
        export_network(lin, (torch.ones(4, 3),), tmp_path, input_names=["x", "y"])
    with pytest.raises(ValueError, match="may not set"):
        export_network(lin, (torch.ones(4, 3),), tmp_path, input_names=["x"], extra_manifest={"inputs": []})
    export_network(lin, (torch.ones(4, 3),), tmp_path, input_names=["x"], output_names=["y"],
                   check_inputs=[(torch.ones(9, 3),)])
    m = load_export(tmp_path, backend="onnx")
    assert m(torch.ones(6, 3))["y"].shape == (6, 2)
    with pytest.raises(TypeError, match="'x' must be float32"):
        m(torch.ones(6, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="missing export input"):
        m(z=torch.ones(6, 3))
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_export(tmp_path / "nowhere")


def test_config_hash_follows_the_model_config_not_the_paths(tmp_path):
    a = compose_config("train", ["experiment=tracking_quickstart"], tmp_path / "a", test_conf=False)
    b = compose_config("train", ["experiment=tracking_quickstart"], tmp_path / "b", test_conf=False)
    c = compose_config("train", ["experiment=tracking_quickstart", "model.edge_cut=0.4"], tmp_path / "b",
                       test_conf=False)
    assert a.paths.output_dir != b.paths.output_dir
    assert config_hash(a) == config_hash(b) != config_hash(c)


@pytest.mark.gpu
@pytest.mark.parametrize("task", TASKS)
def test_torchscript_traced_on_cuda_runs_on_cuda(task, task_setup, tmp_path):
    """Tracing freezes the device of tensors a network allocates: a GPU program is traced on the GPU."""
    cfg, model, batches = task_setup(task)
    m = export_task(model, batches[0], tmp_path, formats=["torchscript"], check_batches=batches[1:2],
                    device="cuda")
    assert m["torchscript_device"] == "cuda"
    prog = load_export(tmp_path, backend="torchscript")
    out = prog(*model.export_inputs(batches[2]))
    assert all(t.is_cuda for t in out.values())
