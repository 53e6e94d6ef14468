"""`wstui ls` of a 100k-tensor MoE-shaped checkpoint: the rich Table against the plain lines.

Mixture-of-experts checkpoints reach 100k tensors (64 layers x 512 experts x 3 matrices).
`wstui ls` used to lay them out as a rich Table, which costs about half a millisecond a row;
past `wstui.render.ls.PLAIN_ROWS` it now writes plain aligned lines. This builds a safetensors file
of tiny F16 tensors (only the header matters), then times in one run: opening it, the rows
in tree order, the plain lines, the rich Table (on the first `--rich-n` rows, since all of
them take a minute), and the whole `python -m wstui ls` process with stdout to a file.
Run: `python bench/bench_ls.py [--layers 64 --experts 512 --rich-n 10000]`.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.measure import Measurement

from wstui.checkpoint import Checkpoint, open_checkpoint
from wstui.documents.ls import rows
from wstui.render.ls import plain_lines, table

T = TypeVar("T")


def build(path: Path, layers: int, experts: int) -> int:
    """A safetensors file with layers x experts x 3 tensors of shape 2x2 (F16)."""
    header: dict[str, dict] = {}
    offset = 0
    for i in range(layers):
        for j in range(experts):
            for m in ("gate_proj", "up_proj", "down_proj"):
                header[f"model.layers.{i}.mlp.experts.{j}.{m}.weight"] = {
                    "dtype": "F16", "shape": [2, 2], "data_offsets": [offset, offset + 8]}
                offset += 8
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.write(b"\0" * offset)
    return len(header)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def rich_render(ckpt: Checkpoint, n: int) -> float:
    """Seconds to lay out the rich Table of the first `n` tensors as `wstui ls` did piped."""
    tensors = ckpt.tensors
    ckpt.tensors = tensors[:n]
    try:
        t = time.perf_counter()
        tbl = table(ckpt)
        wide = Console(width=10_000)
        console = Console(file=io.StringIO(),
                          width=Measurement.get(wide, wide.options, tbl).maximum)
        console.print(tbl)
        return time.perf_counter() - t
    finally:
        ckpt.tensors = tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=64)
    ap.add_argument("--experts", type=int, default=512)
    ap.add_argument("--rich-n", type=int, default=10_000,
                    help="rows given to the rich Table (all of them take a minute)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "moe.safetensors"
        n = build(path, args.layers, args.experts)
        ckpt, t_open = timed(lambda: open_checkpoint(path))
        with ckpt:
            _, t_rows = timed(lambda: rows(ckpt))
            lines, t_plain = timed(lambda: plain_lines(ckpt))
            rich_n = min(args.rich_n, n)
            t_rich = rich_render(ckpt, rich_n)
        out = Path(tmp) / "ls.txt"
        with open(out, "w") as fh:
            _, t_cli = timed(lambda: subprocess.run(
                [sys.executable, "-m", "wstui", "ls", str(path)], stdout=fh, check=True))
    per_rich = t_rich / rich_n
    print(f"{n} tensors ({args.layers} layers x {args.experts} experts x 3)")
    print(f"open_checkpoint                  {t_open:7.2f} s")
    print(f"rows in tree order               {t_rows:7.2f} s")
    print(f"plain lines, all {n} rows    {t_plain:7.2f} s  (includes the rows)")
    print(f"rich Table, {rich_n} rows          {t_rich:7.2f} s  "
          f"({per_rich * 1e3:.2f} ms a row, {per_rich * n:.0f} s for all {n})")
    print(f"`python -m wstui ls` to a file   {t_cli:7.2f} s  ({len(lines)} lines)")
    print(f"rich Table / plain lines, per row: {per_rich / (t_plain / n):.0f}x")


if __name__ == "__main__":
    main()
