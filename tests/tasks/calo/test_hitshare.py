"""Learned energy sharing (gnnreco.tasks.calo.hitshare and CaloModule energy_sharing="learned")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gnnreco.tasks.calo.hitshare import (
    HIT_SHARE_FEATURES,
    gather_hit_share_samples,
    hit_cp_pairs,
    hit_share_features,
    hit_share_labels,
    share_energy_learned,
)
from gnnreco.tasks.calo.pairs import fit_pair_classifier
from gnnreco.tasks.calo.reco import Condensation, cluster_energies_shared, condense


def _toy(n_per=30, seed=0):
    """Three blobs on a line in cluster space: showers 0, 0 (a fragment of shower 0) and 1, each with one
    high-β point; the first blob carries most of shower 0's energy."""
    g = torch.Generator().manual_seed(seed)
    blob = torch.arange(3 * n_per) // n_per
    coords = torch.randn(3 * n_per, 3, generator=g) * 0.05
    coords[:, 0] += blob.float() * 0.8
    beta = torch.rand(3 * n_per, generator=g) * 0.2
    beta[blob.new_tensor([0, n_per, 2 * n_per])] = torch.tensor([0.95, 0.9, 0.85])
    shower = torch.tensor([0, 0, 1])[blob]
    energy = torch.where(blob == 0, 1.0, 0.2) + 0.01 * torch.rand(3 * n_per, generator=g)
    out = {"beta": beta, "coords": coords, "distance_scale": torch.ones(3 * n_per),
           "position": torch.zeros(3 * n_per, 2), "energy_factor": torch.ones(3 * n_per),
           "time": torch.zeros(3 * n_per), "pid_logits": torch.zeros(3 * n_per, 4)}
    hit_pos = torch.cat([coords[:, :2] * 100.0, torch.zeros(3 * n_per, 1)], dim=1)
    batch = torch.zeros(3 * n_per, dtype=torch.long)
    return out, hit_pos, energy, shower, batch


def test_labels_credit_only_the_main_cluster_of_the_hit_shower():
    out, hit_pos, energy, shower, batch = _toy()
    cond = condense(out["beta"], out["coords"], t_beta=0.5, t_d=0.3, batch=batch)
    assert cond.cp_index.numel() == 3
    h, p, d = hit_cp_pairs(out, cond, batch, t_d=0.3, radius=5.0)
    y = hit_share_labels(cond, shower, energy, h, p)
    main = {int(c) for c in range(3) if int(shower[cond.cp_index[c]]) == 1} | \
        {int(torch.argmax(cluster_energies_shared_hard(cond, energy)[:2]))}
    want = torch.tensor([float(int(p_) in main and int(shower[h_]) == int(shower[cond.cp_index[p_]]))
                         for h_, p_ in zip(h.tolist(), p.tolist())])
    assert torch.equal(y, want)
    assert y.sum() > 0 and (y == 0).any()
    # the fragment (the smaller cluster of shower 0) is never a positive
    frag = ({0, 1} - main).pop()
    assert y[p == frag].sum() == 0
    # a noise hit is 0 for every cluster
    noisy = shower.clone()
    noisy[h[0]] = -1
    assert hit_share_labels(cond, noisy, energy, h, p)[h == h[0]].sum() == 0


def cluster_energies_shared_hard(cond: Condensation, energy):
    from gnnreco.tasks.calo.reco import SharedAssignment

    return cluster_energies_shared(SharedAssignment.from_hard(cond.assignment), energy, cond.cp_index.numel())


