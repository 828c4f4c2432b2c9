"""CaloModule: processing, one-batch training with pl.Trainer, reconstruction, metrics and plots."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from gnnreco.data.datamodule import EventDataModule
from gnnreco.sim.calo import simulate
from gnnreco.tasks.calo.data import F_IN, process_event
from gnnreco.tasks.calo.model import CaloGravNet
from gnnreco.tasks.calo.module import CaloModule, global_object_id, oc_hit_weights


def _module(**kw):
    net = CaloGravNet(in_dim=F_IN, hidden=16, n_blocks=2, k=8, energy_quantiles=True, predict_distance_scale=True)
    return CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), **kw)


def _dm(tmp_path, n_events=6):
    gen = partial(simulate, gun={"n_particles": [2, 5], "energy": [2.0, 30.0]}, noise=False)
    return EventDataModule(data_dir=str(tmp_path / "store"), task="calo", generator=gen,
                           processor=partial(process_event), n_events=n_events, batch_size=2, progress=False)


def test_process_event_labels_and_errors():
    raw = simulate(2, gun={"n_particles": 4})
    ev = process_event(raw)
    n = len(raw["hit_energy"])
    assert ev["x"].shape == (n, F_IN) and ev["x"].dtype == np.float32 and np.isfinite(ev["x"]).all()
    sig = ev["hit_shower"] >= 0
    assert (ev["hit_pid_class"][~sig] == -1).all() and (ev["hit_pid_class"][sig] >= 0).all()
    np.testing.assert_allclose(ev["shower_hit_energy"].sum(), raw["hit_energy"][sig].sum(), rtol=1e-5)
    assert process_event(raw, min_hits=n + 1) is None
    # zero or negative hit energies (e.g. after a pedestal subtraction) still give finite features
    odd = dict(raw)
    odd["hit_energy"] = raw["hit_energy"].copy()
    odd["hit_energy"][:3] = [0.0, -0.01, -5.0]
    assert np.isfinite(process_event(odd)["x"]).all()
    bad = dict(raw)
    bad["hit_shower"] = raw["hit_shower"].copy()
    bad["hit_shower"][0] = 99
    with pytest.raises(ValueError, match="'hit_shower' must lie in"):
        process_event(bad)
    bad = dict(raw)
    bad["hit_energy"] = raw["hit_energy"].copy()
    bad["hit_energy"][1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        process_event(bad)


def test_global_object_ids_are_unique_per_event():
    hs = torch.tensor([0, 1, -1, 0, 2, 1])
    b = torch.tensor([0, 0, 0, 1, 1, 1])
    gid = global_object_id(hs, torch.tensor([2, 3]), b)
    assert gid.tolist() == [1, 2, 0, 3, 5, 4]


def test_one_batch_training_and_test_with_trainer(tmp_path):
    torch.manual_seed(0)
    dm = _dm(tmp_path)
    model = _module(t_beta=0.5)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                         accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    trainer.test(model, datamodule=dm, verbose=False)
    for key in ("test/efficiency", "test/loss", "test/attractive"):
        assert key in trainer.callback_metrics, key
    acc = model.test_results()
    assert len(acc.events) >= 1
    paths = model.evaluation_plots(tmp_path / "plots")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert "energy_budget.png" in {p.name for p in paths}
    # a saved module reloads with a pair classifier given at load time (docs/calo.md, "Inference in a workflow")
    from gnnreco.tasks.calo.pairs import PairClassifier, save_pair_classifier

    ck = tmp_path / "calo.ckpt"
    trainer.save_checkpoint(ck)
    save_pair_classifier(PairClassifier(), tmp_path / "pairs.pt")
    fresh = _module()  # this module was built from objects, not a config: give them again
    again = CaloModule.load_from_checkpoint(ck, weights_only=False, net=fresh.net, optimizer=partial(torch.optim.AdamW, lr=1e-3),
                                            pair_classifier=str(tmp_path / "pairs.pt"), absorb_threshold=0.3)
    assert again.pair_classifier is not None and again.hparams.absorb_threshold == 0.3
    assert torch.equal(next(again.net.parameters()), next(model.net.parameters()))


@pytest.mark.parametrize("t_beta", [0.5, 1.0])
def test_reconstruct_outputs_per_event(tmp_path, t_beta):
    torch.manual_seed(1)
    dm = _dm(tmp_path, n_events=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    model = _module(t_beta=t_beta).eval()
    with torch.no_grad():
        out = model(batch)
        recos = model.reconstruct(batch, out)
    assert len(recos) == batch.num_graphs
    counts = torch.bincount(batch.batch).tolist()
    for r, n in zip(recos, counts):
        assert r["assignment"].shape == (n,)
        k = len(r["energy"])
        assert r["assignment"].max(initial=-1) < k and r["position"].shape == (k, 2)
        assert set(r) >= {"cp_index", "time", "pid", "beta", "energy_low", "energy_high"}
        # every condensation point is assigned to its own cluster
        assert (r["assignment"][r["cp_index"]] == np.arange(k)).all()


def test_test_views_average_outside_training_only(tmp_path):
    from gnnreco.tasks.calo.model import symmetric_views

    torch.manual_seed(2)
    dm = _dm(tmp_path, n_events=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    net = CaloGravNet(in_dim=F_IN, hidden=16, n_blocks=2, k=8, predict_distance_scale=True, coord_anchor_mm=100.0)
    model = CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), test_views=2, t_beta=0.05)
    with torch.no_grad():
        train_out = model.train()(batch)
        eval_out = model.eval()(batch)
        torch.testing.assert_close(eval_out["beta"], symmetric_views(net, batch.x, batch.batch, 2)["beta"])
        plain = net.eval()(batch.x, batch.batch)
        recos = model.reconstruct(batch, eval_out)
    net.train()
    torch.testing.assert_close(train_out["beta"], net.eval()(batch.x, batch.batch)["beta"])  # dropout-free net
    assert (eval_out["beta"] - plain["beta"]).abs().max() > 1e-5
    assert len(recos) == batch.num_graphs and all(len(r["energy"]) > 0 for r in recos)
    with pytest.raises(ValueError, match="test_views"):
        _module(test_views=3)


def test_bad_batch_is_a_counted_skip(tmp_path):
    dm = _dm(tmp_path, n_events=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    model = _module()
    out = model(batch)
    out["coords"] = out["coords"].clone()
    out["coords"][0, 0] = float("nan")
    loss, parts = model.compute_loss(batch, out)
    assert float(loss.detach()) == 0.0 and model.skipped_bad_events == 1 and "skipped_bad" in parts


def test_shower_calibration_and_local_radius_losses_train_their_heads(tmp_path):
    """The shower-energy loss reaches the calibration MLP, the radius loss the distance-scale head,
    and a local-radius module reconstructs with calibrated energies of the assigned hits."""
    torch.manual_seed(2)
    dm = _dm(tmp_path, n_events=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    net = CaloGravNet(in_dim=F_IN, hidden=16, n_blocks=1, k=6, coord_anchor_mm=50.0, space_anchor_mm=100.0,
                      shower_calibration=True, predict_distance_scale=True)
    model = CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), local_radius=True, s_log=0.5,
                       t_beta=0.3, t_d=2.0)
    out = model(batch)
    loss, parts = model.compute_loss(batch, out)
    assert {"shower_energy", "radius", "coward_log"} <= set(parts)
    assert all(torch.isfinite(v) for v in parts.values())
    loss.backward()
    assert net.shower_head.mlp[0].weight.grad.abs().sum() > 0
    assert net.head.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(batch)
        recos = model.reconstruct(batch, out)
    counts = torch.bincount(batch.batch).tolist()
    start = 0
    for r, n in zip(recos, counts):
        e = batch.hit_energy[start:start + n].numpy()
        a = r["assignment"]
        sums = np.bincount(a[a >= 0], weights=e[a >= 0], minlength=len(r["energy"]))
        assert len(r["energy"]) == len(sums) and np.isfinite(r["energy"]).all()
        # the calibration factor starts near 1: energies are close to the summed hit energies
        np.testing.assert_allclose(r["energy"], sums, rtol=0.5, atol=1e-6)
        start += n


def test_oc_energy_weights_and_nearest_assignment_in_module(tmp_path):
    """oc_hit_weights: None for p = 0, mean 1, monotone in energy, clipped; the module passes them to
    the loss (the attractive term changes) and reconstructs with the 'nearest' assignment."""
    e = torch.tensor([0.0, 0.001, 0.01, 0.1, 1.0, 10.0, float("nan")])
    assert oc_hit_weights(e, 0.0) is None
    w = oc_hit_weights(e, 0.5)
    assert torch.isfinite(w).all() and w.mean().item() == pytest.approx(1.0)
    assert (w[1:6].diff() >= 0).all() and w[0] == w[6]  # NaN counts as zero energy
    assert w.max() / w.min() <= (20.0 / 0.05) ** 0.5 + 1e-4
    with pytest.raises(ValueError, match="oc_energy_weight"):
        oc_hit_weights(e, -1.0)
    torch.manual_seed(0)
    dm = _dm(tmp_path, n_events=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    plain, weighted = _module(t_beta=0.2), _module(t_beta=0.2, oc_energy_weight=0.5, assign="nearest")
    weighted.load_state_dict(plain.state_dict())
    out = plain(batch)
    _, p0 = plain.compute_loss(batch, out)
    _, p1 = weighted.compute_loss(batch, out)
    assert not torch.isclose(p0["attractive"], p1["attractive"])
    assert torch.equal(p0["coward"], p1["coward"])  # the beta terms are not weighted
    weighted.eval()
    with torch.no_grad():
        recos = weighted.reconstruct(batch, weighted(batch))
    assert sum(len(r["energy"]) for r in recos) > 0


@pytest.mark.parametrize("on", ["truth", "condensed"])
def test_fit_shower_calibration_on_truth_or_condensed_clusters(tmp_path, on):
    """The second-stage fit moves only the calibration head, on the truth showers or on the condensed
    clusters matched to them, and lowers its loss."""
    torch.manual_seed(1)
    dm = _dm(tmp_path, n_events=4)
    dm.setup()
    batches = list(dm.train_dataloader())
    net = CaloGravNet(in_dim=F_IN, hidden=16, n_blocks=1, k=6, coord_anchor_mm=100.0, space_anchor_mm=100.0,
                      shower_calibration=True, predict_distance_scale=True)
    model = CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), t_beta=0.05, t_d=1.0).eval()
    samples = [s for b in batches for s in model._calibration_samples(b, model(b), on)]
    assert samples and all(u.shape[0] == s.shape[0] == e.shape[0] for u, s, e in samples)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first = model.fit_shower_calibration(batches, steps=1, on=on)
    net.load_state_dict(before)
    last = model.fit_shower_calibration(batches, steps=60, on=on)
    assert last < first
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("shower_head.") for k in changed)
    with pytest.raises(ValueError, match="'truth' or 'condensed'"):
        model.fit_shower_calibration(batches, on="predicted")


def test_energy_sharing_changes_energies_not_clusters(tmp_path):
    """energy_sharing='gaussian' keeps the hard clusters (assignment, matching) and only changes the
    shower energies; σ = 0 with the 'nearest' assignment gives the hard energies back."""
    torch.manual_seed(0)
    dm = _dm(tmp_path, n_events=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    kw = {"t_beta": 0.2, "t_d": 0.3, "local_radius": True}
    hard, shared = _module(**kw, assign="nearest"), _module(**kw, assign="nearest", energy_sharing="gaussian",
                                                           share_sigma=2.0, share_energy_power=1.0)
    limit = _module(**kw, assign="nearest", energy_sharing="gaussian", share_sigma=0.0)
    shared.load_state_dict(hard.state_dict())
    limit.load_state_dict(hard.state_dict())
    for m in (hard, shared, limit):
        m.eval()
    with torch.no_grad():
        out = hard(batch)
        r0, r1, r2 = hard.reconstruct(batch, out), shared.reconstruct(batch, out), limit.reconstruct(batch, out)
    assert sum(len(r["energy"]) for r in r0) > 1
    for a, b, c in zip(r0, r1, r2):
        np.testing.assert_array_equal(a["assignment"], b["assignment"])
        np.testing.assert_allclose(c["energy"], a["energy"], rtol=1e-6)
    e0 = np.concatenate([r["energy"] for r in r0])
    e1 = np.concatenate([r["energy"] for r in r1])
    assert not np.allclose(e0, e1)
    with pytest.raises(ValueError, match="energy_sharing"):
        _module(energy_sharing="soft")
