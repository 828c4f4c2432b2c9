"""Tracking-detector geometries as data: barrel cylinders and endcap disks tiled with modules.

A geometry is a list of *surfaces*. A barrel layer is a cylinder of radius R and half-length L tiled by
``n_φ × n_z`` modules (module ``(i_z, i_φ)`` spans ``φ ∈ φ₀ + [i_φ, i_φ+1)·2π/n_φ`` and
``z ∈ −L + [i_z, i_z+1)·2L/n_z``); the modules are ideal cylindrical segments, so a hit lies exactly at
``r = R``. An endcap layer is a plane ``z = Z`` with rings between ``r_min`` and ``r_max``; ring ``k``
holds ``n_φ,k`` trapezoidal modules that contain the annular sector they tile.

Module ids start at 1 within each (volume_id, layer_id), as in TrackML. The local frame of a module is
``(u, v, w)``: barrel ``u = φ̂`` (along r·φ), ``v = ẑ``, ``w = r̂``; endcap ``u = φ̂``, ``v = r̂``,
``w = −ẑ``. :meth:`TrackerGeometry.detector_table` writes a TrackML ``detectors.csv`` table from it
(``module_t`` is the half-thickness, ``module_minhu/maxhu/hv`` half-lengths).

Presets live in ``gnnreco/conf/sim/tracker_<name>.yaml`` (``geometry:`` block, plus optional
``simulation:`` defaults read by :class:`gnnreco.sim.tracker.TrackerSimulator`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BarrelLayer",
    "DiskLayer",
    "TrackerGeometry",
    "load_geometry",
    "load_preset",
    "preset_path",
    "available_presets",
]

_CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "sim"


@dataclass(frozen=True)
class BarrelLayer:
    """A barrel layer: a cylinder tiled with modules.

    Attributes:
        volume_id, layer_id: TrackML identifiers.
        radius: R (mm).
        half_length: L (mm); modules cover |z| ≤ L.
        module_width: target module width along r·φ (mm); the actual width is 2πR/n_φ.
        module_length: target module length along z (mm); the actual length is 2L/n_z.
        pitch_u, pitch_v: cell pitch along u (r·φ) and v (z), mm.
        module_t: half-thickness of the sensor (mm).
        x_x0: material per layer at normal incidence, in radiation lengths.
        phi_offset: φ₀ of the first module edge (rad).
        inefficiency: hit-loss probability on this layer (``None``: the simulator default).
        overlap: each module's sensitive area extends this far (mm, along u) past its tile edge
            into the neighbouring tile, so a particle crossing near an edge gives a hit on both
            modules (TrackML-like double hits in one layer).
    """

    volume_id: int
    layer_id: int
    radius: float
    half_length: float
    module_width: float
    module_length: float
    pitch_u: float
    pitch_v: float
    module_t: float
    x_x0: float = 0.02
    phi_offset: float = 0.0
    inefficiency: float | None = None
    overlap: float = 0.0

    @property
    def n_phi(self) -> int:
        return max(1, math.ceil(2 * math.pi * self.radius / self.module_width - 1e-9))

    @property
    def n_z(self) -> int:
        return max(1, math.ceil(2 * self.half_length / self.module_length - 1e-9))


@dataclass(frozen=True)
class DiskLayer:
    """An endcap layer: a disk at z = Z tiled by rings of trapezoidal modules.

    Attributes:
        volume_id, layer_id: TrackML identifiers.
        z: Z (mm, signed).
        r_min, r_max: radial extent (mm).
        module_width: target module width along r·φ at the ring centre (mm).
        module_length: target radial module length (mm); rings are equal in radial size.
        pitch_u, pitch_v, module_t, x_x0, phi_offset, inefficiency, overlap: as for
            :class:`BarrelLayer` (the overlap is along φ, between neighbours of one ring).
    """

    volume_id: int
    layer_id: int
    z: float
    r_min: float
    r_max: float
    module_width: float
    module_length: float
    pitch_u: float
    pitch_v: float
    module_t: float
    x_x0: float = 0.02
    phi_offset: float = 0.0
    inefficiency: float | None = None
    overlap: float = 0.0

    @property
    def n_rings(self) -> int:
        return max(1, math.ceil((self.r_max - self.r_min) / self.module_length - 1e-9))

    def ring_edges(self) -> np.ndarray:
        return np.linspace(self.r_min, self.r_max, self.n_rings + 1)

    def ring_n_phi(self) -> np.ndarray:
        e = self.ring_edges()
        mid = 0.5 * (e[:-1] + e[1:])
        return np.maximum(1, np.ceil(2 * np.pi * mid / self.module_width - 1e-9)).astype(np.int64)


@dataclass
class TrackerGeometry:
    """A tracker: barrel layers and endcap disks (see the module docstring for conventions).

    Surfaces are indexed ``0 … C−1`` for the barrel cylinders and ``C … C+D−1`` for the disks; all
    per-surface and per-module arrays below use that order.
    """

    name: str
    barrels: list[BarrelLayer]
    disks: list[DiskLayer]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, cfg: dict[str, Any], name: str | None = None) -> TrackerGeometry:
        """Build from the ``geometry:`` mapping of a preset.

        Each entry of ``barrel:`` gives one volume with ``layer_ids`` and ``radii`` lists and shared
        module parameters; each entry of ``endcap:`` gives a pair of volumes ``volume_ids: [neg, pos]``
        with ``layer_ids`` and absolute ``z`` lists (layer ids increase with z on both sides, as in
        TrackML) or a single ``volume_id`` with signed ``z``.
        """
        if "geometry" in cfg:
            cfg = cfg["geometry"]
        known_b = {f for f in BarrelLayer.__dataclass_fields__}
        known_d = {f for f in DiskLayer.__dataclass_fields__}
        barrels: list[BarrelLayer] = []
        for i, vol in enumerate(cfg.get("barrel", []) or []):
            vol = dict(vol)
            try:
                layer_ids = list(vol.pop("layer_ids"))
                radii = list(vol.pop("radii"))
            except KeyError as exc:
                raise ValueError(f"geometry.barrel[{i}]: missing key {exc}") from exc
            if len(layer_ids) != len(radii):
                raise ValueError(f"geometry.barrel[{i}]: layer_ids and radii differ in length")
            per_layer = {k: vol.pop(k) for k in list(vol) if isinstance(vol[k], list)}
            unknown = set(vol) - known_b
            if unknown:
                raise ValueError(f"geometry.barrel[{i}]: unknown key(s) {sorted(unknown)}")
            for j, (lid, r) in enumerate(zip(layer_ids, radii)):
                extra = {k: v[j] for k, v in per_layer.items()}
                barrels.append(BarrelLayer(layer_id=int(lid), radius=float(r), **vol, **extra))
        disks: list[DiskLayer] = []
        for i, vol in enumerate(cfg.get("endcap", []) or []):
            vol = dict(vol)
            try:
                layer_ids = list(vol.pop("layer_ids"))
                zs = list(vol.pop("z"))
            except KeyError as exc:
                raise ValueError(f"geometry.endcap[{i}]: missing key {exc}") from exc
            if len(layer_ids) != len(zs):
                raise ValueError(f"geometry.endcap[{i}]: layer_ids and z differ in length")
            vids = vol.pop("volume_ids", None)
            vid = vol.pop("volume_id", None)
            per_layer = {k: vol.pop(k) for k in list(vol) if isinstance(vol[k], list)}
            unknown = set(vol) - known_d
            if unknown:
                raise ValueError(f"geometry.endcap[{i}]: unknown key(s) {sorted(unknown)}")
            if vids is not None:
                neg, pos = int(vids[0]), int(vids[1])
                az = np.abs(np.asarray(zs, float))
                order = np.argsort(az)
                n = len(zs)
                for rank, j in enumerate(order[::-1]):  # negative side: farthest disk first
                    extra = {k: v[j] for k, v in per_layer.items()}
                    disks.append(DiskLayer(volume_id=neg, layer_id=int(layer_ids[rank]), z=-float(az[j]), **vol, **extra))
                for rank, j in enumerate(order):
                    extra = {k: v[j] for k, v in per_layer.items()}
                    disks.append(DiskLayer(volume_id=pos, layer_id=int(layer_ids[rank]), z=float(az[j]), **vol, **extra))
                del n
            elif vid is not None:
                for j, (lid, z) in enumerate(zip(layer_ids, zs)):
                    extra = {k: v[j] for k, v in per_layer.items()}
                    disks.append(DiskLayer(volume_id=int(vid), layer_id=int(lid), z=float(z), **vol, **extra))
            else:
                raise ValueError(f"geometry.endcap[{i}]: needs 'volume_ids: [neg, pos]' or 'volume_id'")
        geo = cls(
            name=name or str(cfg.get("name", "custom")),
            barrels=barrels,
            disks=disks,
            description=str(cfg.get("description", "")),
        )
        geo.validate()
        return geo

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrackerGeometry:
        """Load the ``geometry:`` block of a YAML file (a preset or a user file)."""
        cfg = _read_yaml(path)
        if "geometry" not in cfg:
            raise ValueError(f"{path}: no 'geometry:' block")
        return cls.from_dict(cfg["geometry"], name=cfg["geometry"].get("name", Path(path).stem))

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (one entry per layer) that :meth:`from_dict` reads back (``volume_id`` form)."""
        barrel = []
        for b in self.barrels:
            d = asdict(b)
            d["layer_ids"] = [d.pop("layer_id")]
            d["radii"] = [d.pop("radius")]
            barrel.append(d)
        endcap = []
        for dk in self.disks:
            d = asdict(dk)
            d["layer_ids"] = [d.pop("layer_id")]
            d["z"] = [d.pop("z")]
            endcap.append(d)
        return {"name": self.name, "description": self.description, "barrel": barrel, "endcap": endcap}

    def validate(self) -> None:
        """Check ids are unique and sizes positive; raise ValueError naming the layer otherwise."""
        seen = set()
        for s in [*self.barrels, *self.disks]:
            key = (s.volume_id, s.layer_id)
            if key in seen:
                raise ValueError(f"geometry '{self.name}': duplicate (volume_id, layer_id) = {key}")
            seen.add(key)
            for attr in ("module_width", "module_length", "pitch_u", "pitch_v", "module_t"):
                if getattr(s, attr) <= 0:
                    raise ValueError(f"geometry '{self.name}': layer {key} has {attr} <= 0")
            if s.overlap < 0:
                raise ValueError(f"geometry '{self.name}': layer {key} has overlap < 0")
            if s.x_x0 < 0:
                raise ValueError(f"geometry '{self.name}': layer {key} has x_x0 < 0")
        for d in self.disks:
            if not 0 <= d.r_min < d.r_max:
                raise ValueError(f"geometry '{self.name}': disk {(d.volume_id, d.layer_id)} needs 0 <= r_min < r_max")
        for b in self.barrels:
            if b.radius <= 0 or b.half_length <= 0:
                raise ValueError(f"geometry '{self.name}': barrel {(b.volume_id, b.layer_id)} needs radius, half_length > 0")

    # ------------------------------------------------------------------ per-surface arrays
    @property
    def n_cylinders(self) -> int:
        return len(self.barrels)

    @property
    def n_surfaces(self) -> int:
        return len(self.barrels) + len(self.disks)

    @cached_property
    def surfaces(self) -> dict[str, np.ndarray]:
        """Per-surface arrays (length C + D): ids, shape, material, pitches and module tiling."""
        layers = [*self.barrels, *self.disks]
        n_cyl = len(self.barrels)
        out: dict[str, np.ndarray] = {
            "volume_id": np.array([s.volume_id for s in layers], np.int64),
            "layer_id": np.array([s.layer_id for s in layers], np.int64),
            "is_barrel": np.arange(len(layers)) < n_cyl,
            "x_x0": np.array([s.x_x0 for s in layers], float),
            "pitch_u": np.array([s.pitch_u for s in layers], float),
            "pitch_v": np.array([s.pitch_v for s in layers], float),
            "module_t": np.array([s.module_t for s in layers], float),
            "phi_offset": np.array([s.phi_offset for s in layers], float),
            "overlap": np.array([s.overlap for s in layers], float),
            "inefficiency": np.array(
                [np.nan if s.inefficiency is None else s.inefficiency for s in layers], float
            ),
            "radius": np.array([b.radius for b in self.barrels] + [np.nan] * len(self.disks), float),
            "half_length": np.array(
                [b.n_z * (2 * b.half_length / b.n_z) / 2 for b in self.barrels] + [np.nan] * len(self.disks), float
            ),
            "z": np.array([np.nan] * n_cyl + [d.z for d in self.disks], float),
            "r_min": np.array([np.nan] * n_cyl + [d.r_min for d in self.disks], float),
            "r_max": np.array([np.nan] * n_cyl + [d.r_max for d in self.disks], float),
            "n_phi": np.array([b.n_phi for b in self.barrels] + [0] * len(self.disks), np.int64),
            "n_z": np.array([b.n_z for b in self.barrels] + [0] * len(self.disks), np.int64),
            "n_rings": np.array([0] * n_cyl + [d.n_rings for d in self.disks], np.int64),
        }
        n_mod = np.array(
            [b.n_phi * b.n_z for b in self.barrels] + [int(d.ring_n_phi().sum()) for d in self.disks], np.int64
        )
        out["n_modules"] = n_mod
        out["module_offset"] = np.concatenate([[0], np.cumsum(n_mod)[:-1]]).astype(np.int64)
        # rings of all disks, flattened
        ring_first = [0] * n_cyl
        ring_nphi: list[int] = []
        ring_rin: list[float] = []
        ring_rout: list[float] = []
        ring_mod0: list[int] = []
        for d in self.disks:
            ring_first.append(len(ring_nphi))
            e = d.ring_edges()
            nphi = d.ring_n_phi()
            first = np.concatenate([[0], np.cumsum(nphi)[:-1]])
            ring_nphi += nphi.tolist()
            ring_rin += e[:-1].tolist()
            ring_rout += e[1:].tolist()
            ring_mod0 += first.tolist()
        out["ring_first"] = np.array(ring_first, np.int64)
        out["ring_n_phi"] = np.array(ring_nphi, np.int64)
        out["ring_r_in"] = np.array(ring_rin, float)
        out["ring_r_out"] = np.array(ring_rout, float)
        out["ring_module0"] = np.array(ring_mod0, np.int64)
        return out

    @property
    def n_modules(self) -> int:
        return int(self.surfaces["n_modules"].sum())

    @cached_property
    def modules(self) -> dict[str, np.ndarray]:
        """Per-module arrays (global module index order): surface, module_id, centre, frame and bounds."""
        s = self.surfaces
        surf_l, mid_l, phic_l, zc_l, rc_l, dphi_l, hv_l, minhu_l, maxhu_l = ([] for _ in range(9))
        for j, b in enumerate(self.barrels):
            nphi, nz = b.n_phi, b.n_z
            dphi = 2 * np.pi / nphi
            length = 2 * b.half_length / nz
            iz, iphi = np.divmod(np.arange(nphi * nz), nphi)
            surf_l.append(np.full(nphi * nz, j))
            mid_l.append(np.arange(nphi * nz) + 1)
            phic_l.append(b.phi_offset + (iphi + 0.5) * dphi)
            zc_l.append(-b.half_length + (iz + 0.5) * length)
            rc_l.append(np.full(nphi * nz, b.radius))
            dphi_l.append(np.full(nphi * nz, dphi))
            hv_l.append(np.full(nphi * nz, length / 2))
            minhu_l.append(np.full(nphi * nz, b.radius * dphi / 2 + b.overlap))
            maxhu_l.append(np.full(nphi * nz, b.radius * dphi / 2 + b.overlap))
        for k, d in enumerate(self.disks):
            j = len(self.barrels) + k
            e = d.ring_edges()
            for ring, nphi in enumerate(d.ring_n_phi()):
                dphi = 2 * np.pi / nphi
                half = dphi / 2
                r_in, r_out = e[ring], e[ring + 1]
                rc = 0.5 * (r_in * math.cos(half) + r_out)
                n = int(nphi)
                surf_l.append(np.full(n, j))
                phic_l.append(d.phi_offset + (np.arange(n) + 0.5) * dphi)
                zc_l.append(np.full(n, d.z))
                rc_l.append(np.full(n, rc))
                dphi_l.append(np.full(n, dphi))
                hv_l.append(np.full(n, 0.5 * (r_out - r_in * math.cos(half))))
                minhu_l.append(np.full(n, r_in * math.sin(half) + d.overlap))
                maxhu_l.append(np.full(n, r_out * math.tan(half) + d.overlap))
            mid_l.append(np.arange(int(d.ring_n_phi().sum())) + 1)
        surf = np.concatenate(surf_l).astype(np.int64) if surf_l else np.zeros(0, np.int64)
        phic = np.concatenate(phic_l) if phic_l else np.zeros(0)
        out = {
            "surface": surf,
            "module_id": np.concatenate(mid_l).astype(np.int64) if mid_l else np.zeros(0, np.int64),
            "phi_c": phic,
            "z_c": np.concatenate(zc_l) if zc_l else np.zeros(0),
            "r_c": np.concatenate(rc_l) if rc_l else np.zeros(0),
            "dphi": np.concatenate(dphi_l) if dphi_l else np.zeros(0),
            "hv": np.concatenate(hv_l) if hv_l else np.zeros(0),
            "minhu": np.concatenate(minhu_l) if minhu_l else np.zeros(0),
            "maxhu": np.concatenate(maxhu_l) if maxhu_l else np.zeros(0),
        }
        out["is_barrel"] = s["is_barrel"][surf]
        return out

    def module_frames(self, module_index: np.ndarray, phi: np.ndarray | None = None) -> np.ndarray:
        """Rotation matrices R (N, 3, 3), columns = local axes (u, v, w) in global coordinates.

        For barrel modules the frame is evaluated at azimuth ``phi`` when given (the local frame of a
        curved module at the hit), else at the module centre.
        """
        m = self.modules
        ang = m["phi_c"][module_index] if phi is None else np.where(m["is_barrel"][module_index], phi, m["phi_c"][module_index])
        c, s = np.cos(ang), np.sin(ang)
        zero, one = np.zeros_like(c), np.ones_like(c)
        barrel = m["is_barrel"][module_index]
        u = np.stack([-s, c, zero], axis=-1)
        v = np.where(barrel[:, None], np.stack([zero, zero, one], -1), np.stack([c, s, zero], -1))
        w = np.where(barrel[:, None], np.stack([c, s, zero], -1), np.stack([zero, zero, -one], -1))
        return np.stack([u, v, w], axis=-1)

    def module_centres(self, module_index: np.ndarray) -> np.ndarray:
        """Module centre positions (N, 3)."""
        m = self.modules
        phi = m["phi_c"][module_index]
        r = m["r_c"][module_index]
        return np.stack([r * np.cos(phi), r * np.sin(phi), m["z_c"][module_index]], axis=-1)

    def detector_table(self) -> pd.DataFrame:
        """TrackML ``detectors.csv`` table of all modules (rotation, half-sizes, pitches)."""
        m = self.modules
        s = self.surfaces
        idx = np.arange(len(m["surface"]))
        surf = m["surface"]
        rot = self.module_frames(idx)
        centre = self.module_centres(idx)
        df = pd.DataFrame(
            {
                "volume_id": s["volume_id"][surf].astype(np.int32),
                "layer_id": s["layer_id"][surf].astype(np.int32),
                "module_id": m["module_id"].astype(np.int32),
                "cx": centre[:, 0],
                "cy": centre[:, 1],
                "cz": centre[:, 2],
            }
        )
        for a_i, a in enumerate("xyz"):
            for b_i, b in enumerate("uvw"):
                df[f"rot_{a}{b}"] = rot[:, a_i, b_i]
        df["module_t"] = s["module_t"][surf]
        df["module_minhu"] = m["minhu"]
        df["module_maxhu"] = m["maxhu"]
        df["module_hv"] = m["hv"]
        df["pitch_u"] = s["pitch_u"][surf]
        df["pitch_v"] = s["pitch_v"][surf]
        return df

    def summary(self) -> pd.DataFrame:
        """One row per layer: ids, position, module counts."""
        rows = []
        for b in self.barrels:
            rows.append(dict(volume_id=b.volume_id, layer_id=b.layer_id, kind="barrel", r=b.radius, z=f"±{b.half_length:g}", n_modules=b.n_phi * b.n_z))
        for d in self.disks:
            rows.append(dict(volume_id=d.volume_id, layer_id=d.layer_id, kind="disk", r=f"{d.r_min:g}-{d.r_max:g}", z=d.z, n_modules=int(d.ring_n_phi().sum())))
        return pd.DataFrame(rows)


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"tracker geometry/preset file not found: '{p}'")
    cfg = OmegaConf.to_container(OmegaConf.load(p), resolve=True)
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: expected a YAML mapping at top level")
    return cfg  # type: ignore[return-value]


