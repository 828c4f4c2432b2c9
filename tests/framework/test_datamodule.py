import numpy as np
import pytest
from helpers_toy import toy_generator, toy_processor

from gnnreco.data.datamodule import EpochSeededSampler, EventDataModule, event_seed
from gnnreco.data.store import EventStore


def _dm(tmp_path, **kw):
    args = dict(data_dir=str(tmp_path / "store"), task="toy", generator=toy_generator, processor=toy_processor,
                n_events=30, batch_size=4, seed=7, progress=False)
    args.update(kw)
    return EventDataModule(**args)


def test_generates_when_missing_and_splits_are_seeded(tmp_path):
    dm = _dm(tmp_path)
    dm.setup("fit")
    assert len(EventStore(tmp_path / "store")) == 30
    sizes = {k: len(v) for k, v in dm.split_indices.items()}
    assert sizes == {"train": 24, "val": 3, "test": 3}
    allidx = np.concatenate(list(dm.split_indices.values()))
    assert sorted(allidx.tolist()) == list(range(30))
    dm2 = _dm(tmp_path)
    dm2.setup("fit")  # reads the existing store
    for k in dm.split_indices:
        np.testing.assert_array_equal(dm.split_indices[k], dm2.split_indices[k])
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 4 and batch.edge_index.max() < batch.num_nodes


def test_generation_is_deterministic(tmp_path):
    a = _dm(tmp_path / "a")
    b = _dm(tmp_path / "b")
    a.setup()
    b.setup()
    for i in range(30):
        np.testing.assert_array_equal(a.store[i]["x"].numpy(), b.store[i]["x"].numpy())
    assert event_seed(7, 0) != event_seed(7, 1) != event_seed(8, 0)


def test_rejected_events_are_counted(tmp_path, caplog):
    from functools import partial

    dm = _dm(tmp_path, processor=partial(toy_processor, reject_small=12))
    dm.setup()
    store = dm.store
    assert store.attrs["n_skipped"] > 0
    assert len(store) + store.attrs["n_skipped"] == 30
    assert "rejected by the processor" in caplog.text


def test_missing_store_without_generator_names_the_path(tmp_path):
    dm = _dm(tmp_path, generator=None)
    with pytest.raises(FileNotFoundError, match="store"):
        dm.setup()


def test_task_mismatch(tmp_path):
    _dm(tmp_path).setup()
    with pytest.raises(ValueError, match="holds 'toy' events"):
        _dm(tmp_path, task="calo").setup()


def test_parallel_generation_matches_serial(tmp_path):
    a = _dm(tmp_path / "a", n_events=10)
    b = _dm(tmp_path / "b", n_events=10, gen_workers=2)
    a.setup()
    b.setup()
    for i in range(10):
        np.testing.assert_array_equal(a.store[i]["x"].numpy(), b.store[i]["x"].numpy())


def test_epoch_seeded_sampler():
    s = EpochSeededSampler(20, seed=3)
    e0 = list(s)
    assert sorted(e0) == list(range(20))
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0
    s.set_epoch(0)
    assert list(s) == e0


def test_sampler_shards_over_ranks():
    shards = [list(EpochSeededSampler(10, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert set(sum(shards, [])) == set(range(10))
    ordered = list(EpochSeededSampler(5, seed=1, shuffle=False))
    assert ordered == [0, 1, 2, 3, 4]
