"""``gnnreco infer`` end to end: ROOT/parquet in and out keyed by run/event, the same results as the
Python API, errors that name the branch and the file, and a process killed mid-run that leaves no
partial output and resumes from its complete chunks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

import gnnreco
from gnnreco.io import MissingBranchError, read_results
from tests.production.helpers_production import FIRST_EVENT, N_EVENTS, RUN_NUMBER, SMALL, infer_cfg

TESTS = Path(__file__).resolve().parents[1]


def test_infer_root_to_root_matches_python_api(tmp_path, tracking_setup):
    from gnnreco.cli.infer import run_infer

    out = tmp_path / "reco.root"
    cfg = infer_cfg(tmp_path, tracking_setup["ckpt"], [f"input={tracking_setup['root']}", f"output={out}",
                                                        "chunk_size=5", "max_events=12"])
    assert run_infer(cfg) == out and not out.with_name("reco.root.parts").exists()
    arr = read_results(out)
    assert arr["run"].tolist() == [RUN_NUMBER] * 12
    assert arr["event"].tolist() == list(range(FIRST_EVENT, FIRST_EVENT + 12)) and all(arr["ok"].tolist())
    reco = gnnreco.Reconstructor.from_checkpoint(tracking_setup["ckpt"], device="cpu")
    for i in (0, 7, 11):
        ref = reco(tracking_setup["fields"][i])
        for k, v in ref.items():
            np.testing.assert_allclose(ak.to_numpy(arr[k][i]), v, rtol=1e-5, err_msg=k)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["events"] == 12 and stats["events_per_s"] > 0
    assert [c["events_done"] for c in stats["chunks"]] == [5, 10, 12]
    assert stats["device"] == "cpu" and stats["peak_rss_mb"] > 0


def test_infer_parquet_input_with_mapped_branch_and_edges(tmp_path, tracking_setup):
    import pyarrow.parquet as pq

    from gnnreco.cli.infer import run_infer

    renamed = tmp_path / "renamed.parquet"
    table = pq.read_table(tracking_setup["parquet"]).rename_columns(
        ["SP_x" if c == "hit_x" else c for c in pq.read_table(tracking_setup["parquet"]).column_names])
    pq.write_table(table, renamed)
    out = tmp_path / "reco.parquet"
    base = [f"input={renamed}", f"output={out}", "max_events=4", "keep_edges=true"]
    with pytest.raises(MissingBranchError) as err:
        run_infer(infer_cfg(tmp_path, tracking_setup["ckpt"], base))
    assert "'hit_x'" in str(err.value) and str(renamed) in str(err.value)
    assert not out.exists() and not out.with_name("reco.parquet.parts").exists()
    run_infer(infer_cfg(tmp_path, tracking_setup["ckpt"], [*base, "io.branches.x=SP_x"]))
    arr = read_results(out)
    assert len(arr) == 4 and {"edge_src", "edge_dst", "edge_score"} <= set(arr.fields)
    assert all(len(arr["edge_src"][i]) == len(arr["edge_score"][i]) > 0 for i in range(4))


def _cmd(tracking_setup, out, extra=()):
    return [sys.executable, "-m", "gnnreco.cli.main", "infer", *SMALL[:1], f"ckpt_path={tracking_setup['ckpt']}",
            f"input={tracking_setup['root']}", f"output={out}", "chunk_size=3", "num_threads=1",
            f"hydra.run.dir={out.parent / 'hydra'}", f"stats_file={out.parent / 'stats.json'}", *extra]


def test_killed_infer_leaves_no_output_and_resumes(tmp_path, tracking_setup):
    env = dict(os.environ, GNNRECO_ROOT=str(tmp_path), GNNRECO_PROGRESS="0")
    env["PYTHONPATH"] = str(TESTS.parent) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "reco.root"
    parts = out.with_name("reco.root.parts")
    # slow each event down so that the kill surely lands mid-run (the hook sleeps inside the loop)
    proc = subprocess.Popen(_cmd(tracking_setup, out), env=dict(env, GNNRECO_INFER_EVENT_DELAY="0.15"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (parts / "chunk-000001.parquet").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < 240, "no chunk written in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not leave a final output"
    done = sorted(p.name for p in parts.glob("chunk-*.parquet"))
    assert 2 <= len(done) < N_EVENTS // 3

    # rerun (in this process: same inputs and settings) resumes after the complete chunks
    from gnnreco.cli.infer import run_infer

    cfg = infer_cfg(tmp_path, tracking_setup["ckpt"], [f"input={tracking_setup['root']}", f"output={out}", "chunk_size=3"])
    run_infer(cfg)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["events_resumed"] == 3 * len(done) and stats["events"] == N_EVENTS - 3 * len(done)
    assert not parts.exists()
    arr = read_results(out)
    assert arr["event"].tolist() == list(range(FIRST_EVENT, FIRST_EVENT + N_EVENTS))
    # the resumed file holds exactly what one uninterrupted run gives
    reco = gnnreco.Reconstructor.from_checkpoint(tracking_setup["ckpt"], device="cpu")
    for i in (0, 3 * len(done) - 1, 3 * len(done), N_EVENTS - 1):
        ref = reco(tracking_setup["fields"][i])
        np.testing.assert_array_equal(ak.to_numpy(arr["track_hits"][i]), ref["track_hits"])
        np.testing.assert_allclose(ak.to_numpy(arr["track_score"][i]), ref["track_score"], rtol=1e-5)

    # a finished output is never replaced silently
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run_infer(cfg)


def test_infer_from_export_directory(tmp_path, tracking_setup):
    pytest.importorskip("onnxruntime")
    import torch
    from omegaconf import OmegaConf
    from torch_geometric.data import Batch

    from gnnreco.cli.infer import run_infer
    from gnnreco.data.datamodule import event_to_data
    from gnnreco.export import export_network

    reco = gnnreco.Reconstructor.from_checkpoint(tracking_setup["ckpt"], device="cpu")
    graph, _ = reco.process(tracking_setup["fields"][0])
    batch = Batch.from_data_list([event_to_data({k: torch.as_tensor(v) for k, v in graph.items()})])
    run_cfg = OmegaConf.load(tracking_setup["ckpt"].parents[1] / ".hydra" / "config.yaml")
    exp = tmp_path / "exp"
    export_network(reco.module.net, reco.module.export_inputs(batch), exp, input_names=tuple(reco.module.export_input_names),
                   output_names=("logits",), formats=("onnx",), cfg=run_cfg)
    OmegaConf.save(run_cfg, exp / "config.yaml")  # the export carries its task/data/model config
    out = tmp_path / "reco.parquet"
    cfg = infer_cfg(tmp_path, tracking_setup["ckpt"], ["ckpt_path=null", f"export_path={exp}",
                                                        f"input={tracking_setup['parquet']}", f"output={out}",
                                                        "max_events=3"])
    run_infer(cfg)
    arr = read_results(out)
    for i in range(3):
        ref = reco(tracking_setup["fields"][i])
        np.testing.assert_array_equal(ak.to_numpy(arr["track_label"][i]), ref["track_label"])


def test_infer_trackml_directory(tmp_path, tracking_setup):
    import pandas as pd

    from gnnreco.cli.infer import run_infer

    d = tmp_path / "csv"
    d.mkdir()
    for i in range(3):  # hits files only: inference needs no truth
        pd.DataFrame(tracking_setup["fields"][i]).to_csv(d / f"event{500 + i:09d}-hits.csv.gz", index=False)
    out = tmp_path / "reco.root"
    run_infer(infer_cfg(tmp_path, tracking_setup["ckpt"], [f"input={d}", f"output={out}"]))
    arr = read_results(out)
    assert arr["event"].tolist() == [500, 501, 502] and arr["run"].tolist() == [0, 0, 0]
    reco = gnnreco.Reconstructor.from_checkpoint(tracking_setup["ckpt"], device="cpu")
    for i in range(3):
        np.testing.assert_array_equal(ak.to_numpy(arr["track_hits"][i]), reco(tracking_setup["fields"][i])["track_hits"])
