"""Learned suppression of condensation points (gnnreco.tasks.calo.pairs and condense(suppress=...))."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from gnnreco.tasks.calo.data import F_IN
from gnnreco.tasks.calo.model import CaloGravNet
from gnnreco.tasks.calo.module import CaloModule
from gnnreco.tasks.calo.pairs import (
    PAIR_FEATURES,
    PairClassifier,
    candidate_pairs,
    fit_pair_classifier,
    gather_pair_samples,
    pair_features,
)
from gnnreco.tasks.calo.reco import (
    SharedAssignment,
    absorb,
    absorption_targets,
    cluster_energies,
    cluster_energies_shared,
    condense,
    merge_fragments,
)


def _two_blobs(seed=0, n=200, gap=0.6):
    """Two clusters in cluster space, ``gap`` apart (inside one capture radius of 1): the paper's rule
    merges them; each has one high-β point."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(2 * n) // n
    x = torch.randn(2 * n, 2, generator=g) * 0.05
    x[:, 0] += truth * gap
    beta = torch.rand(2 * n, generator=g) * 0.2
    beta[0], beta[n] = 0.95, 0.9
    return beta, x, truth


def test_suppress_all_is_the_paper_rule_and_none_keeps_every_candidate():
    beta, x, truth = _two_blobs()
    ref = condense(beta, x, t_beta=0.1, t_d=1.0)
    same = condense(beta, x, t_beta=0.1, t_d=1.0, suppress=lambda a, c, d: torch.ones_like(d, dtype=torch.bool))
    assert torch.equal(ref.assignment, same.assignment) and torch.equal(ref.cp_index, same.cp_index)
    assert ref.cp_index.numel() == 1  # merged
    every = condense(beta, x, t_beta=0.1, t_d=1.0, suppress=lambda a, c, d: torch.zeros_like(d, dtype=torch.bool))
    assert every.cp_index.numel() == int((beta > 0.1).sum())


def test_truth_suppression_separates_the_merged_pair():
    beta, x, truth = _two_blobs()
    c = condense(beta, x, t_beta=0.5, t_d=1.0, assign="nearest", suppress=lambda a, c, d: truth[a] == truth[c])
    assert sorted(c.cp_index.tolist()) == [0, 200]
    # with the nearest assignment each blob goes to its own point
    assert torch.equal(c.assignment[truth == 0], torch.zeros(200, dtype=torch.long))
    assert torch.equal(c.assignment[truth == 1], torch.ones(200, dtype=torch.long))
    with pytest.raises(ValueError, match="flags"):
        condense(beta, x, t_beta=0.1, t_d=1.0, suppress=lambda a, c, d: torch.ones(3, dtype=torch.bool))


def _outputs(n=300, seed=0, n_pid=4):
    g = torch.Generator().manual_seed(seed)
    return {"beta": torch.rand(n, generator=g), "coords": torch.rand(n, 3, generator=g),
            "energy_factor": 1 + 0.1 * torch.randn(n, generator=g), "position": torch.randn(n, 2, generator=g),
            "time": torch.randn(n, generator=g), "pid_logits": torch.randn(n, n_pid, generator=g),
            "distance_scale": 0.2 + torch.rand(n, generator=g)}


def test_candidate_pairs_are_ranked_and_within_the_local_radius():
    out = _outputs()
    batch = torch.zeros(300, dtype=torch.long)
    batch[150:] = 1
    a, c, d = candidate_pairs(out, batch, t_beta=0.3, radius=1.5)
    assert a.numel() > 0
    beta, x, s = out["beta"], out["coords"], out["distance_scale"]
    assert (beta[a] >= beta[c]).all() and (beta[c] > 0.3).all()
    assert torch.equal(batch[a], batch[c])
    torch.testing.assert_close(d, (x[a] - x[c]).norm(dim=1))
    assert (d < 1.5 * s[a]).all()
    # every qualifying pair is there
    cand = torch.nonzero((beta > 0.3) & (batch == 0), as_tuple=True)[0]
    n_ref = sum(1 for i in cand for j in cand if beta[i] > beta[j]
                and float((x[i] - x[j]).norm()) < 1.5 * float(s[i]))
    assert int((batch[a] == 0).sum()) == n_ref
    f = pair_features(out, torch.rand(300, 3) * 100, torch.rand(300), a, c, d)
    assert f.shape == (a.numel(), len(PAIR_FEATURES) + 8) and torch.isfinite(f).all()


def test_classifier_learns_a_separable_rule_and_validates_inputs():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4000, len(PAIR_FEATURES) + 8, generator=g)
    y = (f[:, 0] + 0.5 * f[:, 6] < 0).float()  # "same shower" when close
    clf, loss = fit_pair_classifier(f, y, steps=600, batch_size=512)
    assert loss < 0.15
    acc = ((torch.sigmoid(clf(f)) > 0.5).float() == y).float().mean()
    assert acc > 0.95
    with pytest.raises(ValueError, match="NaN"):
        fit_pair_classifier(torch.full((10, f.shape[1]), float("nan")), torch.ones(10), steps=1)
    with pytest.raises(ValueError, match="labels"):
        fit_pair_classifier(f[:10], y[:5], steps=1)
    with pytest.raises(ValueError, match="expects"):
        fit_pair_classifier(f[:, :5], y, steps=1)
    with pytest.raises(ValueError, match="threshold"):
        clf.same_shower(_outputs(), torch.zeros(300, 3), torch.ones(300), 1.5)


