"""Does a scan's cost grow linearly with the model? Time and peak RSS at three real shapes.

    python bench/bench_scaling.py                       # 0.1B, 0.5B and 1.5B (about 10 minutes)
    python bench/bench_scaling.py --sizes 0.1B,0.5B
    python bench/bench_scaling.py --dir /big/disk        # where the checkpoints are written
    python bench/bench_scaling.py --device cuda          # the same on a GPU
    python bench/bench_scaling.py --sizes 7B --device cuda --spectral-only  # 32 Llama-2-7B blocks

Builds synthetic bf16 checkpoints with the tensor shapes of SmolLM-135M, Qwen2.5-0.5B and
Qwen2.5-1.5B (random Gaussian weights scaled by 1/sqrt(cols), written with numpy, deleted
after), then runs `wstui scan --no-cache` twice per size in a fresh process each: spectral
only, and the default methods. Prints per size the wall time, the default/spectral ratio
(target <= 1.5x) and the child's peak RSS against the DESIGN §7 bound (300 MB + 4x the largest
tensor in float32); then the exponent of a least-squares fit of log time against log params
(target <= 1.1: the cost grows linearly with the model). All numbers come from this one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024

#: (label, model, hidden, intermediate, layers, q heads, kv heads, head dim, vocab, qkv bias)
MODELS = {
    "0.1B": ("SmolLM-135M", 576, 1536, 30, 9, 3, 64, 49152, False),
    "0.5B": ("Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 64, 151936, True),
    "1.5B": ("Qwen2.5-1.5B", 1536, 8960, 28, 12, 2, 128, 151936, True),
    # issue 14's GPU row: 32 blocks of Llama-2-7B shapes, untied head (13.5 GB of bf16);
    # not in the default sizes (about 20 minutes of eigvalsh on 2 CPU cores)
    "7B": ("Llama-2-7B", 4096, 11008, 32, 32, 32, 128, 32000, False),
}
DEFAULT_SIZES = ("0.1B", "0.5B", "1.5B")
UNTIED = {"7B"}


def shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a Llama/Qwen2-style checkpoint with tied embeddings."""
    _, h, inter, layers, nq, nkv, hd, vocab, bias = MODELS[size]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = (nq * hd, h)
        out[p + "self_attn.k_proj.weight"] = (nkv * hd, h)
        out[p + "self_attn.v_proj.weight"] = (nkv * hd, h)
        if bias:
            out[p + "self_attn.q_proj.bias"] = (nq * hd,)
            out[p + "self_attn.k_proj.bias"] = (nkv * hd,)
            out[p + "self_attn.v_proj.bias"] = (nkv * hd,)
        out[p + "self_attn.o_proj.weight"] = (h, nq * hd)
        out[p + "mlp.gate_proj.weight"] = (inter, h)
        out[p + "mlp.up_proj.weight"] = (inter, h)
        out[p + "mlp.down_proj.weight"] = (h, inter)
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "post_attention_layernorm.weight"] = (h,)
    out["model.norm.weight"] = (h,)
    if size in UNTIED:
        out["lm_head.weight"] = (vocab, h)
    return out


