"""Row-norm outliers and cluster structure of embedding matrices (DESIGN §5 "embedding").

Applies to kind `embedding` and `lm_head` only (other tensors: skipped). Keys:
`norm_min, norm_median, norm_max` (row L2 norms), `low_norm_rows` (rows whose robust z-score
(norm - median) / (1.4826·MAD) is below -4: candidates for under-trained tokens) and
`low_norm_row_ids` (up to 50, lowest norm first), `mean_cosine_to_centroid`, and k-means:
`kmeans_k` (k in 2..10 with the best Calinski–Harabasz score), `kmeans_ch` (that score),
`kmeans_sizes` (rows of the whole matrix nearest each centroid, largest first), `kmeans_rows`
(how many evenly spaced rows were clustered). Plot data: `data["embedding"]["kmeans_scores"]`
= `{"k": [...], "ch": [...]}`, the score of every k tried (the report's score-against-k
figure: how clear the chosen k is, not only which k won).

When more than half the norms are equal (MAD = 0) the scale falls back to 1.2533·mean absolute
deviation; if that is 0 too, no row is low.

k-means is Lloyd's algorithm, 10 steps as scipy's `kmeans2` takes, from greedy k-means++
starts (numpy generator seeded with 0: deterministic) on an evenly strided row sample. Each
step is two matrix products on the tensor's device for all k at once (scipy's `vq` runs a
scalar loop per k: 2.1 s of the MiniLM's 3.8 s default scan went to it). Its cost grows with
rows x cols x Σk (Σk = 54), so the sample is capped at 20000 rows and at 2^23 values
(2048 rows of 4096 dims, 20000 of 384); `options["kmeans_rows"]` sets the row count instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from analyzers.core import (
    Context,
    Output,
    Severity,
    SkipAnalyzer,
    finding,
    is_torch,
    register,
    to_numpy,
    xp,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

KINDS = ("embedding", "lm_head")
ROBUST_Z = -4.0
MAD_SCALE = 1.4826
MEANAD_SCALE = 1.2533
MAX_IDS = 50
KMEANS_KS = range(2, 11)
KMEANS_MAX_ROWS = 20000
KMEANS_MAX_VALUES = 2**23
KMEANS_SEED = 0
KMEANS_ITERS = 10


def norm_outliers(norms: np.ndarray) -> dict[str, Any]:
    """Norm summary and the robust-z low-norm rows of the row norms `norms` (float64)."""
    import numpy as np

    med = float(np.median(norms))
    dev = np.abs(norms - med)
    scale = MAD_SCALE * float(np.median(dev))
    if scale == 0.0:
        scale = MEANAD_SCALE * float(dev.mean())
    if scale > 0.0:
        z = (norms - med) / scale
        low = np.flatnonzero(z < ROBUST_Z)
        low = low[np.argsort(norms[low], kind="stable")]
    else:
        low = np.zeros(0, dtype=np.int64)
    return {
        "norm_min": float(norms.min()),
        "norm_median": med,
        "norm_max": float(norms.max()),
        "low_norm_rows": int(low.size),
        "low_norm_row_ids": [int(i) for i in low[:MAX_IDS]],
    }


def calinski_harabasz(x: np.ndarray, labels: np.ndarray) -> float:
    """Between- over within-cluster dispersion, each per degree of freedom (float64)."""
    import numpy as np

    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    return _ch_centered(xc, float(np.einsum("ij,ij->", xc, xc)), labels)


def _ch_centered(xc: np.ndarray, total: float, labels: np.ndarray) -> float:
    """Calinski–Harabasz of centred rows `xc` (Σ‖xc‖² = `total`): the between-cluster sum is
    Σ_j ‖S_j‖²/n_j with S_j the cluster sums (one small matrix product), within = total -
    between."""
    import numpy as np

    n = xc.shape[0]
    present, inverse = np.unique(labels, return_inverse=True)
    k = present.size
    if k < 2 or n <= k:
        return math.nan
    onehot = np.zeros((k, n))
    onehot[inverse, np.arange(n)] = 1.0
    sums = onehot @ xc
    sizes = onehot.sum(axis=1)
    between = float((np.einsum("ij,ij->i", sums, sums) / sizes).sum())
    within = total - between
    if within <= total * 1e-12:
        return math.inf
    return (between / (k - 1)) / (within / (n - k))


def sample_rows(rows: int, cols: int, options: Any) -> int:
    n = options.get("kmeans_rows")
    if n is None:
        n = min(KMEANS_MAX_ROWS, max(KMEANS_KS[-1] + 1, KMEANS_MAX_VALUES // max(cols, 1)))
    return max(0, min(int(n), rows))


def greedy_kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k starting centres by greedy k-means++: each step draws 2 + ln k candidates with
    probability ∝ D² and keeps the one that lowers the total D² most. Its first j centres are
    the greedy start for every smaller k, so one call serves k = 2..10. Plain k-means++ (one
    candidate, scipy's `minit="++"`) puts two centres in one of three clear blobs often enough
    to miss k = 3."""
    import numpy as np

    n = x.shape[0]
    trials = 2 + int(np.log(k))
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)

    def dist2(c: np.ndarray) -> np.ndarray:  # rows of c against every point, float64
        return np.maximum(sq[None, :] - 2.0 * (c @ x.T) + (c * c).sum(axis=1)[:, None], 0.0)

    centres = [int(rng.integers(n))]
    closest = dist2(x[centres[0]][None, :].astype(np.float64))[0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0.0:
            break
        cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * total)
        cand = np.minimum(cand, n - 1)
        pot = np.minimum(closest[None, :], dist2(x[cand].astype(np.float64)))
        best = int(np.argmin(pot.sum(axis=1)))
        centres.append(int(cand[best]))
        closest = pot[best]
    return x[centres].astype(np.float64)