class _Spread(torch.nn.Module):
    """An untrained network's cluster coordinates are collapsed (every hit near every other); spread
    them so the candidate pairs stay few, as for a trained network."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, batch):
        out = self.net(x, batch)
        return {**out, "coords": 100.0 * out["coords"]}


def test_gather_on_simulated_events_and_module_uses_the_classifier():
    from gnnreco.bench.calo import _event

    torch.manual_seed(0)
    batch = _event(5, 4, energy=(5.0, 20.0))
    net = CaloGravNet(in_dim=F_IN, hidden=16, n_blocks=2, k=8, predict_distance_scale=True)
    spread = _Spread(net).train()
    feats, labels = gather_pair_samples(spread, [batch], t_beta=0.5, radius=1.0, max_pairs_per_event=5000)
    assert feats.shape[0] == labels.shape[0] > 0 and feats.shape[0] <= 5000
    assert set(labels.unique().tolist()) <= {0.0, 1.0} and torch.isfinite(feats).all()
    assert spread.training  # gather restores the mode it found

    module = CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), t_beta=0.55, t_d=0.5,
                        local_radius=True, pair_threshold=0.5).eval()
    with torch.no_grad():
        out = spread(batch.x, batch.batch)
        r0 = module.reconstruct(batch, out)  # no classifier yet: the paper's rule
        never = PairClassifier()
        torch.nn.init.zeros_(never.mlp[-1].weight)
        torch.nn.init.constant_(never.mlp[-1].bias, -10.0)  # P(same) ≈ 0: nothing is suppressed
        module.set_pair_classifier(never)
        r1 = module.reconstruct(batch, out)
    n0 = sum(len(r["energy"]) for r in r0)
    n1 = sum(len(r["energy"]) for r in r1)
    assert n1 == int((out["beta"] > 0.55).sum()) > n0
    assert "pair_classifier" not in dict(module.named_modules())  # not trained with the network
    # fragment absorption with a classifier that always says "same": fewer clusters, same total energy
    always = PairClassifier()
    torch.nn.init.zeros_(always.mlp[-1].weight)
    torch.nn.init.constant_(always.mlp[-1].bias, 10.0)
    module.set_pair_classifier(always)
    module.hparams.update({"pair_threshold": 0.0, "absorb_threshold": 0.5, "absorb_radius": 3.0})
    with torch.no_grad():
        r2 = module.reconstruct(batch, out)
    assert sum(len(r["energy"]) for r in r2) < n0
    for ra, rb in zip(r0, r2):
        ea = np.bincount(ra["share_hit"], weights=ra["share_fraction"])
        eb = np.bincount(rb["share_hit"], weights=rb["share_fraction"])
        np.testing.assert_allclose(ea, eb, atol=1e-5)  # every hit keeps its shares, merged or not
    with pytest.raises(ValueError, match="pair_threshold"):
        CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), pair_threshold=2.0)
    assert np.isfinite(np.concatenate([r["energy"] for r in r1])).all()


def _three_clusters():
    """Cluster-space points: a wide shower A (hits 0-99, CP 0), a small fragment F of it just outside
    A's capture radius (hits 100-109, CP 100), a separate shower B far away (hits 110-209, CP 110)."""
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(100, 2, generator=g) * 0.1, torch.randn(10, 2, generator=g) * 0.02 + torch.tensor([1.2, 0.0]),
                   torch.randn(100, 2, generator=g) * 0.1 + torch.tensor([10.0, 0.0])])
    beta = torch.full((210,), 0.05)
    beta[0], beta[100], beta[110] = 0.9, 0.8, 0.85
    energy = torch.cat([torch.full((100,), 1.0), torch.full((10,), 0.5), torch.full((100,), 1.0)])
    return x, beta, energy


