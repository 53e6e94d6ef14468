"""The demo checkpoints: a tiny Llama with planted defects, a fine-tuned copy, a GGUF copy.

Why: a user (and every test) needs a model whose problems are known in advance, so that what
the analyzers report can be checked against a list. The weights are built directly as numpy
arrays with Hugging Face Llama names (a transformers model init would cost seconds for nothing),
from one fixed seed, so every build writes the same bytes. `manifest.json` lists every planted
defect and fine-tune change; it is written last and marks a build as complete.

Needs numpy, safetensors and gguf only: no torch, no transformers.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wstui import jsonio

#: Bump when the bytes written change: the cache folder is `demo-v<VERSION>`.
VERSION = 1
SEED = 20261126
INIT_STD = 0.02  # transformers' initializer_range

VOCAB, HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 2048, 256, 768, 6, 4, 2
HEAD_DIM = HIDDEN // HEADS

BASE_DIR, FINETUNED_DIR, GGUF_FILE, MANIFEST_FILE = (
    "base", "finetuned", "base-q8_0.gguf", "manifest.json",
)
WEIGHTS_FILE = "model.safetensors"

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class DemoPaths:
    """Where a demo build lives. `base`/`finetuned` are folders (config.json + safetensors)."""

    root: Path
    base: Path
    finetuned: Path
    gguf: Path | None  # None while no GGUF writer is available
    manifest: Path


def default_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("wstui")) / f"demo-v{VERSION}"


def llama_config() -> dict[str, Any]:
    """config.json of the demo model, the fields `transformers.LlamaConfig` reads.

    Written by hand (checked against LlamaConfig in the tests) so that building the demo does
    not need transformers, which costs seconds to import and is only an optional dependency.
    """
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": 512,
        "initializer_range": INIT_STD,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }


def layer(i: int, part: str) -> str:
    """HF name of a weight in block `i`, e.g. layer(0, "mlp.up_proj")."""
    return f"model.layers.{i}.{part}.weight"


# ---------------------------------------------------------------------------------------------
# clean weights


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float = INIT_STD) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def _square(rng: np.random.Generator, n: int, max_cond: float = 1e4) -> np.ndarray:
    """A random N(0, 0.02) square matrix, redrawn while its condition number exceeds `max_cond`.

    A square Gaussian matrix is nearly singular now and then (cond > 1e5 for ~0.5% of
    256 x 256 draws): redrawing keeps the clean tensors clear of `ill_conditioned`.
    """
    while True:
        m = _normal(rng, (n, n))
        if np.linalg.cond(m.astype(np.float64)) < max_cond:
            return m


def clean_weights(rng: np.random.Generator) -> Weights:
    """Random-init Llama weights in HF order: N(0, 0.02) matrices, norms 1 + N(0, 0.02).

    Norms get a little noise (init would give exact ones) so their histograms are not empty.
    """
    kv = KV_HEADS * HEAD_DIM
    w: Weights = {"model.embed_tokens.weight": _normal(rng, (VOCAB, HIDDEN))}
    for i in range(LAYERS):
        w[layer(i, "input_layernorm")] = 1 + _normal(rng, (HIDDEN,))
        w[layer(i, "self_attn.q_proj")] = _square(rng, HIDDEN)
        w[layer(i, "self_attn.k_proj")] = _normal(rng, (kv, HIDDEN))
        w[layer(i, "self_attn.v_proj")] = _normal(rng, (kv, HIDDEN))
        w[layer(i, "self_attn.o_proj")] = _square(rng, HIDDEN)
        w[layer(i, "post_attention_layernorm")] = 1 + _normal(rng, (HIDDEN,))
        w[layer(i, "mlp.gate_proj")] = _normal(rng, (INTERMEDIATE, HIDDEN))
        w[layer(i, "mlp.up_proj")] = _normal(rng, (INTERMEDIATE, HIDDEN))
        w[layer(i, "mlp.down_proj")] = _normal(rng, (HIDDEN, INTERMEDIATE))
    w["model.norm.weight"] = 1 + _normal(rng, (HIDDEN,))
    w["lm_head.weight"] = _normal(rng, (VOCAB, HIDDEN))
    return w


# ---------------------------------------------------------------------------------------------
# measurements (the numbers the manifest records; the analyzers must agree with them)


def int8_sqnr_db(m: np.ndarray) -> float:
    """Per-tensor symmetric 8-bit round-to-nearest SQNR, as DESIGN §5 defines it."""
    x = m.astype(np.float64)
    scale = np.abs(x).max() / 127
    q = np.clip(np.round(x / scale), -127, 127) * scale
    return float(10 * np.log10((x**2).sum() / ((x - q) ** 2).sum()))


def robust_z(values: np.ndarray) -> np.ndarray:
    """(v - median) / (1.4826 MAD): the score DESIGN §5 uses for low-norm embedding rows."""
    med = np.median(values)
    return (values - med) / (1.4826 * np.median(np.abs(values - med)))


def powerlaw_alpha(eigs: np.ndarray) -> tuple[float, float, int]:
    """(alpha, xmin, n_tail) of the DESIGN §5 fit: Hill MLE at each xmin, smallest KS distance."""
    lam = np.sort(eigs[eigs > 1e-5].astype(np.float64))
    best = (np.inf, np.nan, np.nan, 0)
    for j in range(len(lam) - 1):
        tail = lam[j:]
        n = len(tail)
        logs = np.log(tail / tail[0]).sum()
        if logs <= 0:
            continue
        alpha = 1 + n / logs
        model_cdf = 1 - (tail / tail[0]) ** (1 - alpha)
        emp = np.arange(n) / n
        d = float(np.max(np.maximum(np.abs(model_cdf - emp), np.abs(model_cdf - emp - 1 / n))))
        if d < best[0]:
            best = (d, alpha, float(tail[0]), n)
    return float(best[1]), best[2], best[3]


def _orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------------------------
# planted defects: each crosses exactly one DESIGN §6 threshold


def plant_defects(w: Weights, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Change `w` in place; return the manifest entries."""
    defects: list[dict[str, Any]] = []

    def add(tensor: str, defect: str, code: str, severity: str, **detail: Any) -> None:
        defects.append(
            {"tensor": tensor, "defect": defect, "code": code, "severity": severity,
             "detail": detail}
        )

    # A dead row in a tall matrix and a dead column in a wide one: the rank stays full, so the
    # zeros do not also make the matrix singular (which would be an ill_conditioned finding).
    name = layer(0, "mlp.up_proj")
    w[name][123, :] = 0
    add(name, "dead_row", "dead_units", "warn", row=123)

    name = layer(1, "mlp.down_proj")
    w[name][:, 321] = 0
    add(name, "dead_column", "dead_units", "warn", column=321)

    # One input column 20x larger: per-tensor int8 SQNR drops to ~20 dB, IQR outliers stay
    # ~1%. Not 50x: a 50x column holds 90% of the energy, a low_rank finding as well.
    name = layer(3, "mlp.up_proj")
    w[name][:, 100] *= 20
    add(name, "outlier_column", "int8_lossy", "warn", column=100, factor=20,
        int8_sqnr_db=round(int8_sqnr_db(w[name]), 2))

    # Condition number 1e7: the smallest singular value set to sigma_max / 1e7.
    name = layer(2, "self_attn.q_proj")
    u, s, vt = np.linalg.svd(w[name].astype(np.float64))
    s[-1] = s[0] / 1e7
    w[name] = ((u * s) @ vt).astype(np.float32)
    cond = np.linalg.cond(w[name].astype(np.float64))
    add(name, "ill_conditioned", "ill_conditioned", "warn", target_cond=1e7,
        condition_number=float(f"{cond:.4g}"))

    # A few NaNs.
    name = layer(4, "mlp.gate_proj")
    nan_at = [(3, 7), (200, 31), (511, 255)]
    for r, c in nan_at:
        w[name][r, c] = np.nan
    add(name, "nan", "nonfinite", "critical", positions=[list(p) for p in nan_at])

    # Under-trained tokens: a few embedding rows scaled toward zero.
    name = "model.embed_tokens.weight"
    rows = [5, 333, 1024, 2001]
    w[name][rows] *= np.float32(0.01)
    z = robust_z(np.linalg.norm(w[name].astype(np.float64), axis=1))[rows]
    add(name, "low_norm_rows", "low_norm_tokens", "info", rows=rows, scale=0.01,
        robust_z=[round(float(v), 1) for v in z])

    # Heavy-tailed spectrum: eigenvalues lambda = sigma^2 at the quantiles of a Pareto law
    # with exponent 1.7 (density ~ lambda^-1.7), random singular vectors, Frobenius norm of
    # a clean matrix. Exponent 1.7 rather than 1.5 keeps energy_rank_90 above 10% of the
    # rank (15%), so the matrix does not also get a low_rank finding.
    name = layer(5, "mlp.down_proj")
    rows_, cols = w[name].shape
    k = min(rows_, cols)
    exponent = 1.7
    lam = (k / np.arange(1, k + 1)) ** (1 / (exponent - 1))
    s = np.sqrt(lam)
    m = (_orthonormal(rng, rows_, k) * s) @ _orthonormal(rng, cols, k).T
    m *= INIT_STD * np.sqrt(m.size) / np.linalg.norm(m)
    w[name] = m.astype(np.float32)
    sv = np.linalg.svd(w[name].astype(np.float64), compute_uv=False)
    alpha, _, n_tail = powerlaw_alpha(sv**2)
    add(name, "heavy_tailed_spectrum", "alpha_low", "warn", pareto_exponent=exponent,
        alpha=round(alpha, 3), n_tail=n_tail)
    return defects


