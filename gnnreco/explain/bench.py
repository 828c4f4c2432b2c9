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
    for bb in ("gnn_lsh", "gravnet", "transformer"):
        out.append((f"pflow MLPF {bb} (pid)", MLPFNet(backbone=bb, width=32, bin_size=32, geo_scale=16.0
                                                      if bb != "transformer" else 0.0).to(dtype), (X, mask),
                    ("pid", 5, 1)))
    xd = torch.randn(40, 10, generator=g, dtype=dtype)
    xd[:, 3:6] *= 5
    bd = torch.zeros(40, dtype=torch.long)
    bd[20:] = 1
    eid = torch.tensor([[i, j] for i in range(40) for j in range(40) if i != j and bd[i] == bd[j]]).T
    out.append(("dfei EncodeProcessDecode (LCA)", EncodeProcessDecode(latent=16, hidden=32, edge_head=4).to(dtype),
                (xd, eid, bd, torch.tensor([1, 2])), ("edge", 3, 2)))
    from gnnreco.tasks.dfei.model import DFEIChain, DFEIFused

    chain = DFEIChain(latent=16, hidden=32, np_cut=0.0, ep_cut=0.0).to(dtype).eval()
    fused = DFEIFused(latent=16, hidden=32, n_blocks=3, node_cut=0.0, edge_cut=0.0).to(dtype).eval()
    for nm, m in (("DFEIChain", chain), ("DFEIFused", fused)):
        out.append((f"dfei {nm} (LCA)", m, (xd, bd, torch.tensor([1, 2])), ("lca", 3, 1)))
    return out


