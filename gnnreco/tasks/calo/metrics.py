r"""Shower-level metrics of calorimeter clustering.

For every event, truth and predicted showers are matched with :func:`~gnnreco.tasks.calo.reco.match_showers`
(energy-weighted IoU ≥ threshold, Hungarian assignment). Over a set of events:

* **efficiency** = matched truth showers / truth showers (above ``min_energy``);
* **fake rate** = unmatched predicted showers / predicted showers (predicted energy above ``min_energy``);
* **merge rate**: a truth shower is *merged* when the predicted shower holding most of its energy
  also holds at least half of another truth shower's energy, and both contribute ≥ 50 % of their
  own energy to it;
* **split rate**: a truth shower is *split* when two or more predicted showers are each made up
  ≥ 50 % of its hits' energy and each hold ≥ 10 % of it;
* **energy response** :math:`E_{pred}/E_{true}` of matched pairs (generated energy), with the
  **resolution** :math:`\mathrm{IQR}/(1.349\,\mathrm{median})`, in bins of :math:`E_{true}` and
  :math:`\eta`; the same for the *truth-assignment hit sum* (the summed hit energy of the truth hits,
  calibrated per true PID class by its median response), the reference the network is compared with;
* **PID confusion** of matched pairs (true class × predicted class at the condensation point);
* **energy budget** (:func:`energy_budget`, :meth:`CaloMetricsAccumulator.energy_budget`): where the
  hit energy of each truth shower went (its matched prediction, predictions matched to other showers,
  unmatched predictions, nowhere) and what its prediction received from other showers and noise, and
  the resolution the summed energy would have if each loss were undone (an oracle): it tells how
  much of the gap to the truth-assignment hit sum each of them is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gnnreco.sim.calo import PID_CLASSES
from gnnreco.tasks.calo.reco import Matching

__all__ = ["EventResult", "CaloMetricsAccumulator", "robust_resolution", "binned_response", "energy_budget",
           "BUDGET_KEYS"]

#: per-truth-shower energies of :func:`energy_budget` (GeV of hit energy)
BUDGET_KEYS = ("total", "own", "lost_matched", "lost_unmatched", "unassigned", "received_other", "received_noise")


@dataclass
class EventResult:
    """Per-event inputs of the metrics (numpy arrays).

    Attributes:
        matching: the IoU matching of the event.
        truth_energy: generated energy per truth shower ``[T]``.
        truth_hit_energy: summed hit energy of the truth hits per shower ``[T]``.
        truth_eta: η per truth shower ``[T]``.
        truth_pid: PID class per truth shower ``[T]``.
        pred_energy: predicted (regressed) energy per predicted shower ``[P]``.
        pred_pid: predicted PID class per predicted shower ``[P]``.
        budget: the :func:`energy_budget` of the event (optional).
    """

    matching: Matching
    truth_energy: np.ndarray
    truth_hit_energy: np.ndarray
    truth_eta: np.ndarray
    truth_pid: np.ndarray
    pred_energy: np.ndarray
    pred_pid: np.ndarray
    budget: dict[str, np.ndarray] | None = None


def energy_budget(hit_shower: np.ndarray, hit_energy: np.ndarray, share_hit: np.ndarray, share_cluster: np.ndarray,
                  share_fraction: np.ndarray, matching: Matching, n_truth: int, n_pred: int) -> dict[str, np.ndarray]:
    """Where each truth shower's hit energy went, for one event (numpy; energies clipped at 0).

    Args:
        hit_shower: truth shower per hit (−1 noise).
        hit_energy: hit energies.
        share_hit, share_cluster, share_fraction: the (hit, predicted shower, fraction) pairs the
            predicted energies were summed over (the hard assignment: fraction 1).
        matching: the event's truth–prediction matching.
        n_truth, n_pred: showers in the event.

    Returns ``[n_truth]`` arrays (:data:`BUDGET_KEYS`): ``total`` (its hit energy), ``own`` (given to
    its matched prediction; 0 if unmatched), ``lost_matched`` (to predictions matched to other
    showers), ``lost_unmatched`` (to unmatched predictions: fragments and fakes), ``unassigned`` (to
    none), and what its matched prediction ``received_other`` from other showers' hits and
    ``received_noise`` from noise hits. ``own + lost_matched + lost_unmatched + unassigned = total``.
    """
    hs = np.asarray(hit_shower, dtype=np.int64)
    e = np.clip(np.nan_to_num(np.asarray(hit_energy, dtype=np.float64)), 0.0, None)
    h = np.asarray(share_hit, dtype=np.int64)
    q = np.asarray(share_cluster, dtype=np.int64)
    if h.shape != q.shape or h.shape != np.shape(share_fraction):
        raise ValueError(f"energy_budget: share_hit {h.shape}, share_cluster {q.shape} and share_fraction "
                         f"{np.shape(share_fraction)} must have the same shape")
    if h.size and (h.min() < 0 or h.max() >= len(hs) or q.min() < 0 or q.max() >= n_pred):
        raise ValueError("energy_budget: a share pair points outside the event's hits or predicted showers")
    if hs.size and hs.max() >= n_truth:
        raise ValueError(f"energy_budget: hit_shower holds {int(hs.max())}, the event has {n_truth} showers")
    ef = e[h] * np.asarray(share_fraction, dtype=np.float64)
    t = hs[h]
    pred_of = np.full(n_truth, -1, dtype=np.int64)
    pred_of[np.asarray(matching.truth_idx, dtype=np.int64)] = matching.pred_idx
    truth_of = np.full(n_pred, -1, dtype=np.int64)
    truth_of[np.asarray(matching.pred_idx, dtype=np.int64)] = matching.truth_idx
    sig = t >= 0
    ts = np.where(sig, t, 0)
    tq = truth_of[q]
    own_m = sig & (pred_of[ts] == q)
    to_matched = sig & ~own_m & (tq >= 0)
    to_unmatched = sig & (tq < 0)

    def per_truth(mask: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.bincount(idx[mask], weights=ef[mask], minlength=n_truth)[:n_truth]

    sh = hs >= 0
    total = np.bincount(hs[sh], weights=e[sh], minlength=n_truth)[:n_truth]
    own = per_truth(own_m, ts)
    lost_m = per_truth(to_matched, ts)
    lost_u = per_truth(to_unmatched, ts)
    tq0 = np.where(tq >= 0, tq, 0)
    recv_o = per_truth(sig & (tq >= 0) & (t != tq), tq0)
    recv_n = per_truth(~sig & (tq >= 0), tq0)
    return {"total": total, "own": own, "lost_matched": lost_m, "lost_unmatched": lost_u,
            "unassigned": np.clip(total - own - lost_m - lost_u, 0.0, None), "received_other": recv_o,
            "received_noise": recv_n}


def robust_resolution(r: np.ndarray) -> tuple[float, float]:
    """(median, IQR/(1.349·median)) of a response sample; NaN for fewer than 3 entries."""
    r = np.asarray(r, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < 3:
        return float("nan"), float("nan")
    q25, q50, q75 = np.percentile(r, [25, 50, 75])
    return float(q50), float((q75 - q25) / 1.349 / q50) if q50 != 0 else float("nan")


def binned_response(resp: np.ndarray, var: np.ndarray, edges: Sequence[float]) -> dict[str, np.ndarray]:
    """Median response and resolution of ``resp`` in bins of ``var``."""
    edges = np.asarray(edges, dtype=float)
    med, res, cnt = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (var >= lo) & (var < hi)
        m, s = robust_resolution(resp[sel])
        med.append(m)
        res.append(s)
        cnt.append(int(sel.sum()))
    return {"edges": edges, "median": np.array(med), "resolution": np.array(res), "count": np.array(cnt)}


def _truth_sum_response(t: dict[str, np.ndarray], sel: np.ndarray) -> np.ndarray:
    """Truth-assignment hit sum over generated energy, calibrated per PID class by its median."""
    r = t["hit_energy"][sel] / t["energy"][sel]
    pid = t["pid"][sel]
    out = r.copy()
    for c in np.unique(pid):
        s = pid == c
        med = np.median(r[s])
        if med > 0:
            out[s] = r[s] / med
    return out


@dataclass
class CaloMetricsAccumulator:
    """Collects :class:`EventResult` objects and summarises them.

    Args:
        min_energy: showers (truth: generated energy; predicted: regressed energy) below this are
            ignored in efficiency and fake rate (GeV).
        n_pid: number of PID classes.
    """

    min_energy: float = 0.0
    n_pid: int = len(PID_CLASSES)
    events: list[EventResult] = field(default_factory=list)

    def add(self, ev: EventResult) -> None:
        self.events.append(ev)

    def extend(self, evs: Iterable[EventResult]) -> None:
        self.events.extend(evs)

    def reset(self) -> None:
        self.events.clear()

    # ------------------------------------------------------------------ per-shower tables
    def truth_table(self) -> dict[str, np.ndarray]:
        """One row per truth shower: energy, η, pid, matched, merged, split, matched prediction."""
        cols: dict[str, list[np.ndarray]] = {k: [] for k in (
            "energy", "hit_energy", "eta", "pid", "matched", "merged", "split", "pred_energy", "pred_pid")}
        for ev in self.events:
            m = ev.matching
            t_n = len(ev.truth_energy)
            matched = np.zeros(t_n, bool)
            matched[m.truth_idx] = True
            pe = np.full(t_n, np.nan)
            pp = np.full(t_n, -1)
            pe[m.truth_idx] = ev.pred_energy[m.pred_idx]
            pp[m.truth_idx] = ev.pred_pid[m.pred_idx]
            merged = np.zeros(t_n, bool)
            split = np.zeros(t_n, bool)
            inter = m.intersection
            if inter.size:
                te = np.maximum(m.truth_energy[:t_n], 1e-12)
                frac_t = inter / te[:, None]  # share of truth t's energy in p
                best_p = np.argmax(inter, axis=1)
                big = frac_t >= 0.5
                n_big = big.sum(0)  # truth showers contributing ≥50 % of themselves to p
                merged = big[np.arange(t_n), best_p] & (n_big[best_p] >= 2)
                frac_p = inter / np.maximum(m.pred_energy[None, :], 1e-12)
                split = ((frac_p >= 0.5) & (frac_t >= 0.1)).sum(1) >= 2
            for k, v in (("energy", ev.truth_energy), ("hit_energy", ev.truth_hit_energy), ("eta", ev.truth_eta),
                         ("pid", ev.truth_pid), ("matched", matched), ("merged", merged), ("split", split),
                         ("pred_energy", pe), ("pred_pid", pp)):
                cols[k].append(np.asarray(v))
        # no events: empty columns of the right kind, so masks built from them stay boolean
        empty = {"matched": bool, "merged": bool, "split": bool, "pid": np.int64, "pred_pid": np.int64}
        return {k: (np.concatenate(v) if v else np.zeros(0, empty.get(k, float))) for k, v in cols.items()}

    def pred_table(self) -> dict[str, np.ndarray]:
        """One row per predicted shower: regressed energy and whether it is matched."""
        e, mt = [], []
        for ev in self.events:
            p_n = len(ev.pred_energy)
            matched = np.zeros(p_n, bool)
            matched[ev.matching.pred_idx] = True
            e.append(ev.pred_energy)
            mt.append(matched)
        return {"energy": np.concatenate(e) if e else np.zeros(0), "matched": np.concatenate(mt) if mt else np.zeros(0, bool)}

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, float]:
        """Scalar metrics: efficiency, fake_rate, merge_rate, split_rate, response, resolution, ..."""
        t = self.truth_table()
        p = self.pred_table()
        out: dict[str, float] = {}
        sel = t["energy"] > self.min_energy
        n_t = int(sel.sum())
        out["n_truth"] = float(n_t)
        out["efficiency"] = float(t["matched"][sel].mean()) if n_t else float("nan")
        out["merge_rate"] = float(t["merged"][sel].mean()) if n_t else float("nan")
        out["split_rate"] = float(t["split"][sel].mean()) if n_t else float("nan")
        psel = p["energy"] > self.min_energy
        n_p = int(psel.sum())
        out["n_pred"] = float(n_p)
        out["fake_rate"] = float(1.0 - p["matched"][psel].mean()) if n_p else float("nan")
        m = sel & t["matched"]
        resp = t["pred_energy"][m] / t["energy"][m]
        out["response"], out["resolution"] = robust_resolution(resp)
        _, out["resolution_truth_sum"] = robust_resolution(_truth_sum_response(t, sel))
        out["resolution_ratio"] = out["resolution"] / out["resolution_truth_sum"] \
            if out["resolution_truth_sum"] and np.isfinite(out["resolution_truth_sum"]) else float("nan")
        if m.any():
            out["pid_accuracy"] = float((t["pred_pid"][m] == t["pid"][m]).mean())
        return out

    def bootstrap(self, n: int = 1000, seed: int = 0, other: CaloMetricsAccumulator | None = None
                  ) -> dict[str, float]:
        """Standard deviations of ``resolution``, ``resolution_truth_sum`` and ``resolution_ratio`` over
        ``n`` bootstrap replicas that draw the events with replacement (showers of one event stay
        together; the per-class calibration of the hit-sum reference is redone in every replica).

        With ``other`` (the same events reconstructed another way) both are resampled with the same
        events and ``ratio_difference`` is the standard deviation of this ratio minus the other's."""
        tables = [self._event_rows()] + ([other._event_rows()] if other is not None else [])
        if other is not None and len(other.events) != len(self.events):
            raise ValueError("bootstrap: 'other' must hold the same events")
        keys = ("resolution", "resolution_truth_sum", "resolution_ratio")
        if not self.events:
            return {k: float("nan") for k in keys}
        rng = np.random.default_rng(seed)
        vals: dict[str, list[float]] = {k: [] for k in (*keys, "ratio_difference")}
        for _ in range(n):
            evs = rng.integers(0, len(self.events), len(self.events))
            ratios = []
            for j, (t, starts, lens) in enumerate(tables):
                rows = np.concatenate([np.arange(starts[e], starts[e] + lens[e]) for e in evs])
                tb = {k: v[rows] for k, v in t.items()}
                sel = tb["energy"] > self.min_energy
                m = sel & tb["matched"]
                _, res = robust_resolution(tb["pred_energy"][m] / tb["energy"][m])
                _, ref = robust_resolution(_truth_sum_response(tb, sel))
                ratios.append(res / ref if ref else float("nan"))
                if j == 0:
                    vals["resolution"].append(res)
                    vals["resolution_truth_sum"].append(ref)
                    vals["resolution_ratio"].append(ratios[0])
            if other is not None:
                vals["ratio_difference"].append(ratios[0] - ratios[1])
        return {k: float(np.nanstd(v)) for k, v in vals.items() if v}

    def _event_rows(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The truth table with each event's first row and row count."""
        lens = np.array([len(ev.truth_energy) for ev in self.events], dtype=np.int64)
        return self.truth_table(), np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64), lens

    def response_vs(self, var: str, edges: Sequence[float]) -> dict[str, dict[str, np.ndarray]]:
        """Binned response/resolution versus ``"energy"`` or ``"eta"``, for the network and the truth sum."""
        t = self.truth_table()
        sel = t["energy"] > self.min_energy
        m = sel & t["matched"]
        return {
            "network": binned_response(t["pred_energy"][m] / t["energy"][m], t[var][m], edges),
            "truth_sum": binned_response(_truth_sum_response(t, sel), t[var][sel], edges),
        }

    def efficiency_vs(self, var: str, edges: Sequence[float]) -> dict[str, np.ndarray]:
        """Efficiency, merge and split rates in bins of a truth variable."""
        t = self.truth_table()
        edges = np.asarray(edges, float)
        out = {"edges": edges}
        idx = np.digitize(t[var], edges) - 1
        for name in ("matched", "merged", "split"):
            vals = []
            for b in range(len(edges) - 1):
                s = idx == b
                vals.append(float(t[name][s].mean()) if s.any() else np.nan)
            out["efficiency" if name == "matched" else name] = np.array(vals)
        return out

    def energy_budget(self) -> dict[str, dict[str, float]]:
        """Energy budget of the matched truth showers above ``min_energy``, per true class and pooled
        (``"all"``).

        For each group: ``n``; the mean fractions of the showers' hit energy that stayed with their
        prediction (``own``), went to predictions matched to other showers (``lost_matched``), to
        unmatched ones (``lost_unmatched``) or nowhere (``unassigned``), and the energy their
        predictions received from other showers and noise (``received``, a fraction of the hit
        energy); and the resolution (IQR/1.349/median, each class calibrated by its median) of the
        prediction's summed hit energy as reconstructed (``res_reco``), with the fragments' energy
        given back (``res_plus_fragments``), with everything lost given back (``res_plus_lost``), and
        with nothing received (``res_minus_received``), each divided by the truth-assignment hit sum's
        resolution over the same showers (``res_truth_sum``, the ``ratio_*`` keys). Needs events with
        a ``budget`` (:meth:`CaloModule.event_results` fills it).
        """
        rows: dict[str, list[np.ndarray]] = {k: [] for k in (*BUDGET_KEYS, "energy", "pid")}
        for ev in self.events:
            if ev.budget is None:
                raise ValueError("energy_budget: an event has no budget (EventResult.budget is None)")
            m = np.zeros(len(ev.truth_energy), bool)
            m[ev.matching.truth_idx] = True
            m &= ev.truth_energy > self.min_energy
            for k in BUDGET_KEYS:
                rows[k].append(np.asarray(ev.budget[k])[m])
            rows["energy"].append(ev.truth_energy[m])
            rows["pid"].append(ev.truth_pid[m])
        r = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in rows.items()}
        tot = np.maximum(r["total"], 1e-12)
        recv = r["received_other"] + r["received_noise"]
        reco = r["own"] + recv
        sums = {"reco": reco, "plus_fragments": reco + r["lost_unmatched"],
                "plus_lost": reco + r["lost_unmatched"] + r["lost_matched"], "minus_received": r["own"],
                "truth_sum": r["total"]}
        calibrated = {}
        for name, x in sums.items():  # each class calibrated by its median response
            resp = x / np.maximum(r["energy"], 1e-12)
            out = np.full(len(resp), np.nan)
            for c in np.unique(r["pid"]):
                cm = r["pid"] == c
                med = np.median(resp[cm])
                out[cm] = resp[cm] / med if med > 0 else np.nan
            calibrated[name] = out
        groups = {"all": np.ones(len(r["energy"]), bool)}
        groups.update({name: r["pid"] == c for c, name in enumerate(PID_CLASSES[:self.n_pid])})
        res: dict[str, dict[str, float]] = {}
        for g, gm in groups.items():
            d: dict[str, float] = {"n": float(gm.sum())}
            for k in ("own", "lost_matched", "lost_unmatched", "unassigned"):
                d[k] = float(np.mean(r[k][gm] / tot[gm])) if gm.any() else float("nan")
            d["received"] = float(np.mean(recv[gm] / tot[gm])) if gm.any() else float("nan")
            for name, x in calibrated.items():
                d[f"res_{name}"] = robust_resolution(x[gm])[1]
            for name in ("reco", "plus_fragments", "plus_lost", "minus_received"):
                ref = d["res_truth_sum"]
                d[f"ratio_{name}"] = d[f"res_{name}"] / ref if ref and np.isfinite(ref) else float("nan")
            res[g] = d
        return res

    def pid_confusion(self) -> np.ndarray:
        """``[n_pid, n_pid]`` counts of (true class, predicted class) over matched showers."""
        t = self.truth_table()
        m = t["matched"] & (t["energy"] > self.min_energy) & (t["pred_pid"] >= 0)
        conf = np.zeros((self.n_pid, self.n_pid), dtype=np.int64)
        np.add.at(conf, (t["pid"][m].astype(int), t["pred_pid"][m].astype(int)), 1)
        return conf
