"""The GPU benchmark's calo report (gnnreco.bench.gpu._tables): CPU/GPU β agreement is reported as a
largest and a median difference and the share of hits that moved (near-tied kNN neighbours)."""

from __future__ import annotations

import pytest

from gnnreco.bench import gpu
from gnnreco.bench.gpu import _tables


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setattr(gpu, "DEVICE", "cpu")  # the report names the device; no CUDA here


def _calo(**extra):
    r = {"hits": 50561, "ms": 76.3, "beta_max_abs_diff_vs_cpu": 0.34,
         "stages_ms": {"network": 48.6, "condensation": 24.4, "shower energies": 2.9}}
    r.update(extra)
    return {"calo": r}


def test_calo_line_reports_median_and_fraction():
    assert "max |Δ| = 3.40e-01." in _tables(_calo())  # a result written before the two new keys
    text = _tables(_calo(**{"beta_median_abs_diff": 2e-7, "beta_frac_diff_gt_1e-2": 4e-4}))
    assert "median 2.0e-07" in text and "0.040 % of the hits" in text
    assert "≤ 30 ms: **missed**" in text


def test_calo_goal_met_when_fast():
    assert "≤ 30 ms: met" in _tables(_calo(ms=25.0))


def test_calo_network_triton_line():
    text = _tables(_calo(network_ms_blocks=48.0, network_ms_triton=12.5,
                         **{"beta_triton_vs_blocks_frac_gt_1e-2": 2e-4}))
    assert "48.0 ms with the block-engine kNN, 12.5 ms with `knn_impl='triton'`" in text and "0.020 %" in text
    assert "failed: RuntimeError" in _tables(_calo(network_ms_blocks=48.0, network_ms_triton="failed: RuntimeError: x"))


def test_knn_table_has_the_triton_column():
    row = {"N": 100_000, "D": 3, "points": "uniform", "k": 16, "gnnreco_ms": 39.0, "reference": "torch_cluster",
           "gnnreco_triton_ms": 5.25, "triton_same": True, "torch_cluster_ms": 150.0, "speedup": 3.8, "same": True}
    text = _tables({"knn": [row]})
    assert "| gnnreco ms (triton) | triton same |" in text
    assert "| 39 | n/a | 5.25 | True | 150 |" in text



def test_calo_gpu_bench_runs_at_the_recorded_working_point_with_its_classifiers():
    """The committed sidecar records the table's settings: the GPU bench times those (pair classifier
    loaded from beside the checkpoint), not the training defaults, and its report says so."""
    from gnnreco.bench.calo import load_checkpoint_info

    ck = gpu.ROOT / "docs" / "checkpoints" / "calo_gravnet.pt"
    info = load_checkpoint_info(ck)
    mk, clfs = gpu.calo_working_point(ck, info)
    assert mk["t_beta"] == info["reco"]["t_beta"] and mk["t_d"] == info["reco"]["t_d"]
    assert "pair_classifier" in clfs and mk["absorb_threshold"] > 0
    assert ("share_classifier" in clfs) == (mk.get("energy_sharing") == "learned")
    text = _tables(_calo(working_point={"t_beta": 0.7, "absorb_threshold": 0.5}, classifiers=["pair_classifier"]))
    assert "working point (t_beta 0.7, absorb_threshold 0.5; pair_classifier)" in text
    assert gpu.calo_working_point(ck, {"module": {"t_beta": 0.1}}) == ({"t_beta": 0.1}, {})
