"""Particle-, jet- and MET-level evaluation of PF candidates (MLPF and the rule-based baseline alike).

Conventions (reference §2.2, MLPF ``JET_CONFIG`` / ``med_iqr``):

* particle level: element-wise comparison of predicted and target class; per class c,
  efficiency = P(pred = c | target = c) and fake rate = P(target ≠ c | pred = c);
* jets: anti-k_T, R = 0.4, E-scheme on massless four-vectors built from (p_T, η, φ); jets with
  p_T > ``jet_pt_min`` and |η| < ``jet_eta_max``; reco jets are matched to generator jets with ΔR < 0.1
  (greedy, leading generator jet first); response = p_T,reco/p_T,gen; per p_T,gen bin the *median*
  response and the *IQR* (p75 − p25), and resolution = IQR/median;
* MET: |−Σ p_T| of the candidates vs of the visible generator particles; same median/IQR summary.

``anti_kt`` is a tested own implementation (nearest-neighbour bookkeeping, vectorised numpy, O(N²)
memory), used because ``fastjet`` is an optional dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gnnreco.sim.delphes_like import CLASS_NAMES

__all__ = ["anti_kt", "match_jets", "particle_metrics", "jet_response", "met", "med_iqr",
           "summarize_response", "candidates_to_ptetaphie", "DEFAULT_PT_BINS", "PFEvaluator"]

DEFAULT_PT_BINS = (10.0, 30.0, 100.0, 300.0, 3000.0)


def _ptetaphi_to_xyze(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([px, py, pz, np.sqrt(px**2 + py**2 + pz**2)], 1)


def anti_kt(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, R: float = 0.4, pt_min: float = 0.0) -> np.ndarray:
    r"""Anti-k_T clustering (Cacciari, Salam, Soyez 2008) of massless particles.

    :math:`d_{ij} = \min(p_{T,i}^{-2}, p_{T,j}^{-2})\,\Delta R_{ij}^2/R^2`, :math:`d_{iB} = p_{T,i}^{-2}`;
    the smallest distance is taken repeatedly: a pair is merged (E-scheme four-vector sum), a
    beam distance promotes the pseudojet to a jet. ΔR uses rapidity y and φ.

    Args:
        pt, eta, phi: particle kinematics [n].
        R: jet radius.
        pt_min: minimum jet p_T kept.

    Returns:
        jets [n_jets, 4] ``(p_T, η, φ, E)`` sorted by decreasing p_T.
    """
    pt, eta, phi = (np.asarray(a, np.float64) for a in (pt, eta, phi))
    keep = pt > 0
    p = _ptetaphi_to_xyze(pt[keep], eta[keep], phi[keep])
    n = len(p)
    if n == 0:
        return np.zeros((0, 4))
    R2 = R * R
    INF = np.inf

    def kin(v: np.ndarray):
        ptv = np.hypot(v[..., 0], v[..., 1])
        y = 0.5 * np.log(np.maximum(v[..., 3] + v[..., 2], 1e-300) / np.maximum(v[..., 3] - v[..., 2], 1e-300))
        return ptv, y, np.arctan2(v[..., 1], v[..., 0])

    ptv, y, ph = kin(p)
    kt2 = 1.0 / np.maximum(ptv, 1e-300) ** 2
    active = np.ones(n, bool)

    def dist_row(i: int) -> np.ndarray:
        dphi = np.abs(ph[i] - ph)
        dphi = np.minimum(dphi, 2 * np.pi - dphi)
        d = np.minimum(kt2[i], kt2) * ((y[i] - y) ** 2 + dphi**2) / R2
        d[~active] = INF
        d[i] = INF
        return d

    # nearest-neighbour table
    dphi = np.abs(ph[:, None] - ph[None, :])
    dphi = np.minimum(dphi, 2 * np.pi - dphi)
    D = np.minimum(kt2[:, None], kt2[None, :]) * ((y[:, None] - y[None, :]) ** 2 + dphi**2) / R2
    np.fill_diagonal(D, INF)
    nn_idx = D.argmin(1)
    nn_d = D[np.arange(n), nn_idx]
    del D
    jets = []
    for _ in range(n):
        cand = np.where(active, np.minimum(nn_d, kt2), INF)
        i = int(cand.argmin())
        if nn_d[i] < kt2[i] and active[nn_idx[i]]:
            j = int(nn_idx[i])
            p[i] = p[i] + p[j]
            active[j] = False
            nn_d[j] = INF
            ptv[i], y[i], ph[i] = (float(a) for a in kin(p[i]))
            kt2[i] = 1.0 / max(ptv[i], 1e-300) ** 2
            stale = np.flatnonzero(active & ((nn_idx == i) | (nn_idx == j)))
        else:
            jets.append(p[i].copy())
            active[i] = False
            nn_d[i] = INF
            stale = np.flatnonzero(active & (nn_idx == i))
            i = -1
        if i >= 0:
            d = dist_row(i)
            k = int(d.argmin())
            nn_idx[i], nn_d[i] = k, d[k]
            # the new pseudojet may become the nearest neighbour of others
            closer = active & (d < nn_d)
            closer[i] = False
            nn_idx[closer], nn_d[closer] = i, d[closer]
        stale = stale[stale != i]
        if len(stale):
            dphi = np.abs(ph[stale, None] - ph[None, :])
            dphi = np.minimum(dphi, 2 * np.pi - dphi)
            d = np.minimum(kt2[stale, None], kt2[None, :]) * ((y[stale, None] - y[None, :]) ** 2 + dphi**2) / R2
            d[:, ~active] = INF
            d[np.arange(len(stale)), stale] = INF
            m = d.argmin(1)
            nn_idx[stale], nn_d[stale] = m, d[np.arange(len(stale)), m]
        if not active.any():
            break
    J = np.asarray(jets)
    jpt, _, jphi = kin(J)
    pz, e = J[:, 2], J[:, 3]
    jeta = np.arcsinh(pz / np.maximum(jpt, 1e-300))
    out = np.stack([jpt, jeta, jphi, e], 1)
    out = out[out[:, 0] > pt_min]
    return out[np.argsort(-out[:, 0])]


def match_jets(gen: np.ndarray, reco: np.ndarray, dr_max: float = 0.1) -> np.ndarray:
    """Greedy ΔR matching, leading generator jet first; returns the reco index per gen jet (−1 none)."""
    out = np.full(len(gen), -1)
    if len(gen) == 0 or len(reco) == 0:
        return out
    dphi = (gen[:, None, 2] - reco[None, :, 2] + np.pi) % (2 * np.pi) - np.pi
    dr2 = (gen[:, None, 1] - reco[None, :, 1]) ** 2 + dphi**2
    used = np.zeros(len(reco), bool)
    for g in np.argsort(-gen[:, 0]):
        d = np.where(used, np.inf, dr2[g])
        r = int(d.argmin())
        if d[r] < dr_max**2:
            out[g] = r
            used[r] = True
    return out


def candidates_to_ptetaphie(cand: np.ndarray) -> np.ndarray:
    """Rows ``[class, q, p_T, η, sinφ, cosφ, E]`` with class > 0 → ``(p_T, η, φ, E)``."""
    c = np.asarray(cand)
    c = c[(c[:, 0] > 0) & (c[:, 2] > 0)]
    return np.stack([c[:, 2], c[:, 3], np.arctan2(c[:, 4], c[:, 5]), c[:, 6]], 1) if len(c) else np.zeros((0, 4))


def jet_response(gen_p4: np.ndarray, cand: np.ndarray, R: float = 0.4, jet_pt_min: float = 5.0,
                 jet_eta_max: float = 2.5, dr_max: float = 0.1) -> dict[str, np.ndarray]:
    """Jets of one event: ``gen_pt`` of all generator jets, ``response`` (NaN if unmatched)."""
    gen_p4 = np.asarray(gen_p4, np.float64).reshape(-1, 4)
    rec = candidates_to_ptetaphie(cand)
    gj = anti_kt(gen_p4[:, 0], gen_p4[:, 1], gen_p4[:, 2], R, jet_pt_min)
    gj = gj[np.abs(gj[:, 1]) < jet_eta_max]
    rj = anti_kt(rec[:, 0], rec[:, 1], rec[:, 2], R, 0.5 * jet_pt_min)
    idx = match_jets(gj, rj, dr_max)
    resp = np.where(idx >= 0, rj[np.maximum(idx, 0), 0] / np.maximum(gj[:, 0], 1e-9), np.nan) if len(rj) else \
        np.full(len(gj), np.nan)
    return {"gen_pt": gj[:, 0], "response": resp}


def met(ptetaphi: np.ndarray) -> float:
    """Missing transverse momentum |−Σ p_T| of (p_T, η, φ, …) rows."""
    a = np.asarray(ptetaphi, np.float64).reshape(-1, ptetaphi.shape[-1] if np.ndim(ptetaphi) == 2 else 4)
    return float(np.hypot((a[:, 0] * np.cos(a[:, 2])).sum(), (a[:, 0] * np.sin(a[:, 2])).sum()))


def med_iqr(x: np.ndarray) -> tuple[float, float]:
    """Median and inter-quartile range (p75 − p25) of the finite values (NaN, NaN if none)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return float(q50), float(q75 - q25)


