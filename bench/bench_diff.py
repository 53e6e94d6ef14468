"""What does a diff cost against the two spectral scans it needs? (issue 7: target <= 1.2x)

Prints, measured in this one run (median of `--repeat` rounds, no result cache):
- the two scans a diff stands against: `Scope(A).scan(methods=["spectral"])` plus the same
  on B (while no `spectral` analyzer is registered, a stand-in does the same maths per matrix);
- the diff as `wstui scan A --diff B` runs it (`DiffEngine(ranking_first=False)`: each pair
  loaded once, elementwise metrics, then the spectra of A, B and B - A with both power-law
  fits) and its ratio to the two scans;
- the diff as the app runs it (`ranking_first=True`: the elementwise pass over every pair
  first, then the spectra) and when its full elementwise ranking existed;
- for the GGUF pair, the diff after the two spectral scans of the same run, which takes A's
  and B's spectra from their cached results (issue 14: target <= 1.0x of the two scans).
Pairs: the demo base against its fine-tune (few tensors changed), and against its Q8_0 GGUF
(every matrix changed by quantization noise: three spectra per pair, the worst case).

Run: `python bench/bench_diff.py [--repeat 5] [--workers N] [--device cuda] [--agree cuda]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import analyzers
from wstui.api import Scope
from wstui.checkpoint import open_checkpoint
from wstui.demo import build_demo
from wstui.engine.diff import DiffEngine
from wstui.engine.placement import cpu_count

TARGET = 1.2


DEVICE = "cpu"


def scan_time(path: Path, workers: int | None) -> float:
    """One spectral scan of `path` (the registered analyzer, else the stand-in)."""
    if "spectral" in analyzers.names():
        with Scope(path, device=DEVICE, use_cache=False, workers=workers) as s:
            t0 = time.perf_counter()
            s.scan(methods=["spectral"])
            return time.perf_counter() - t0
    return standin_scan_time(path, workers)


def standin_scan_time(path: Path, workers: int | None) -> float:
    """σ (analyzers.compare.singular_values) + power-law fit of every matrix, on a thread pool
    like the scan's, tensors loaded lazily."""
    from concurrent.futures import ThreadPoolExecutor

    from analyzers.powerlaw import fit_powerlaw
    from wstui.engine.placement import set_threads as _set_threads

    compare_mod = sys.modules["analyzers.compare"]
    n_workers = workers or cpu_count()

    def one(ref) -> None:
        _set_threads(max(1, cpu_count() // n_workers))
        x = ref.load("cpu")
        if ref.is_matrix:
            if not bool(x.isfinite().all()):
                return
            sv = compare_mod.singular_values(x.reshape(x.shape[0], -1))
            fit_powerlaw(sv * sv)

    with open_checkpoint(path) as ckpt:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(one, [r for r in ckpt.tensors if r.analyzable and not r.tied_to]))
        return time.perf_counter() - t0


def diff_time(a: Path, b: Path, workers: int | None, ranking_first: bool) -> tuple[float, float]:
    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        engine = DiffEngine(ca, cb, device=DEVICE, use_cache=False, workers=workers,
                            ranking_first=ranking_first)
        t0 = time.perf_counter()
        engine.run()
        return time.perf_counter() - t0, engine.t_cheap_done or 0.0


def reuse_round(a: Path, b: Path, workers: int | None) -> tuple[float, float, float]:
    """(scan A, scan B, diff) with one fresh result cache: the two spectral scans fill it,
    then the diff takes A's and B's spectra from it and computes only ΔW's."""
    from wstui.engine.scan import ScanEngine

    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "results.sqlite"
        times = []
        for path in (a, b):
            with open_checkpoint(path) as ck:
                t0 = time.perf_counter()
                ScanEngine(ck, methods=["spectral"], device=DEVICE, workers=workers,
                           cache_path=db).run()
                times.append(time.perf_counter() - t0)
        with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
            engine = DiffEngine(ca, cb, device=DEVICE, workers=workers, cache_path=db,
                                ranking_first=False)
            t0 = time.perf_counter()
            engine.run()
            times.append(time.perf_counter() - t0)
    return times[0], times[1], times[2]


def bench_reuse(label: str, a: Path, b: Path, repeat: int, workers: int | None) -> float:
    """The diff after the two spectral scans of the same run (issue 14: target <= 1.0x)."""
    rounds = sorted((d / (sa + sb), sa, sb, d) for sa, sb, d in
                    (reuse_round(a, b, workers) for _ in range(repeat)))
    ratio, sa, sb, d = rounds[len(rounds) // 2]
    print(f"{label}, spectra reused from the scans: scan A {sa:.2f} s + scan B {sb:.2f} s; "
          f"diff {d:.2f} s = {ratio:.2f}x (median of {repeat}, all: "
          f"{', '.join(f'{r[0]:.2f}' for r in rounds)}; target <= 1.0x: "
          f"{'ok' if ratio <= 1.0 else 'MISSED'})")
    return ratio


def bench_pair(label: str, a: Path, b: Path, repeat: int, workers: int | None) -> float:
    """Rounds of (scan A, scan B, diff) back to back, so a busy machine slows all three alike;
    the median of the per-round ratios is the answer."""
    rounds = []
    for _ in range(repeat):
        scan_a, scan_b = scan_time(a, workers), scan_time(b, workers)
        headless, _ = diff_time(a, b, workers, ranking_first=False)
        app, first_rank = diff_time(a, b, workers, ranking_first=True)
        rounds.append((headless / (scan_a + scan_b), app / (scan_a + scan_b), headless, app,
                       first_rank, scan_a, scan_b))
    rounds.sort()
    ratio, app_ratio, headless, app, first_rank, scan_a, scan_b = rounds[len(rounds) // 2]
    print(f"{label}: scan A {scan_a:.2f} s + scan B {scan_b:.2f} s = {scan_a + scan_b:.2f} s; "
          f"diff headless {headless:.2f} s = {ratio:.2f}x (median of {repeat} rounds, all: "
          f"{', '.join(f'{r[0]:.2f}' for r in rounds)}; target <= {TARGET}x: "
          f"{'ok' if ratio <= TARGET else 'MISSED'}); diff ranking-first (app) {app:.2f} s = "
          f"{app_ratio:.2f}x, full elementwise ranking after {first_rank:.2f} s")
    return ratio


def agreement(a: Path, b: Path, device: str) -> None:
    """The diff on `device` against the CPU: largest differences of the compare metrics."""
    reports = {}
    for dev in ("cpu", device):
        with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
            reports[dev] = DiffEngine(ca, cb, device=dev, use_cache=False).run()
    cpu = {p.name: p.compare for p in reports["cpu"].pairs}
    worst: dict[str, float] = {}
    ranks_equal = 0
    n = 0
    for p in reports[device].pairs:
        c0, c1 = cpu[p.name], p.compare
        for key in ("rel_change", "cosine", "alpha_a", "alpha_b", "delta_stable_rank"):
            x0, x1 = c0.get(key), c1.get(key)
            if isinstance(x0, float) and isinstance(x1, float):
                worst[key] = max(worst.get(key, 0.0), abs(x1 - x0) / max(abs(x0), 1e-12))
        if "delta_energy_rank_90" in c0:
            n += 1
            ranks_equal += c0["delta_energy_rank_90"] == c1.get("delta_energy_rank_90")
    print(f"{device} vs cpu on {a.name} / {b.name}: max relative difference "
          + ", ".join(f"{k} {v:.2g}" for k, v in worst.items())
          + f"; delta_energy_rank_90 equal in {ranks_equal}/{n} pairs")


def main() -> int:
    global DEVICE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=None, help="demo folder (default: a temporary one)")
    ap.add_argument("--device", default="cpu", help="where the scans and the diff run")
    ap.add_argument("--agree", metavar="DEVICE", default=None,
                    help="also compare the diff's numbers on DEVICE with the CPU's")
    args = ap.parse_args()
    DEVICE = args.device
    baseline = ("Scope.scan(methods=['spectral'])" if "spectral" in analyzers.names()
                else "stand-in spectral scan (no `spectral` analyzer registered yet)")
    print(f"device {DEVICE}, cores {cpu_count()}, workers {args.workers or cpu_count()}, "
          f"{args.repeat} rounds; baseline: {baseline}")
    with tempfile.TemporaryDirectory() as tmp:
        demo = build_demo(Path(args.out) if args.out else Path(tmp))
        if args.agree:
            agreement(demo.base, demo.finetuned, args.agree)
        bench_pair("demo base vs fine-tune", demo.base, demo.finetuned, args.repeat,
                   args.workers)
        if demo.gguf is not None:
            bench_pair("demo base vs its Q8_0 GGUF", demo.base, demo.gguf, args.repeat,
                       args.workers)
            bench_reuse("demo base vs its Q8_0 GGUF", demo.base, demo.gguf, args.repeat,
                        args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
