"""``EventDataModule``: the Lightning data module shared by every task.

The flow is the same for all tasks::

    generator(seed) -> raw event  --processor-->  processed event (dict of arrays)  --> EventStore
    EventStore[i]  --to_data-->  torch_geometric.data.Data  --> PyG DataLoader (batched by ``batch``)

``generator`` and ``processor`` come from the task's config as ``_partial_`` targets. If the store
directory holds no complete store, ``prepare_data`` generates ``n_events`` events (one seed per event,
derived from ``seed``), processes them and writes the store, with a progress bar. An event the
processor rejects (it returns ``None``, e.g. an empty event) is skipped and counted in the store
metadata and the log, never dropped silently.

The train/val/test split is a seeded permutation of the event indices, so it is the same on every
run, every worker and every DDP rank.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from gnnreco.data.store import EventStore, EventStoreWriter

log = logging.getLogger(__name__)

__all__ = ["EventDataModule", "StoreDataset", "EpochSeededSampler", "event_to_data", "event_seed"]


def event_seed(base_seed: int, index: int) -> int:
    """Seed of event ``index`` in a dataset with base seed ``base_seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def event_to_data(event: Mapping[str, torch.Tensor]):
    """Turn a stored event (dict of tensors) into a ``torch_geometric.data.Data``.

    ``num_nodes`` (stored as a one-element array) becomes the graph's node count; every other key
    becomes an attribute. PyG increments keys containing ``index`` when batching.
    """
    from torch_geometric.data import Data

    ev = dict(event)
    n = ev.pop("num_nodes", None)
    data = Data(**ev)
    if n is not None:
        data.num_nodes = int(n.reshape(-1)[0])
    return data


