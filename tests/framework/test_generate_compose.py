"""``gnnreco generate experiment=<name>`` composes for every experiment (they also select models/loggers)."""

from pathlib import Path

import pytest

from gnnreco.cli.config import CONF_DIR
from tests.conftest import compose_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_generate_composes_with_experiment(name, tmp_path):
    cfg = compose_config("generate", [f"experiment={name}"], tmp_path, test_conf=False)
    assert cfg.data._target_.endswith("EventDataModule")
    assert int(cfg.n_events) > 0
    assert cfg.out_dir == cfg.data.data_dir
