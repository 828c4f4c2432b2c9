"""``GraphTaskModule``: the Lightning module every task derives from.

A task module only wires pure functions together (DESIGN.md, principle 2). The base class owns what is
common to all four tasks:

* optimizer and scheduler built from Hydra ``_partial_`` configs;
* optional ``torch.compile`` of the network;
* gradient clipping and gradient accumulation;
* an out-of-memory guard: a batch that runs out of memory (forward *or* backward) is skipped with a
  counted warning, and training aborts after ``max_consecutive_oom`` such batches in a row;
* metric logging for train/val/test with the batch size taken from the graph batch.

Optimisation is manual (``automatic_optimization = False``) so the OOM guard can also cover the
backward pass; clipping and accumulation are therefore options of the module, not of the Trainer.

Subclasses implement :meth:`forward` and :meth:`compute_loss`, and optionally:

* :meth:`compute_metrics` — per-batch validation/test metrics;
* ``evaluation_plots(out_dir) -> list[Path]`` — PNG plots of results cached during ``test_step``
  (called by ``gnnreco train``/``evaluate``);
* ``reconstruct(batch, out) -> list[dict]`` — one record of reconstructed objects per event
  (``gnnreco infer``);
* export hooks (``gnnreco export``, :func:`gnnreco.export.export_task`): ``export_formats``,
  ``export_inputs(batch) -> tuple[Tensor, ...]`` (the tensor-only inputs of ``net`` for an example
  batch), ``export_input_names``, ``export_output_names``, ``export_dynamic_axes`` (``{name: {axis:
  symbol}}``) and ``export_manifest() -> dict`` (``task``, ``features``, ``normalisation``,
  ``thresholds``, ``postprocessing``: see docs/export.md). The defaults here come from the export
  adapter of the network family (:mod:`gnnreco.export.adapters`: calo and DFEI export through
  wrappers); tracking and MLPF define them in their modules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["GraphTaskModule", "TooManyOOMError", "is_oom_error", "gather_records"]


class TooManyOOMError(RuntimeError):
    """Raised when ``max_consecutive_oom`` batches in a row ran out of memory."""


def is_oom_error(exc: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (the exception types differ across torch versions)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError | MemoryError) and (
        "out of memory" in str(exc).lower() or isinstance(exc, MemoryError)
    )


def gather_records(records: list) -> list:
    """Every process's ``records`` concatenated in rank order (``records`` itself without a process group).

    Event-pooled test summaries (track efficiency over all test particles, jet resolution over all jets)
    are not means of per-rank values: under DDP each rank holds the per-event records of its share of the
    test split, and the summary must be computed from all of them. This gathers the (picklable) records
    onto every rank with ``torch.distributed.all_gather_object``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return records
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(records))
    return [r for part in parts for r in part]


def _num_graphs(batch: Any) -> int:
    n = getattr(batch, "num_graphs", None)
    return int(n) if n is not None else 1


