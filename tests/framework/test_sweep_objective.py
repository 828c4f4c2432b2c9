"""The Hydra app returns the ``optimized_metric`` value, which optimising sweepers minimise."""

from omegaconf import OmegaConf

from gnnreco.cli.main import sweep_objective


def test_returns_named_metric_as_float():
    cfg = OmegaConf.create({"optimized_metric": "val/loss"})
    assert sweep_objective({"val/loss": 0.25, "test/auc": 0.9}, cfg) == 0.25


def test_missing_metric_gives_none_and_warns(caplog):
    cfg = OmegaConf.create({"optimized_metric": "val/missing"})
    with caplog.at_level("WARNING", logger="gnnreco"):
        assert sweep_objective({"val/loss": 0.25}, cfg) is None
    assert "val/missing" in caplog.text and "val/loss" in caplog.text


def test_other_verbs_pass_through():
    cfg = OmegaConf.create({})
    assert sweep_objective("/tmp/x.parquet", cfg) == "/tmp/x.parquet"
    assert sweep_objective({"a": 1.0}, cfg) == {"a": 1.0}
