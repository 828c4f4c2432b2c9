"""PNG plots comparing PF algorithms (MLPF vs rule-based baseline) on the same events."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnnreco.sim.delphes_like import CLASS_NAMES
from gnnreco.tasks.pflow.metrics import PFEvaluator
from gnnreco.utils.plotting import plt, savefig

__all__ = ["plot_all"]


def plot_all(evaluator: PFEvaluator, out_dir: Path) -> list[Path]:
    """Jet response histograms (30–100 GeV and all), resolution and response vs p_T, MET response,
    per-class efficiency/fake rate. Returns the written files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = evaluator.summary()
    names = list(s)
    files: list[Path] = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bins = np.linspace(0, 2, 61)
    for name in names:
        gen_pt, resp = s[name]["_jet_arrays"]
        sel = (gen_pt >= 30) & (gen_pt < 100) & np.isfinite(resp)
        axes[0].hist(resp[sel], bins, histtype="step", label=f"{name} (med {np.median(resp[sel]) if sel.any() else np.nan:.3f})")
        axes[1].hist(resp[np.isfinite(resp)], bins, histtype="step", label=name)
    axes[0].set_title("jet response, 30 < $p_T^{gen}$ < 100 GeV")
    axes[1].set_title("jet response, all matched jets")
    for ax in axes:
        ax.set_xlabel("$p_T^{reco}/p_T^{gen}$")
        ax.legend()
    p = out_dir / "jet_response.png"
    savefig(fig, p, dpi=90)
    files.append(p)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in names:
        rows = [r for r in s[name]["jets"] if r["n_gen"] > 0]
        x = [0.5 * (r["lo"] + min(r["hi"], 3 * r["lo"])) for r in rows]
        axes[0].plot(x, [r["median"] for r in rows], "o-", label=name)
        axes[1].plot(x, [r["resolution"] for r in rows], "o-", label=name)
    axes[0].axhline(1.0, color="grey", lw=0.5)
    axes[0].set_ylabel("median jet response")
    axes[1].set_ylabel("jet resolution IQR/median")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("$p_T^{gen}$ [GeV]")
        ax.legend()
    p = out_dir / "jet_response_vs_pt.png"
    savefig(fig, p, dpi=90)
    files.append(p)

    fig, ax = plt.subplots(figsize=(5, 4))
    for name in names:
        mp = s[name]["_met_arrays"]
        r = mp[:, 0] / np.maximum(mp[:, 1], 1e-9)
        ax.hist(np.clip(r, 0, 4), np.linspace(0, 4, 41), histtype="step", label=f"{name} (med {s[name]['met']['median']:.2f})")
    ax.set_xlabel("MET$^{reco}$/MET$^{gen}$")
    ax.legend()
    p = out_dir / "met_response.png"
    savefig(fig, p, dpi=90)
    files.append(p)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    cls = CLASS_NAMES[1:]
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        eff = [s[name]["particle"][f"eff_{c}"] for c in cls]
        fake = [s[name]["particle"][f"fake_{c}"] for c in cls]
        xs = np.arange(len(cls)) + i * width
        axes[0].bar(xs, eff, width, label=name)
        axes[1].bar(xs, fake, width, label=name)
    for ax, t in zip(axes, ("efficiency", "fake rate")):
        ax.set_xticks(np.arange(len(cls)) + 0.4 - width / 2)
        ax.set_xticklabels(cls)
        ax.set_title(f"per-class {t}")
        ax.legend()
    p = out_dir / "particle_eff_fake.png"
    savefig(fig, p, dpi=90)
    files.append(p)
    return files