class GraphTaskModule(pl.LightningModule):
    """Base Lightning module of every gnnreco task.

    Args:
        net: the task network (an ``nn.Module`` with a tensor-only ``forward``; see DESIGN.md §6).
        optimizer: ``functools.partial`` of an optimizer class taking ``params`` (Hydra ``_partial_``).
        scheduler: optional partial of a learning-rate scheduler taking ``optimizer``.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        scheduler_monitor: metric for ``ReduceLROnPlateau``-like schedulers.
        compile: wrap ``net`` in ``torch.compile`` at ``setup("fit")``.
        gradient_clip_val: clip the global gradient norm to this value (0 disables).
        accumulate_grad_batches: optimizer step every this many batches.
        max_consecutive_oom: abort after this many out-of-memory batches in a row.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
        compile: bool = False,
        gradient_clip_val: float = 0.0,
        accumulate_grad_batches: int = 1,
        max_consecutive_oom: int = 3,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        self.automatic_optimization = False
        # The network and the optimizer/scheduler factories are not hyper-parameters: keeping them out
        # of the checkpoint keeps checkpoints loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.net = net
        self.oom_skipped = 0
        self._oom_in_a_row = 0
        self._accum = 0

    # ------------------------------------------------------------------ hooks for subclasses
    def forward(self, batch: Any) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement forward(batch) -> dict of tensors")

    def compute_loss(self, batch: Any, out: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise TypeError(f"{type(self).__name__} must implement compute_loss(batch, out)")  # pragma: no cover

    def compute_metrics(self, batch: Any, out: dict[str, Tensor], stage: str) -> dict[str, float | Tensor]:
        """Per-batch validation/test metrics (averaged over events by the logger). Default: none."""
        return {}

    # ------------------------------------------------------------------ export hooks (gnnreco.export)
    def _export_adapter(self) -> Any:
        from gnnreco.export.adapters import adapter_for

        a = adapter_for(self.net)
        if a is None:
            raise TypeError(f"{type(self).__name__} ({type(self.net).__name__}) defines no export hooks and its "
                            "network has no export adapter in gnnreco.export.adapters")
        return a

    @property
    def export_formats(self) -> tuple[str, ...]:
        """Formats ``gnnreco export`` can write for this task's network."""
        from gnnreco.export.adapters import adapter_for

        a = adapter_for(self.net)
        return a.formats if a is not None else ("torchscript", "onnx")

    def export_inputs(self, batch: Any) -> tuple[Tensor, ...]:
        """Example inputs of the exported network, taken from a PyG batch."""
        return self._export_adapter().inputs(self, batch)

    @property
    def export_input_names(self) -> tuple[str, ...]:
        return self._export_adapter().input_names(self.net)

    @property
    def export_output_names(self) -> tuple[str, ...]:
        from gnnreco.export.adapters import adapter_for

        a = adapter_for(self.net)
        return a.output_names(self.net) if a is not None else ("output",)

    @property
    def export_dynamic_axes(self) -> dict[str, dict[int, str]] | None:
        """``None``: :func:`gnnreco.export.export_network`'s default (axis 0 of everything)."""
        from gnnreco.export.adapters import adapter_for

        a = adapter_for(self.net)
        return a.dynamic_axes(self.net) if a is not None else None

    def export_manifest(self) -> dict[str, Any]:
        """Task metadata of the export manifest (docs/export.md)."""
        from gnnreco.export.adapters import adapter_for

        a = adapter_for(self.net)
        return a.manifest(self) if a is not None else {}

    # ------------------------------------------------------------------ checkpoint provenance
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which gnnreco version, module class and network wrote this checkpoint.

        ``gnnreco.cli.common.load_checkpoint_weights`` reads it back so that a checkpoint of another
        task, model or incompatible version fails with a message that names both sides.
        """
        import gnnreco

        checkpoint["gnnreco"] = {
            "version": gnnreco.__version__,
            "module": f"{type(self).__module__}.{type(self).__qualname__}",
            "net": f"{type(self.net).__module__}.{type(self.net).__qualname__}",
        }

    # ------------------------------------------------------------------ optimisation
    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net, dynamic=True)

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(optimizer=opt)
        # Manual optimisation: the scheduler is stepped by _step_scheduler (interval/monitor from hparams).
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched}}

    def _step_scheduler(self, interval: str) -> None:
        if self.scheduler_factory is None or self.hparams.scheduler_interval != interval:
            return
        sched = self.lr_schedulers()
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            value = self.trainer.callback_metrics.get(self.hparams.scheduler_monitor)
            if value is not None:
                sched.step(value)
        else:
            sched.step()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        opt = self.optimizers()
        k = self.hparams.accumulate_grad_batches
        try:
            out = self(batch)
            loss, parts = self.compute_loss(batch, out)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at batch {batch_idx}")
            self.manual_backward(loss / k)
        except Exception as exc:
            if not is_oom_error(exc):
                raise
            self._handle_oom(exc, batch_idx)
            opt.zero_grad(set_to_none=True)
            return None
        self._oom_in_a_row = 0
        self._accum += 1
        last = (batch_idx + 1) == self.trainer.num_training_batches
        if self._accum >= k or last:
            if self.hparams.gradient_clip_val and self.hparams.gradient_clip_val > 0:
                self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val,
                                    gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad(set_to_none=True)
            self._accum = 0
            self._step_scheduler("step")
        bs = _num_graphs(batch)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=bs)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        self._step_scheduler("epoch")
        self.log("train/oom_skipped", float(self.oom_skipped), on_epoch=True)

    def _handle_oom(self, exc: BaseException, batch_idx: int) -> None:
        self.oom_skipped += 1
        self._oom_in_a_row += 1
        log.warning("out of memory at batch %d (%d skipped so far, %d in a row): %s",
                    batch_idx, self.oom_skipped, self._oom_in_a_row, str(exc).splitlines()[0])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self._oom_in_a_row >= self.hparams.max_consecutive_oom:
            raise TooManyOOMError(
                f"{self._oom_in_a_row} batches in a row ran out of memory "
                f"(max_consecutive_oom={self.hparams.max_consecutive_oom}); reduce the batch size "
                "or graph size (e.g. data.batch_size, the graph builder's k or radius)"
            ) from exc

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Any, stage: str) -> dict[str, Tensor]:
        out = self(batch)
        loss, parts = self.compute_loss(batch, out)
        bs = _num_graphs(batch)
        # Under DDP each rank sees its own share of the events: reduce the epoch means over ranks so
        # val/* (the checkpoint monitor) and test/* describe the whole split, not rank 0's part.
        sync = self._distributed()
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=(stage == "val"), batch_size=bs, sync_dist=sync)
        for name, value in parts.items():
            self.log(f"{stage}/{name}", value, on_epoch=True, batch_size=bs, sync_dist=sync)
        for name, value in self.compute_metrics(batch, out, stage).items():
            if isinstance(value, float) and math.isnan(value):
                continue
            self.log(f"{stage}/{name}", value, on_epoch=True, batch_size=bs, sync_dist=sync)
        return out

    def _distributed(self) -> bool:
        """True when attached to a trainer with more than one process."""
        trainer = self._trainer
        return trainer is not None and trainer.world_size > 1

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")
