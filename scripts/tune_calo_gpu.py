"""Tune the calo GPU path on its benchmark event: the Triton kNN's tile sizes and warps on the two
learned spaces of the network, the condensation backends, then the whole event with the best kNN
settings (issue 7, goal ≤ 30 ms per 50k-hit event).

    python scripts/tune_calo_gpu.py --checkpoint docs/checkpoints/calo_gravnet.pt [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

CONFIGS = [(16, 32, 2, "morton"), (32, 64, 4, "morton"), (16, 64, 4, "morton"), (32, 32, 4, "morton"),
           (64, 32, 8, "morton"), (16, 32, 2, "kd"), (32, 64, 4, "kd")]  # (BQ, BP, warps, leaves)


REPEAT = 5


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    fn()
    _sync()
    ts = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t)
    return 1e3 * sorted(ts)[len(ts) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default="docs/checkpoints/calo_gravnet.pt")
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="cuda", help="cpu with TRITON_INTERPRET=1: a dry run of this script")
    p.add_argument("--showers", type=int, default=265, help="showers of the event (265: about 50k hits)")
    p.add_argument("--pileup", type=float, default=0.15, help="pile-up density of the event")
    p.add_argument("--configs", type=int, default=len(CONFIGS), help="how many of CONFIGS to try")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    global REPEAT
    REPEAT = a.repeat
    from gnnreco.bench.calo import _event, inference_time, load_checkpoint_info
    from gnnreco.graph import _triton_knn as T
    from gnnreco.tasks.calo import model as M
    from gnnreco.tasks.calo.reco import condense

    dev = torch.device(a.device)
    info = load_checkpoint_info(a.checkpoint)
    net = M.CaloGravNet(**info["net"])
    net.load_state_dict(torch.load(a.checkpoint, map_location="cpu"))
    net = net.to(dev).eval()
    b = _event(777, a.showers, pileup_density=a.pileup).to(dev)
    rec, orig = [], M.knn_matrix

    def spy(s, k, batch, impl="auto"):
        rec.append((s.detach().float().contiguous(), k, batch.clone()))
        return orig(s, k, batch, impl)

    M.knn_matrix = spy
    with torch.no_grad():
        out = net(b.x, b.batch)
    M.knn_matrix = orig
    res: dict = {"hits": int(b.x.shape[0]), "knn": []}
    for i, (s, k, batch) in enumerate(rec):
        ptr = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), torch.bincount(batch).cumsum(0)])
        prep = {kind: timed(lambda s=s, ptr=ptr, kind=kind: T._leaves(s, ptr, kind)) for kind in ("morton", "kd")}
        ref = T.knn_triton(s, ptr, k, False)
        dref = (s[ref] - s[:, None]).square().sum(-1)
        row = {"call": i, "N": int(s.shape[0]), "k": k, "prep_ms": prep, "configs": {}}
        for bq, bp, w, lv in CONFIGS[:a.configs]:
            name = f"{bq},{bp},{w},{lv}"
            try:
                ms = timed(lambda s=s, ptr=ptr, k=k, bq=bq, bp=bp, w=w, lv=lv: T.knn_triton(
                    s, ptr, k, False, bq=bq, bp=bp, num_warps=w, leaves=lv))
                got = T.knn_triton(s, ptr, k, False, bq=bq, bp=bp, num_warps=w, leaves=lv)
                same = bool(torch.allclose((s[got] - s[:, None]).square().sum(-1), dref, rtol=1e-6, atol=1e-6))
                row["configs"][name] = [ms, same]
            except Exception as e:  # noqa: BLE001 - a config that does not compile is a result
                row["configs"][name] = [f"{type(e).__name__}: {str(e)[:120]}", False]
            print(f"[tune] knn call {i} BQ,BP,warps,leaves={name}: {row['configs'][name]}", flush=True)
        print(f"[tune] knn call {i} leaves and boxes: {prep} ms", flush=True)
        res["knn"].append(row)
    ok = [c for c in res["knn"][0]["configs"]
          if all(isinstance(r["configs"][c][0], float) and r["configs"][c][1] for r in res["knn"])]
    if ok:
        best = min(ok, key=lambda c: sum(r["configs"][c][0] for r in res["knn"]))
        res["best"] = best
        bq, bp, w, lv = best.split(",")
        T.BQ, T.BP, T.NUM_WARPS, T.LEAVES = int(bq), int(bp), int(w), lv
    print(f"[tune] best BQ,BP,warps,leaves = {res.get('best', 'none: no configuration ran')}", flush=True)

    mk = info["module"]
    ds = out.get("distance_scale") if mk.get("local_radius") else None
    cond = {}
    for backend in ("dense", "radius"):
        def run(backend=backend):
            return condense(out["beta"], out["coords"], t_beta=mk["t_beta"], t_d=mk["t_d"], batch=b.batch,
                            distance_scale=ds, assign=mk.get("assign", "beta"), backend=backend)
        cond[backend] = [timed(run), run().assignment]
    res["condensation_ms"] = {kk: v[0] for kk, v in cond.items()}
    res["condensation_same"] = bool(torch.equal(cond["dense"][1], cond["radius"][1]))
    print(f"[tune] condensation {res['condensation_ms']} same: {res['condensation_same']}", flush=True)
    for impl in ("triton", "gnnreco"):
        if impl == "triton" and "best" not in res:
            continue
        r = inference_time(threads=1, checkpoint=a.checkpoint, net_kwargs={**info["net"], "knn_impl": impl},
                           module_kwargs=info["module"], repeat=2 * REPEAT, device=a.device, n_showers=a.showers,
                           pileup_density=a.pileup)
        res[f"event_{impl}"] = {"ms": 1e3 * r["time_s"], "stages_ms": {kk: 1e3 * v for kk, v in r["stages"].items()}}
        print(f"[tune] whole event, knn_impl={impl}: {res[f'event_{impl}']}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
