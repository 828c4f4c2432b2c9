"""gnnreco.tasks.tracking: GNN track reconstruction (hit graphs → Interaction-Network edge classifier →
track candidates). See docs/tracking.md.

Modules: :mod:`~.data` (simulation entry point and event processing), :mod:`~.model` (edge classifiers),
:mod:`~.loss`, :mod:`~.reco` (track builders), :mod:`~.metrics`, :mod:`~.plots`, :mod:`~.module`
(``TrackingModule``).
"""
