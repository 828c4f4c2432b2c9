"""Explainability benchmark: conservation on every task model and the cost of explaining a large
MLPF event untruncated, beside the dense N×N×F relevance tensor of xai4hep's method.

``python -m gnnreco.explain.bench [--quick] [--write]`` (to be wired as ``gnnreco bench explain``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

__all__ = ["run", "conservation_rows", "scale_row"]


def _task_models(dtype: torch.dtype):
    from gnnreco.tasks.calo.model import CaloGravNet
    from gnnreco.tasks.dfei.model import EncodeProcessDecode
    from gnnreco.tasks.pflow.model import MLPFNet
    from gnnreco.tasks.tracking.model import InteractionGNN, InteractionGNN2, ResIN

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    n, e = 200, 600
    x = torch.randn(n, 3, generator=g, dtype=dtype)
    ei = torch.randint(0, n, (2, e), generator=g)
    ea = torch.randn(e, 5, generator=g, dtype=dtype)
    out = []
    for cls in (InteractionGNN, InteractionGNN2, ResIN):
        m = cls(node_features=3, edge_features=5, hidden=32, n_graph_iters=3).to(dtype)
        out.append((f"tracking {cls.__name__}", m, (x, ei, ea), 11))
    xc = torch.randn(400, 9, generator=g, dtype=dtype)
    bc = torch.zeros(400, dtype=torch.long)
    bc[200:] = 1
    out.append(("calo CaloGravNet (β)", CaloGravNet(hidden=32, n_blocks=2, k=16).to(dtype), (xc, bc), ("beta", 7)))
    out.append(("calo CaloGravNet (energy)", CaloGravNet(hidden=32, n_blocks=2, k=16).to(dtype), (xc, bc),
                ("energy", 7)))
    X = torch.randn(1, 256, 12, generator=g, dtype=dtype)
    X[..., 0] = torch.randint(1, 3, (1, 256), generator=g).to(dtype)
    X[..., 1] = X[..., 1].abs() * 5
    X[..., 5] = X[..., 5].abs() * 5
    mask = torch.ones(1, 256, dtype=torch.bool)
    for bb in ("gnn_lsh", "gravnet"):
        out.append((f"pflow MLPF {bb} (pid)", MLPFNet(backbone=bb, width=32, bin_size=32).to(dtype), (X, mask),
                    ("pid", 5, 1)))
    xd = torch.randn(40, 10, generator=g, dtype=dtype)
    xd[:, 3:6] *= 5
    bd = torch.zeros(40, dtype=torch.long)
    bd[20:] = 1
    eid = torch.tensor([[i, j] for i in range(40) for j in range(40) if i != j and bd[i] == bd[j]]).T
    out.append(("dfei EncodeProcessDecode (LCA)", EncodeProcessDecode(latent=16, hidden=32, edge_head=4).to(dtype),
                (xd, eid, bd, torch.tensor([1, 2])), ("edge", 3, 2)))
    return out


def conservation_rows(dtype: torch.dtype = torch.float64, epsilon: float = 1e-9) -> list[list[str]]:
    """One row per task model: relative residual and the share absorbed by biases."""
    from gnnreco.explain import conservation, explain

    rows = []
    for name, model, inputs, target in _task_models(dtype):
        t0 = time.perf_counter()
        ex = explain(model, inputs, target, rules={"epsilon": epsilon})
        dt = time.perf_counter() - t0
        c = conservation(ex)
        ok = "yes" if c["relative"] <= 1e-4 else "NO"
        rows.append([name, str(dtype).replace("torch.", ""), f"{c['relative']:.1e}", ok,
                     f"{c['absorbed_bias'] / (abs(c['output']) + 1e-30):+.2f}", f"{dt * 1e3:.0f}"])
    return rows


def _scale_child(n: int, backbone: str, width: int) -> None:
    import resource

    from gnnreco.explain import conservation, explain
    from gnnreco.tasks.pflow.model import MLPFNet

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = MLPFNet(backbone=backbone, width=width).eval()
    X = torch.randn(1, n, 12, generator=g)
    X[..., 0] = torch.randint(1, 3, (1, n), generator=g).float()
    X[..., 1] = X[..., 1].abs() * 5
    X[..., 5] = X[..., 5].abs() * 5
    mask = torch.ones(1, n, dtype=torch.bool)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        t0 = time.perf_counter()
        net(X, mask)
        t_fwd = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    ex = explain(net, (X, mask), ("pid", n // 2, 1))
    t_exp, c_exp = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    msg = sum(m.relevance.numel() for m in ex.messages)
    print(json.dumps({"t_fwd": t_fwd, "t_explain": t_exp, "cpu_explain": c_exp, "peak_mb": peak / 1024, "before_mb": base / 1024,
                      "relative": conservation(ex)["relative"], "node_rel": list(ex.node_relevance.shape),
                      "message_entries": msg}))


def scale_row(n: int = 6400, backbone: str = "gnn_lsh", width: int = 64) -> dict:
    """Explain one pid logit of an ``n``-element MLPF event in a fresh process (peak RSS, time)."""
    code = f"from gnnreco.explain.bench import _scale_child; _scale_child({n}, {backbone!r}, {width})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, **options) -> str:
    """Markdown tables: conservation per task model, and the large-event cost vs the dense method."""
    torch.set_num_threads(2)
    lines = ["**Conservation** (LRP-ε, ε = 1e-9, ratio rule on activations/norms; relative residual ",
             "|R_out − ΣR_in − ΣR_absorbed| / |R_out|, goal ≤ 1e-4):", "",
             "| model | dtype | relative residual | ≤ 1e-4 | bias share of R_out | time [ms] |",
             "|---|---|---|---|---|---|"]
    dtypes = [torch.float64] if quick else [torch.float64, torch.float32]
    for dt in dtypes:
        for r in conservation_rows(dt):
            lines.append("| " + " | ".join(r) + " |")
    n = int(options.get("n", 1600 if quick else 6400))
    lines += ["", f"**Scale**: one MLPF pid logit, {n} elements, untruncated, 2 threads (fresh process; goal ≤ 10 s, "
              "≤ 2 GB peak at 6400):", "",
              "| backbone | forward wall [s] | explain wall [s] | explain CPU [s] | peak RSS [MB] | "
              "message relevance entries | dense N×N×F (F=13 inputs) [MB] | dense N×N×F (F=64 hidden) [MB] |",
              "|---|---|---|---|---|---|---|---|"]
    for bb in ("gnn_lsh", "gravnet"):
        r = scale_row(n, bb)
        dense13 = n * n * 13 * 4 / 2**20
        dense64 = n * n * 64 * 4 / 2**20
        lines.append(f"| {bb} | {r['t_fwd']:.2f} | {r['t_explain']:.2f} | {r['cpu_explain']:.2f} | {r['peak_mb']:.0f} | "
                     f"{r['message_entries']:,} | {dense13:,.0f} | {dense64:,.0f} |")
    lines += ["", "Notes: \"explain CPU\" is the process CPU time of the explanation (both threads); peak RSS "
              "includes the imported libraries. The dense columns are xai4hep's N×N×F float32 relevance tensor "
              "for one layer. Relative residual = |R_out − ΣR_in − ΣR_absorbed| / |R_out|."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md")
    ap.add_argument("--n", type=int, default=None)
    a = ap.parse_args()
    opts = {} if a.n is None else {"n": a.n}
    table = run(quick=a.quick, **opts)
    print(table)
    if a.write:
        from gnnreco.bench.report import write_section

        write_section("explain", "Explainability (LRP)", "python -m gnnreco.explain.bench" + (" --quick" if a.quick else ""),
                      table)


if __name__ == "__main__":
    main()
