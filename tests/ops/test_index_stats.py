"""gnnreco.ops._index_stats: one reduction for min/max/sortedness, remembered until the index changes."""

from __future__ import annotations

import torch

from gnnreco.ops._index_stats import index_stats


def test_values():
    assert index_stats(torch.tensor([0, 2, 2, 5]), cache=True) == (0, 5, True)
    assert index_stats(torch.tensor([3, 1, 4]), cache=True) == (1, 4, False)
    assert index_stats(torch.tensor([7]), cache=True) == (7, 7, True)
    assert index_stats(torch.tensor([[1, 0], [4, 2]]), cache=True) == (0, 4, None)


def test_remembered_until_an_in_place_write(monkeypatch):
    idx = torch.tensor([0, 1, 1, 3])
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: calls.append(1) or real(t))
    assert index_stats(idx, cache=True) == (0, 3, True)
    assert index_stats(idx, cache=True) == (0, 3, True)
    assert len(calls) == 1  # the second call reads the record
    idx[1] = 9  # bumps the version counter
    assert index_stats(idx, cache=True) == (0, 9, False)
    assert len(calls) == 2
    idx.view(2, 2)[0, 0] = -4  # a write through a view changes the shared counter too
    assert index_stats(idx, cache=True) == (-4, 9, False)


def test_views_get_their_own_numbers():
    base = torch.tensor([5, 0, 1, 2, 3])
    assert index_stats(base, cache=True) == (0, 5, False)
    assert index_stats(base[1:], cache=True) == (0, 3, True)
    assert index_stats(base, cache=True) == (0, 5, False)  # the root's record was replaced, not reused
    wide = base[1:].unsqueeze(1).expand(4, 3).select(1, 0)  # broadcast then select: same geometry as base[1:]
    assert index_stats(wide, cache=True) == (0, 3, True)


def test_inference_tensors_are_not_remembered():
    with torch.inference_mode():
        idx = torch.tensor([2, 1])
    assert index_stats(idx, cache=True) == (1, 2, False)
    assert not hasattr(idx, "_gnnreco_index_stats")