def summarize_response(gen_pt: np.ndarray, response: np.ndarray, bins: Sequence[float] = DEFAULT_PT_BINS
                       ) -> list[dict[str, float]]:
    """Per p_T,gen bin: ``lo, hi, n_gen, matched_frac, median, iqr, resolution`` (= IQR/median)."""
    rows = []
    gen_pt, response = np.asarray(gen_pt), np.asarray(response)
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (gen_pt >= lo) & (gen_pt < hi)
        med, iqr = med_iqr(response[m])
        n = int(m.sum())
        rows.append({"lo": float(lo), "hi": float(hi), "n_gen": n,
                     "matched_frac": float(np.isfinite(response[m]).mean()) if n else float("nan"),
                     "median": med, "iqr": iqr, "resolution": iqr / med if med == med and med != 0 else float("nan")})
    return rows


def particle_metrics(true_cls: np.ndarray, pred_cls: np.ndarray, n_classes: int = len(CLASS_NAMES)
                     ) -> dict[str, float]:
    """Per-class efficiency and fake rate from element-wise class comparison (padding excluded by caller)."""
    t, p = np.asarray(true_cls).astype(int), np.asarray(pred_cls).astype(int)
    if len(t) and (t.min() < 0 or t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"classes must be in 0..{n_classes - 1}; got true {np.unique(t)}, pred {np.unique(p)}")
    out: dict[str, float] = {}
    for c in range(1, n_classes):
        nt, npred = (t == c).sum(), (p == c).sum()
        out[f"eff_{CLASS_NAMES[c]}"] = float(((t == c) & (p == c)).sum() / nt) if nt else float("nan")
        out[f"fake_{CLASS_NAMES[c]}"] = float(((p == c) & (t != c)).sum() / npred) if npred else float("nan")
    return out