def lloyd(x: Any, starts: Any, ks: Sequence[int],
          iters: int = KMEANS_ITERS) -> dict[int, Any]:
    """Labels after `iters` Lloyd steps (what scipy's `kmeans2` does) for every k in `ks`
    at once, k taking the first k rows of `starts` (numpy arrays, or torch tensors on any
    device; the labels come back as the same kind). The centres of all k are stacked so
    that each step is two matrix products over the rows (distances, then cluster sums)
    instead of two per k: the rows are read 20 times, not 180. A k whose cluster empties out
    is dropped (that k does not fit the data)."""
    if not ks:
        return {}
    b = xp(x)
    offs = [sum(ks[:i]) for i in range(len(ks))]
    c = b.concatenate([starts[:k] for k in ks], axis=0)
    n = x.shape[0]
    rows = b.arange(n, like=x)
    alive = dict.fromkeys(ks, True)
    labels: dict[int, Any] = {}
    for _ in range(iters):
        # nearest centre maximises 2x·c - |c|²; centres as rows, so each k's scores are a
        # contiguous block and its argmax a running maximum over k rows
        score = c @ x.T
        score *= 2
        score -= b.sum(c * c, axis=1)[:, None]
        onehot = b.zeros((c.shape[0], n), dtype=x.dtype, like=x)
        for k, off in zip(ks, offs):
            if alive[k]:
                labels[k] = _argmax_rows(score[off:off + k])
                onehot[off + labels[k], rows] = 1.0
        sizes = b.sum(onehot, axis=1)
        sums = onehot @ x
        for k, off in zip(ks, offs):
            if not alive[k]:
                continue
            if bool((sizes[off:off + k] == 0).any()):
                alive[k] = False
                labels.pop(k, None)
                continue
            c[off:off + k] = sums[off:off + k] / sizes[off:off + k, None]
    return labels


def _argmax_rows(s: Any) -> Any:
    """The index of the largest of the k rows of `s` at every column (the first on ties, as
    argmax), by a running maximum: k passes over contiguous rows, where an argmax down the
    columns of a (k, n) block would first transpose it."""
    b = xp(s)
    best = s[0].clone() if is_torch(s) else s[0].copy()
    lab = b.zeros(s.shape[1], dtype=b.int64, like=s)
    for j in range(1, s.shape[0]):
        better = s[j] > best
        lab[better] = j
        b.maximum(best, s[j], out=best)
    return lab


