"""Benchmark plumbing of ``gnnreco.bench.pflow``: the on-disk event cache, checkpoint reuse, diagnostics."""

import numpy as np
import pytest
import torch

from gnnreco.bench import pflow as bench
from gnnreco.tasks.pflow.model import MLPFNet


def _fake_event(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = 5 + seed % 7
    X = np.zeros((n, 12), np.float32)
    X[:, 0] = 1
    X[:, 1] = rng.uniform(1, 20, n)
    X[:, 5] = X[:, 1]
    return {"X": X, "y": np.zeros((n, 7), np.float32), "gen_p4": np.zeros((0, 4), np.float32), "seed": seed}


@pytest.fixture
def counted_gen(monkeypatch):
    calls = []

    def gen(seed: int) -> dict:
        calls.append(seed)
        return _fake_event(seed)

    monkeypatch.setattr(bench, "_gen", gen)
    return calls


def test_event_cache_generates_each_seed_once_and_is_identical(tmp_path, counted_gen):
    a = bench.make_events(150, 1000, n_workers=1, cache_dir=str(tmp_path))
    assert [e["seed"] for e in a] == list(range(1000, 1150))
    assert sorted(counted_gen) == list(range(1000, 1200))  # two whole blocks of 100 seeds
    assert len(list(tmp_path.glob("*.pkl"))) == 2 and not list(tmp_path.glob("*.tmp*"))
    counted_gen.clear()
    b = bench.make_events(120, 1030, n_workers=1, cache_dir=str(tmp_path))  # inside the cached blocks
    assert counted_gen == []
    assert [e["seed"] for e in b] == list(range(1030, 1150))
    np.testing.assert_array_equal(b[0]["X"], _fake_event(1030)["X"])
    c = bench.make_events(250, 1000, n_workers=1, cache_dir=str(tmp_path))  # grows: only block 1200 is new
    assert sorted(counted_gen) == list(range(1200, 1300)) and len(c) == 250
    # without a cache nothing is written and everything is generated
    counted_gen.clear()
    bench.make_events(3, 5000, n_workers=1, cache_dir=None)
    assert counted_gen == [5000, 5001, 5002] and len(list(tmp_path.glob("*.pkl"))) == 3


def test_event_cache_rejects_a_wrong_block(tmp_path, counted_gen):
    import pickle

    bench.make_events(10, 0, n_workers=1, cache_dir=str(tmp_path))
    path = next(tmp_path.glob("*.pkl"))
    with open(path, "wb") as f:
        pickle.dump({"start": 0, "events": []}, f)
    with pytest.raises(ValueError, match="not a block"):
        bench.make_events(10, 0, n_workers=1, cache_dir=str(tmp_path))


def test_saved_model_round_trip(tmp_path):
    torch.manual_seed(0)
    kw = {"backbone": "gnn_lsh", "width": 16, "n_layers": 1, "bin_size": 8, "geo_scale": 4.0}
    net = MLPFNet(**kw).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the initial state
    path = tmp_path / "m.pt"
    bench.save_model(str(path), net, kw, {"steps": 3, "n_train": 7})
    net2, kw2, info = bench.load_model(str(path))
    assert kw2 == kw and info == {"steps": 3, "n_train": 7}
    X = torch.rand(1, 20, 12)
    X[..., 0] = 1 + (torch.rand(1, 20) > 0.5).float()
    M = torch.ones(1, 20, dtype=torch.bool)
    with torch.no_grad():
        for a, b in zip(net(X, M), net2(X, M)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.save({"something": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        bench.load_model(str(tmp_path / "bad.pt"))


def test_diagnose_rows_use_targets_where_they_say():
    from gnnreco.tasks.pflow.data import generate_pflow_event

    ev = [generate_pflow_event(s, process="ttbar", backend="parametric") for s in (1, 2)]
    torch.manual_seed(0)
    net = MLPFNet(width=16, n_layers=1, bin_size=16).eval()
    s = bench.evaluate(net, ev, diagnose=True).summary()
    assert set(s) == {"mlpf", "baseline", "mlpf_cls+true_p4", "true_cls+mlpf_p4", "target"}
    # the targets as candidates reproduce the generator jets closely (this detector's ceiling)
    tgt = [r for r in s["target"]["jets"] if r["n_gen"] > 0 and r["median"] == r["median"]]
    assert tgt and all(abs(r["median"] - 1) < 0.15 for r in tgt)


def test_run_saves_and_reuses_the_network(tmp_path, monkeypatch):
    from gnnreco.tasks.pflow.data import generate_pflow_event

    monkeypatch.setattr(bench, "_gen", lambda s: generate_pflow_event(s, process="ttbar", backend="parametric"))
    path = str(tmp_path / "net.pt")
    kw = {"quick": True, "n_train": 6, "n_test": 3, "width": 16, "n_layers": 1, "bin_size": 16, "workers": 1,
          "cache_dir": str(tmp_path / "cache"), "skip_scaling": True}
    first = bench.run(minutes=0.01, save_path=path, loss_kw={"pt_linear_weight": 1.0}, **kw)
    again = bench.run(load_path=path, **kw)
    assert "trained in this run" in first and "loaded from" in again
    table = [ln for ln in first.splitlines() if ln.startswith("| jet")]
    assert table and table == [ln for ln in again.splitlines() if ln.startswith("| jet")]  # same net, same events
    assert "pt_linear_weight" in again  # the training record travels with the network
    warm = bench.run(minutes=0.01, init_path=path, **kw)
    assert "training stages" in warm


def test_link_features_run_on_validation_events_and_scaling(tmp_path, monkeypatch):
    from gnnreco.tasks.pflow.data import generate_pflow_event

    monkeypatch.setattr(bench, "_gen", lambda s: generate_pflow_event(s, process="ttbar", backend="parametric"))
    path = str(tmp_path / "net.pt")
    kw = {"quick": True, "n_train": 4, "n_test": 3, "width": 16, "n_layers": 1, "bin_size": 16, "workers": 1,
          "cache_dir": str(tmp_path / "cache"), "skip_scaling": True}
    first = bench.run(minutes=0.01, save_path=path, link=True, eval_set="val", **kw)
    assert "link features on" in first and "val events (seeds from 1400000)" in first
    assert "bootstrap over val events" in first
    net, net_kw, _ = bench.load_model(path)
    assert net_kw["extra_features"] == 4
    again = bench.run(load_path=path, **kw)  # a loaded network keeps its own inputs
    assert "link features on" in again and "test events (seeds from 1500000)" in again
    pool = bench.make_events(2, bench.VAL_SEED0, 1, str(tmp_path / "cache"))
    (n, t), = bench.scaling(net, pool, [100], repeat=1)  # times from the 12 schema columns
    assert n == 100 and t > 0
    with pytest.raises(ValueError, match="eval_set"):
        bench.run(eval_set="train", **kw)


def test_bootstrap_gain_of_identical_algorithms_is_zero():
    from gnnreco.tasks.pflow.metrics import PFEvaluator

    ev = PFEvaluator()
    rng = np.random.default_rng(0)
    for _ in range(5):
        gen = np.stack([rng.uniform(40, 80, 6), rng.uniform(-1, 1, 6), rng.uniform(-3, 3, 6), np.zeros(6)], 1)
        gen[:, 3] = gen[:, 0] * np.cosh(gen[:, 1])
        cand = np.zeros((6, 7), np.float32)
        cand[:, 0] = 1
        cand[:, 2] = gen[:, 0] * rng.uniform(0.8, 1.2, 6)
        cand[:, 3] = gen[:, 1]
        cand[:, 4], cand[:, 5] = np.sin(gen[:, 2]), np.cos(gen[:, 2])
        cand[:, 6] = cand[:, 2] * np.cosh(gen[:, 1])
        ev.add(cand, gen, {"mlpf": cand, "baseline": cand})
    sd, p_goal = bench.bootstrap_gain(ev, n_boot=20)
    assert sd == 0.0 and p_goal == 0.0