class PFEvaluator:
    """Accumulates events and compares several PF algorithms (e.g. ``mlpf`` and ``baseline``) on them.

    Per event call :meth:`add` with the element targets ``y``, the generator particles ``gen_p4`` and a
    dict ``{algorithm: candidates [N, 7]}`` (padding already removed); :meth:`summary` gives particle-,
    jet- and MET-level numbers per algorithm, :meth:`table` a Markdown table with the same content.
    """

    def __init__(self, pt_bins: Sequence[float] = DEFAULT_PT_BINS, R: float = 0.4, jet_pt_min: float = 5.0,
                 jet_eta_max: float = 2.5, dr_max: float = 0.1):
        self.pt_bins = tuple(pt_bins)
        self.jet_kw = {"R": R, "jet_pt_min": jet_pt_min, "jet_eta_max": jet_eta_max, "dr_max": dr_max}
        self.true_cls: list[np.ndarray] = []
        self.pred_cls: dict[str, list[np.ndarray]] = {}
        self.jets: dict[str, list[dict[str, np.ndarray]]] = {}
        self.met_pairs: dict[str, list[tuple[float, float]]] = {}
        self.n_events = 0

    def add(self, y: np.ndarray, gen_p4: np.ndarray, candidates: dict[str, np.ndarray]) -> None:
        y = np.asarray(y)
        self.true_cls.append(y[:, 0].astype(int))
        gen_met = met(np.asarray(gen_p4, np.float64).reshape(-1, 4))
        for name, cand in candidates.items():
            cand = np.asarray(cand)
            if cand.shape != y.shape:
                raise ValueError(f"candidates of {name!r} have shape {cand.shape}; expected {y.shape} (one per element)")
            self.pred_cls.setdefault(name, []).append(cand[:, 0].astype(int))
            self.jets.setdefault(name, []).append(jet_response(gen_p4, cand, **self.jet_kw))
            self.met_pairs.setdefault(name, []).append((met(candidates_to_ptetaphie(cand)), gen_met))
        self.n_events += 1

    def merge(self, other: PFEvaluator) -> PFEvaluator:
        """Append the events of ``other`` (same binning) to this evaluator, e.g. every DDP rank's share."""
        if other.pt_bins != self.pt_bins or other.jet_kw != self.jet_kw:
            raise ValueError("PFEvaluator.merge: the evaluators use different jet settings or pT bins")
        self.true_cls += other.true_cls
        for name in other.pred_cls:
            self.pred_cls.setdefault(name, []).extend(other.pred_cls[name])
            self.jets.setdefault(name, []).extend(other.jets[name])
            self.met_pairs.setdefault(name, []).extend(other.met_pairs[name])
        self.n_events += other.n_events
        return self

    def summary(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        t = np.concatenate(self.true_cls) if self.true_cls else np.zeros(0, int)
        for name in self.pred_cls:
            p = np.concatenate(self.pred_cls[name])
            gen_pt = np.concatenate([j["gen_pt"] for j in self.jets[name]])
            resp = np.concatenate([j["response"] for j in self.jets[name]])
            mp = np.asarray(self.met_pairs[name])
            met_resp = mp[:, 0] / np.maximum(mp[:, 1], 1e-9)
            med, iqr = med_iqr(met_resp)
            out[name] = {"particle": particle_metrics(t, p),
                         "jets": summarize_response(gen_pt, resp, self.pt_bins),
                         "jet_matched_frac": float(np.isfinite(resp).mean()) if len(resp) else float("nan"),
                         "met": {"median": med, "iqr": iqr},
                         "_jet_arrays": (gen_pt, resp), "_met_arrays": mp}
        return out

    def flat_metrics(self) -> dict[str, float]:
        """Scalar metrics ``<alg>/jet_<lo>_<hi>_median|iqr|resolution``, ``<alg>/met_*``, ``<alg>/eff_*`` ..."""
        flat: dict[str, float] = {}
        for name, s in self.summary().items():
            for k, v in s["particle"].items():
                flat[f"{name}/{k}"] = v
            for row in s["jets"]:
                tag = f"{name}/jet_{int(row['lo'])}_{int(row['hi'])}"
                for k in ("median", "iqr", "resolution", "matched_frac"):
                    flat[f"{tag}_{k}"] = row[k]
            flat[f"{name}/jet_matched_frac"] = s["jet_matched_frac"]
            flat[f"{name}/met_median"] = s["met"]["median"]
            flat[f"{name}/met_iqr"] = s["met"]["iqr"]
        return flat

    def table(self) -> str:
        """Markdown comparison: per jet p_T bin, median response and IQR/median per algorithm; MET; classes."""
        s = self.summary()
        names = list(s)
        lines = ["| quantity | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for b in range(len(self.pt_bins) - 1):
            lo, hi = self.pt_bins[b], self.pt_bins[b + 1]
            n = s[names[0]]["jets"][b]["n_gen"] if names else 0
            lines.append(f"| jet {lo:g}–{hi:g} GeV ({n} gen jets): median response | "
                         + " | ".join(f"{s[k]['jets'][b]['median']:.3f}" for k in names) + " |")
            lines.append(f"| jet {lo:g}–{hi:g} GeV: resolution IQR/median | "
                         + " | ".join(f"{s[k]['jets'][b]['resolution']:.3f}" for k in names) + " |")
        lines.append("| jet matched fraction | " + " | ".join(f"{s[k]['jet_matched_frac']:.3f}" for k in names) + " |")
        lines.append("| MET response median | " + " | ".join(f"{s[k]['met']['median']:.3f}" for k in names) + " |")
        lines.append("| MET response IQR | " + " | ".join(f"{s[k]['met']['iqr']:.3f}" for k in names) + " |")
        for c in CLASS_NAMES[1:]:
            lines.append(f"| eff / fake {c} | " + " | ".join(
                f"{s[k]['particle'][f'eff_{c}']:.3f} / {s[k]['particle'][f'fake_{c}']:.3f}" for k in names) + " |")
        return "\n".join(lines)
