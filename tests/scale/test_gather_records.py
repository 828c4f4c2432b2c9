"""Event-pooled test summaries under DDP are computed from every rank's records (gather_records)."""

from __future__ import annotations

import os

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from gnnreco.tasks.base import gather_records


def _worker(rank: int, world: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mine = [{"rank": rank, "event": e} for e in range(rank + 1)]  # ranks hold different numbers of events
        out.put((rank, gather_records(mine)))
    finally:
        dist.destroy_process_group()


def test_gather_records_single_process_is_identity():
    recs = [{"a": 1}, {"a": 2}]
    assert gather_records(recs) is recs


@pytest.mark.slow  # two spawned gloo processes: ~30 s of imports
def test_gather_records_two_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    expected = [{"rank": 0, "event": 0}, {"rank": 1, "event": 0}, {"rank": 1, "event": 1}]
    assert got[0] == expected and got[1] == expected
