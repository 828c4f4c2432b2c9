import json

import numpy as np
import pytest
import torch

from gnnreco.data.store import EventStore, EventStoreWriter, StoreError, write_events


def _events(n, rng):
    out = []
    for i in range(n):
        nn_ = int(rng.integers(0, 30))
        ne = int(rng.integers(0, 60))
        out.append({
            "x": rng.normal(size=(nn_, 3)).astype(np.float32),
            "edge_index": rng.integers(0, max(nn_, 1), size=(2, ne)),
            "y": rng.random(ne).astype(np.float32),
            "num_nodes": np.array([nn_]),
            "label": np.array([i], dtype=np.int32),
        })
    return out


def test_roundtrip_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    evs = _events(23, rng)
    write_events(tmp_path / "s", evs, task="toy", shard_size=5, attrs={"note": "x"})
    store = EventStore(tmp_path / "s")
    assert len(store) == 23
    assert store.task == "toy" and store.attrs["note"] == "x"
    assert len(store.meta["shards"]) == 5
    for i, ev in enumerate(evs):
        got = store[i]
        for k, v in ev.items():
            np.testing.assert_array_equal(got[k].numpy(), v)
    assert store[-1]["label"].item() == 22
    with pytest.raises(IndexError, match="out of range"):
        store[23]


def test_empty_events_are_kept(tmp_path):
    evs = [{"x": np.zeros((0, 3), np.float32), "num_nodes": np.array([0])},
           {"x": np.ones((2, 3), np.float32), "num_nodes": np.array([2])}]
    write_events(tmp_path / "s", evs, task="toy")
    s = EventStore(tmp_path / "s")
    assert s[0]["x"].shape == (0, 3) and s[1]["x"].shape == (2, 3)


def test_key_mismatch_is_an_error(tmp_path):
    w = EventStoreWriter(tmp_path / "s", task="toy")
    w.append({"x": np.zeros((2, 3), np.float32)})
    with pytest.raises(StoreError, match="missing"):
        w.append({"y": np.zeros(2)})
    with pytest.raises(StoreError, match="'x'.*dtype"):
        w.append({"x": np.zeros((2, 3), np.float64)})
    with pytest.raises(StoreError, match="trailing"):
        w.append({"x": np.zeros((2, 4), np.float32)})


def test_bad_values_are_errors(tmp_path):
    w = EventStoreWriter(tmp_path / "s", task="toy")
    with pytest.raises(StoreError, match="object"):
        w.append({"x": np.array([None, 1], dtype=object)})
    with pytest.raises(StoreError, match=r"\[2, E\]"):
        w.append({"edge_index": np.zeros((3, 4), np.int64)})


def test_incomplete_or_foreign_store_is_rejected(tmp_path):
    (tmp_path / "partial").mkdir()
    with pytest.raises(StoreError, match="meta.json"):
        EventStore(tmp_path / "partial")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EventStore(tmp_path / "nope")
    write_events(tmp_path / "s", [{"x": np.zeros(1)}], task="toy")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    meta["schema_version"] = 999
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema version 999"):
        EventStore(tmp_path / "s")


def test_refuses_to_overwrite(tmp_path):
    write_events(tmp_path / "s", [{"x": np.zeros(1)}], task="toy")
    with pytest.raises(StoreError, match="refusing"):
        EventStoreWriter(tmp_path / "s", task="toy")


def test_corrupt_shard_names_the_file(tmp_path):
    write_events(tmp_path / "s", [{"x": np.zeros(1)}], task="toy")
    (tmp_path / "s" / "shard-00000.pt").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="shard-00000.pt"):
        EventStore(tmp_path / "s")[0]


def test_tensors_are_accepted(tmp_path):
    write_events(tmp_path / "s", [{"x": torch.arange(4.0)}], task="toy")
    assert torch.equal(EventStore(tmp_path / "s")[0]["x"], torch.arange(4.0))
