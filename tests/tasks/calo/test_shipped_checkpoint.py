"""The benchmark's calo network is committed (docs/checkpoints/): it loads with its sidecar's settings,
it is a trained network (not an initialisation), and the GPU scripts find it without a data root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gnnreco.bench import calo as bench
from gnnreco.bench import gpu

SHIPPED = Path(__file__).resolve().parents[3] / "docs" / "checkpoints" / "calo_gravnet.pt"


def test_sidecar_records_the_training_and_the_reconstruction_settings():
    info = bench.load_checkpoint_info(SHIPPED)
    assert info["train_steps"] > 10_000 and info["train_seconds"] > 600
    assert {"t_beta", "t_d", "energy_sharing"} <= set(info["reco"])
    from gnnreco.tasks.calo.model import CaloGravNet

    net = CaloGravNet(**info["net"])
    missing = net.load_state_dict(torch.load(SHIPPED), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys


def test_shipped_network_finds_the_showers_of_an_unseen_event():
    """A 20-shower test event (seed 30000 + 500: outside the benchmark's 150 test events): the trained
    network finds ≥ 80 % of the showers above 10 GeV at ≤ 20 % fakes,
    and does better than an untrained one of the same size."""
    from gnnreco.tasks.calo.metrics import CaloMetricsAccumulator
    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.calo.module import CaloModule

    torch.set_num_threads(1)
    info = bench.load_checkpoint_info(SHIPPED)
    event = bench._event(30_500, 20, energy=(10.0, 100.0))
    result = {}
    for name in ("trained", "untrained"):
        torch.manual_seed(0)
        net = CaloGravNet(**info["net"])
        if name == "trained":
            net.load_state_dict(torch.load(SHIPPED))
        module = CaloModule(net=net, optimizer=torch.optim.AdamW, metric_min_energy=10.0, **{**info["module"], **info["reco"]}).eval()
        with torch.no_grad():
            acc = CaloMetricsAccumulator(min_energy=10.0)
            acc.extend(module.event_results(event, module(event)))
        result[name] = acc.summary()
    assert result["trained"]["efficiency"] >= 0.8 and result["trained"]["fake_rate"] <= 0.2
    t, u = result["trained"], result["untrained"]
    assert t["resolution"] == t["resolution"]  # finite for the trained network
    # the untrained one is worse in at least one of the three (NaN where it finds nothing)
    assert not (u["efficiency"] >= t["efficiency"] and u["fake_rate"] <= t["fake_rate"]
                and u["resolution"] <= t["resolution"])


def test_gpu_bench_falls_back_to_the_committed_network(tmp_path):
    assert gpu._input("calo_ckpt", tmp_path) == gpu.ROOT / "docs" / "checkpoints" / "calo_gravnet.pt"
    own = tmp_path / "outputs" / "calo_bench" / "calo_gravnet.pt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"")
    assert gpu._input("calo_ckpt", tmp_path) == own  # a data root's own network comes first
    with pytest.raises(FileNotFoundError, match="pflow"):
        gpu._input("pflow_model", tmp_path)