def test_learned_fractions_follow_the_classifier_and_sum_to_one():
    out, hit_pos, energy, shower, batch = _toy()
    cond = condense(out["beta"], out["coords"], t_beta=0.5, t_d=0.3, batch=batch)
    n_f = len(HIT_SHARE_FEATURES) + 8
    h, p, d = hit_cp_pairs(out, cond, batch, t_d=0.3, radius=10.0)
    f = hit_share_features(out, hit_pos, energy, cond, h, p, d)
    assert f.shape == (h.numel(), n_f) and torch.isfinite(f).all()
    # a "classifier" that only trusts cluster-space closeness: −3 × d/σ
    rule = lambda feats: -3.0 * feats[:, 0]  # noqa: E731
    fracs = {}
    for k in (1.0, 8.0):
        sh = share_energy_learned(out, hit_pos, energy, cond, batch, rule, t_d=0.3, radius=10.0, power=k,
                                  min_fraction=0.0)
        tot = torch.zeros(energy.numel()).index_add_(0, sh.hit, sh.fraction)
        torch.testing.assert_close(tot, torch.ones_like(tot))  # every hit in reach, shared whole
        own = sh.hit == cond.cp_index[sh.cluster]
        assert torch.all(sh.fraction[own] == 1.0)  # a condensation point stays whole in its cluster
        fracs[k] = sh
    # sharper with a larger exponent: the largest fraction of every hit grows
    def top(sh):
        return torch.zeros(energy.numel()).scatter_reduce_(0, sh.hit, sh.fraction, "amax")
    assert (top(fracs[8.0]) >= top(fracs[1.0]) - 1e-6).all() and (top(fracs[8.0]) > top(fracs[1.0]) + 1e-3).any()
    # the energy goes mostly to the nearest blob's cluster: the three blobs keep their own energy
    e_k = cluster_energies_shared(fracs[8.0], energy, 3)
    blob = torch.arange(energy.numel()) // 30
    for c in range(3):
        blob_e = energy[blob == blob[cond.cp_index[c]]].sum()
        assert abs(float(e_k[c] - blob_e)) < 0.05 * float(blob_e)
    with pytest.raises(ValueError, match="power"):
        share_energy_learned(out, hit_pos, energy, cond, batch, rule, t_d=0.3, power=0.0)


def test_gather_and_fit_separate_the_main_cluster_from_the_fragment():
    out, hit_pos, energy, shower, batch = _toy(n_per=60)

    ev = SimpleNamespace(batch=batch, hit_pos=hit_pos, hit_energy=energy, hit_shower=shower)

    def cond_fn(b, o):
        return condense(o["beta"], o["coords"], t_beta=0.5, t_d=0.3, batch=b.batch)

    X, y = gather_hit_share_samples([ev, ev], lambda b: out, cond_fn, t_d=0.3, radius=10.0)
    assert X.shape[0] == y.numel() == 2 * hit_cp_pairs(out, cond_fn(ev, out), batch, t_d=0.3, radius=10.0)[0].numel()
    clf, loss = fit_pair_classifier(X, y, n_features=X.shape[1], steps=300)
    assert loss < 0.3
    acc = ((torch.sigmoid(clf(X)) > 0.5).float() == y).float().mean()
    assert acc > 0.9
    with pytest.raises(ValueError, match="no events"):
        gather_hit_share_samples([], lambda b: out, cond_fn, t_d=0.3)


def test_calo_config_takes_a_saved_share_classifier(compose, tmp_path):
    """The Hydra model config loads a saved hit-share classifier (off by default); the module refuses a
    learned sharing without a positive exponent."""
    from functools import partial

    from hydra.utils import instantiate

    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.calo.module import CaloModule
    from gnnreco.tasks.calo.pairs import PairClassifier, save_pair_classifier

    cfg = compose("train", ["experiment=calo_quickstart"], test_conf=False)
    assert cfg.model.share_classifier is None
    clf = PairClassifier(n_features=len(HIT_SHARE_FEATURES) + 8)
    path = tmp_path / "net.share.pt"
    save_pair_classifier(clf, path)
    cfg = compose("train", ["experiment=calo_quickstart", f"model.share_classifier={path}",
                            "model.energy_sharing=learned", "model.share_beta_power=8"], test_conf=False)
    model = instantiate(cfg.model)
    f = torch.randn(4, len(HIT_SHARE_FEATURES) + 8)
    torch.testing.assert_close(model.share_classifier(f), clf(f))
    with pytest.raises(ValueError, match="share_beta_power"):
        CaloModule(net=CaloGravNet(hidden=8, n_blocks=1, k=4), optimizer=partial(torch.optim.AdamW, lr=1e-3),
                   energy_sharing="learned", share_beta_power=0.0)