# ---------------------------------------------------------------------------------------------
# the fine-tuned copy


def rel_change(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(b64 - a64) / np.linalg.norm(a64))


def finetune(base: Weights, rng: np.random.Generator) -> tuple[Weights, list[dict[str, Any]]]:
    """Low-rank updates on three MLP matrices, a large full-rank attention change, one rename."""
    w = {k: v.copy() for k, v in base.items()}
    changes: list[dict[str, Any]] = []

    def update(name: str, delta: np.ndarray, target: float, change: str, rank: int) -> None:
        a = base[name].astype(np.float64)
        delta *= target * np.linalg.norm(a) / np.linalg.norm(delta)
        w[name] = (a + delta).astype(np.float32)
        changes.append({"tensor": name, "change": change, "rank": rank,
                        "rel_change": round(rel_change(base[name], w[name]), 4)})

    for name, rank, target in (
        (layer(0, "mlp.gate_proj"), 4, 0.15),
        (layer(2, "mlp.up_proj"), 8, 0.2),
        (layer(4, "mlp.down_proj"), 4, 0.1),
    ):
        rows, cols = base[name].shape
        delta = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))
        update(name, delta, target, "lowrank", rank)

    name = layer(3, "self_attn.o_proj")
    update(name, rng.standard_normal(base[name].shape), 0.8, "fullrank", min(base[name].shape))

    old, new = "model.norm.weight", "model.final_norm.weight"
    w = {(new if k == old else k): v for k, v in w.items()}
    changes.append({"tensor": old, "change": "renamed", "new_name": new, "rank": None,
                    "rel_change": 0.0})
    return w, changes


