"""gnnreco.io without a model: schemas and branch mapping, readers (ROOT, parquet, TrackML, stores),
the chunked atomic/resumable writer, result columns and checkpoint provenance checks."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch

from gnnreco.io import (
    ChunkedOutput,
    InputSchema,
    MissingBranchError,
    ResumeMismatchError,
    default_schema,
    dense_lca,
    open_input,
    read_results,
    tracks_from_columns,
    write_input_file,
)
from gnnreco.io.results import result_columns, track_scores


def _events(n=7, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _i in range(n):
        k = int(rng.integers(0, 9))  # includes empty events
        out.append({"hit_id": np.arange(1, k + 1), "x": rng.normal(size=k).astype(np.float32),
                    "y": rng.normal(size=k).astype(np.float32), "z": rng.normal(size=k).astype(np.float32),
                    "volume_id": np.full(k, 8, np.int32), "layer_id": rng.integers(0, 4, k).astype(np.int32),
                    "module_id": rng.integers(0, 50, k).astype(np.int32)})
    return out


# ---------------------------------------------------------------------------------------- readers
@pytest.mark.parametrize("ext", [".root", ".parquet"])
def test_reader_round_trip_keys_and_resume_offset(tmp_path, ext):
    schema = default_schema("tracking")
    evs = _events()
    path = write_input_file(tmp_path / f"in{ext}", evs, schema, runs=[3] * 7, event_numbers=np.arange(50, 57))
    reader = open_input(path, schema, step_size=3)
    assert len(reader) == 7
    got = list(reader)
    assert [e.event for e in got] == list(range(50, 57)) and {e.run for e in got} == {3}
    for e, ref in zip(got, evs):
        for k in ref:
            np.testing.assert_array_equal(e.data[k], ref[k])
    # starting at a global position skips what comes before without reading it
    assert [e.event for e in reader.iterate(5)] == [55, 56]
    assert list(reader.iterate(7)) == []


def test_multi_file_positions_and_glob(tmp_path):
    schema = default_schema("tracking")
    write_input_file(tmp_path / "a.root", _events(4, 1), schema, event_numbers=range(4))
    write_input_file(tmp_path / "b.root", _events(5, 2), schema, event_numbers=range(10, 15))
    reader = open_input(str(tmp_path / "*.root"), schema, step_size=2)
    assert len(reader) == 9
    assert [e.event for e in reader.iterate(3)] == [3, 10, 11, 12, 13, 14]
    assert [e.event for e in reader.iterate(6)] == [12, 13, 14]
    assert len(reader.describe()) == 2 and all("size" in d for d in reader.describe())


@pytest.mark.parametrize("ext,what", [(".root", "branch"), (".parquet", "column")])
def test_missing_branch_names_branch_and_file(tmp_path, ext, what):
    schema = default_schema("tracking")
    path = write_input_file(tmp_path / f"in{ext}", _events(3), schema)
    mapped = InputSchema.from_config({"branches": {"x": "SpacePoint_x"}}, task="tracking")
    with pytest.raises(MissingBranchError) as err:
        open_input(path, mapped)
    msg = str(err.value)
    assert "SpacePoint_x" in msg and str(path) in msg and f"no {what}" in msg and "io.branches.x" in msg
    # an optional field may be absent: hit ids default to 1..N
    sch = InputSchema.from_config({"branches": {"hit_id": "no_such_ids"}}, task="tracking")
    ev = next(iter(open_input(path, sch)))
    assert "hit_id" not in ev.data and "x" in ev.data


def test_branch_mapping_reads_renamed_branches(tmp_path):
    mapped = InputSchema.from_config({"tree": "hits", "event_branch": "evt", "run_branch": None,
                                      "branches": {"x": "sp_x", "y": "sp_y"}}, task="tracking")
    evs = _events(3)
    path = write_input_file(tmp_path / "in.root", evs, mapped, event_numbers=[4, 5, 6])
    import uproot

    with uproot.open(path) as f:
        assert f.classnames()["hits;1"] == "TTree" and "sp_x" in f["hits"].keys() and "hit_x" not in f["hits"].keys()
    got = list(open_input(path, mapped))
    assert [e.event for e in got] == [4, 5, 6] and all(e.run == 0 for e in got)
    np.testing.assert_array_equal(got[1].data["x"], evs[1]["x"])
    with pytest.raises(MissingBranchError, match="no TTree 'events'"):
        open_input(path, default_schema("tracking"))


def test_schema_config_errors():
    with pytest.raises(ValueError, match="io.task is 'calo' but the model's task is 'tracking'"):
        InputSchema.from_config({"task": "calo"}, task="tracking")
    with pytest.raises(ValueError, match="io.optional"):
        InputSchema.from_config({"optional": ["nope"]}, task="tracking")


def test_trackml_directory_reader(tmp_path):
    import pandas as pd

    d = tmp_path / "csv"
    d.mkdir()
    evs = _events(3, 5)
    for i, ev in enumerate(evs):  # only the hits file is read for inference
        pd.DataFrame(ev).to_csv(d / f"event{20 + i:09d}-hits.csv", index=False)
    reader = open_input(d, default_schema("tracking"))
    got = list(reader.iterate(1))
    assert len(reader) == 3 and [e.event for e in got] == [21, 22] and got[0].kind == "raw"
    np.testing.assert_allclose(got[1].data["hits"]["x"].to_numpy(), evs[2]["x"])


# ---------------------------------------------------------------------------------------- output
def _cols(i):
    return {"hits": np.arange(i, dtype=np.int64), "score": np.full(i % 3, 0.5, np.float32), "n": np.int64(i)}


def test_chunked_output_atomic_resume_and_formats(tmp_path):
    fp = {"inputs": ["a"], "model": "m"}
    out_path = tmp_path / "reco.parquet"
    out = ChunkedOutput(out_path, fingerprint=fp, chunk_size=4)
    assert out.open() == 0
    for i in range(10):
        out.add(1, 100 + i, _cols(i) if i != 2 else None, ok=i != 2)
    # "crash" here: two chunks complete, two events pending, no final output
    assert not out_path.exists() and out.n_chunks == 2
    (out.parts / "chunk-000002.parquet.tmp999").write_bytes(b"partial")  # an interrupted chunk write
    # another job's settings are refused, naming what changed
    with pytest.raises(ResumeMismatchError, match="model"):
        ChunkedOutput(out_path, fingerprint={**fp, "model": "other"}, chunk_size=4).open()
    with pytest.raises(ResumeMismatchError, match="chunk_size"):
        ChunkedOutput(out_path, fingerprint=fp, chunk_size=5).open()
    again = ChunkedOutput(out_path, fingerprint=fp, chunk_size=4)
    assert again.open() == 8 and not any(".tmp" in p.name for p in again.parts.iterdir())
    for i in range(8, 10):
        again.add(1, 100 + i, _cols(i))
    assert again.finalize() == out_path and not again.parts.exists()
    arr = read_results(out_path)
    assert arr["event"].tolist() == list(range(100, 110))
    assert arr["ok"].tolist() == [i != 2 for i in range(10)]
    assert arr["hits"][5].tolist() == [0, 1, 2, 3, 4] and arr["hits"][2].tolist() == []
    assert arr["n"].tolist()[:4] == [0, 1, 0, 3]
    with pytest.raises(FileExistsError, match="overwrite"):
        ChunkedOutput(out_path, fingerprint=fp).open()

    # the same rows as ROOT (a TTree with jagged branches) read back identically
    root = ChunkedOutput(tmp_path / "reco.root", fingerprint=fp, chunk_size=3)
    root.open()
    for i in range(10):
        root.add(1, 100 + i, _cols(i) if i != 2 else None, ok=i != 2)
    root.finalize()
    import uproot

    with uproot.open(tmp_path / "reco.root") as f:
        assert f.classnames()["reco;1"] == "TTree"
    back = read_results(tmp_path / "reco.root")
    assert back.fields == arr.fields
    for f in arr.fields:
        assert ak.to_list(back[f]) == ak.to_list(arr[f]), f


def test_chunk_of_rejected_events_gets_columns_at_merge(tmp_path):
    out = ChunkedOutput(tmp_path / "r.parquet", chunk_size=2)
    out.open()
    out.add(0, 0, None, ok=False)
    out.add(0, 1, None, ok=False)  # a whole chunk before the column schema is known
    out.add(0, 2, _cols(4))
    arr = read_results(out.finalize())
    assert arr.fields == ["run", "event", "ok", "hits", "score", "n"]
    assert arr["hits"].tolist() == [[], [], [0, 1, 2, 3]]


def test_resume_false_discards_parts(tmp_path):
    out = ChunkedOutput(tmp_path / "r.parquet", fingerprint={"a": 1}, chunk_size=1)
    out.open()
    out.add(0, 0, _cols(1))
    fresh = ChunkedOutput(tmp_path / "r.parquet", fingerprint={"a": 2}, chunk_size=1, resume=False)
    assert fresh.open() == 0 and not (fresh.parts / "chunk-000000.parquet").exists()


# ---------------------------------------------------------------------------------------- results
def test_track_scores_and_columns_in_input_indexing():
    # 5 input hits with ids 10..14; the processor kept 4 of them (id 12 dropped) in another order
    labels = np.array([0, 0, 1, 1])
    ei = np.array([[0, 2, 0], [1, 3, 2]])
    scores = np.array([0.9, 0.7, 0.2], np.float32)
    np.testing.assert_allclose(track_scores(labels, ei, scores, 2), [0.9, 0.7])
    rec = {"hit_id": np.array([14, 10, 11, 13]), "track_labels": labels, "edge_index": ei, "edge_scores": scores}
    graph = {"hit_coords": np.array([[30, 0, 0], [10, 0, 0], [40, 0, 0], [20, 0, 0]], np.float32)}
    cols = result_columns("tracking", rec, graph, input_hit_id=np.array([10, 11, 12, 13, 14]), keep_edges=True)
    assert cols["track_label"].tolist() == [0, 1, -1, 1, 0]
    tracks = tracks_from_columns(cols["track_hits"], cols["track_nhits"])
    assert [t.tolist() for t in tracks] == [[0, 4], [3, 1]]  # input rows, ordered outward in r
    assert cols["edge_src"].tolist() == [4, 1, 4] and cols["edge_dst"].tolist() == [0, 3, 1]


def test_dfei_and_pflow_columns():
    lca = np.array([[0, 2, 1], [2, 0, 0], [1, 0, 0]])
    iu, ju = np.nonzero(np.triu(lca, 1))
    cols = result_columns("dfei", {"node_score": np.ones(3), "parent": np.array([-1, 0, 0]), "lca_i": iu,
                                   "lca_j": ju, "lca": lca[iu, ju]})
    np.testing.assert_array_equal(dense_lca(3, cols["lca_i"], cols["lca_j"], cols["lca"]), lca)
    cand = np.array([[1, -1, 5.0, 0.1, 0.0, 1.0, 6.0], [3, 0, 2.0, -1.0, 1.0, 0.0, 3.0]])
    pf = result_columns("pflow", {"candidates": cand, "element_index": np.array([0, 4])})
    assert pf["cand_pid"].tolist() == [1, 3] and pf["cand_charge"].tolist() == [-1, 0]
    assert pf["cand_element"].tolist() == [0, 4] and pf["cand_energy"].dtype == np.float32


# ---------------------------------------------------------------------------------------- checkpoints
class _Net(torch.nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.lin = torch.nn.Linear(n, 1)


class _Module(torch.nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.net = _Net(n)


def test_checkpoint_provenance_mismatch_names_both_sides():
    from gnnreco.io.checkpoint import CheckpointMismatchError, check_checkpoint

    model = _Module()
    sd = model.state_dict()
    ok = {"state_dict": sd, "gnnreco": {"version": "0.1.3", "module": f"{__name__}._Module", "net": f"{__name__}._Net"}}
    check_checkpoint(model, ok, "ok.ckpt")
    other_task = {"state_dict": sd, "gnnreco": {"version": "0.1.0", "module": "gnnreco.tasks.calo.module.CaloModule",
                                                "net": "gnnreco.tasks.calo.model.CaloGravNet"}}
    with pytest.raises(CheckpointMismatchError) as err:
        check_checkpoint(model, other_task, "calo.ckpt")
    msg = str(err.value)
    assert "calo.ckpt" in msg and "CaloModule" in msg and "_Module" in msg and "CaloGravNet" in msg
    with pytest.raises(CheckpointMismatchError, match="gnnreco 0.7.0, this is gnnreco"):
        check_checkpoint(model, {**ok, "gnnreco": {**ok["gnnreco"], "version": "0.7.0"}}, "old.ckpt")
    # an old checkpoint without provenance: keys and shapes are compared
    with pytest.raises(CheckpointMismatchError, match=r"older gnnreco checkpoint.*other shapes.*net.lin.weight"):
        check_checkpoint(model, {"state_dict": _Module(5).state_dict()}, "legacy.ckpt")
    with pytest.raises(CheckpointMismatchError, match="absent"):
        check_checkpoint(model, {"state_dict": {"w": torch.zeros(1)}}, "legacy.ckpt")


def test_tensor_buffers_are_reused():
    from gnnreco.reco import TensorBuffers

    buf = TensorBuffers("cpu")
    a = buf.put("x", torch.arange(40.0).reshape(10, 4))
    ptr = a.data_ptr()
    b = buf.put("x", torch.ones(6, 4))
    assert b.data_ptr() == ptr and b.shape == (6, 4) and float(b.sum()) == 24.0
    n_alloc = buf.allocations
    buf.put("x", torch.ones(12, 4))  # grows once, geometrically
    assert buf.allocations == n_alloc + 1 and buf.put("x", torch.ones(13, 4)).data_ptr() == buf.put("x", torch.ones(1, 4)).data_ptr()


def test_cli_checkpoint_loading_checks_provenance(tmp_path):
    from gnnreco.cli.common import load_checkpoint_weights
    from gnnreco.io.checkpoint import CheckpointMismatchError

    path = tmp_path / "dfei.ckpt"
    torch.save({"state_dict": _Module().state_dict(),
                "gnnreco": {"version": "0.1.0", "module": "gnnreco.tasks.dfei.module.DFEIModule", "net": "x.Net"}}, path)
    with pytest.raises(CheckpointMismatchError, match=r"dfei.ckpt.*written by module .*DFEIModule.*configured module is .*_Module"):
        load_checkpoint_weights(_Module(), str(path))
    torch.save({"state_dict": _Module().state_dict()}, path)  # no provenance, matching weights: loads
    assert "state_dict" in load_checkpoint_weights(_Module(), str(path))