def _best(fn, repeat: int = 5) -> float:
    """Smallest process CPU time of ``repeat`` calls (after one warm-up call). CPU time, with one torch
    thread, is far less disturbed than wall time by other processes on a shared machine."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return max(best, 1e-6)


def conservation_rows(dtype: torch.dtype = torch.float64, epsilon: float = 1e-9,
                      precisions: tuple[str, ...] = ("float64",), repeat: int = 5) -> list[list[str]]:
    """One row per task model and propagation precision: relative residual, the share absorbed by
    biases, and the cost as ratios to the model's forward and to a plain gradient × input (one forward +
    backward) measured in the same process (smallest CPU time of ``repeat``, one thread)."""

    rows = []
    for name, model, inputs, target in _task_models(dtype):
        rows += _model_rows(name, model, inputs, target, dtype, epsilon, precisions, repeat)
    return rows


def _grad_x_input(model, inputs) -> None:
    leaf = [t.detach().requires_grad_(True) if t.is_floating_point() else t for t in inputs]
    out = model(*leaf)
    outs = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, tuple) else [out]
    o = next(t for t in outs if isinstance(t, torch.Tensor) and t.requires_grad)
    o.reshape(-1)[-1].backward()


def _model_rows(name, model, inputs, target, dtype, epsilon, precisions, repeat) -> list[list[str]]:
    from functools import partial

    from gnnreco.explain import conservation, explain

    model.eval()
    try:
        with torch.no_grad():
            t_fwd = _best(partial(model, *inputs), repeat)
        t_grad = _best(partial(_grad_x_input, model, inputs), repeat)
    except RuntimeError:  # the model's own forward does not run in this dtype (the LRP forward may)
        t_fwd = t_grad = float("nan")
    rows = []
    for prec in precisions:
        call = partial(explain, model, inputs, target, rules={"epsilon": epsilon}, precision=prec)
        c = conservation(call())
        t_exp = _best(call, repeat)
        ok = "yes" if c["relative"] <= 1e-4 else "NO"
        rows.append([name, str(dtype).replace("torch.", ""), prec, f"{c['relative']:.1e}", ok,
                     f"{c['absorbed_bias'] / (abs(c['output']) + 1e-30):+.2f}", f"{t_fwd * 1e3:.1f}",
                     f"{t_exp / t_fwd:.1f}", f"{t_exp / t_grad:.1f}"])
    return rows


def _logit3(out):
    return out[:, 3].sum()


def _captum_call(lrp, x) -> None:
    lrp.attribute(x.clone().requires_grad_(True), target=3)


def norm_rule_rows() -> list[list[str]]:
    """Where float32 loses conservation: the float32 Interaction GNN of the conservation table under the
    ratio rule vs the affine rule on its LayerNorms, in native and float64 propagation."""
    from gnnreco.explain import conservation, explain

    name, model, inputs, target = _task_models(torch.float32)[0]
    rows = []
    for norm in ("pass", "epsilon"):
        for prec in ("native", "float64"):
            c = conservation(explain(model, inputs, target, rules={"epsilon": 1e-9, "types": {"norm": norm}},
                                     precision=prec))
            rows.append([name, norm, prec, f"{c['relative']:.1e}", "yes" if c["relative"] <= 1e-4 else "NO",
                         f"{c['absorbed_bias'] / (abs(c['output']) + 1e-30):+.3g}"])
    return rows


def captum_rows(repeat: int = 5) -> list[list[str]]:
    """gnnreco vs Captum LRP-ε on a plain MLP (the only model type Captum's LRP handles), one process."""
    try:
        from captum.attr import LRP
        from captum.attr._utils.lrp_rules import EpsilonRule
    except ImportError:
        return []
    from functools import partial

    from gnnreco.explain import explain

    rows = []
    torch.manual_seed(0)
    for n, width in ((1, 256), (1024, 256)):
        m = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                torch.nn.ReLU(), torch.nn.Linear(width, 10)).eval()
        for mod in m:
            if isinstance(mod, torch.nn.Linear):
                mod.rule = EpsilonRule(1e-9)
        x = torch.randn(n, 64)
        with torch.no_grad():
            t_fwd = _best(partial(m, x), repeat)
        t_cap = _best(partial(_captum_call, LRP(m), x), repeat)
        # captum explains logit 3 of every row at once (a sum of independent rows): the same for ours
        t_ours = _best(partial(explain, m, (x,), _logit3, precision="native"), repeat)
        t_o64 = _best(partial(explain, m, (x,), _logit3), repeat)
        rows.append([f"MLP 64-{width}-{width}-10, batch {n}", f"{t_fwd * 1e3:.2f}", f"{t_cap / t_fwd:.1f}",
                     f"{t_ours / t_fwd:.1f}", f"{t_o64 / t_fwd:.1f}", f"{t_ours / t_cap:.2f}"])
    return rows


