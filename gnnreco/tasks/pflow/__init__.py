"""gnnreco.tasks.pflow: machine-learned particle flow (MLPF) with a rule-based PF baseline.

Modules: ``data`` (generator → detector → checked element/target arrays), ``baseline`` (rule-based PF),
``model`` (GNN-LSH, GravNet and transformer ``MLPFNet``), ``loss`` (MLPF loss), ``metrics`` (particle,
anti-k_T jet and MET evaluation), ``module`` (Lightning ``PFlowModule``), ``plots``. See docs/pflow.md.
"""