# ---------------------------------------------------------------------------------------------
# writing


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Write via a temporary sibling and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.chmod(tmp, 0o644)  # some writers create 0600 files; the demo is not private
    os.replace(tmp, path)
    return path


def write_safetensors_dir(folder: Path, weights: Weights, config: dict[str, Any]) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    _atomic(folder / WEIGHTS_FILE,
            lambda p: save_file(weights, str(p), metadata={"format": "pt"}))
    jsonio.dump(config, folder / "config.json")
    return folder


GGUF_NOTE = (
    "matrices Q8_0 (blocks of 32 with one scale), 1-D tensors F32, llama.cpp names and q/k row "
    "order. A Q8_0 block holding a NaN gets a NaN scale, so the NaN tensor has 32 NaNs per "
    "planted NaN there; dead rows/columns stay exact zeros; the ill-conditioned matrix is "
    "well-conditioned after Q8_0 (its rounding noise is far above sigma_min)."
)


def write_gguf_copy(path: Path, weights: Weights, config: dict[str, Any]) -> Path | None:
    """Q8_0 matrices and F32 vectors via the project's GGUF writer (None while it is missing)."""
    try:
        from wstui.checkpoint.gguf_write import write_gguf
    except ImportError:
        return None
    with warnings.catch_warnings():
        # Q8_0 of a block holding a NaN: the scale is NaN (so the block dequantizes to NaNs) and
        # numpy warns about casting the NaN quotients to int8. Expected: see GGUF_NOTE.
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        return _atomic(path, lambda p: write_gguf(weights, config, p, qtype="Q8_0"))