def available_presets() -> list[str]:
    """Names of the presets shipped in ``gnnreco/conf/sim/tracker_<name>.yaml``."""
    return sorted(p.stem[len("tracker_") :] for p in _CONF_DIR.glob("tracker_*.yaml"))


def preset_path(name: str) -> Path:
    """Path of a preset name (``'trackml'``, ``'itk'``, ``'toy'``) or a YAML file path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise FileNotFoundError(f"tracker preset file not found: '{p}'")
        return p
    q = _CONF_DIR / f"tracker_{name}.yaml"
    if not q.exists():
        raise FileNotFoundError(f"unknown tracker preset '{name}'; available: {available_presets()} (or a YAML path)")
    return q


def load_preset(name: str) -> dict[str, Any]:
    """The full preset mapping (``geometry:`` and ``simulation:``) of a name or YAML path."""
    return _read_yaml(preset_path(name))


def load_geometry(name: str | os.PathLike | TrackerGeometry) -> TrackerGeometry:
    """A :class:`TrackerGeometry` from a preset name, a YAML path, or pass-through."""
    if isinstance(name, TrackerGeometry):
        return name
    cfg = load_preset(str(name))
    if "geometry" not in cfg:
        raise ValueError(f"{preset_path(str(name))}: no 'geometry:' block")
    g = cfg["geometry"]
    return TrackerGeometry.from_dict(g, name=g.get("name", str(name)))
