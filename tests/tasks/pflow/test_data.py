"""Event processing (schema checks, skips) and the ROOT/parquet reader."""

import awkward as ak
import numpy as np
import pytest

from gnnreco.data.pflow_io import read_pflow_events, write_pflow_events
from gnnreco.tasks.pflow.data import (
    SKIPPED,
    BadEventError,
    generate_pflow_event,
    process_pflow_event,
    split_gen,
    store_from_files,
)


@pytest.fixture(scope="module")
def events():
    return [generate_pflow_event(s, backend="parametric") for s in range(3)]


def test_processed_event_layout(events):
    ev = process_pflow_event(events[0])
    n = len(events[0]["X"])
    assert ev["x"].shape == (n, 12) and ev["y"].shape == (n, 7) and ev["num_nodes"][0] == n
    assert ev["n_gen"][0] == len(ev["gen_p4"]) > 0
    parts = split_gen(np.concatenate([ev["gen_p4"], ev["gen_p4"][:2]]), [ev["n_gen"][0], 2])
    assert len(parts[1]) == 2


def test_bad_events_raise_or_are_counted(events):
    raw = dict(events[0])
    x = raw["X"].copy()
    x[3, 5] = np.nan
    with pytest.raises(BadEventError, match="NaN/inf.*element 3, feature 5"):
        process_pflow_event({**raw, "X": x})
    before = SKIPPED["non_finite"]
    assert process_pflow_event({**raw, "X": x}, on_bad="skip") is None
    assert SKIPPED["non_finite"] == before + 1
    e0 = SKIPPED["empty"]
    assert process_pflow_event({"X": np.zeros((0, 12)), "y": np.zeros((0, 7))}) is None
    assert SKIPPED["empty"] == e0 + 1
    y = raw["y"].copy()
    y[0, 0] = 9
    with pytest.raises(BadEventError, match="unknown target class"):
        process_pflow_event({**raw, "y": y})
    x2 = raw["X"].copy()
    x2[0, 0] = 4
    with pytest.raises(BadEventError, match="element type"):
        process_pflow_event({**raw, "X": x2})
    with pytest.raises(ValueError, match="on_bad"):
        process_pflow_event(raw, on_bad="ignore")


@pytest.mark.parametrize("ext", ["root", "parquet"])
def test_reader_round_trip(events, tmp_path, ext):
    path = write_pflow_events(events, tmp_path / f"ev.{ext}")
    back = list(read_pflow_events(path))
    assert len(back) == len(events)
    for a, b in zip(events, back):
        np.testing.assert_array_equal(a["X"], b["X"])
        np.testing.assert_array_equal(a["y"], b["y"])
        np.testing.assert_allclose(a["gen_p4"], b["gen_p4"])


def test_reader_nested_layout_and_errors(events, tmp_path):
    p = tmp_path / "nested.parquet"
    ak.to_parquet(ak.Array({"X": [e["X"].tolist() for e in events], "y": [e["y"].tolist() for e in events]}), p)
    back = list(read_pflow_events(p))
    np.testing.assert_allclose(back[2]["X"], events[2]["X"])
    bad = tmp_path / "bad.parquet"
    ak.to_parquet(ak.Array({"X_type": [[1.0]]}), bad)
    with pytest.raises(KeyError, match="missing column"):
        list(read_pflow_events(bad))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list(read_pflow_events(tmp_path / "nowhere.root"))
    with pytest.raises(ValueError, match="extension"):
        write_pflow_events(events, tmp_path / "ev.csv")


def test_store_from_files_feeds_the_datamodule(events, tmp_path):
    from gnnreco.data.datamodule import EventDataModule

    f = write_pflow_events(events + [{"X": np.zeros((0, 12)), "y": np.zeros((0, 7)), "gen_p4": np.zeros((0, 4))}],
                           tmp_path / "ev.parquet")
    info = store_from_files([str(f)], str(tmp_path / "store"))
    assert info["written"] == 3 and info["skipped"] == 1
    dm = EventDataModule(data_dir=str(tmp_path / "store"), task="pflow", generator=None, splits=(1, 0, 0), progress=False)
    dm.prepare_data()
    dm.setup("fit")
    d = dm.dataset("train")[0]
    assert d.x.shape[1] == 12 and d.y.shape[1] == 7
