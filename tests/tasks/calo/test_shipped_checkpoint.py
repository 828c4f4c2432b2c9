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
    """A 20-shower event (seed 30500 with 20 showers, not the benchmark's 50-shower event of that seed): the trained
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
        module = CaloModule(net=net, optimizer=torch.optim.AdamW, metric_min_energy=10.0,
                            **{**info["module"], **bench.reco_settings(SHIPPED)}).eval()
        _set_classifiers(module)
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


def test_pair_classifier_fits_saves_loads_and_times_on_the_shipped_network(tmp_path):
    """The learned suppression end to end on the trained network: fitted on one event, saved next to
    a checkpoint path, loaded, and used inside the timed inference; a classifier that never
    suppresses gives every candidate its own shower there, the fitted one far fewer."""
    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.calo.pairs import PairClassifier, load_pair_classifier
    from gnnreco.tasks.calo.reco import condense

    torch.set_num_threads(1)
    info = bench.load_checkpoint_info(SHIPPED)
    net = CaloGravNet(**info["net"])
    net.load_state_dict(torch.load(SHIPPED))
    ck = tmp_path / "net.pt"
    clf, rec = bench.fit_pairs(net, 1, checkpoint=ck, steps=200)
    assert rec["pairs"] > 1000 and 0.0 < rec["same_fraction"] < 1.0 and rec["loss"] < 0.6
    loaded = load_pair_classifier(str(ck) + ".pairs.pt")
    event = bench._event(30_501, 10, energy=(10.0, 100.0))
    with torch.no_grad():
        out = net(event.x, event.batch)
        f = torch.randn(50, loaded.mean.numel())
        torch.testing.assert_close(loaded(f), clf(f))
        kw = {"t_beta": 0.7, "t_d": 1.5, "batch": event.batch, "distance_scale": out["distance_scale"]}
        n_paper = condense(out["beta"], out["coords"], **kw).cp_index.numel()
        n_fitted = condense(out["beta"], out["coords"], suppress=loaded.same_shower(
            out, event.hit_pos, event.hit_energy, 0.5), **kw).cp_index.numel()
        never = PairClassifier()
        torch.nn.init.zeros_(never.mlp[-1].weight)
        torch.nn.init.constant_(never.mlp[-1].bias, -10.0)
        n_never = condense(out["beta"], out["coords"], suppress=never.same_shower(
            out, event.hit_pos, event.hit_energy, 0.5), **kw).cp_index.numel()
    assert n_never == int((out["beta"] > 0.7).sum())
    assert n_paper <= n_fitted < n_never / 4
    t = bench.inference_time(threads=1, n_showers=10, repeat=1, checkpoint=SHIPPED, net_kwargs=info["net"],
                             module_kwargs={**info["module"], **info["reco"], "pair_threshold": 0.5},
                             pair_classifier=loaded, share_classifier=load_pair_classifier(str(SHIPPED) + ".share.pt"))
    assert t["time_s"] > 0 and t["stages"]["condensation"] > 0
    with pytest.raises(FileNotFoundError, match="pair classifier"):
        load_pair_classifier(tmp_path / "missing.pt")


@pytest.mark.slow
def test_bench_with_the_pair_classifier_reports_the_comparison_and_budget(tmp_path):
    """train_and_evaluate(pair_events=...) on a copy of the shipped network: the classifier is fitted,
    saved beside the copy, its thresholds chosen on validation events, and the result carries the
    energy budget (and the same events without the classifier when it was chosen)."""
    import shutil

    ck = tmp_path / "calo.pt"
    shutil.copy(SHIPPED, ck)
    shutil.copy(str(SHIPPED) + ".json", str(ck) + ".json")
    r = bench.train_and_evaluate(n_test=3, n_val=3, threads=1, checkpoint=ck, reuse=True, pair_events=2)
    assert (tmp_path / "calo.pt.pairs.pt").exists() and r["pairs"]["pairs"] > 1000
    assert {"pair_threshold", "assign", "absorb_threshold", "absorb_radius"} <= set(r["share"])
    assert r["share"]["absorb_threshold"] in bench.ABSORB_THRESHOLDS
    used = r["share"]["pair_threshold"] > 0 or r["share"]["absorb_threshold"] > 0
    assert ("no_pairs" in r) == used
    assert r["budget"]["all"]["n"] > 10


def _set_classifiers(module):
    """The committed pair and hit-share classifiers, fitted for the shipped network."""
    from gnnreco.tasks.calo.pairs import load_pair_classifier

    module.set_pair_classifier(load_pair_classifier(str(SHIPPED) + ".pairs.pt"))
    module.set_share_classifier(load_pair_classifier(str(SHIPPED) + ".share.pt"))


def _shipped_module():
    """The shipped network at the recorded working point (sidecar ``reco`` + ``reco_pairs``), with its classifiers."""
    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.calo.module import CaloModule

    info = bench.load_checkpoint_info(SHIPPED)
    net = CaloGravNet(**info["net"])
    net.load_state_dict(torch.load(SHIPPED))
    reco = bench.reco_settings(SHIPPED)
    module = CaloModule(net=net, optimizer=torch.optim.AdamW, metric_min_energy=10.0, **{**info["module"], **reco}).eval()
    _set_classifiers(module)
    return module, reco


#: settings that differ in every stage: thresholds, sharing (reusing a condensation), suppression, absorption
_SETTINGS = [{"t_d": 1.5, "energy_sharing": "none", "pair_threshold": 0.0, "absorb_threshold": 0.0},
             {"t_d": 1.5, "energy_sharing": "gaussian", "share_sigma": 0.5, "pair_threshold": 0.0, "absorb_threshold": 0.0},
             {"t_d": 1.5, "energy_sharing": "gaussian", "share_sigma": 0.25, "pair_threshold": 0.0, "absorb_threshold": 0.0},
             {"t_d": 1.5, "energy_sharing": "gaussian", "share_sigma": 0.25, "pair_threshold": 0.05, "absorb_threshold": 0.3},
             {"t_d": 1.5, "energy_sharing": "gaussian", "share_sigma": 0.25, "pair_threshold": 0.05, "absorb_threshold": 0.7},
             {"t_d": 2.0, "energy_sharing": "gaussian", "share_sigma": 0.25, "pair_threshold": 0.05, "absorb_threshold": 0.7}]


def test_reconstruction_cache_gives_the_uncached_results_setting_by_setting():
    """A scan's per-event cache (condensation, energy sharing) changes nothing: every setting gives the
    same clusters and energies as without it, and the cache is emptied for another event."""
    torch.set_num_threads(1)
    module, reco = _shipped_module()
    events = [bench._event(20_900 + i, 15, energy=(10.0, 100.0)) for i in range(2)]
    with torch.no_grad():
        outs = [module(e) for e in events]
    cache: dict = {}
    seen = set()
    for e, o in zip(events, outs):
        for st in _SETTINGS:
            bench._set(module, {**reco, **st})
            got, want = module.reconstruct(e, o, cache=cache)[0], module.reconstruct(e, o)[0]
            assert set(got) == set(want)
            for k in want:
                assert (got[k] == want[k]).all(), (st, k)
            seen.add(len(want["energy"]))
        # one condensation per (t_d, suppression), one sharing per sharing option on top of it
        assert sum(k[0] == "condense" for k in cache if isinstance(k, tuple)) == 3
        assert cache["owner"][1] == id(o)
    assert len(seen) > 2  # the settings do change the clusters


def test_scan_over_forked_workers_equals_the_sequential_scan():
    torch.set_num_threads(1)
    module, reco = _shipped_module()
    events = [bench._event(20_910 + i, 10, energy=(10.0, 100.0)) for i in range(4)]
    with torch.no_grad():
        outs = [module(e) for e in events]
    settings = [{**reco, **st} for st in _SETTINGS[2:5]]
    one = bench.scan(module, events, outs, settings, workers=1)
    two = bench.scan(module, events, outs, settings, workers=2)
    assert [st for st, _ in one] == [st for st, _ in two] == settings
    for (_, a), (_, b) in zip(one, two):
        assert a == pytest.approx(b, nan_ok=True)
    assert all(module.hparams[k] == v for k, v in settings[-1].items())  # the module keeps the last setting
    assert one[0][1]["resolution"] != one[2][1]["resolution"]


def test_learned_sharing_in_the_module_needs_and_uses_its_hit_share_classifier():
    """``energy_sharing: learned`` on the shipped network: refused without a classifier; with one fitted
    by the benchmark (one event) every hit in reach is shared whole and the energies differ from the
    Gaussian sharing's."""
    torch.set_num_threads(1)
    module, reco = _shipped_module()
    module.set_share_classifier(None)
    event = bench._event(20_920, 10, energy=(10.0, 100.0))
    with torch.no_grad():
        out = module(event)
    bench._set(module, {"energy_sharing": "gaussian", "share_radius": 1.5, "share_beta_power": 8.0,
                        "share_energy_power": 4.0})
    gauss = module.reconstruct(event, out)[0]
    clf, rec = bench.fit_share(module, 1, t_d=reco["t_d"], steps=200)
    assert rec["pairs"] > 1000 and 0.0 < rec["positive_fraction"] < 1.0
    bench._set(module, {"energy_sharing": "learned", "share_radius": 2.0, "share_beta_power": 8.0,
                        "share_energy_power": 0.0})
    with pytest.raises(RuntimeError, match="hit-share classifier"):
        module.reconstruct(event, out)
    module.set_share_classifier(clf)
    learned = module.reconstruct(event, out)[0]
    tot = torch.zeros(event.num_nodes).index_add_(0, torch.from_numpy(learned["share_hit"]),
                                                  torch.from_numpy(learned["share_fraction"]).float())
    reached = tot > 0
    torch.testing.assert_close(tot[reached], torch.ones(int(reached.sum())))
    assert len(learned["energy"]) == len(gauss["energy"]) or learned["energy"].sum() != gauss["energy"].sum()
    assert not (len(learned["energy"]) == len(gauss["energy"]) and (learned["energy"] == gauss["energy"]).all())
    t = bench.inference_time(threads=1, n_showers=10, repeat=1, checkpoint=SHIPPED,
                             net_kwargs=bench.load_checkpoint_info(SHIPPED)["net"],
                             module_kwargs={**module.hparams}, pair_classifier=module.pair_classifier,
                             share_classifier=clf)
    assert t["time_s"] > 0
    with pytest.raises(ValueError, match="share_classifier"):
        bench.inference_time(threads=1, n_showers=10, repeat=1, checkpoint=SHIPPED,
                             net_kwargs=bench.load_checkpoint_info(SHIPPED)["net"], module_kwargs={**module.hparams})


def test_learned_sharing_settings_need_share_events_and_their_own_seeds():
    with pytest.raises(ValueError, match="hit-share"):
        bench._check_test_seeds(bench.SHARE_SEED0, 10, 0, 0, 0, share_events=5)
    bench._check_test_seeds(bench.SHARE_SEED0 + 5, 10, 0, 0, 0, share_events=5)  # just after them: fine
    with pytest.raises(ValueError, match="share_events"):
        bench.train_and_evaluate(checkpoint=SHIPPED, reuse=True, n_val=0, n_test=1, threads=1,
                                 settings={"t_beta": 0.7, "t_d": 1.5, "energy_sharing": "learned"}, save_pairs=False)
