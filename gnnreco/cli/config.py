"""Locating the config directory, registering resolvers, and instantiating config lists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONF_DIR", "project_root", "register_resolvers", "instantiate_dict_of", "VERBS"]

VERBS = ("train", "evaluate", "infer", "generate", "export", "bench")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def project_root() -> str:
    """Root of relative gnnreco paths (data/, logs/).

    ``$GNNRECO_ROOT`` if set; else the checkout holding ``pyproject.toml`` next to the package (an
    editable install); else the directory gnnreco was launched from (a plain install). Code never uses
    the current directory directly: configs derive every path from ``paths.root_dir``.
    """
    env = os.environ.get("GNNRECO_ROOT")
    if env:
        return str(Path(env).expanduser().resolve())
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists() and (checkout / "gnnreco").is_dir():
        return str(checkout)
    return str(Path.cwd())


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("gnnreco_root"):
        OmegaConf.register_new_resolver("gnnreco_root", project_root)


def instantiate_dict_of(cfg: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict config (callbacks, loggers)."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"the {what} config must be a mapping of name -> {{_target_: ...}}, got {type(cfg)}")
    out = []
    for name, sub in cfg.items():
        if isinstance(sub, DictConfig) and "_target_" in sub:
            out.append(instantiate(sub))
        elif sub is not None:
            raise ValueError(f"{what}.{name} has no _target_; every {what} entry must name a class")
    return out


register_resolvers()