class StoreDataset(Dataset):
    """A subset of an :class:`EventStore`, returning PyG ``Data`` objects."""

    def __init__(self, store: EventStore, indices: Sequence[int], to_data: Callable = event_to_data):
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.to_data = to_data

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.to_data(self.store[int(self.indices[i])])


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """Event order that depends only on ``(seed, epoch)``, sharded over distributed ranks.

    Lightning calls ``set_epoch`` at the start of every epoch, so a run resumed from a checkpoint at
    epoch *e* sees exactly the batches an uninterrupted run sees at epoch *e*: resumed and
    uninterrupted training end with the same weights. With ``world_size > 1`` each rank takes every
    ``world_size``-th index of the (padded) order, like ``DistributedSampler``, so gnnreco does its own
    sharding (the trainer configs set ``use_distributed_sampler: false``).

    Args:
        n: number of events.
        seed: base seed.
        shuffle: random order (training) or identity order (evaluation).
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world_size {world_size}")
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_once(self, n: int) -> None:
        """Leave out the first ``n`` indices of the next iteration only (resuming inside an epoch)."""
        self._skip = max(0, int(n))

    def __len__(self) -> int:
        return -(-self.n // self.world_size) if self.n else 0

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(event_seed(self.seed, 1_000_003 + self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world_size > 1 and order:
            total = len(self) * self.world_size
            order = (order * (total // len(order) + 1))[:total]
            order = order[self.rank::self.world_size]
        if self._skip:
            order, self._skip = order[self._skip:], 0
        return iter(order)


def _resumable_loader_class():
    from torch_geometric.loader import DataLoader

    class ResumableLoader(DataLoader):
        """A PyG ``DataLoader`` over an :class:`EpochSeededSampler` that resumes inside an epoch.

        Lightning stores ``state_dict()`` in every checkpoint (it is a stateful loader) and hands it back
        through ``load_state_dict`` when a run resumes. The state is the number of batches the training
        loop had processed in the current epoch (``progress()``, read from the trainer); the next
        iteration then skips exactly those batches, so a run resumed from a mid-epoch checkpoint (a SLURM
        requeue checkpoint) sees the same batches as an uninterrupted one. Without this, Lightning
        restarts the interrupted epoch's loader from its first batch.
        """

        def __init__(self, *args: Any, progress: Callable[[], int] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._progress = progress
            self._resume_batches = 0

        def state_dict(self) -> dict[str, int]:
            done = int(self._progress()) if self._progress is not None else 0
            return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches_done": done}

        def load_state_dict(self, state: Mapping[str, Any]) -> None:
            self._resume_batches = int(state.get("batches_done", 0))

        def __iter__(self):
            n, self._resume_batches = self._resume_batches, 0
            if 0 < n < len(self) and isinstance(self.sampler, EpochSeededSampler):
                self.sampler.skip_once(n * int(self.batch_size))
            return super().__iter__()

    return ResumableLoader


def _generate_one(args: tuple) -> tuple[int, dict | None]:
    generator, processor, seed = args
    raw = generator(seed=seed)
    ev = processor(raw) if processor is not None else raw
    return seed, ev


class EventDataModule(pl.LightningDataModule):
    """Seeded, lazily-read event dataset of any task.

    Args:
        data_dir: directory of the processed :class:`EventStore` (created when generating).
        task: task name (``tracking``, ``calo``, ``pflow``, ``dfei``), recorded in the store.
        generator: callable ``generator(seed=...) -> raw event``; ``None`` means the store must exist.
        processor: callable ``processor(raw) -> dict of arrays | None`` (graph building, features, labels).
        n_events: events to generate when the store is missing.
        splits: train/val/test fractions (normalised).
        batch_size: events per batch.
        num_workers: DataLoader workers.
        gen_workers: processes used to generate and process events.
        seed: base seed of the generation and of the split.
        shard_size: events per store shard.
        pin_memory: pin host memory (useful on GPU).
    """

    def __init__(
        self,
        data_dir: str,
        task: str,
        generator: Callable[..., Any] | None = None,
        processor: Callable[[Any], Mapping[str, Any] | None] | None = None,
        n_events: int = 100,
        splits: Sequence[float] = (0.8, 0.1, 0.1),
        batch_size: int = 1,
        num_workers: int = 0,
        gen_workers: int = 1,
        seed: int = 0,
        shard_size: int = 500,
        pin_memory: bool = False,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if len(splits) != 3 or min(splits) < 0 or sum(splits) <= 0:
            raise ValueError(f"data.splits must be three non-negative fractions, got {list(splits)}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.data_dir = Path(data_dir)
        self.task = task
        self.generator = generator
        self.processor = processor
        self.n_events = int(n_events)
        self.splits = np.asarray(splits, dtype=float) / float(sum(splits))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.gen_workers = max(1, int(gen_workers))
        self.seed = int(seed)
        self.shard_size = shard_size
        self.pin_memory = pin_memory
        self.progress = progress
        self.store: EventStore | None = None
        self.split_indices: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ generation
    def store_exists(self) -> bool:
        return (self.data_dir / "meta.json").exists()

    def prepare_data(self) -> None:
        if self.store_exists():
            return
        if self.generator is None:
            raise FileNotFoundError(
                f"no event store at '{self.data_dir}' (expected '{self.data_dir / 'meta.json'}') and no "
                "data.generator is configured to create one"
            )
        self.generate()

    def generate(self) -> Path:
        """Generate, process and store ``n_events`` events; returns the store path."""
        if self.generator is None:
            raise ValueError("data.generator is not set; cannot generate events")
        from gnnreco.utils.progress import progress_iter

        seeds = [event_seed(self.seed, i) for i in range(self.n_events)]
        writer = EventStoreWriter(self.data_dir, task=self.task, shard_size=self.shard_size,
                                  attrs={"base_seed": self.seed, "n_requested": self.n_events})
        skipped: list[int] = []
        jobs = [(self.generator, self.processor, s) for s in seeds]
        if self.gen_workers > 1:
            ctx = mp.get_context("spawn" if torch.cuda.is_available() else "fork")
            with ctx.Pool(self.gen_workers) as pool:
                results = pool.imap(_generate_one, jobs, chunksize=max(1, len(jobs) // (8 * self.gen_workers)))
                for seed, ev in progress_iter(results, total=len(jobs), desc=f"generating {self.task} events",
                                              enabled=self.progress):
                    self._append(writer, seed, ev, skipped)
        else:
            for job in progress_iter(jobs, total=len(jobs), desc=f"generating {self.task} events",
                                     enabled=self.progress):
                seed, ev = _generate_one(job)
                self._append(writer, seed, ev, skipped)
        writer.attrs["skipped_seeds"] = skipped
        writer.attrs["n_skipped"] = len(skipped)
        if skipped:
            log.warning("%d of %d generated events were rejected by the processor and skipped "
                        "(seeds recorded in %s/meta.json)", len(skipped), len(seeds), self.data_dir)
        return writer.close()

    @staticmethod
    def _append(writer: EventStoreWriter, seed: int, ev: Mapping[str, Any] | None, skipped: list[int]) -> None:
        if ev is None:
            skipped.append(seed)
            return
        ev = dict(ev)
        ev.setdefault("event_seed", np.array([seed], dtype=np.int64))
        writer.append(ev)

    # ------------------------------------------------------------------ splits and loaders
    def setup(self, stage: str | None = None) -> None:
        if self.store is not None:
            return
        if not self.store_exists():
            self.prepare_data()
        self.store = EventStore(self.data_dir)
        if self.store.task != self.task:
            raise ValueError(f"the store at '{self.data_dir}' holds '{self.store.task}' events, "
                             f"but the configured task is '{self.task}'")
        n = len(self.store)
        perm = np.random.default_rng(self.seed).permutation(n)
        n_train = int(round(self.splits[0] * n))
        n_val = int(round(self.splits[1] * n))
        if n >= 3:  # every stage gets at least one event when there are enough
            n_train = min(max(n_train, 1), n - 2)
            n_val = min(max(n_val, 1), n - n_train - 1)
        self.split_indices = {
            "train": np.sort(perm[:n_train]),
            "val": np.sort(perm[n_train:n_train + n_val]),
            "test": np.sort(perm[n_train + n_val:]),
        }

    def dataset(self, split: str) -> StoreDataset:
        if self.store is None:
            self.setup()
        if split not in self.split_indices:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self.split_indices)}")
        return StoreDataset(self.store, self.split_indices[split])

    def _loader(self, split: str, shuffle: bool):
        from torch_geometric.loader import DataLoader

        ds = self.dataset(split)
        rank, world = 0, 1
        trainer = getattr(self, "trainer", None)
        if trainer is not None and getattr(trainer, "world_size", 1) > 1:
            rank, world = trainer.global_rank, trainer.world_size
        sampler = EpochSeededSampler(len(ds), self.seed, shuffle=shuffle, rank=rank, world_size=world)
        kwargs = dict(batch_size=self.batch_size, shuffle=False, sampler=sampler, num_workers=self.num_workers,
                      pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)
        if split == "train" and trainer is not None:
            return _resumable_loader_class()(ds, progress=self._train_batches_done, **kwargs)
        return DataLoader(ds, **kwargs)

    def _train_batches_done(self) -> int:
        """Training batches processed so far in the current epoch (Lightning's loop progress)."""
        try:
            return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        except AttributeError:
            return 0

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "data_dir": os.fspath(self.data_dir)}