def kmeans(m: Any, n_sample: int, scores: dict[str, list] | None = None) -> dict[str, Any]:
    """Best k by Calinski–Harabasz over k = 2..10 on `n_sample` evenly spaced rows of `m`:
    Lloyd (10 iterations, float32, on the matrix's device) from greedy k-means++ starts
    (seed 0). `scores`, when given, receives every k's score (`k`, `ch` lists) for the plot."""
    import numpy as np

    b = xp(m)
    rows = m.shape[0]
    none = {"kmeans_k": None, "kmeans_ch": None, "kmeans_sizes": [], "kmeans_rows": n_sample}
    if n_sample < 3:
        return none
    idx = (np.arange(n_sample, dtype=np.float64) * (rows / n_sample)).astype(np.int64)
    xs = b.take(m, b.asarray(idx, like=m)) if is_torch(m) else m[idx]
    x = to_numpy(xs).astype(np.float64)
    starts = greedy_kmeans_pp(x, KMEANS_KS[-1], np.random.default_rng(KMEANS_SEED))
    xc = x - x.mean(axis=0)
    total = float(np.einsum("ij,ij->", xc, xc))
    x32 = b.astype(xs, b.float32)
    starts32 = b.asarray(starts.astype(np.float32), like=m) if is_torch(m) else (
        starts.astype(np.float32))
    ks = [k for k in KMEANS_KS if k < n_sample and k <= starts.shape[0]]
    best: tuple[float, int, Any] | None = None
    for k, labels in sorted(lloyd(x32, starts32, ks).items()):
        ch = _ch_centered(xc, total, to_numpy(labels))
        if math.isnan(ch):
            continue
        if scores is not None:
            scores.setdefault("k", []).append(int(k))
            scores.setdefault("ch", []).append(float(ch))
        if best is None or ch > best[0]:
            best = (ch, k, labels)
    if best is None:
        return none
    ch, k, labels = best
    onehot = b.zeros((k, n_sample), dtype=b.float32, like=m)
    onehot[labels, b.arange(n_sample, like=m)] = 1.0
    c = (onehot @ x32) / b.sum(onehot, axis=1)[:, None]
    # Nearest centroid for every row of the whole matrix.
    score = c @ m.T
    score *= 2
    score -= b.sum(c * c, axis=1)[:, None]
    sizes = b.bincount(_argmax_rows(score), minlength=k)
    return {"kmeans_k": k, "kmeans_ch": ch,
            "kmeans_sizes": sorted((int(s) for s in sizes.tolist()), reverse=True),
            "kmeans_rows": n_sample}


@register("embedding", version="3")  # 3: per-k scores in data
def embedding(ctx: Context) -> Output:
    import numpy as np

    from analyzers.sparsity import row_norms

    if ctx.kind not in KINDS:
        raise SkipAnalyzer(f"kind {ctx.kind or 'unknown'} is not an embedding")
    if not ctx.is_matrix:
        raise SkipAnalyzer("not a matrix")
    m = ctx.matrix()
    b = xp(m)
    norms_t = row_norms(m)
    norms = to_numpy(norms_t).astype(np.float64)
    metrics = norm_outliers(norms)
    centroid = b.mean(m, axis=0)
    c_norm = float(b.sqrt(b.sum(centroid * centroid)))
    live = norms_t > 0
    if c_norm > 0 and bool(live.any()):
        dots = m @ centroid  # a vector: zero rows are dropped after, not copied out before
        cos = dots[live] / (norms_t[live] * c_norm)
        metrics["mean_cosine_to_centroid"] = float(to_numpy(cos).astype(np.float64).mean())
    else:
        metrics["mean_cosine_to_centroid"] = math.nan
    scores: dict[str, list] = {"k": [], "ch": []}
    metrics.update(kmeans(m, sample_rows(m.shape[0], m.shape[1], ctx.options), scores))
    findings = []
    n_low = metrics["low_norm_rows"]
    if n_low > ctx.thresholds["low_norm_tokens"]:
        findings.append(finding("embedding", "low_norm_tokens", Severity.INFO, float(n_low),
                                ctx.thresholds["low_norm_tokens"],
                                f"{n_low} rows with a norm far below the median (robust z < -4)"))
    return Output(metrics=metrics, findings=findings, data={"kmeans_scores": scores})
