"""Where the calo network's time goes on a GPU: kNN engines on the learned space, the forward with each,
and the top CUDA/CPU ops of one forward (torch.profiler).

    python scripts/profile_calo_gpu.py --checkpoint docs/checkpoints/calo_gravnet.pt [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: torch.device, repeat: int = 3) -> float:
    fn()
    _sync(dev)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t)
    return 1e3 * sorted(ts)[len(ts) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default="docs/checkpoints/calo_gravnet.pt")
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    from gnnreco.bench.calo import _event, load_checkpoint_info
    from gnnreco.graph import knn_index
    from gnnreco.tasks.calo import model as M

    dev = torch.device(a.device)
    info = load_checkpoint_info(a.checkpoint)
    net = M.CaloGravNet(**info["net"])
    net.load_state_dict(torch.load(a.checkpoint, map_location="cpu"))
    net = net.to(dev).eval()
    b = _event(777, 265, pileup_density=0.15).to(dev)
    rec = []
    orig = M.knn_matrix

    def spy(s, k, batch, impl="auto"):
        rec.append((s.detach().clone(), k, batch.clone()))
        return orig(s, k, batch, impl)

    M.knn_matrix = spy
    with torch.no_grad():
        net(b.x, b.batch)
    M.knn_matrix = orig
    print(f"[calo profile] {b.x.shape[0]} hits, device {dev}", flush=True)
    for i, (s, k, batch) in enumerate(rec):
        for m in ("blocks", "brute", "grid") + (("triton",) if dev.type == "cuda" else ()):
            try:
                ms = timed(lambda s=s, k=k, batch=batch, m=m: knn_index(s, k, batch, loop=True, method=m,
                                                                       fill_value=s.shape[0]), dev)
                print(f"[calo profile] knn call {i} (N={s.shape[0]}, D={s.shape[1]}, k={k}) {m}: {ms:.1f} ms", flush=True)
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"[calo profile] knn call {i} {m}: {type(e).__name__}: {e}", flush=True)
    with torch.no_grad():
        print(f"[calo profile] forward (auto): {timed(lambda: net(b.x, b.batch), dev):.1f} ms", flush=True)
        for m in ("brute", "grid") + (("triton",) if dev.type == "cuda" else ()):
            def forced(s, k, batch, impl="auto", m=m):
                from gnnreco.graph import knn_index as ki
                return ki(s.detach(), k, batch, loop=True, method=m, fill_value=s.shape[0])
            M.knn_matrix = forced
            print(f"[calo profile] forward (knn {m}): {timed(lambda: net(b.x, b.batch), dev):.1f} ms", flush=True)
        M.knn_matrix = orig
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            net(b.x, b.batch)
            _sync(dev)
        key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60), flush=True)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15, max_name_column_width=60), flush=True)
        # condensation (the other half of the event's time): where its milliseconds go
        from gnnreco.tasks.calo.reco import condense

        mk = info["module"]
        out = net(b.x, b.batch)

        def cond(backend="auto"):
            return condense(out["beta"], out["coords"], t_beta=mk["t_beta"], t_d=mk["t_d"], batch=b.batch,
                            distance_scale=out.get("distance_scale") if mk.get("local_radius") else None,
                            assign=mk.get("assign", "beta"), backend=backend)

        c = cond()
        print(f"[calo profile] condensation: {timed(cond, dev):.1f} ms, {c.cp_index.numel()} condensation points, "
              f"{c.n_rounds} rounds", flush=True)
        for backend in ("dense", "radius"):
            same = torch.equal(cond(backend).assignment, c.assignment)
            print(f"[calo profile] condensation backend {backend}: {timed(lambda b=backend: cond(b), dev):.1f} ms, "
                  f"same clusters as auto: {same}", flush=True)
        with profile(activities=acts) as prof:
            cond()
            _sync(dev)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=60), flush=True)


if __name__ == "__main__":
    main()
