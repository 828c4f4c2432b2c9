"""Calorimeter clustering with GravNet and object condensation (see docs/calo.md).

* :mod:`.data` — hit features and labels from :func:`gnnreco.sim.calo.simulate` events;
* :mod:`.model` — :class:`~.model.CaloGravNet` (GravNet blocks + OC heads);
* :mod:`.loss` — :func:`~.loss.condensation_loss` (memory-safe, package-compatible) and payload terms;
* :mod:`.reco` — :func:`~.reco.condense` and :func:`~.reco.match_showers`;
* :mod:`.metrics`, :mod:`.plots` — efficiency, fake/merge/split rates, energy response, PID confusion;
* :mod:`.module` — :class:`~.module.CaloModule` (Lightning).
"""

from gnnreco.tasks.calo.loss import condensation_loss

__all__ = ["condensation_loss"]