def test_fragment_is_absorbed_by_its_shower_and_energy_is_kept():
    x, beta, energy = _three_clusters()
    cond = condense(beta, x, t_beta=0.5, t_d=1.0)
    assert sorted(cond.cp_index.tolist()) == [0, 100, 110]
    e_k = cluster_energies(cond.assignment, energy, 3)
    yes = lambda a, c, d: torch.ones_like(d, dtype=torch.bool)  # noqa: E731
    no = lambda a, c, d: torch.zeros_like(d, dtype=torch.bool)  # noqa: E731
    assert torch.equal(absorption_targets(x, cond, e_k, t_d=1.0, radius=1.5, decide=no), torch.arange(3))
    target = absorption_targets(x, cond, e_k, t_d=1.0, radius=1.5, decide=yes)
    frag = int((cond.cp_index == 100).nonzero()[0, 0])
    big = int((cond.cp_index == 0).nonzero()[0, 0])
    assert int(target[frag]) == big and int((target != torch.arange(3)).sum()) == 1  # B is too far
    merged, shares = absorb(cond, target, SharedAssignment.from_hard(cond.assignment))
    assert sorted(merged.cp_index.tolist()) == [0, 110]
    assert torch.equal(merged.assignment[100:110], merged.assignment[:10])
    assert float(cluster_energies_shared(shares, energy, 2).sum()) == pytest.approx(float(energy.sum()))
    # the same through merge_fragments, for the hard assignment
    m2, a2 = merge_fragments(x, cond, cond.assignment, energy, t_d=1.0, radius=1.5, decide=yes)
    assert torch.equal(a2, merged.assignment) and torch.equal(m2.cp_index, merged.cp_index)
    with pytest.raises(ValueError, match="targets"):
        absorb(cond, torch.arange(2))
    with pytest.raises(ValueError, match="itself absorbed"):
        absorb(cond, torch.tensor([1, 2, 2]))
    with pytest.raises(ValueError, match="flags"):
        absorption_targets(x, cond, e_k, t_d=1.0, radius=1.5, decide=lambda a, c, d: torch.ones(7, dtype=torch.bool))


def test_absorption_chains_end_at_a_kept_cluster():
    # C (smallest) next to B next to A (largest), each within the other's radius only pairwise
    x = torch.tensor([[0.0, 0.0], [1.2, 0.0], [2.4, 0.0]])
    beta = torch.tensor([0.9, 0.8, 0.7])
    cond = condense(beta, x, t_beta=0.5, t_d=1.0)
    assert cond.cp_index.numel() == 3
    target = absorption_targets(x, cond, torch.tensor([3.0, 2.0, 1.0]), t_d=1.0, radius=1.5,
                                decide=lambda a, c, d: torch.ones_like(d, dtype=torch.bool))
    assert target.tolist() == [0, 0, 0]


def test_module_loads_a_saved_classifier_from_its_config(tmp_path):
    from gnnreco.tasks.calo.pairs import save_pair_classifier

    clf = PairClassifier()
    path = tmp_path / "pairs.pt"
    save_pair_classifier(clf, path, {"events": 1})
    net = CaloGravNet(in_dim=F_IN, hidden=8, n_blocks=1, k=4, predict_distance_scale=True)
    module = CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), pair_classifier=str(path),
                        absorb_threshold=0.5)
    f = torch.randn(5, clf.mean.numel())
    torch.testing.assert_close(module.pair_classifier(f), clf(f))
    with pytest.raises(FileNotFoundError, match="pair classifier"):
        CaloModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3), pair_classifier=str(tmp_path / "no.pt"))


def test_calo_experiment_config_takes_the_pair_classifier(compose, tmp_path):
    """The Hydra model config exposes the pair decisions as data: a saved classifier path and the
    thresholds, off by default."""
    from hydra.utils import instantiate

    from gnnreco.tasks.calo.pairs import save_pair_classifier

    cfg = compose("train", ["experiment=calo_quickstart"], test_conf=False)
    assert cfg.model.pair_classifier is None and cfg.model.absorb_threshold == 0.0
    path = tmp_path / "pairs.pt"
    save_pair_classifier(PairClassifier(), path)
    cfg = compose("train", ["experiment=calo_quickstart", f"model.pair_classifier={path}",
                            "model.absorb_threshold=0.5", "model.absorb_radius=2.0"], test_conf=False)
    model = instantiate(cfg.model)
    assert model.pair_classifier is not None and model.hparams.absorb_radius == 2.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pair_rules_on_cuda_equal_cpu():
    """Suppression and fragment merging give the same clusters on a GPU (dense neighbour search,
    classifier on the device) as on the CPU."""
    out = _outputs(n=2000, seed=5)
    out["coords"] = out["coords"] * 20.0
    pos, energy = torch.rand(2000, 3) * 1000, torch.rand(2000)
    clf = fit_pair_classifier(torch.randn(500, len(PAIR_FEATURES) + 8), (torch.rand(500) > 0.5).float(), steps=20)[0]
    res = []
    for dev in ("cpu", "cuda"):
        o = {k: v.to(dev) for k, v in out.items()}
        c = clf.to(dev)
        cond = condense(o["beta"], o["coords"], t_beta=0.5, t_d=1.0, distance_scale=o["distance_scale"],
                        suppress=c.same_shower(o, pos.to(dev), energy.to(dev), 0.5))
        cond, a = merge_fragments(o["coords"], cond, cond.assignment, energy.to(dev), t_d=1.0, radius=2.0,
                                  decide=c.same_shower(o, pos.to(dev), energy.to(dev), 0.5),
                                  distance_scale=o["distance_scale"])
        res.append((cond.cp_index.cpu(), a.cpu()))
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])
