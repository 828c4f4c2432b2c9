"""Synthetic detectors and event generators, one file per detector.

* :mod:`gnnreco.sim.tracker` — TrackML/ITk-like silicon tracker in a 2 T solenoid (TrackML CSV output);
* :mod:`gnnreco.sim.calo` — HGCAL-like endcap calorimeter showers;
* :mod:`gnnreco.sim.pythia` — Pythia8 pp events (``pythia8mc``) with a parametric fallback;
* :mod:`gnnreco.sim.delphes_like` — parametric Delphes-style detector response (MLPF elements);
* :mod:`gnnreco.sim.lhcb` — LHCb-like b-hadron events for DFEI.
"""

from gnnreco.sim.tracker import TrackerSimulator, generate_dataset, simulate_event
from gnnreco.sim.tracker_geometry import TrackerGeometry, available_presets, load_geometry

__all__ = ["TrackerSimulator", "generate_dataset", "simulate_event", "TrackerGeometry", "load_geometry",
           "available_presets"]
