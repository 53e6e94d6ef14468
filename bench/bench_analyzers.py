"""Time every analyzer against a bare float64 LAPACK SVD of the same matrix, in one run.

    python bench/bench_analyzers.py                 # all five shapes (several minutes on 2 cores)
    python bench/bench_analyzers.py --skip 11008x4096
    python bench/bench_analyzers.py --paths         # also the Gram/eigen alternatives
    python bench/bench_analyzers.py --elementwise   # ns per element of the cheap analyzers

Prints one table: for each float32 Gaussian matrix, each analyzer's seconds and its ratio to
`torch.linalg.svdvals` in float64 (the reference the spectral path must beat), then the
power-law fit time on 4096 eigenvalues. Ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

import analyzers
from analyzers import spectral
from analyzers.powerlaw import fit_powerlaw

SHAPES = ["384x384", "1536x384", "4096x4096", "11008x4096", "49152x576"]
EMBEDDING_SHAPES = {"49152x576"}  # vocab-like: the embedding analyzer applies
CHEAP = ["stats", "sparsity", "quantization", "embedding"]


def best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def analyzer_time(name: str, m: torch.Tensor, kind: str, repeats: int) -> float:
    def run() -> None:
        r = analyzers.analyze("bench", m, kind=kind, methods=[name])
        if r.errors:
            raise RuntimeError(r.errors)
        times.append(r.timings[name])

    times: list[float] = []
    for _ in range(repeats):
        run()
    return min(times)


def gram_paths(m: torch.Tensor) -> dict[str, float]:
    """The alternatives for σ² of the smaller side, each timed once. scipy's wrappers hold
    the GIL (so the scan uses numpy's, which do not); they are timed for comparison."""
    from scipy.linalg import blas, eigh

    x = m if m.shape[0] >= m.shape[1] else m.T
    x64 = x.to(torch.float64)
    xn = x64.numpy()
    out = {
        "gram numpy xT@x": best_of(lambda: xn.T @ xn, 1),
        "gram torch.mm": best_of(lambda: x64.T @ x64, 1),
        "gram scipy dsyrk": best_of(lambda: blas.dsyrk(1.0, xn.T, lower=1), 1),
    }
    g = xn.T @ xn
    out["eig numpy eigvalsh"] = best_of(lambda: np.linalg.eigvalsh(g), 1)
    out["eig torch eigvalsh"] = best_of(lambda: torch.linalg.eigvalsh(torch.from_numpy(g)), 1)
    for driver in ("evr", "evd"):
        out[f"eig scipy {driver}"] = best_of(
            lambda d=driver: eigh(g, eigvals_only=True, driver=d, check_finite=False), 1)
    return out


#: (shape, kind) for the per-element table: a square matrix, a vocabulary matrix, and one
#: above 2^24 values where sampling applies.
ELEMENTWISE_SHAPES = [("4096x4096", "mlp_up"), ("49152x576", "embedding"),
                      ("8192x4096", "mlp_up")]


def elementwise(repeats: int) -> None:
    """Cost per element of each cheap analyzer, and the same cost in passes: one pass is
    `torch.sum` over the float32 values (memory-bound), timed in this run."""
    names = set(analyzers.names())
    cols = [c for c in CHEAP if c in names]
    print(f"{'shape':>11} {'1 pass':>9} " + " ".join(f"{c:>19}" for c in cols)
          + f" {'all cheap':>19}")
    gen = torch.Generator().manual_seed(0)
    for shape, kind in ELEMENTWISE_SHAPES:
        rows, cols_ = (int(v) for v in shape.split("x"))
        m = torch.randn(rows, cols_, generator=gen) / cols_**0.5
        n = m.numel()
        one = best_of(lambda m=m: float(m.sum()), 5) / n * 1e9
        cells, total = [], 0.0
        for c in cols:
            if c == "embedding" and kind != "embedding":
                cells.append(f"{'-':>19}")
                continue
            ns = analyzer_time(c, m, kind, repeats) / n * 1e9
            total += ns
            cells.append(f"{ns:7.2f} ns ({ns / one:5.1f}p)".rjust(19))
        cells.append(f"{total:7.2f} ns ({total / one:5.1f}p)".rjust(19))
        print(f"{shape:>11} {one:6.2f} ns " + " ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", default="", help="comma-separated shapes to leave out")
    ap.add_argument("--paths", action="store_true", help="also time Gram/eigen alternatives")
    ap.add_argument("--elementwise", action="store_true",
                    help="only the per-element cost of the cheap analyzers")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's; 1 gives the cost on one core, "
                         "steadier on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = {s for s in args.skip.split(",") if s}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    if args.elementwise:
        elementwise(args.repeats)
        return
    names = set(analyzers.names())
    cols = [c for c in CHEAP if c in names] + ["spectral", "singular_values"]
    header = f"{'shape':>11} {'svd64 s':>8} " + " ".join(f"{c:>21}" for c in cols)
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    ev4096 = None
    for shape in SHAPES:
        if shape in skip:
            continue
        rows, cols_ = (int(v) for v in shape.split("x"))
        m = torch.randn(rows, cols_, generator=gen)
        small = rows * cols_ <= 1 << 20
        reps = 3 if small else 1
        svd = best_of(lambda m=m: torch.linalg.svdvals(m.to(torch.float64)), reps)
        kind = "embedding" if shape in EMBEDDING_SHAPES else "mlp_up"
        cells = []
        methods: list[str] = []
        for c in cols:
            if c == "embedding" and shape not in EMBEDDING_SHAPES:
                cells.append(f"{'-':>21}")
                continue
            if c == "singular_values":
                t = best_of(lambda m=m, o=methods: o.append(spectral.singular_values(m)[1]), reps)
            else:
                t = analyzer_time(c, m, kind, reps)
            cells.append(f"{t:9.3f}s ({t / svd:6.1%})".rjust(21))
        print(f"{shape:>11} {svd:7.3f}s " + " ".join(cells) + f"  [{methods[-1]}]", flush=True)
        if shape == "4096x4096":
            ev4096 = spectral.eigenvalues(m)
        if args.paths:
            for k, v in gram_paths(m).items():
                print(f"{'':>11}   {k:<20} {v:8.3f}s ({v / svd:6.1%} of svd64)")
    if ev4096 is None:
        ev4096 = spectral.eigenvalues(torch.randn(8192, 4096, generator=gen))
    fit_s = best_of(lambda: fit_powerlaw(ev4096), 20)
    print(f"\npowerlaw fit on {ev4096.size} eigenvalues: {fit_s * 1e3:.2f} ms (best of 20)")


if __name__ == "__main__":
    main()
