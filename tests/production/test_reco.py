"""gnnreco.Reconstructor: from a checkpoint and from an export, plain numpy/awkward/torch inputs, results
in the input's hit indexing, buffer reuse, clear errors for a checkpoint of another task."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch

import gnnreco
from gnnreco.io import CheckpointMismatchError, tracks_from_columns
from tests.production.helpers_production import make_run


@pytest.fixture(scope="module")
def reco(tracking_setup):
    return gnnreco.Reconstructor.from_checkpoint(tracking_setup["ckpt"], device="cpu")


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_reco_numpy_torch_awkward_inputs_agree(reco, tracking_setup):
    ev = tracking_setup["fields"][0]
    r_np = reco.reco(ev)
    assert set(r_np) == {"hit_id", "track_label", "track_hits", "track_nhits", "track_score"}
    r_torch = reco({k: torch.from_numpy(np.asarray(v)) for k, v in ev.items()})
    r_ak = reco(ak.Record({k: ak.Array(np.asarray(v)) for k, v in ev.items()}))
    from gnnreco.io import default_schema, open_input

    r_file = reco(next(iter(open_input(tracking_setup["root"], default_schema("tracking")))))  # an InputEvent
    _same(r_np, r_file)
    _same(r_np, r_torch)
    _same(r_np, r_ak)
    # without hit ids the hits are numbered 1..N in input order: same tracks
    r_noid = reco({k: v for k, v in ev.items() if k != "hit_id"})
    np.testing.assert_array_equal(r_noid["track_hits"], r_np["track_hits"])


def test_results_are_in_input_indexing(reco, tracking_setup):
    n_tracks = 0
    for ev in tracking_setup["fields"][:6]:
        r = reco(ev)
        n = len(ev["x"])
        assert len(r["track_label"]) == n and np.array_equal(r["hit_id"], ev["hit_id"])
        tracks = tracks_from_columns(r["track_hits"], r["track_nhits"])
        assert len(tracks) == len(r["track_score"]) and np.all((r["track_score"] >= 0) & (r["track_score"] <= 1))
        for t, hits in enumerate(tracks):
            assert len(hits) >= 3 and np.all(r["track_label"][hits] == t)
        assert (r["track_label"] >= 0).sum() == len(r["track_hits"])
        n_tracks += len(tracks)
    assert n_tracks > 0  # the fixture biases the untrained network towards keeping edges


def test_reco_rejects_empty_event_and_reuses_batch_buffer(reco, tracking_setup):
    ev = tracking_setup["fields"][1]
    empty = {k: np.asarray(v)[:0] for k, v in ev.items()}
    assert reco(empty) is None
    evs = sorted(tracking_setup["fields"][:6], key=lambda e: len(e["x"]))
    reco(evs[-1])  # the largest first: later (smaller) events fit in the same buffer
    ptr, n_alloc = reco.buffers.zeros_long("batch", 1).data_ptr(), reco.buffers.allocations
    for e in evs[:-1]:
        reco(e)
    assert reco.buffers.zeros_long("batch", 1).data_ptr() == ptr and reco.buffers.allocations == n_alloc


def test_reco_docstring_shows_event_loop():
    doc = gnnreco.Reconstructor.__doc__
    assert "for event in" in doc and "from_checkpoint" in doc and "from_export" in doc


def test_checkpoint_of_another_task_is_refused(tmp_path, tracking_setup):
    calo_ckpt = make_run(tmp_path / "calo", ["experiment=calo_quickstart"])
    with pytest.raises(CheckpointMismatchError) as err:
        gnnreco.Reconstructor.from_checkpoint(calo_ckpt, config=tracking_setup["ckpt"].parents[1])
    msg = str(err.value)
    assert "'calo' checkpoint" in msg and "configured task is 'tracking'" in msg and str(calo_ckpt) in msg


def test_missing_config_is_named(tmp_path, tracking_setup):
    lone = tmp_path / "lone.ckpt"
    lone.write_bytes(tracking_setup["ckpt"].read_bytes())
    with pytest.raises(FileNotFoundError, match="no model config"):
        gnnreco.Reconstructor.from_checkpoint(lone)


@pytest.mark.parametrize("backend", ["torchscript", "onnx"])
def test_from_export_matches_checkpoint(backend, reco, tracking_setup, tmp_path):
    pytest.importorskip("onnxruntime")
    from omegaconf import OmegaConf
    from torch_geometric.data import Batch

    from gnnreco.data.datamodule import event_to_data
    from gnnreco.export import export_network

    module = reco.module
    graph, _ = reco.process(tracking_setup["fields"][3])
    batch = Batch.from_data_list([event_to_data({k: torch.as_tensor(v) for k, v in graph.items()})])
    cfg = OmegaConf.load(tracking_setup["ckpt"].parents[1] / ".hydra" / "config.yaml")
    out = tmp_path / "exp"
    export_network(module.net, module.export_inputs(batch), out, input_names=tuple(module.export_input_names),
                   output_names=("logits",), formats=(backend,), cfg=cfg)
    exp = gnnreco.Reconstructor.from_export(out, config=cfg, backend=backend, device="cpu")
    assert exp.module.net.backend == backend
    for ev in tracking_setup["fields"][4:7]:  # other event sizes than the traced one
        a, b = reco(ev), exp(ev)
        np.testing.assert_array_equal(a["track_label"], b["track_label"])
        np.testing.assert_allclose(a["track_score"], b["track_score"], atol=1e-4)
    import json

    if isinstance(json.loads((out / "manifest.json").read_text()).get("config"), dict):
        same = gnnreco.Reconstructor.from_export(out, backend=backend, device="cpu")  # config from the manifest
        np.testing.assert_array_equal(same(ev)["track_label"], b["track_label"])


@pytest.mark.gpu
def test_gpu_matches_cpu_and_reuses_device_buffers(reco, tracking_setup):
    gpu = gnnreco.Reconstructor.from_checkpoint(tracking_setup["ckpt"], device="cuda")
    assert gpu.device.type == "cuda"
    evs = tracking_setup["fields"]
    for ev in evs[:4]:
        a, b = reco(ev), gpu(ev)
        np.testing.assert_array_equal(a["track_hits"], b["track_hits"])
        np.testing.assert_allclose(a["track_score"], b["track_score"], atol=1e-4)
    big = max(evs, key=lambda e: len(e["x"]))
    gpu(big)
    n_alloc = gpu.buffers.allocations
    for ev in evs:
        if len(ev["x"]) <= len(big["x"]) * 0.5:
            gpu(ev)
    assert gpu.buffers.allocations == n_alloc  # smaller events reuse the device buffers
