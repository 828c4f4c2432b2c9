"""``gnnreco bench <suite>``: run a benchmark suite and print (optionally record) its table."""

from __future__ import annotations

import importlib
import sys

from omegaconf import DictConfig, OmegaConf

from gnnreco.bench import SUITES

__all__ = ["run_bench"]


def run_bench(cfg: DictConfig) -> str:
    suite = str(cfg.suite)
    if suite not in SUITES:
        raise ValueError(f"unknown benchmark suite {suite!r}; expected one of {list(SUITES)}")
    try:
        mod = importlib.import_module(f"gnnreco.bench.{suite}")
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"benchmark suite '{suite}' is not available in this build ({exc})") from exc
    options = OmegaConf.to_container(cfg.get("options", {}), resolve=True) or {}
    table = mod.run(quick=bool(cfg.quick), **options)
    print(table)
    if cfg.get("write", False):
        from gnnreco.bench.report import write_section

        cmd = "gnnreco bench " + " ".join(sys.argv[1:]) if sys.argv else f"gnnreco bench {suite}"
        title = getattr(mod, "TITLE", f"{suite} benchmark")
        print(f"recorded in {write_section(suite, title, cmd, table)}")
    return table
