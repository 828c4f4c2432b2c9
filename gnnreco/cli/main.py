"""The ``gnnreco`` program: ``gnnreco <verb> [hydra overrides ...]``.

Verbs: train, evaluate, infer, generate, export, bench, quickstart (= ``train experiment=quickstart``).
``gnnreco <verb> --help`` lists the verb's config groups and their options (Hydra's help).
"""

from __future__ import annotations

import sys

from gnnreco.cli.config import CONF_DIR, VERBS

USAGE = """usage: gnnreco <verb> [overrides ...]

verbs:
  train       fit a task module, test it, print metrics, write plots   (conf/train.yaml)
  evaluate    test a checkpoint: ckpt_path=...                          (conf/evaluate.yaml)
  infer       reconstruct ROOT/parquet/TrackML events, write ROOT/parquet (conf/infer.yaml)
  generate    simulate + process events into an event store            (conf/generate.yaml)
  export      TorchScript + ONNX + manifest of a checkpoint            (conf/export.yaml)
  bench       run a benchmark suite: gnnreco bench ops|graph|io|...    (conf/bench.yaml)
  quickstart  = gnnreco train experiment=quickstart

examples:
  gnnreco quickstart
  gnnreco train experiment=tracking_quickstart trainer=gpu model.net.hidden=256
  gnnreco train --help          (config groups and their options)
  gnnreco bench ops quick=true
"""


def _runner(verb: str):
    if verb == "train":
        from gnnreco.cli.train import run_train as fn
    elif verb == "evaluate":
        from gnnreco.cli.evaluate import run_evaluate as fn
    elif verb == "infer":
        from gnnreco.cli.infer import run_infer as fn
    elif verb == "generate":
        from gnnreco.cli.generate import run_generate as fn
    elif verb == "export":
        from gnnreco.cli.export import run_export as fn
    elif verb == "bench":
        from gnnreco.cli.bench import run_bench as fn
    else:  # pragma: no cover - guarded by main
        raise ValueError(verb)
    return fn


def sweep_objective(result, cfg):
    """What the Hydra app returns: the number named by ``optimized_metric`` when the verb returned a
    metrics dict (so Optuna/Nevergrad/Ax sweepers can optimise it); ``None`` with a warning naming the
    metrics that exist when the run did not produce it; ``result`` unchanged for other verbs.
    """
    name = cfg.get("optimized_metric") if hasattr(cfg, "get") else None
    if not name or not isinstance(result, dict):
        return result
    if name not in result:
        import logging

        logging.getLogger("gnnreco").warning(
            "optimized_metric=%r is not among the run's metrics %s; a sweeper gets no objective", name,
            sorted(result))
        return None
    return float(result[name])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        import gnnreco
        from gnnreco import _compat

        print(f"gnnreco {gnnreco.__version__}; optional accelerators: {_compat.summary()}")
        return 0
    verb, rest = argv[0], argv[1:]
    from gnnreco.utils.memory import tune_host_allocator

    tune_host_allocator()  # reuse freed activation buffers instead of page-faulting new ones
    if verb == "quickstart":
        verb, rest = "train", ["experiment=quickstart", *rest]
    if verb not in VERBS:
        print(f"gnnreco: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    if verb == "bench" and rest and "=" not in rest[0] and not rest[0].startswith("-"):
        rest = [f"suite={rest[0]}", *rest[1:]]

    import hydra

    fn = _runner(verb)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=verb)
    def _app(cfg):
        return sweep_objective(fn(cfg), cfg)

    sys.argv = [f"gnnreco {verb}", *rest]
    _app()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
