"""Benchmark of :mod:`gnnreco.ops` against PyTorch-native scatter and torch_scatter.

Cases: ``E`` rows in {1e5, 1e6, 1e7}, ``F`` features in {16, 64, 128}, ``N = E/16`` groups,
sorted and random index, forward and forward+backward, reductions sum / mean / max and the fused
mean‖max (GravNet). Columns give the best-of-r time of each implementation (interleaved runs, so a
loaded machine slows all three alike), speed-ups of gnnreco over each reference and, on CUDA, the
achieved memory bandwidth as % of the device peak.

References:
    native: ``index_add_`` (sum, mean with ``bincount``), ``scatter_reduce_(amax)`` with an expanded
        index (max), both for mean‖max.
    torch_scatter: ``torch_scatter.scatter(..., reduce)``; two calls + ``cat`` for mean‖max.

Run ``python -m gnnreco.bench.ops [--quick] [--write]``.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import torch

from gnnreco.bench.report import markdown_table, write_section

__all__ = ["run", "main", "PEAK_BANDWIDTH"]

# Peak HBM bandwidth in bytes/s by substring of the device name.
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}

OPS = ("sum", "mean", "max", "mean||max")


def _mem_available() -> float:
    """Free host (or device) memory in bytes."""
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return float(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8e9


def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in PEAK_BANDWIDTH.items():
        if key in name:
            return val
    return None


def _implementations(op: str, n: int) -> dict[str, Callable | None]:
    import gnnreco.ops as gops

    try:
        import torch_scatter as ts
    except Exception:  # noqa: BLE001 - optional reference
        ts = None

    def native_sum(src, idx):
        return torch.zeros(n, src.size(1), dtype=src.dtype, device=src.device).index_add_(0, idx, src)

    def native_mean(src, idx):
        cnt = torch.bincount(idx, minlength=n).clamp_(min=1).to(src.dtype).unsqueeze(1)
        return native_sum(src, idx) / cnt

    def native_max(src, idx):
        out = torch.zeros(n, src.size(1), dtype=src.dtype, device=src.device)
        return out.scatter_reduce_(0, idx.view(-1, 1).expand_as(src), src, "amax", include_self=False)

    if op == "mean||max":
        return {
            "gnnreco": lambda s, i: gops.multi_aggregate(s, i, ("mean", "max"), n),
            "native": lambda s, i: torch.cat([native_mean(s, i), native_max(s, i)], 1),
            "torch_scatter": None
            if ts is None
            else lambda s, i: torch.cat([ts.scatter(s, i, 0, None, n, "mean"), ts.scatter(s, i, 0, None, n, "max")], 1),
        }
    native = {"sum": native_sum, "mean": native_mean, "max": native_max}[op]
    return {
        "gnnreco": lambda s, i: gops.scatter(s, i, 0, None, n, op),
        "native": native,
        "torch_scatter": None if ts is None else (lambda s, i: ts.scatter(s, i, 0, None, n, op)),
    }


def _bytes_moved(e: int, f: int, n: int, op: str, backward: bool, elt: int) -> float:
    """Compulsory traffic: read src and index, write the output (and the reverse for backward)."""
    out_cols = 2 * f if op == "mean||max" else f
    fwd = e * f * elt + e * 8 + n * out_cols * elt
    if backward:
        fwd += e * f * elt + n * out_cols * elt + (e * 8 if op in ("sum", "mean") else n * f * 8)
    return float(fwd)


def _time_interleaved(fns: dict[str, Callable[[], object]], repeat: int, sync: Callable[[], None]) -> dict[str, float]:
    """Best-of-``repeat`` seconds per function, running them round-robin after one warm-up each."""
    for fn in fns.values():
        fn()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            samples[key].append(time.perf_counter() - t0)
    # the minimum is the least load-sensitive estimate on a shared machine
    return {k: min(v) for k, v in samples.items()}


def _estimate_bytes(e: int, f: int, backward: bool, elt: int) -> float:
    # src (+grad), an [E, F] long temporary (arg search / expanded sort), outputs; a generous factor
    per = elt * (2 if backward else 1) + 8 + 2 * elt
    return float(e * f * per + 4 * e * 8)


def run(
    quick: bool = False,
    sizes: list[int] | None = None,
    features: list[int] | None = None,
    ops: list[str] | None = None,
    device: str | None = None,
    max_gb: float | None = None,
    repeat: int | None = None,
    threads: int | None = None,
) -> str:
    """Run the benchmark and return a Markdown table (plus notes on skipped cases)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if threads:
        torch.set_num_threads(threads)
    if sizes is None:
        sizes = [100_000, 1_000_000] if quick else [100_000, 1_000_000, 10_000_000]
    if features is None:
        features = [16, 64] if quick else [16, 64, 128]
    ops = list(ops or OPS)
    # the 10 GB cap protects a shared host; a GPU's own memory is the limit there
    budget = (max_gb * 1e9) if max_gb else 0.4 * _mem_available() if dev.type == "cuda" else \
        min(0.4 * _mem_available(), 10e9)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    peak = _peak(dev)
    header = [
        "E", "F", "index", "pass", "op", "gnnreco ms", "native ms", "torch_scatter ms",
        "× native", "× torch_scatter", "× best",
    ]
    if dev.type == "cuda":
        header += ["GB/s", "% peak"]
    header.append("note")
    rows: list[list[object]] = []
    gen = torch.Generator(dev).manual_seed(0)  # inputs are drawn where they are used (fast on a GPU)
    for e in sizes:
        n = max(1, e // 16)
        for f in features:
            for order in ("sorted", "random"):
                for backward in (False, True):
                    need = _estimate_bytes(e, f, backward, 4)
                    if need > budget:
                        reason = f"skipped: needs ~{need / 1e9:.1f} GB > budget {budget / 1e9:.1f} GB"
                        for op in ops:
                            row = [e, f, order, "fwd+bwd" if backward else "fwd", op] + ["-"] * 6
                            row += (["-", "-"] if dev.type == "cuda" else []) + [reason]
                            rows.append(row)
                        print(f"E={e} F={f} {order} {'fwd+bwd' if backward else 'fwd'}: {reason}", flush=True)
                        continue
                    src = torch.randn(e, f, generator=gen, device=dev)
                    idx = torch.randint(0, n, (e,), generator=gen, device=dev)
                    if order == "sorted":
                        idx = idx.sort().values
                    grad_out = {1: torch.randn(n, f, device=dev), 2: torch.randn(n, 2 * f, device=dev)}
                    if backward:
                        src.requires_grad_(True)
                    # more repetitions where a run is short: best-of-r filters load spikes
                    reps = repeat or (15 if e * f <= 2_000_000 else 7 if e * f <= 20_000_000 else 3)
                    for op in ops:
                        impls = _implementations(op, n)
                        fns: dict[str, Callable[[], object]] = {}
                        for name, impl in impls.items():
                            if impl is None:
                                continue
                            go = grad_out[2 if op == "mean||max" else 1]

                            def call(impl=impl, go=go, src=src, idx=idx, backward=backward):
                                if backward:
                                    src.grad = None
                                    impl(src, idx).backward(go)
                                else:
                                    with torch.no_grad():
                                        impl(src, idx)

                            fns[name] = call
                        times = _time_interleaved(fns, reps, sync)
                        g = times["gnnreco"]
                        nat = times.get("native")
                        tsc = times.get("torch_scatter")
                        best = min(t for t in (nat, tsc) if t is not None)
                        row = [
                            e, f, order, "fwd+bwd" if backward else "fwd", op,
                            g * 1e3,
                            nat * 1e3 if nat else "-",
                            tsc * 1e3 if tsc else "n/a",
                            nat / g if nat else "-",
                            tsc / g if tsc else "n/a",
                            best / g,
                        ]
                        if dev.type == "cuda":
                            bw = _bytes_moved(e, f, n, op, backward, 4) / g
                            row += [bw / 1e9, 100 * bw / peak if peak else "n/a"]
                        row.append("" if best / g >= 1.0 else "below goal")
                        rows.append(row)
                        print(" | ".join(str(round(v, 3) if isinstance(v, float) else v) for v in row), flush=True)
                    del src, idx, grad_out
                    gc.collect()
    table = markdown_table(header, rows)
    below = [r for r in rows if r[-1] == "below goal"]
    notes = [
        "",
        f"Device: {dev}. × columns are speed-ups of gnnreco (reference time / gnnreco time); "
        "the goal on CPU is × best ≥ 1.0 in every case.",
        f"{len(below)} of {sum(1 for r in rows if not str(r[-1]).startswith('skipped'))} measured cases are below 1.0.",
    ]
    return table + "\n" + "\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m gnnreco.bench.ops [--quick] [--write]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="E in {1e5, 1e6}, F in {16, 64}")
    p.add_argument("--write", action="store_true", help="record the table in docs/benchmarks.md (section ops)")
    p.add_argument("--sizes", type=lambda s: [int(float(x)) for x in s.split(",")], default=None)
    p.add_argument("--features", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--ops", type=lambda s: s.split(","), default=None, help="subset of sum,mean,max,mean||max")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--max-gb", type=float, default=None, help="skip cases whose working set exceeds this")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    table = run(
        quick=args.quick, sizes=args.sizes, features=args.features, ops=args.ops, device=args.device,
        max_gb=args.max_gb, repeat=args.repeat, threads=args.threads,
    )
    print(table)
    if args.write:
        import sys

        cmd = "python -m gnnreco.bench.ops " + " ".join(sys.argv[1:] if argv is None else argv)
        path = write_section("ops", "ops: scatter / segment kernels", cmd, table)
        print(f"written to {path}")


if __name__ == "__main__":
    main()
