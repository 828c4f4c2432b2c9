"""Checkpoint provenance: refuse a checkpoint written by another task, model or gnnreco version.

``GraphTaskModule.on_save_checkpoint`` records ``checkpoint["gnnreco"] = {"version", "module", "net"}``
(fully qualified class names). :func:`check_checkpoint` compares that block with the module that is
about to receive the weights and raises :class:`CheckpointMismatchError` naming both sides. Older
checkpoints lack the block; for them the ``state_dict`` keys and shapes are compared instead, so a
checkpoint of another task or network still fails with a readable message rather than a wall of
``load_state_dict`` key names.

Version rule (semantic versioning with the 0.x convention): a checkpoint loads when its major version
equals the running one and, while the major version is 0, its minor version too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["CheckpointMismatchError", "check_checkpoint", "task_of_class", "versions_compatible", "describe_module"]


class CheckpointMismatchError(RuntimeError):
    """A checkpoint was written by another task, network or incompatible gnnreco version."""


def task_of_class(qualname: str | None) -> str | None:
    """Task name of a fully qualified class name (``gnnreco.tasks.<task>.…``), else None."""
    if not qualname:
        return None
    m = re.match(r"gnnreco\.tasks\.(\w+)\.", qualname)
    return m.group(1) if m else None


def _qualname(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def describe_module(model: torch.nn.Module) -> dict[str, str | None]:
    """``{"module", "net", "task"}`` of a task module (what a checkpoint of it would record)."""
    net = getattr(model, "net", None)
    # torch.compile wraps the network; name the original class
    net = getattr(net, "_orig_mod", net)
    module = _qualname(model)
    return {"module": module, "net": _qualname(net) if net is not None else None, "task": task_of_class(module)}


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", str(v))[:3]
    return tuple(int(p) for p in parts) if parts else (0,)


def versions_compatible(ckpt_version: str, running_version: str) -> bool:
    """Same major version, and the same minor version while the major version is 0."""
    a, b = _version_tuple(ckpt_version), _version_tuple(running_version)
    if a[0] != b[0]:
        return False
    if a[0] == 0:
        return (a + (0,))[1] == (b + (0,))[1]
    return True


def _short(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f", … ({len(names)} in all)" if len(names) > k else "")


def check_checkpoint(model: torch.nn.Module, checkpoint: Mapping[str, Any], path: str = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` if ``checkpoint`` was not written for ``model``.

    Args:
        model: the task module about to receive the weights.
        checkpoint: the loaded checkpoint (``state_dict`` and, for new ones, a ``gnnreco`` block).
        path: the file name, used in the message.

    Raises:
        CheckpointMismatchError: the message names the checkpoint's task/module/network/version and
            the configured ones.
    """
    import gnnreco

    want = describe_module(model)
    info = checkpoint.get("gnnreco") if isinstance(checkpoint, Mapping) else None
    if isinstance(info, Mapping):
        got_module, got_net, got_version = info.get("module"), info.get("net"), info.get("version")
        got_task = task_of_class(got_module)
        problems = []
        if got_task and want["task"] and got_task != want["task"]:
            problems.append(f"it is a '{got_task}' checkpoint but the configured task is '{want['task']}'")
        elif got_module and got_module != want["module"]:
            problems.append(f"it was written by module {got_module}, the configured module is {want['module']}")
        if got_net and want["net"] and got_net != want["net"] and not problems:
            problems.append(f"its network is {got_net}, the configured network (model.net) is {want['net']}")
        if got_version and not versions_compatible(str(got_version), gnnreco.__version__):
            problems.append(f"it was written by gnnreco {got_version}, this is gnnreco {gnnreco.__version__} "
                            "(checkpoints load within the same major version, and the same minor version for 0.x)")
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint '{path}' cannot be loaded: " + "; ".join(problems)
                + f". Checkpoint: task={got_task}, module={got_module}, net={got_net}, gnnreco={got_version}; "
                f"configured: task={want['task']}, module={want['module']}, net={want['net']}, "
                f"gnnreco={gnnreco.__version__}. Pass the matching task/model configs (or the training run's "
                "config) or another checkpoint."
            )
    sd = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if not isinstance(sd, Mapping):
        raise CheckpointMismatchError(f"'{path}' is not a gnnreco/Lightning checkpoint (no 'state_dict')")
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(k for k in own if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        origin = "an older gnnreco checkpoint without provenance" if not isinstance(info, Mapping) else \
            f"module={info.get('module')}, net={info.get('net')}"
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) the model needs are absent ({_short(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} weight(s) belong to no parameter of the model ({_short(unexpected)})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} weight(s) have other shapes (e.g. '{k}': checkpoint "
                         f"{tuple(sd[k].shape)}, model {tuple(own[k].shape)})")
        raise CheckpointMismatchError(
            f"checkpoint '{path}' ({origin}) does not fit the configured model "
            f"(task={want['task']}, module={want['module']}, net={want['net']}): " + "; ".join(parts)
            + ". It was probably written by another task, network or model size."
        )
