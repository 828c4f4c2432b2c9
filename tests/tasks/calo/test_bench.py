"""Calo benchmark plumbing: the saved checkpoint's sidecar and its reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gnnreco.bench import calo as bench


def test_checkpoint_sidecar_errors_name_the_file(tmp_path):
    ck = tmp_path / "net.pt"
    with pytest.raises(FileNotFoundError, match="net.pt"):
        bench.load_checkpoint_info(ck)
    torch.save({}, ck)
    with pytest.raises(FileNotFoundError, match=r"net\.pt\.json"):
        bench.load_checkpoint_info(ck)
    (tmp_path / "net.pt.json").write_text(json.dumps({"net": {}}))
    with pytest.raises(ValueError, match="'module'"):
        bench.load_checkpoint_info(ck)


@pytest.mark.slow
def test_train_save_and_reuse_gives_the_same_evaluation(tmp_path):
    ck = tmp_path / "calo.pt"
    net = {**bench.NET, "hidden": 8, "k": 6}
    first = bench.train_and_evaluate(train_seconds=3.0, n_test=2, threads=1, checkpoint=ck, log_every=0,
                                     net_kwargs=net)
    info = bench.load_checkpoint_info(ck)
    assert info["net"] == net and info["train_steps"] == first["train_steps"] > 0
    again = bench.train_and_evaluate(n_test=2, threads=1, checkpoint=ck, reuse=True)
    assert again["reused"] and again["train_steps"] == first["train_steps"]
    for key in ("efficiency", "fake_rate", "resolution", "t_beta", "t_d"):
        assert again[key] == first[key] or (again[key] != again[key] and first[key] != first[key])
    assert set(again["budget"]) >= {"all", "electron"} and again["budget"]["all"]["n"] >= 0


def test_a_test_block_overlapping_other_seeds_is_refused():
    # the default block and a far one are independent of every seed the evaluation uses
    bench._check_test_seeds(bench.TEST_SEED0, 500, 16, 0, 500)
    bench._check_test_seeds(60_000, 200, 16, 100, 500)
    with pytest.raises(ValueError, match="validation"):
        bench._check_test_seeds(20_010, 10, 16, 0, 0)
    with pytest.raises(ValueError, match="pair classifier"):
        bench._check_test_seeds(49_990, 20, 16, 0, 500)
    with pytest.raises(ValueError, match="shower calibration"):
        bench._check_test_seeds(39_000, 1001, 16, 10, 0)
    with pytest.raises(ValueError, match="training"):
        bench._check_test_seeds(bench.TRAIN_SEED0 - 5, 10, 16, 0, 0)
    # a block is free once the evaluation does not use the events it would overlap
    bench._check_test_seeds(50_000, 100, 16, 0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        bench._check_test_seeds(-5, 1, 0, 0, 0)


def test_threshold_choice_prefers_resolution_within_the_goal_margins():
    s = lambda e, f, r: {"efficiency": e, "fake_rate": f, "resolution": r}  # noqa: E731
    grid = [((0.1, 1.0), s(0.99, 0.10, 0.05)),   # best resolution, too many fakes
            ((0.3, 1.5), s(0.98, 0.02, 0.09)),
            ((0.5, 2.0), s(0.965, 0.01, 0.08)),   # the choice
            ((0.7, 2.0), s(0.94, 0.00, 0.07))]    # efficiency below the margin
    assert bench.choose_thresholds(grid) == (0.5, 2.0)
    # nothing within the margins: the largest efficiency - fake rate
    assert bench.choose_thresholds(grid, min_efficiency=0.999) == (0.3, 1.5)
    # nothing measurable: the first point (the scans put the hard assignment first)
    assert bench.choose_thresholds([((0.2, 1.0), s(float("nan"), float("nan"), float("nan")))]) == (0.2, 1.0)
    # the points may be settings dicts (the energy-sharing scan)
    assert bench.choose_thresholds([({"energy_sharing": "none"}, s(0.97, 0.01, 0.09)),
                                    ({"energy_sharing": "gaussian"}, s(0.97, 0.01, 0.08))]) == \
        {"energy_sharing": "gaussian"}


def test_training_events_with_workers_are_the_same_events_in_order():
    """The loader workers that simulate ahead for a GPU hand out the seeds in order: same events as inline."""
    import itertools

    from gnnreco.bench.calo import _training_events

    inline = list(itertools.islice(_training_events(1_000_000, 0), 4))
    ahead = list(itertools.islice(_training_events(1_000_000, 2), 4))
    for a, b in zip(inline, ahead):
        assert torch.equal(a.x, b.x) and torch.equal(a.batch, b.batch)
    assert not torch.equal(inline[0].x[:5], inline[1].x[:5])  # consecutive seeds differ


def test_several_events_per_step_train_and_record_the_events_seen(tmp_path):
    """``events_per_step`` events go into one step as one batch (their showers stay apart), and the
    sidecar counts the events, so a continued training starts at the first unseen seed."""
    ev = [bench._event(1_000_000 + i, 50, crop=True) for i in range(2)]
    both = bench._merge(ev)
    assert both.num_graphs == 2 and both.x.shape[0] == ev[0].x.shape[0] + ev[1].x.shape[0]
    assert int(both.num_showers.sum()) == int(ev[0].num_showers.sum() + ev[1].num_showers.sum())
    ck = tmp_path / "calo.pt"
    net = {**bench.NET, "hidden": 8, "k": 6}
    info = bench.train_and_evaluate(train_seconds=2.0, threads=1, checkpoint=ck, log_every=0, net_kwargs=net,
                                    train_only=True, events_per_step=3)
    assert info["train_steps"] > 0 and info["train_events"] == 3 * info["train_steps"]
    assert info["events_per_step"] == 3 and bench.load_checkpoint_info(ck)["train_events"] == info["train_events"]
    with pytest.raises(ValueError, match="events_per_step"):
        bench.train_and_evaluate(train_seconds=1.0, threads=1, train_only=True, events_per_step=0)


def test_denser_training_events_hold_more_showers_and_are_recorded(tmp_path):
    """``train_showers`` sets the training multiplicity (an int or a [min, max] draw); the sidecar keeps
    it per stage, and the CLI form is checked."""
    import itertools

    from gnnreco.bench.calo import _showers_arg, _training_events

    sparse = next(_training_events(1_000_000, 0, 20))
    dense = next(_training_events(1_000_000, 0, 120))
    assert int(dense.num_showers.sum()) > 2 * int(sparse.num_showers.sum())
    drawn = [int(b.num_showers.sum()) for b in itertools.islice(_training_events(1_000_000, 0, [20, 120]), 4)]
    assert len(set(drawn)) > 1  # the multiplicity is drawn per event
    ck = tmp_path / "calo.pt"
    net = {**bench.NET, "hidden": 8, "k": 6}
    info = bench.train_and_evaluate(train_seconds=1.0, threads=1, checkpoint=ck, log_every=0, net_kwargs=net,
                                    train_only=True, train_showers=[60, 80])
    assert info["train_showers"] == [60, 80] and info["stages"][-1]["train_showers"] == [60, 80]
    assert _showers_arg([70]) == 70 and _showers_arg([50, 100]) == [50, 100]
    with pytest.raises(SystemExit, match="MIN MAX"):
        _showers_arg([100, 50])


def test_module_options_of_a_continued_training_reach_its_sidecar(tmp_path):
    """``--module-option KEY=VALUE`` (VALUE as JSON) overrides the continued network's module settings
    and is recorded in the new sidecar; the others come from the old sidecar; unknown keys and a
    missing ``=`` stop before the training."""
    from gnnreco.bench.calo import _module_options

    opts = _module_options(["oc_energy_weight=0.5", 'payload_weights={"energy": 0.4}', "potential=hinge"])
    assert opts == {"oc_energy_weight": 0.5, "payload_weights": {"energy": 0.4}, "potential": "hinge"}
    with pytest.raises(SystemExit, match="no setting 'bogus'"):
        _module_options(["bogus=1"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _module_options(["q_min"])
    with pytest.raises(SystemExit, match="--train-only"):
        bench.main(["--reuse-checkpoint", "--module-option", "q_min=1.0"])
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    net = {**bench.NET, "hidden": 8, "k": 6}
    bench.train_and_evaluate(train_seconds=0.5, threads=1, checkpoint=first, log_every=0, net_kwargs=net,
                             train_only=True, module_kwargs={"q_min": 0.7})
    bench.main(["--train-only", "--threads", "1", "--train-seconds", "0.5", "--init-checkpoint", str(first),
                "--checkpoint", str(second), "--module-option", "oc_energy_weight=0.5"])
    info = json.loads(Path(str(second) + ".json").read_text())
    assert info["module"]["oc_energy_weight"] == 0.5 and info["module"]["q_min"] == 0.7
    assert len(info["stages"]) == 2


def test_fixed_settings_skip_the_validation_choice(tmp_path):
    """``settings`` (or ``--compare ... --settings-from CKPT``) evaluates a network at given settings:
    the result carries exactly them (the pair thresholds only with a pair classifier); the sidecar's
    ``reco`` and ``reco_pairs`` blocks give them; incomplete settings and misplaced flags are refused."""
    ck = tmp_path / "n.pt"
    bench.train_and_evaluate(train_seconds=0.5, threads=1, checkpoint=ck, log_every=0,
                             net_kwargs={**bench.NET, "hidden": 8, "k": 6}, train_only=True)
    info = json.loads(Path(str(ck) + ".json").read_text())
    info["reco"] = {"t_beta": 0.3, "t_d": 2.25, "energy_sharing": "gaussian", "share_sigma": 0.5, "share_radius": 2.0,
                    "share_beta_power": 4.0, "share_energy_power": 2.0}
    info["reco_pairs"] = {"classifier": "n.pt.pairs.pt", "pair_threshold": 0.2, "assign": "nearest",
                          "absorb_threshold": 0.7, "absorb_radius": 1.5, "note": "x"}
    Path(str(ck) + ".json").write_text(json.dumps(info))
    fixed = bench.reco_settings(ck)
    assert fixed == {**info["reco"], "pair_threshold": 0.2, "assign": "nearest", "absorb_threshold": 0.7,
                     "absorb_radius": 1.5}
    r = bench.train_and_evaluate(n_test=1, n_val=1, threads=1, checkpoint=ck, reuse=True, settings=fixed)
    assert (r["t_beta"], r["t_d"]) == (0.3, 2.25)
    # no pair classifier here, so its thresholds are left out
    assert r["share"] == {k: v for k, v in info["reco"].items() if k not in ("t_beta", "t_d")}
    assert "validation" in r
    # fixed settings need no validation events: its figures are then NaN, not a crash in the metrics
    r0 = bench.train_and_evaluate(n_test=1, n_val=0, threads=1, checkpoint=ck, reuse=True, settings=fixed)
    assert r0["t_d"] == 2.25 and r0["validation"]["resolution_ratio"] != r0["validation"]["resolution_ratio"]
    with pytest.raises(ValueError, match="t_beta and t_d"):
        bench.train_and_evaluate(n_test=1, n_val=1, threads=1, checkpoint=ck, reuse=True, settings={"t_d": 1.0})
    del info["reco"]
    Path(str(ck) + ".json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="no reconstruction settings"):
        bench.reco_settings(ck)
    with pytest.raises(SystemExit, match="--compare"):
        bench.main(["--reuse-checkpoint", "--settings-from", str(ck)])


@pytest.mark.slow
def test_compare_gives_a_paired_difference_against_the_first_network(tmp_path):
    """Two saved networks on the same test events: the first row is the reference, the second carries
    its ratio minus the first's with a paired bootstrap error; one checkpoint is refused."""
    net = {**bench.NET, "hidden": 8, "k": 6}
    cks = []
    for i in range(2):
        ck = tmp_path / f"net{i}.pt"
        bench.train_and_evaluate(train_seconds=1.0 + i, threads=1, checkpoint=ck, log_every=0, net_kwargs=net,
                                 train_only=True, seed=i)
        cks.append(ck)
    rows, results = bench.compare(cks, n_test=2, n_val=1, n_boot=50)
    assert len(rows) == 2 and rows[0][-1] == "—" and len(rows[1]) == len(bench.COMPARE_HEADER)
    assert all("accumulator" not in r for r in results)
    assert all(set(r["validation"]) >= {"resolution_ratio", "efficiency", "fake_rate"} for r in results)
    ratios = [r["resolution_ratio"] for r in results]
    assert rows[1][-1].startswith(f"{ratios[1] - ratios[0]:+.3f} ± ")  # "+nan" if a tiny net finds nothing
    with pytest.raises(ValueError, match="at least two"):
        bench.compare(cks[:1])


