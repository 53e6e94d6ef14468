"""Synthetic training runs for tests and benchmarks (`checkpoint-N/` safetensors folders).

- `lowrank_run`: a model's matrices get a growing low-rank update step after step (rank and
  size grow), the rest (embeddings, norms, biases, and the first `frozen_blocks` blocks) keep
  their bytes: what a fine-tune with frozen layers writes.
- `interpolated_run`: from a base to another checkpoint of the same shapes in straight lines
  (tensors equal in both, or only in `base`, stay as in `base` at every step).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

MATRIX_KINDS = ("attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv", "mlp_gate", "mlp_up",
                "mlp_down", "mlp_gate_up")


def _read(folder: Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    from safetensors.numpy import load_file

    weights: dict[str, np.ndarray] = {}
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        weights.update(load_file(f))
    extras = [p for p in folder.iterdir() if p.suffix == ".json" and "index" not in p.name]
    return weights, extras


def write_step(out: Path, step: int, weights: Mapping[str, np.ndarray],
               extras: Sequence[Path]) -> Path:
    from safetensors.numpy import save_file

    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()},
              folder / "model.safetensors")
    for e in extras:
        shutil.copy(e, folder / e.name)
    return folder


def _kinds(folder: Path) -> dict[str, tuple[str, int | None]]:
    from wstui.checkpoint import open_checkpoint

    with open_checkpoint(folder) as ck:
        return {t.name: (t.kind, t.block) for t in ck.tensors}


def lowrank_run(src: str | Path, out: str | Path, *, steps: Sequence[int],
                frozen_blocks: int = 2, seed: int = 0, scale: float = 0.05) -> list[Path]:
    """Checkpoints at `steps`; at step index k every trainable matrix is W0 + s_k·U_k V_kᵀ with
    rank k+... growing (k = 0 is W0 itself). Returns the folders in step order."""
    src, out = Path(src), Path(out)
    weights, extras = _read(src)
    kinds = _kinds(src)
    rng = np.random.default_rng(seed)
    trainable = [n for n, w in weights.items() if w.ndim == 2 and w.dtype == np.float32
                 and kinds.get(n, ("other", None))[0] in MATRIX_KINDS
                 and (kinds[n][1] is None or kinds[n][1] >= frozen_blocks)]
    factors = {}
    max_rank = len(steps)
    for n in trainable:
        rows, cols = weights[n].shape
        norm = float(np.linalg.norm(weights[n]))
        u = rng.standard_normal((rows, max_rank)).astype(np.float32)
        v = rng.standard_normal((max_rank, cols)).astype(np.float32)
        factors[n] = (u, v, norm / np.sqrt(rows * cols * max_rank))
    folders = []
    for k, step in enumerate(steps):
        w_k = dict(weights)
        if k > 0:
            for n in trainable:
                u, v, unit = factors[n]
                r = k  # the update's rank grows with the step
                w_k[n] = (weights[n] + scale * k * unit * (u[:, :r] @ v[:r])).astype(np.float32)
        folders.append(write_step(out, step, w_k, extras))
    return folders


def interpolated_run(base: str | Path, other: str | Path, out: str | Path, *,
                     steps: Sequence[int]) -> list[Path]:
    """len(steps) checkpoints from `base` (first) to `other` (last) on straight lines."""
    a, extras = _read(Path(base))
    b, _ = _read(Path(other))
    folders = []
    n = len(steps) - 1
    for k, step in enumerate(steps):
        t = k / n
        w = {name: (x if name not in b or np.array_equal(x, b[name]) else
                    ((1 - t) * x + t * b[name]).astype(x.dtype)) for name, x in a.items()}
        folders.append(write_step(Path(out), step, w, extras))
    return folders
