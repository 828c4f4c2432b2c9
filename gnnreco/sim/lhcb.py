r"""LHCb-like b-hadron events for the Deep Full Event Interpretation (DFEI) task.

One bunch crossing is

* one **signal** pp collision at :math:`\sqrt{s} = 13.6` TeV with at least one b hadron inside the
  LHCb acceptance (Pythia 8 ``HardQCD:hardbbbar``; b hadrons decay freely through Pythia's tables, or
  exclusively through ``onMode`` settings, see :data:`EXCLUSIVE_MODES`);
* :math:`n_{PU} \sim \mathrm{Poisson}(\nu)` **pile-up** minimum-bias collisions
  (``SoftQCD:inelastic``), each at its own vertex drawn from the beam spot
  :math:`x, y \sim \mathcal N(0, 0.055)`, :math:`z \sim \mathcal N(0, 63)` mm.

Particles kept as **nodes**: final-state charged e, μ, π, K, p with :math:`2 < \eta < 5`,
:math:`p > 2` GeV, :math:`p_T > 0.2` GeV and a production point inside the VELO region
(:math:`\rho < \rho_{max}`, :math:`z_{min} < z < z_{max}`). Decay products of long-lived K⁰_S/Λ mostly
fail this cut, as in the DFEI samples.

**Detector emulation** (DFEI's own values are not public; these are placeholders, all configurable):
momenta are scaled by :math:`1 + \mathcal N(0, \sigma_p/p)`, origins smeared by
:math:`(\sigma_{xy}, \sigma_{xy}, \sigma_z)`; a collision gives a **reconstructed PV** (its vertex
smeared by ``sigma_pv``) when it has at least ``pv_min_tracks`` nodes; every node is associated with
the reconstructed PV of minimum impact parameter :math:`IP = |(O - PV) \times \hat p|`, so that
mis-association arises naturally.

**Truth.** For each node of the signal collision the ancestry is walked up through the decays
(status 91–99) to the highest b hadron; links where a particle has a single non-photon daughter
(carbon copies, B⁰–B̄⁰ mixing entries, B*→Bγ) are collapsed; then ancestors with a single child
branch *among the reconstructed particles* are collapsed too
(:func:`~gnnreco.tasks.dfei.reco.collapse_single_child`), so the truth is always the LCA matrix of a
forest of the nodes and a b hadron with one reconstructed descendant is no chain. The LCA matrix follows the DFEI
convention (:mod:`gnnreco.tasks.dfei.reco`), capped at 3. Pile-up particles are background.

**Speed.** One Pythia instance per kind and worker process is created lazily and reused; each event
re-seeds the random-number engine (``Rndm::init(seed)``), which costs microseconds, whereas a new
``init()`` costs about a second. With ``hemispheres=True`` (default) one minimum-bias Pythia event
provides two pile-up collisions: its forward hemisphere, and its backward hemisphere rotated by π
about the x axis (a proper rotation, a symmetry of the pp initial state), each at its own vertex. Only
:math:`2 < \eta < 5` is ever read, so the two halves are disjoint; the price is the (weak)
forward-backward correlation of one collision, which becomes a correlation between two pile-up
vertices. The signal collision is rotated the same way when its b hadron is backward.

A parametric fallback (``backend="toy"``, used when ``pythia8mc`` is missing or for fast tests) draws
pile-up tracks and a small set of b-decay topologies with exponential flight distances; it produces the
same event dictionary.

Units: GeV, mm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gnnreco._compat import WITH_PYTHIA8, pythia8mc
from gnnreco.tasks.dfei.reco import collapse_single_child, lca_from_ancestors

__all__ = [
    "EXCLUSIVE_MODES",
    "NODE_FEATURES",
    "generate_event",
    "has_bottom",
    "impact_parameter",
    "pythia_available",
]

#: Node feature columns (DFEI dataset order).
NODE_FEATURES = ("Ox", "Oy", "Oz", "px", "py", "pz", "PVIPx", "PVIPy", "PVIPz", "q", "PVx", "PVy", "PVz")

#: Exclusive decay samples: Pythia ``onMode`` settings and the PDG id of the forced b hadron.
EXCLUSIVE_MODES: dict[str, dict[str, Any]] = {
    "Bd_Kpi": {"label": "B⁰→K⁺π⁻", "id": 511,
               "settings": ["511:onMode = off", "511:onIfMatch = 321 -211"]},
    "Bu_JpsiK": {"label": "B⁺→J/ψ(→μ⁺μ⁻)K⁺", "id": 521,
                 "settings": ["521:onMode = off", "521:onIfMatch = 443 321", "443:onMode = off",
                              "443:onIfMatch = 13 -13"]},
    "Bs_Dspi": {"label": "B_s⁰→D_s⁻(→K⁺K⁻π⁻)π⁺", "id": 531,
                "settings": ["531:onMode = off", "531:onIfMatch = -431 211", "431:onMode = off",
                             "431:onIfMatch = 321 -321 211"]},
    "Bd_Dpi": {"label": "B⁰→D⁻(→K⁺π⁻π⁻)π⁺", "id": 511,
               "settings": ["511:onMode = off", "511:onIfMatch = -411 211", "411:onMode = off",
                            "411:onIfMatch = -321 211 211"]},
    "Lb_pK": {"label": "Λ_b⁰→pK⁻", "id": 5122,
              "settings": ["5122:onMode = off", "5122:onIfMatch = 2212 -321"]},
}

_STABLE = np.array([11, 13, 211, 321, 2212])
_B_IDS_TOY = (511, 521, 531, 5122)


def pythia_available() -> bool:
    """``True`` when the ``pythia8mc`` bindings import."""
    return WITH_PYTHIA8


def has_bottom(pid: int) -> bool:
    """Whether a PDG id is a hadron containing a b quark (PDG numbering scheme, quark digits)."""
    a = abs(int(pid))
    if a < 100 or a > 9_999_999:
        return False
    a %= 10000
    return (a // 1000) % 10 == 5 or (a // 100) % 10 == 5


def impact_parameter(origin: np.ndarray, mom: np.ndarray, pv: np.ndarray) -> np.ndarray:
    r"""Impact parameter :math:`|(O - PV) \times \hat p|` of every track to every vertex.

    Shapes:
        origin, mom: ``[N, 3]``; pv: ``[V, 3]``; output ``[N, V]``.
    """
    phat = mom / np.maximum(np.linalg.norm(mom, axis=1, keepdims=True), 1e-12)
    r = origin[:, None, :] - pv[None, :, :]
    return np.linalg.norm(np.cross(r, phat[:, None, :]), axis=2)


# ---------------------------------------------------------------------------------------------- Pythia
_PYTHIA_CACHE: dict[tuple, Any] = {}


def _pythia(kind: str, ecm: float, extra: Sequence[str]) -> Any:
    """One Pythia instance per (kind, settings) and process, initialised once (about 1 s)."""
    key = (kind, float(ecm), tuple(extra))
    py = _PYTHIA_CACHE.get(key)
    if py is None:
        if not WITH_PYTHIA8:
            raise RuntimeError("backend='pythia' needs the pythia8mc package (pip install pythia8mc)")
        py = pythia8mc.Pythia("", False)
        base = [f"Beams:eCM = {ecm}", "Next:numberCount = 0", "Next:numberShowEvent = 0",
                "Next:numberShowInfo = 0", "Next:numberShowProcess = 0", "Init:showChangedSettings = off",
                "Init:showProcesses = off", "Init:showChangedParticleData = off", "Print:quiet = on",
                "Check:event = off", "Random:setSeed = on", "Random:seed = 1"]
        proc = ["HardQCD:hardbbbar = on"] if kind == "signal" else ["SoftQCD:inelastic = on"]
        for s in base + proc + list(extra):
            if not py.readString(s):
                raise ValueError(f"Pythia rejected the setting {s!r}")
        if not py.init():
            raise RuntimeError(f"Pythia initialisation failed for the {kind} generator ({list(extra)})")
        _PYTHIA_CACHE[key] = py
    return py


def _next(py: Any) -> None:
    for _ in range(10):
        if py.next():
            return
    raise RuntimeError("Pythia failed to generate an event in 10 tries")


def _reseed(py: Any, seed: int) -> None:
    # Rndm::init re-seeds the engine in place; Pythia::init() (about 1 s) is not needed.
    py.rndm.init(int(seed) % 900_000_000 + 1)


def _final_charged(ev: Any, pz_min: float):
    """Final-state charged e, μ, π, K, p with :math:`|p_z|` above ``pz_min`` (both hemispheres).

    ``pz_min = p_min tanh(eta_min)`` is implied by the acceptance, so this pre-selection (cheap: one
    call per particle before the PDG id) changes no event.
    """
    out = []
    n = ev.size()
    for i in range(1, n):
        p = ev[i]
        if not p.isFinal():
            continue
        pz = p.pz()
        if -pz_min < pz < pz_min:
            continue
        if p.idAbs() not in (211, 321, 2212, 11, 13):
            continue
        out.append((i, p.id(), p.px(), p.py(), pz, p.xProd(), p.yProd(), p.zProd()))
    return out


def _accept(mom: np.ndarray, orig: np.ndarray, cfg: Mapping[str, Any]) -> np.ndarray:
    px, py, pz = mom[:, 0], mom[:, 1], mom[:, 2]
    pt = np.hypot(px, py)
    p = np.sqrt(pt**2 + pz**2)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    rho = np.hypot(orig[:, 0], orig[:, 1])
    return ((eta > cfg["eta_min"]) & (eta < cfg["eta_max"]) & (p > cfg["p_min"]) & (pt > cfg["pt_min"])
            & (rho < cfg["velo_rho_max"]) & (orig[:, 2] > cfg["velo_z_min"]) & (orig[:, 2] < cfg["velo_z_max"]))


def _rotate_x(a: np.ndarray) -> np.ndarray:
    """Rotation by π about the x axis: (x, y, z) → (x, −y, −z)."""
    b = a.copy()
    b[:, 1:] *= -1
    return b


def _collapse_info(ev: Any, j: int, cache: dict[int, bool]) -> bool:
    """True if particle ``j`` is a branching decay (>= 2 daughters that are not photons)."""
    v = cache.get(j)
    if v is None:
        dl = ev[j].daughterList()
        v = sum(1 for d in dl if ev[d].idAbs() != 22) >= 2
        cache[j] = v
    return v


def _ancestry(ev: Any, i: int, cache: dict[int, bool]) -> list[int]:
    """Collapsed b-chain ancestors of particle ``i`` (root b hadron first); empty if none."""
    chain = []
    j = i
    while 91 <= abs(ev[j].status()) <= 99:
        m = ev[j].mother1()
        if m <= 0:
            break
        chain.append(m)
        j = m
    # highest ancestor with a b quark: chain is leaf -> root, search from the root end
    top = -1
    for k in range(len(chain) - 1, -1, -1):
        if has_bottom(ev[chain[k]].id()):
            top = k
            break
    if top < 0:
        return []
    kept = [a for a in chain[: top + 1] if _collapse_info(ev, a, cache)]
    if not kept:  # the b hadron had a single visible daughter (e.g. B -> K gamma... not a chain)
        kept = [chain[top]]
    return kept[::-1]


def _signal_pythia(rng: np.random.Generator, cfg: Mapping[str, Any], extra: Sequence[str], force_id: int | None):
    """Signal collision: tracks, truth ancestry, after rotating its b hadron forward."""
    py = _pythia("signal", cfg["ecm"], extra)
    for _attempt in range(200):
        _next(py)
        ev = py.event
        # candidate b hadrons: top-level ones (mother not b), in |eta| range
        cands = []
        for i in range(1, ev.size()):
            p = ev[i]
            idabs = p.idAbs()
            if idabs < 500 or p.status() > 0 or not has_bottom(idabs) or not p.isHadron():
                continue
            if force_id is not None and idabs != force_id:
                continue
            eta = p.eta()
            if cfg["eta_min"] < abs(eta) < cfg["eta_max"]:
                cands.append(eta)
        if cands:
            break
    else:
        raise RuntimeError("no b hadron in the LHCb acceptance after 200 signal events; check the settings")
    flip = cands[0] < 0
    parts = _final_charged(ev, cfg["_pz_min"])
    if not parts:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 0), np.int64)
    arr = np.asarray(parts, dtype=np.float64)
    idx = arr[:, 0].astype(np.int64)
    pid = arr[:, 1].astype(np.int64)
    mom = arr[:, 2:5]
    orig = arr[:, 5:8]
    if flip:
        mom, orig = _rotate_x(mom), _rotate_x(orig)
    keep = _accept(mom, orig + cfg["_vtx0"], cfg)
    idx, pid, mom, orig = idx[keep], pid[keep], mom[keep], orig[keep]
    cache: dict[int, bool] = {}
    chains = [_ancestry(ev, int(i), cache) for i in idx]
    root_pid = {c[0]: ev[c[0]].id() for c in chains if c}
    cfg["_root_pid"] = root_pid
    d = max((len(c) for c in chains), default=0)
    anc = np.full((len(idx), d), -1, dtype=np.int64)
    for k, c in enumerate(chains):
        anc[k, :len(c)] = c
    return mom, orig, pid, anc


def _minbias_pythia(rng: np.random.Generator, n_coll: int, cfg: Mapping[str, Any]):
    """``n_coll`` pile-up collisions (momenta, origins relative to their vertex, pid, collision index)."""
    py = _pythia("minbias", cfg["ecm"], ())
    moms, origs, pids, colls = [], [], [], []
    c = 0
    while c < n_coll:
        _next(py)
        parts = _final_charged(py.event, cfg["_pz_min"])
        if not parts:
            c += 1 if not cfg["hemispheres"] else min(2, n_coll - c)
            continue
        arr = np.asarray(parts, dtype=np.float64)
        mom, orig, pid = arr[:, 2:5], arr[:, 5:8], arr[:, 1].astype(np.int64)
        halves = [(mom[:, 2] > 0, False)]
        if cfg["hemispheres"] and c + 1 < n_coll:
            halves.append((mom[:, 2] < 0, True))
        for sel, rot in halves:
            m, o = mom[sel], orig[sel]
            if rot:
                m, o = _rotate_x(m), _rotate_x(o)
            moms.append(m)
            origs.append(o)
            pids.append(pid[sel])
            colls.append(np.full(int(sel.sum()), c, dtype=np.int64))
            c += 1
    if not moms:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(moms), np.concatenate(origs), np.concatenate(pids), np.concatenate(colls)


# ---------------------------------------------------------------------------------------------- toy backend
_TOY_TOPOLOGIES = (
    # (b hadron, tau [mm], tree as nested tuples (pid | (mother_pid, tau_mm, [children])))
    (511, 0.455, [(-411, 0.312, [-321, 211, 211]), 211]),                  # B0 -> D- pi+, D- -> K pi pi
    (521, 0.491, [(443, 0.0, [13, -13]), 321]),                             # B+ -> J/psi K+
    (531, 0.454, [(-431, 0.151, [321, -321, -211]), 211]),                  # Bs -> Ds- pi+
    (511, 0.455, [321, -211]),                                              # B0 -> K+ pi-
    (521, 0.491, [(-421, 0.123, [321, -211]), 211, 211, -211]),             # B+ -> D0bar pi pi pi
    (511, 0.455, [(-413, 0.0, [(-421, 0.123, [321, -211]), -211]), 211]),   # B0 -> D*- pi+
)
_MASS = {11: 0.000511, 13: 0.1057, 211: 0.1396, 321: 0.4937, 2212: 0.9383}


def _toy_decay(rng, mom4, vtx, tree, chain, next_id, out):
    """Recursive phase-space-like decay of a toy topology."""
    children = tree
    n = len(children)
    # split the momentum with random Dirichlet fractions and small transverse kicks in the rest frame
    frac = rng.dirichlet(np.full(n, 2.0))
    p3 = mom4[None, :] * frac[:, None]
    kick = rng.normal(0.0, 0.8, size=(n, 3))
    kick -= kick.mean(0, keepdims=True)
    p3 = p3 + kick
    for k, ch in enumerate(children):
        if isinstance(ch, tuple):
            pid, tau, sub = ch
            nid = next_id[0]
            next_id[0] += 1
            pabs = np.linalg.norm(p3[k])
            flight = rng.exponential(tau * pabs / 1.9) if tau > 0 else 0.0
            dvtx = vtx + flight * p3[k] / max(pabs, 1e-9)
            _toy_decay(rng, p3[k], dvtx, sub, chain + [nid], next_id, out)
        else:
            out.append((ch, p3[k], vtx.copy(), list(chain)))


def _toy_signal(rng: np.random.Generator, cfg: Mapping[str, Any], force_id: int | None, mode_index: int | None):
    tops = _TOY_TOPOLOGIES if mode_index is None else (_TOY_TOPOLOGIES[mode_index],)
    n_b = 1 + int(rng.random() < 0.4)
    recs: list = []
    next_id = [1]
    for _ in range(n_b):
        bid, tau, tree = tops[int(rng.integers(len(tops)))]
        eta = rng.uniform(2.2, 4.8)
        phi = rng.uniform(-np.pi, np.pi)
        pt = rng.gamma(2.0, 3.0) + 0.5
        mom = np.array([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)])
        flight = rng.exponential(tau * np.linalg.norm(mom) / 5.3)
        vtx = flight * mom / np.linalg.norm(mom)
        root = next_id[0]
        next_id[0] += 1
        cfg.setdefault("_root_pid", {})[root] = bid
        _toy_decay(rng, mom, vtx, tree, [root], next_id, recs)
    # fragmentation tracks of the signal collision (background)
    nfrag = int(rng.poisson(cfg["toy_tracks_per_collision"]))
    m_f, o_f, p_f = _toy_tracks(rng, nfrag)
    pids = [int(r[0]) for r in recs]
    mom = np.array([r[1] for r in recs]).reshape(-1, 3)
    orig = np.array([r[2] for r in recs]).reshape(-1, 3)
    d = max((len(r[3]) for r in recs), default=0)
    anc = np.full((len(recs) + nfrag, d), -1, dtype=np.int64)
    for k, r in enumerate(recs):
        anc[k, :len(r[3])] = r[3]
    mom = np.concatenate([mom, m_f])
    orig = np.concatenate([orig, o_f])
    pid = np.concatenate([np.asarray(pids, dtype=np.int64), p_f])
    keep = _accept(mom, orig + cfg["_vtx0"], cfg)
    return mom[keep], orig[keep], pid[keep], anc[keep]


def _toy_tracks(rng: np.random.Generator, n: int):
    eta = rng.uniform(1.5, 5.5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pt = rng.exponential(0.55, n) + 0.05
    mom = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], 1)
    pid = rng.choice(np.array([211, 321, 2212, 11, 13]), size=n, p=[0.8, 0.12, 0.06, 0.01, 0.01])
    pid = pid * rng.choice(np.array([1, -1]), size=n)
    orig = np.zeros((n, 3))
    # a few displaced secondaries (strange decays)
    sec = rng.random(n) < 0.05
    orig[sec] = rng.normal(0.0, 3.0, size=(int(sec.sum()), 3))
    return mom, orig, pid.astype(np.int64)


def _toy_minbias(rng: np.random.Generator, n_coll: int, cfg: Mapping[str, Any]):
    moms, origs, pids, colls = [], [], [], []
    for c in range(n_coll):
        n = int(rng.poisson(cfg["toy_tracks_per_collision"]))
        m, o, p = _toy_tracks(rng, n)
        moms.append(m)
        origs.append(o)
        pids.append(p)
        colls.append(np.full(n, c, dtype=np.int64))
    if not moms:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(moms), np.concatenate(origs), np.concatenate(pids), np.concatenate(colls)


# ---------------------------------------------------------------------------------------------- event
def generate_event(
    seed: int,
    mode: str = "inclusive",
    backend: str = "auto",
    ecm: float = 13600.0,
    nu: float = 7.6,
    beamspot_sigma: Sequence[float] = (0.055, 0.055, 63.0),
    beamspot_mean: Sequence[float] = (0.0, 0.0, 0.0),
    eta_min: float = 2.0,
    eta_max: float = 5.0,
    p_min: float = 2.0,
    pt_min: float = 0.2,
    velo_rho_max: float = 10.0,
    velo_z_min: float = -300.0,
    velo_z_max: float = 700.0,
    sigma_p_rel: float = 0.005,
    sigma_origin: Sequence[float] = (0.015, 0.015, 0.1),
    sigma_pv: Sequence[float] = (0.010, 0.010, 0.050),
    pv_min_tracks: int = 5,
    lca_cap: int = 3,
    hemispheres: bool = True,
    toy_tracks_per_collision: float = 18.0,
) -> dict[str, np.ndarray]:
    r"""Generate one LHCb-like bunch crossing and its DFEI truth.

    Args:
        seed: event seed; the Pythia engines and the NumPy generator are seeded from it.
        mode: ``"inclusive"`` (free b decays) or a key of :data:`EXCLUSIVE_MODES`.
        backend: ``"pythia"``, ``"toy"`` or ``"auto"`` (Pythia when installed).
        ecm: :math:`\sqrt{s}` in GeV.
        nu: mean number :math:`\nu` of pile-up collisions (Poisson) besides the signal one.
        beamspot_sigma, beamspot_mean: luminous region (mm).
        eta_min, eta_max, p_min, pt_min: acceptance of the nodes.
        velo_rho_max, velo_z_min, velo_z_max: VELO region for the production point (mm).
        sigma_p_rel: relative momentum resolution :math:`\sigma_p/p`.
        sigma_origin: origin-point smearing (x, y, z) in mm.
        sigma_pv: reconstructed-PV smearing (x, y, z) in mm.
        pv_min_tracks: nodes a collision needs to give a reconstructed PV.
        lca_cap: largest LCA class.
        hemispheres: reuse both hemispheres of a minimum-bias event (see module docstring).
        toy_tracks_per_collision: mean accepted-track multiplicity of the toy backend.

    Returns:
        dict with ``x`` ``[N, 13]`` float32 node features (:data:`NODE_FEATURES`), ``pv`` ``[V, 3]``
        reconstructed PVs, ``pid``, ``collision`` (0 = signal), ``pv_true_index`` (index of the
        node's collision's reconstructed PV, or −1), ``pv_ip_index``, ``cluster`` (chain id, −1 = not
        from a b hadron), ``b_pid`` (PDG id of the chain's root b hadron, 0 = none), ``anc`` ``[N, D]`` collapsed ancestors, ``lca`` ``[N, N]`` int8 truth
        matrix, ``n_collisions`` and ``mode_id``.
    """
    if mode != "inclusive" and mode not in EXCLUSIVE_MODES:
        raise ValueError(f"mode={mode!r}: expected 'inclusive' or one of {sorted(EXCLUSIVE_MODES)}")
    if backend == "auto":
        backend = "pythia" if WITH_PYTHIA8 else "toy"
    if backend not in ("pythia", "toy"):
        raise ValueError(f"backend={backend!r}: expected 'pythia', 'toy' or 'auto'")
    rng = np.random.default_rng(int(seed))
    bs_sig = np.asarray(beamspot_sigma, dtype=np.float64)
    bs_mu = np.asarray(beamspot_mean, dtype=np.float64)
    cfg = dict(ecm=ecm, eta_min=eta_min, eta_max=eta_max, p_min=p_min, pt_min=pt_min,
               velo_rho_max=velo_rho_max, velo_z_min=velo_z_min, velo_z_max=velo_z_max,
               hemispheres=hemispheres, toy_tracks_per_collision=toy_tracks_per_collision)
    n_pu = int(rng.poisson(nu))
    vtx = bs_mu + rng.normal(size=(1 + n_pu, 3)) * bs_sig
    cfg["_vtx0"] = vtx[0]
    cfg["_pz_min"] = 0.999 * p_min * math.tanh(eta_min)
    force = EXCLUSIVE_MODES[mode] if mode != "inclusive" else None
    if backend == "pythia":
        extra = tuple(force["settings"]) if force else ()
        _reseed(_pythia("signal", ecm, extra), rng.integers(2**31))
        s_mom, s_orig, s_pid, s_anc = _signal_pythia(rng, cfg, extra, force["id"] if force else None)
        _reseed(_pythia("minbias", ecm, ()), rng.integers(2**31))
        b_mom, b_orig, b_pid, b_coll = _minbias_pythia(rng, n_pu, cfg)
    else:
        mode_index = None
        if force:
            mode_index = {"Bd_Kpi": 3, "Bu_JpsiK": 1, "Bs_Dspi": 2, "Bd_Dpi": 0}.get(mode, 3)
        s_mom, s_orig, s_pid, s_anc = _toy_signal(rng, cfg, force["id"] if force else None, mode_index)
        b_mom, b_orig, b_pid, b_coll = _toy_minbias(rng, n_pu, cfg)
    b_coll = b_coll + 1
    # pile-up origins at their own vertices, then acceptance (the signal was cut already)
    b_orig_abs = b_orig + vtx[b_coll] if len(b_coll) else b_orig
    keep = _accept(b_mom, b_orig_abs, cfg) if len(b_coll) else np.zeros(0, bool)
    n_s = len(s_pid)
    mom = np.concatenate([s_mom, b_mom[keep]]).reshape(-1, 3)
    orig = np.concatenate([s_orig + vtx[0], b_orig_abs[keep]]).reshape(-1, 3)
    pid = np.concatenate([s_pid, b_pid[keep]]).astype(np.int64)
    coll = np.concatenate([np.zeros(n_s, np.int64), b_coll[keep]])
    d = s_anc.shape[1] if s_anc.ndim == 2 else 0
    anc = np.full((len(pid), d), -1, dtype=np.int64)
    anc[:n_s] = s_anc.reshape(n_s, d)
    n = len(pid)
    # truth LCA and chain ids: only branchings among the reconstructed particles count
    roots = cfg.get("_root_pid", {})
    b_pid_full = np.array([roots.get(int(a), 0) for a in anc[:, 0]], dtype=np.int64) if d else np.zeros(n, np.int64)
    anc = collapse_single_child(anc)
    d = anc.shape[1]
    lca = lca_from_ancestors(anc, cap=lca_cap).astype(np.int8) if n else np.zeros((0, 0), np.int8)
    cluster = np.where(anc[:, 0] >= 0, anc[:, 0], -1) if d else np.full(n, -1, np.int64)
    if d:
        _, cl = np.unique(cluster, return_inverse=True)
        cluster = np.where(cluster >= 0, cl - (1 if (cluster < 0).any() else 0), -1)
    # detector emulation
    mom_r = mom * (1.0 + sigma_p_rel * rng.normal(size=(n, 1)))
    orig_r = orig + rng.normal(size=(n, 3)) * np.asarray(sigma_origin)
    counts = np.bincount(coll, minlength=1 + n_pu)
    has_pv = counts >= pv_min_tracks
    pv_coll = np.flatnonzero(has_pv)
    pv = vtx[pv_coll] + rng.normal(size=(len(pv_coll), 3)) * np.asarray(sigma_pv)
    coll_to_pv = np.full(1 + n_pu, -1, np.int64)
    coll_to_pv[pv_coll] = np.arange(len(pv_coll))
    if len(pv) and n:
        ip = impact_parameter(orig_r, mom_r, pv)
        pv_ip = ip.argmin(1)
        pv_ip_pos = pv[pv_ip]
    else:
        pv_ip = np.full(n, -1, np.int64)
        pv_ip_pos = np.broadcast_to(bs_mu, (n, 3))
    pv_true = coll_to_pv[coll]
    pv_true_pos = np.where((pv_true >= 0)[:, None], pv[np.maximum(pv_true, 0)] if len(pv) else 0.0, pv_ip_pos)
    q = np.sign(pid).astype(np.float64) * np.where(np.isin(np.abs(pid), (11, 13)), -1.0, 1.0)
    x = np.concatenate([orig_r, mom_r, pv_ip_pos, q[:, None], pv_true_pos], 1).astype(np.float32)
    mode_id = -1 if mode == "inclusive" else sorted(EXCLUSIVE_MODES).index(mode)
    b_pid = np.where(cluster >= 0, b_pid_full, 0).astype(np.int64)
    return {
        "x": x.reshape(n, 13),
        "pv": pv.astype(np.float32).reshape(-1, 3),
        "pid": pid,
        "collision": coll,
        "pv_true_index": pv_true.astype(np.int64),
        "pv_ip_index": np.asarray(pv_ip, dtype=np.int64),
        "cluster": np.asarray(cluster, dtype=np.int64),
        "b_pid": b_pid,
        "anc": anc,
        "lca": lca,
        "n_collisions": np.array([1 + n_pu], dtype=np.int64),
        "mode_id": np.array([mode_id], dtype=np.int64),
    }