def test_compare_passes_views_and_never_overwrites_a_saved_pair_classifier(monkeypatch):
    calls = []

    def fake(**kw):
        calls.append(kw)
        return {"resolution_ratio": 1.0 + len(calls), "efficiency": 1.0, "fake_rate": 0.0, "merge_rate": 0.0,
                "bootstrap": {"resolution_ratio": 0.1}, "accumulator": _FakeAcc(),
                "validation": {"resolution_ratio": 0.5 + len(calls)}}

    monkeypatch.setattr(bench, "train_and_evaluate", fake)
    rows, _ = bench.compare(["a.pt", "a.pt"], pair_events=5, views=[1, 2])
    assert [c["test_views"] for c in calls] == [1, 2] and not any(c["save_pairs"] for c in calls)
    assert rows[1][0] == "a.pt (2 views)" and rows[1][-1] == "+1.000 ± 0.050"
    assert [r[bench.COMPARE_HEADER.index("validation ratio")] for r in rows] == ["1.500", "2.500"]
    with pytest.raises(ValueError, match="test_views"):
        bench.compare(["a.pt", "b.pt", "c.pt"], views=[1, 2])


class _FakeAcc:
    def bootstrap(self, n, other=None):
        return {"ratio_difference": 0.05}


def test_budget_rows_are_one_markdown_row_per_class():
    from gnnreco.bench.report import markdown_table
    from gnnreco.tasks.calo.metrics import CaloMetricsAccumulator
    from tests.tasks.calo.test_metrics import _fragmented_events

    bud = CaloMetricsAccumulator(min_energy=10.0, events=_fragmented_events(n_events=10)).energy_budget()
    rows = bench.budget_rows(bud)
    assert [r[0] for r in rows] == list(bud) and all(len(r) == len(bench.BUDGET_HEADER) for r in rows)
    assert rows[0][8] == "1.00"  # fragments given back restore the hit sum
    table = markdown_table(bench.BUDGET_HEADER, rows)
    assert table.count("\n") == len(rows) + 1
