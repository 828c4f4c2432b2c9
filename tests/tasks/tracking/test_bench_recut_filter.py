"""The tracking benchmark's filter re-cut (gnnreco.bench.tracking.recut_filter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnreco.bench.tracking import recut_filter
from gnnreco.tasks.tracking.data import EDGE_FEATURES, process_event, simulate
from gnnreco.tasks.tracking.filter import EdgeFilter, filter_event

VOLUMES = [7, 8, 9]
NAMES = EDGE_FEATURES[:5]


@pytest.fixture(scope="module")
def events():
    return [process_event(simulate(s, preset="trackml", mu=5), volumes=VOLUMES, edge_feature_names=NAMES)
            for s in (11, 12)]


@pytest.fixture(scope="module")
def net_f(events):
    torch.manual_seed(0)
    net = EdgeFilter(events[0]["x"].shape[1], len(NAMES), hidden=8, n_layers=2)
    return net.eval()


def _efficiency(net, events, cut):
    kept = tgt = 0
    for ev in events:
        logits = filter_event(net, ev, -np.inf)[1]
        kept += int((ev["edge_target"] & (logits >= cut)).sum())
        tgt += int(ev["edge_target"].sum())
    return kept / tgt


def test_cut_reaches_the_efficiency_and_looser_keeps_more(events, net_f):
    ckpt = {"filter_cut": 5.0, "config": {"edge_feature_names": list(NAMES), "filter_eff": 0.995}}
    a = recut_filter(ckpt, net_f, 0.9, events=events)
    b = recut_filter(ckpt, net_f, 0.999, events=events)
    assert _efficiency(net_f, events, a["filter_cut"]) >= 0.9
    assert _efficiency(net_f, events, b["filter_cut"]) >= 0.999
    assert b["filter_cut"] <= a["filter_cut"] and b["filter_kept_val"] >= a["filter_kept_val"]
    assert a["config"]["filter_eff"] == 0.9
    # the input checkpoint is left as it was
    assert ckpt["filter_cut"] == 5.0 and ckpt["config"]["filter_eff"] == 0.995


def test_errors(events, net_f):
    ckpt = {"filter_cut": 0.0, "config": {"edge_feature_names": list(NAMES)}}
    with pytest.raises(ValueError, match="no filter"):
        recut_filter(ckpt, None, 0.99, events=events)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        recut_filter(ckpt, net_f, 0.0, events=events)
    empty = dict(events[0], edge_index=np.zeros((2, 0), np.int64))
    with pytest.raises(ValueError, match="no validation event"):
        recut_filter(ckpt, net_f, 0.99, events=[empty, None])
