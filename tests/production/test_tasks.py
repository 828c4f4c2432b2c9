"""The input schema and output columns of calo, pflow and dfei: an event of each task's own generator,
written as a ROOT file in the task's schema, read back and reconstructed by an (untrained) quick-start
model through the Reconstructor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config

#: small events: a unit test checks the plumbing, not the physics
SMALL_EVENTS = {"calo": ["data.generator.gun.n_particles=[1,3]", "data.generator.noise=false"]}
EXPECTED = {
    "calo": {"hit_cluster", "cluster_energy", "cluster_x", "cluster_y", "cluster_time", "cluster_pid",
             "cluster_beta", "cluster_seed_hit"},
    "pflow": {"cand_pid", "cand_charge", "cand_pt", "cand_eta", "cand_sin_phi", "cand_cos_phi", "cand_energy",
              "cand_element"},
    "dfei": {"node_score", "parent", "lca_i", "lca_j", "lca"},
}


@pytest.mark.parametrize("task", ["calo", "pflow", "dfei"])
def test_task_schema_round_trip_and_columns(task, tmp_path):
    from hydra.utils import instantiate

    import gnnreco
    from gnnreco.io import default_schema, fields_of_raw, open_input, write_input_file

    cfg = compose_config("train", [f"experiment={task}_quickstart", *SMALL_EVENTS.get(task, [])], tmp_path,
                         test_conf=False)
    torch.manual_seed(0)
    rec = gnnreco.Reconstructor.from_config(cfg, module=instantiate(cfg.model), device="cpu")
    gen = instantiate(cfg.data.generator)
    raws = [gen(seed=s) for s in (1, 2)]
    schema = default_schema(task)
    fields = [fields_of_raw(task, r) for r in raws]
    path = write_input_file(tmp_path / "in.root", fields, schema, runs=[5, 5], event_numbers=[10, 11])
    got = list(open_input(path, schema))
    assert [(e.run, e.event) for e in got] == [(5, 10), (5, 11)]
    for ev, ref in zip(got, fields):
        for k, v in ref.items():
            np.testing.assert_allclose(np.asarray(ev.data[k], np.float64).reshape(-1), np.asarray(v, np.float64).reshape(-1))
    res = rec(got[0].data)
    assert res is not None and set(res) >= EXPECTED[task]
    n = len(next(iter(fields[0].values())))
    if task == "calo":
        assert len(res["hit_cluster"]) == n and res["hit_cluster"].max(initial=-1) < len(res["cluster_energy"])
    elif task == "pflow":
        assert np.all(res["cand_element"] < n) and np.all(res["cand_pid"] > 0)
    else:
        assert len(res["node_score"]) == n and np.all(res["lca_i"] < res["lca_j"]) and np.all(res["lca_j"] < n)
        parent = res["parent"]  # particles first, then the reconstructed ancestors
        assert len(parent) >= n and np.all((parent == -1) | ((parent >= n) & (parent < len(parent))))
    if task != "dfei":  # the network never sees truth: the raw event (with truth) gives the same result
        same = rec(raws[0])
        for k in res:
            np.testing.assert_allclose(res[k], same[k], rtol=1e-5, atol=1e-6, err_msg=k)
