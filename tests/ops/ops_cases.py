"""Hand-written scatter cases (1-D to 3-D, dim -1/0/1, empty groups, arg sentinel) shared by the
ops tests. Values are small integers so they are exact in every dtype, including half/bfloat16."""

from __future__ import annotations

import torch

DTYPES = [torch.half, torch.bfloat16, torch.float, torch.double, torch.int, torch.long]
FLOAT_DTYPES = [torch.half, torch.bfloat16, torch.float, torch.double]
REDUCTIONS = ["sum", "add", "mul", "mean", "min", "max"]


def tolerance(dtype: torch.dtype, exact: float = 1e-6) -> dict:
    """``assert_close`` tolerances: loose for half/bfloat16, ``exact`` otherwise."""
    if dtype in (torch.half, torch.bfloat16):
        return dict(atol=2e-2, rtol=2e-2)
    return dict(atol=exact, rtol=exact)

CASES = [
    dict(  # 1-D, group 2 empty
        src=[1, 3, 2, 4, 5, 6],
        index=[0, 1, 0, 1, 1, 3],
        dim=0,
        dim_size=None,
        sum=[3, 12, 0, 6],
        mul=[2, 60, 1, 6],
        mean=[1.5, 4, 0, 6],
        mean_int=[1, 4, 0, 6],
        min=[1, 3, 0, 6],
        arg_min=[0, 1, 6, 5],
        max=[2, 5, 0, 6],
        arg_max=[2, 4, 6, 5],
    ),
    dict(  # 2-D along dim 0 with a 1-D index
        src=[[1, 5], [3, 2], [4, 7], [9, 1]],
        index=[1, 0, 1, 1],
        dim=0,
        dim_size=None,
        sum=[[3, 2], [14, 13]],
        mul=[[3, 2], [36, 35]],
        mean=[[3, 2], [14 / 3, 13 / 3]],
        mean_int=[[3, 2], [4, 4]],
        min=[[3, 2], [1, 1]],
        arg_min=[[1, 1], [0, 3]],
        max=[[3, 2], [9, 7]],
        arg_max=[[1, 1], [3, 2]],
    ),
    dict(  # 2-D along the last dim with a full 2-D index, empty slots in both rows
        src=[[1, 2, 3], [4, 5, 6]],
        index=[[0, 0, 2], [1, 1, 1]],
        dim=-1,
        dim_size=3,
        sum=[[3, 0, 3], [0, 15, 0]],
        mul=[[2, 1, 3], [1, 120, 1]],
        mean=[[1.5, 0, 3], [0, 5, 0]],
        mean_int=[[1, 0, 3], [0, 5, 0]],
        min=[[1, 0, 3], [0, 4, 0]],
        arg_min=[[0, 3, 2], [3, 0, 3]],
        max=[[2, 0, 3], [0, 6, 0]],
        arg_max=[[1, 3, 2], [3, 2, 3]],
    ),
    dict(  # 3-D along dim 1 with a broadcast 1-D index
        src=[[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]]],
        index=[0, 2, 0],
        dim=1,
        dim_size=3,
        sum=[[[6, 8], [0, 0], [3, 4]], [[18, 20], [0, 0], [9, 10]]],
        mul=[[[5, 12], [1, 1], [3, 4]], [[77, 96], [1, 1], [9, 10]]],
        mean=[[[3, 4], [0, 0], [3, 4]], [[9, 10], [0, 0], [9, 10]]],
        mean_int=[[[3, 4], [0, 0], [3, 4]], [[9, 10], [0, 0], [9, 10]]],
        min=[[[1, 2], [0, 0], [3, 4]], [[7, 8], [0, 0], [9, 10]]],
        arg_min=[[[0, 0], [3, 3], [1, 1]], [[0, 0], [3, 3], [1, 1]]],
        max=[[[5, 6], [0, 0], [3, 4]], [[11, 12], [0, 0], [9, 10]]],
        arg_max=[[[2, 2], [3, 3], [1, 1]], [[2, 2], [3, 3], [1, 1]]],
    ),
    dict(  # 2-D along dim 1 with a 1-D index placed at dim 1
        src=[[1, 2, 3, 4], [5, 6, 7, 8]],
        index=[1, 1, 0, 1],
        dim=1,
        dim_size=None,
        sum=[[3, 7], [7, 19]],
        mul=[[3, 8], [7, 240]],
        mean=[[3, 7 / 3], [7, 19 / 3]],
        mean_int=[[3, 2], [7, 6]],
        min=[[3, 1], [7, 5]],
        arg_min=[[2, 0], [2, 0]],
        max=[[3, 4], [7, 8]],
        arg_max=[[2, 3], [2, 3]],
    ),
]


def expected(case: dict, reduce: str, dtype: torch.dtype) -> torch.Tensor:
    """Expected values of ``reduce`` for ``case`` in ``dtype``."""
    key = "sum" if reduce == "add" else reduce
    if key == "mean" and not dtype.is_floating_point:
        key = "mean_int"
    return torch.tensor(case[key], dtype=torch.double).to(dtype)


def case_id(case: dict) -> str:
    return f"{torch.tensor(case['src']).dim()}d-dim{case['dim']}"