def test_the_documented_working_point_overrides_compose(compose):
    """docs/calo.md lists the benchmark's working point as Hydra overrides: every key exists in the config."""
    from pathlib import Path

    from hydra.utils import instantiate

    ck = Path(__file__).resolve().parents[3] / "docs" / "checkpoints" / "calo_gravnet.pt"
    over = [f"model.pair_classifier={ck}.pairs.pt", f"model.share_classifier={ck}.share.pt", "model.t_beta=0.7",
            "model.t_d=1.75", "model.energy_sharing=learned", "model.share_radius=2.0", "model.share_beta_power=32",
            "model.share_energy_power=0", "model.pair_threshold=0.05", "model.assign=nearest",
            "model.absorb_threshold=0.5", "model.absorb_radius=2.0"]
    cfg = compose("train", ["experiment=calo_quickstart", *over], test_conf=False)
    model = instantiate(cfg.model)
    assert model.hparams.energy_sharing == "learned" and model.share_classifier is not None
    assert model.pair_classifier is not None
    cfg = compose("train", ["experiment=calo_quickstart", "model.energy_sharing=gaussian", "model.share_sigma=0.25",
                            "model.share_radius=1.5", "model.share_beta_power=8", "model.share_energy_power=4"],
                  test_conf=False)
    assert instantiate(cfg.model).hparams.share_energy_power == 4


def test_classifiers_follow_the_module_to_its_device_and_dtype():
    """Moving the module (Lightning does, to the GPU) moves its pair and hit-share classifiers too, though
    they are not registered submodules."""
    from functools import partial

    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.calo.module import CaloModule
    from gnnreco.tasks.calo.pairs import PairClassifier

    module = CaloModule(net=CaloGravNet(hidden=8, n_blocks=1, k=4), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    module.set_pair_classifier(PairClassifier())
    module.set_share_classifier(PairClassifier(n_features=len(HIT_SHARE_FEATURES) + 8))
    module.to(torch.float64)
    assert module.pair_classifier.mean.dtype == torch.float64
    assert next(module.share_classifier.parameters()).dtype == torch.float64
    assert not any(n.startswith(("pair_classifier", "share_classifier")) for n, _ in module.named_parameters())


def test_an_event_without_condensation_points_shares_nothing():
    out, hit_pos, energy, shower, batch = _toy()
    cond = condense(out["beta"], out["coords"], t_beta=0.99, t_d=0.3, batch=batch)  # no candidate
    assert cond.cp_index.numel() == 0
    sh = share_energy_learned(out, hit_pos, energy, cond, batch, lambda f: f[:, 0], t_d=0.3, radius=2.0)
    assert sh.hit.numel() == sh.cluster.numel() == sh.fraction.numel() == 0
    h, p, d = hit_cp_pairs(out, cond, batch, t_d=0.3, radius=2.0)
    assert h.numel() == 0 and hit_share_labels(cond, shower, energy, h, p).numel() == 0


def test_settings_from_a_learned_sharing_sidecar_need_share_events():
    from pathlib import Path

    from gnnreco.bench import calo as bench

    ck = str(Path(__file__).resolve().parents[3] / "docs" / "checkpoints" / "calo_gravnet.pt")
    assert bench.reco_settings(ck)["energy_sharing"] == "learned"
    with pytest.raises(SystemExit, match="--share-events"):
        bench.main(["--compare", ck, ck, "--settings-from", ck, "--n-test", "1"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_learned_sharing_on_cuda_equals_cpu():
    """The learned sharing on a GPU (dense neighbour search, classifier on the device) gives the CPU's pairs
    and fractions."""
    out, hit_pos, energy, shower, batch = _toy(n_per=80)
    cond = condense(out["beta"], out["coords"], t_beta=0.5, t_d=0.3, batch=batch)
    X = torch.randn(300, len(HIT_SHARE_FEATURES) + 8)
    clf = fit_pair_classifier(X, (torch.rand(300) > 0.5).float(), n_features=X.shape[1], steps=20)[0]
    cpu = share_energy_learned(out, hit_pos, energy, cond, batch, clf, t_d=0.3, radius=3.0, power=8.0)
    dev = torch.device("cuda")
    cond_d = Condensation(cond.assignment.to(dev), cond.cp_index.to(dev), cond.n_rounds)
    gpu = share_energy_learned({k: v.to(dev) for k, v in out.items()}, hit_pos.to(dev), energy.to(dev), cond_d,
                               batch.to(dev), clf.to(dev), t_d=0.3, radius=3.0, power=8.0)
    assert torch.equal(gpu.hit.cpu(), cpu.hit) and torch.equal(gpu.cluster.cpu(), cpu.cluster)
    torch.testing.assert_close(gpu.fraction.cpu(), cpu.fraction, atol=1e-5, rtol=1e-4)