def _complete(root: Path) -> DemoPaths | None:
    """The build in `root` when its manifest says it is complete and current."""
    try:
        manifest = jsonio.loads_strict((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != VERSION or manifest.get("seed") != SEED:
        return None
    paths = _paths(root, has_gguf=manifest.get("files", {}).get("gguf") is not None)
    files = [paths.base / WEIGHTS_FILE, paths.finetuned / WEIGHTS_FILE]
    if paths.gguf is None:
        try:  # built before the GGUF writer existed: rebuild once it does
            import wstui.checkpoint.gguf_write  # noqa: F401
        except ImportError:
            pass
        else:
            return None
    else:
        files.append(paths.gguf)
    return paths if all(f.is_file() for f in files) else None


def _paths(root: Path, *, has_gguf: bool) -> DemoPaths:
    return DemoPaths(root=root, base=root / BASE_DIR, finetuned=root / FINETUNED_DIR,
                     gguf=root / GGUF_FILE if has_gguf else None, manifest=root / MANIFEST_FILE)


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Small SVDs run 5-10x slower with a multi-threaded BLAS on a busy machine: use one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only a speed-up
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def build_demo(out_dir: Path | None = None, *, force: bool = False) -> DemoPaths:
    """Write (or reuse) the demo checkpoints in `out_dir` (default: the user cache dir)."""
    root = Path(out_dir) if out_dir is not None else default_dir()
    if not force and (done := _complete(root)) is not None:
        return done
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_FILE).unlink(missing_ok=True)  # incomplete until the manifest is back

    rng = np.random.default_rng(SEED)
    config = llama_config()
    with _one_blas_thread():
        base = clean_weights(rng)
        defects = plant_defects(base, rng)
        tuned, changes = finetune(base, rng)

    write_safetensors_dir(root / BASE_DIR, base, config)
    write_safetensors_dir(root / FINETUNED_DIR, tuned, config)
    gguf = write_gguf_copy(root / GGUF_FILE, base, config)
    paths = _paths(root, has_gguf=gguf is not None)

    manifest = {
        "schema": "wstui.demo/1",
        "version": VERSION,
        "seed": SEED,
        "files": {"base": BASE_DIR, "finetuned": FINETUNED_DIR,
                  "gguf": GGUF_FILE if gguf is not None else None},
        "config": config,
        "gguf": {"qtype": "Q8_0", "note": GGUF_NOTE} if gguf is not None else None,
        "defects": defects,
        "changes": changes,
    }
    jsonio.dump(manifest, paths.manifest)
    return paths
