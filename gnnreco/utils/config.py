"""Config helpers shared by every task."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["to_plain"]


def to_plain(obj: Any) -> Any:
    """OmegaConf containers → plain Python dicts/lists (so pure functions accept Hydra-built arguments)."""
    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return obj