def write_checkpoint(folder: Path, size: str, seed: int = 0) -> tuple[int, int]:
    """Write `model.safetensors` (bf16) and `config.json`; returns (params, largest numel).
    One tensor at a time, so that memory stays at the largest tensor."""
    shp = shapes(size)
    header: dict[str, object] = {}
    off = 0
    for name, s in shp.items():
        n = 2 * math.prod(s)
        header[name] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for s in shp.values():
            if len(s) == 1:
                x = np.ones(s, dtype=np.float32)
            else:
                x = rng.standard_normal(s, dtype=np.float32)
                x *= 1.0 / math.sqrt(s[1])
            # bf16 = the top 16 bits of float32 (truncation is fine for random weights)
            f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
            del x
    _, h, inter, layers, nq, nkv, hd, vocab, _ = MODELS[size]
    family = ("llama", "LlamaForCausalLM") if size in UNTIED else ("qwen2", "Qwen2ForCausalLM")
    config = {"model_type": family[0], "architectures": [family[1]], "hidden_size": h,
              "intermediate_size": inter, "num_hidden_layers": layers,
              "num_attention_heads": nq, "num_key_value_heads": nkv, "head_dim": hd,
              "vocab_size": vocab, "tie_word_embeddings": size not in UNTIED,
              "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return sum(math.prod(s) for s in shp.values()), max(math.prod(s) for s in shp.values())


def timed_scan(path: Path, methods: str | None, device: str = "auto") -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one fresh `wstui scan --no-cache` process."""
    cmd = [sys.executable, "-m", "wstui", "scan", str(path), "--no-cache", "--quiet",
           "--device", device]
    if methods:
        cmd += ["--methods", methods]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"scan failed ({proc.returncode}): {err[-2000:]}")
    return wall, int(usage.ru_maxrss) * 1024  # ru_maxrss is in KiB on Linux


def spectral_work(size: str) -> float:
    """The bare maths of every spectrum, in the pool's cost units: small²·large for the Gram
    matrix and 4·small³ for eigvalsh, summed over the matrices. Its growth against the
    parameters is the floor any exact spectral scan scales with."""
    work = 0.0
    for s in shapes(size).values():
        if len(s) == 2:
            small, large = sorted(s)
            work += float(small) * small * large + 4.0 * small**3
    return work


def fit_exponent(params: list[int], times: list[float]) -> float:
    """Slope of log(time) against log(params), least squares."""
    if len(params) < 2:
        return math.nan
    return float(np.polyfit(np.log(params), np.log(times), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                    help=f"comma-separated, of {', '.join(MODELS)} (default: "
                         f"{','.join(DEFAULT_SIZES)})")
    ap.add_argument("--dir", default=None, help="where to write the checkpoints (temporary)")
    ap.add_argument("--device", default="auto", help="wstui scan --device (cpu, cuda, auto)")
    ap.add_argument("--spectral-only", action="store_true",
                    help="only the spectral scans (the 7B row: `--sizes 7B --device cuda "
                         "--spectral-only`, target under 60 s on one H100)")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in MODELS]
    if bad:
        raise SystemExit(f"unknown size {bad[0]!r} (known: {', '.join(MODELS)})")
    need = max(2 * sum(math.prod(s) for s in shapes(s).values()) for s in sizes)
    free = shutil.disk_usage(args.dir or tempfile.gettempdir()).free
    if free < need + 2 * 1024 * MB:
        raise SystemExit(f"need {need / 1024**3:.1f} GB free plus 2 GB, have {free / 1024**3:.1f}")
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; fresh process per "
          "scan, --no-cache")
    print(f"{'size':>5} {'shape of':>13} {'params':>7} {'spectral s':>10} {'default s':>9} "
          f"{'ratio':>6} {'peak RSS spec/def MB':>21} {'bound MB':>8}")
    rows: list[tuple[int, float, float]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            folder = Path(d) / size
            params, largest = write_checkpoint(folder, size)
            t_spec, rss_spec = timed_scan(folder, "spectral", args.device)
            if args.spectral_only:
                print(f"{size:>5} {MODELS[size][0]:>13} {params / 1e9:6.2f}B {t_spec:10.1f} "
                      f"{'-':>9} {'-':>6} {rss_spec / MB:9.0f} / {'-':<9}", flush=True)
                continue
            t_def, rss_def = timed_scan(folder, None, args.device)
        bound = 300 * MB + 4 * 4 * largest
        ok = "ok" if max(rss_spec, rss_def) <= bound else "OVER"
        print(f"{size:>5} {MODELS[size][0]:>13} {params / 1e9:6.2f}B {t_spec:10.1f} {t_def:9.1f} "
              f"{t_def / t_spec:5.2f}x {rss_spec / MB:9.0f} / {rss_def / MB:<9.0f} "
              f"{bound / MB:8.0f} {ok}", flush=True)
        rows.append((params, t_spec, t_def))
    if len(rows) >= 2:
        p = [r[0] for r in rows]
        print(f"time ~ params^k: spectral k = {fit_exponent(p, [r[1] for r in rows]):.2f}, "
              f"default k = {fit_exponent(p, [r[2] for r in rows]):.2f} (target <= 1.1)")
        work = fit_exponent(p, [spectral_work(s) for s in sizes])
        print(f"the spectra's own arithmetic (Gram small²·large + eigvalsh 4·small³) at these "
              f"shapes ~ params^{work:.2f}: the hidden size grows with the model, so an exact "
              f"spectrum's cost grows faster than its parameter count")


if __name__ == "__main__":
    main()