def _scale_child(n: int, backbone: str, width: int, precision: str = "native") -> None:
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
        net(X, mask)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        net(X, mask)
        t_fwd, c_fwd = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ex = explain(net, (X, mask), ("pid", n // 2, 1), precision=precision)
    t_exp, c_exp = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    msg = sum(m.relevance.numel() for m in ex.messages)
    print(json.dumps({"t_fwd": t_fwd, "cpu_fwd": c_fwd, "t_explain": t_exp, "cpu_explain": c_exp, "peak_mb": peak / 1024, "before_mb": base / 1024,
                      "relative": conservation(ex)["relative"], "node_rel": list(ex.node_relevance.shape),
                      "message_entries": msg}))


def scale_row(n: int = 6400, backbone: str = "gnn_lsh", width: int = 64, precision: str = "native") -> dict:
    """Explain one pid logit of an ``n``-element MLPF event in a fresh process (peak RSS, time)."""
    code = (f"from gnnreco.explain.bench import _scale_child; "
            f"_scale_child({n}, {backbone!r}, {width}, {precision!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0:3].__str__()
    except OSError:
        return "n/a"


def run(quick: bool = False, **options) -> str:
    """Markdown tables: conservation and cost per task model, Captum comparison, and the large-event
    cost vs the dense method."""
    torch.set_num_threads(1)  # ratio tables: one thread, CPU time (see _best)
    load0 = _load()
    lines = ["**Conservation and cost** (LRP-ε, ε = 1e-9, ratio rule on activations, affine rule on norms; "
             "relative residual |R_out − ΣR_in − ΣR_absorbed| / |R_out|, goal ≤ 1e-4). *propagation*: "
             "`float64` = the default (a float64 copy of the network), `native` = the model's dtype. Cost as "
             "ratios of CPU times measured in the same process with one thread (smallest of 5 after a warm-up): "
             "explain / forward (no grad) and explain / one plain gradient × input (forward + backward):", "",
             "| model | model dtype | propagation | relative residual | ≤ 1e-4 | bias share of R_out | "
             "forward CPU [ms] | explain / forward | explain / grad×input |",
             "|---|---|---|---|---|---|---|---|---|"]
    if quick:
        runs = [(torch.float32, ("float64", "native"))]
    else:
        runs = [(torch.float64, ("native",)), (torch.float32, ("float64", "native"))]
    for dt, precs in runs:
        for r in conservation_rows(dt, precisions=precs):
            lines.append("| " + " | ".join(r) + " |")
    lines += ["", "**Where float32 lost conservation** (same float32 Interaction GNN; the ratio rule on LayerNorm, "
              "g_in = g_out·y/x, explodes where x ≈ 0 but y = β ≠ 0, so bias shares reach 10⁴–10⁶ × R_out and cancel):",
              "", "| model | norm rule | propagation | relative residual | ≤ 1e-4 | bias share of R_out |",
              "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in norm_rule_rows()]
    cap = captum_rows()
    if cap:
        lines += ["", "**Against Captum 0.9** (LRP-ε on a plain MLP, float32, same process, CPU-time ratios; both "
                  "explain logit 3 of every row in one backward pass):", "",
                  "| model | forward CPU [ms] | Captum / forward | gnnreco native / forward | gnnreco float64 / forward "
                  "| gnnreco native / Captum |", "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in cap]
    n = int(options.get("n", 1600 if quick else 6400))
    lines += ["", f"**Scale**: one MLPF pid logit, {n} elements, untruncated, 2 threads (fresh process per row; "
              "goal ≤ 10 s, ≤ 2 GB peak at 6400):", "",
              "| backbone | propagation | forward wall [s] | explain wall [s] | explain / forward (CPU) | explain CPU [s] | "
              "peak RSS [MB] | relative residual | message relevance entries | dense N×N×F (F=13) [MB] | "
              "dense N×N×F (F=64) [MB] |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    cases = [("gnn_lsh", "native"), ("gnn_lsh", "float64"), ("gravnet", "native")]
    if quick:
        cases.append(("transformer", "native"))
    for bb, prec in cases:
        r = scale_row(n, bb, precision=prec)
        dense13 = n * n * 13 * 4 / 2**20
        dense64 = n * n * 64 * 4 / 2**20
        lines.append(f"| {bb} | {prec} | {r['t_fwd']:.2f} | {r['t_explain']:.2f} | {r['cpu_explain'] / max(r['cpu_fwd'], 1e-6):.1f} | "
                     f"{r['cpu_explain']:.2f} | {r['peak_mb']:.0f} | {r['relative']:.1e} | {r['message_entries']:,} | "
                     f"{dense13:,.0f} | {dense64:,.0f} |")
    lines += ["", f"Load average (1/5/15 min) at start {load0}, at end {_load()}; the 2-core machine was shared "
              "with other helpers, so absolute times are inflated — the ratios, measured in one process, are the "
              "result. \"explain CPU\" is the process CPU time of the explanation (both threads). Peak RSS includes "
              "~500 MB of imported libraries. The GravNet backbone's own forward builds a dense N×N distance "
              "matrix (the model, not the explanation). The dense columns are xai4hep's N×N×F float32 relevance "
              "tensor for one layer."]
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
