"""Open time of a ~100 MB GGUF: wstui's header parser vs `gguf.GGUFReader`, in one run.

The file has a realistic tokenizer (50k token strings, their scores and types, 50k merges)
and Q8_0 matrices, written to a temp dir. Run: `python bench/bench_gguf_open.py`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

from wstui.checkpoint.gguf import open_files


def build(path: Path, *, vocab: int, hidden: int, layers: int) -> Path:
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(layers)
    w.add_embedding_length(hidden)
    w.add_head_count(hidden // 64)
    w.add_head_count_kv(hidden // 64)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"\u0120tok{i:05d}" for i in range(vocab)])
    w.add_token_scores(rng.standard_normal(vocab).astype(np.float32).tolist())
    w.add_token_types([1] * vocab)
    w.add_token_merges([f"\u0120t ok{i:05d}" for i in range(vocab)])

    def add(name: str, shape: tuple[int, int]) -> None:
        a = rng.standard_normal(shape, dtype=np.float32)
        w.add_tensor(name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    add("token_embd.weight", (vocab, hidden))
    for i in range(layers):
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            add(f"blk.{i}.{part}.weight", (hidden, hidden))
        add(f"blk.{i}.ffn_gate.weight", (4 * hidden, hidden))
        add(f"blk.{i}.ffn_up.weight", (4 * hidden, hidden))
        add(f"blk.{i}.ffn_down.weight", (hidden, 4 * hidden))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def best_of(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = build(Path(d) / "bench.gguf", vocab=args.vocab, hidden=args.hidden,
                     layers=args.layers)
        size_mb = path.stat().st_size / 1e6

        def ours() -> None:
            _, readers, _ = open_files([path])
            for r in readers:
                r.close()

        def theirs() -> None:
            gguf.GGUFReader(path)

        ours_min, ours_med = best_of(ours, args.repeat)
        theirs_min, theirs_med = best_of(theirs, max(1, args.repeat // 2))
        n = len(open_files([path])[0])
    print(f"file: {size_mb:.1f} MB, {n} tensors, vocab {args.vocab} (tokens, scores, types, "
          f"merges)")
    for label, lo, med in (("wstui open_files", ours_min, ours_med),
                           ("gguf.GGUFReader", theirs_min, theirs_med)):
        print(f"{label:18s}: best {lo * 1e3:8.1f} ms  median {med * 1e3:8.1f} ms")
    print(f"speed-up (best/best): {theirs_min / ours_min:.1f}x")


if __name__ == "__main__":
    main()
