"""Fixtures for the production-inference tests: a small (untrained) tracking run directory and toy
tracking events written as ROOT and parquet inputs, built once per test session."""

from __future__ import annotations

import numpy as np
import pytest

from tests.production.helpers_production import FIRST_EVENT, N_EVENTS, RUN_NUMBER, make_run


@pytest.fixture(scope="session")
def tracking_setup(tmp_path_factory):
    """``{"ckpt", "root", "parquet", "fields", "dir"}``: checkpoint and inputs of ``N_EVENTS`` toy events."""
    from gnnreco.io import default_schema, fields_of_raw, write_input_file
    from gnnreco.tasks.tracking.data import simulate

    d = tmp_path_factory.mktemp("tracking_infer")
    ckpt = make_run(d)
    fields = [fields_of_raw("tracking", simulate(s, preset="toy", mu=3)) for s in range(N_EVENTS)]
    schema = default_schema("tracking")
    evn = np.arange(FIRST_EVENT, FIRST_EVENT + N_EVENTS)
    root = write_input_file(d / "in.root", fields, schema, runs=[RUN_NUMBER] * N_EVENTS, event_numbers=evn)
    pq = write_input_file(d / "in.parquet", fields, schema, runs=[RUN_NUMBER] * N_EVENTS, event_numbers=evn)
    return {"ckpt": ckpt, "root": root, "parquet": pq, "fields": fields, "dir": d}

