"""Sensitivity of a model's loss to its weights: pure maths on a torch module and token ids.

Unlike the other analyzers this one needs a forward pass, so it takes a module (any callable
returning logits, or an object with `.logits`) instead of one tensor; it imports no
transformers and no wstui. Scores (DESIGN §5 "sensitivity"), per weight and summed per tensor:

- `grad_x_weight` |g⊙w| (LLM-Pruner's first-order Taylor), `fisher` g² (SqueezeLLM), with g
  the gradient of the mean next-token cross-entropy over the whole text;
- `wanda` |W_ij|·‖X_j‖₂, X_j input channel j of the nn.Linear over every token;
- `hutchinson` E[v⊙Hv] over Rademacher v (Hessian diagonal), with a standard error;
- `magnitude` |w|.

Memory: gradients are reduced as they land (`register_post_accumulate_grad_hook`) into a
total, the top/bottom k and per-head top k of each tensor, and freed at once, so a backward
pass never holds more than one gradient beyond the activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

METRICS = ("grad_x_weight", "fisher", "wanda", "hutchinson", "magnitude")
DEFAULT_METRICS = ("grad_x_weight", "fisher", "wanda", "magnitude")
GRADIENT_METRICS = ("grad_x_weight", "fisher")
MODES = ("global", "layerwise", "head")
METHODS = ("zero", "sign_flip", "gauss", "bit_flip")
#: a down-projection output spike counts as a super activation when its |value| exceeds this
#: many times the median over layers of the per-layer max |output|. Ordinary layers sit
#: within a few x of each other; super activations are reported at 100x-1000x (Yu et al.),
#: so 50x separates the two with room on both sides.
SPIKE_RATIO = 50.0
MAX_SUPER_WEIGHTS = 8


# ----------------------------------------------------------------------------- basics
def logits_of(out: Any) -> torch.Tensor:
    """Logits from whatever the module returned (a tensor, a tuple, or a ModelOutput)."""
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def next_token_loss(model: Callable[..., Any], ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of `ids` (1, T) under `model`."""
    import torch.nn.functional as F

    logits = logits_of(model(ids))
    return F.cross_entropy(logits[0, :-1].float(), ids[0, 1:])


def perplexity(model: Callable[..., Any], ids: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy); inf or nan when the model's output is not finite."""
    import torch

    with torch.inference_mode():
        loss = float(next_token_loss(model, ids))
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


# ------------------------------------------------------------------ per-tensor reduction
@dataclass(frozen=True)
class HeadSplit:
    """How a matrix splits into attention heads: along `axis` (0 rows for q/k/v, 1 columns for
    o) into `n_heads` slices of `head_dim`."""

    axis: int
    n_heads: int
    head_dim: int


@dataclass
class Reduced:
    """One tensor's per-weight scores, reduced: the sum, the k largest and k smallest (flat
    indices into the tensor), and per head the k largest."""

    total: float
    top_scores: torch.Tensor
    top_idx: torch.Tensor
    bottom_scores: torch.Tensor
    bottom_idx: torch.Tensor
    heads: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    pooled: Pooled | None = None


#: score elements computed at a time: a chunk's temporaries (score, its float64 sum, top-k
#: buffers) stay at a few MB where a 49k x 576 embedding scored in one piece took ~1 GB
CHUNK = 1 << 20


def _merge(vals: list[torch.Tensor], idx: list[torch.Tensor], k: int, largest: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    v, i = torch.cat(vals), torch.cat(idx)
    t = torch.topk(v, min(k, v.numel()), largest=largest, sorted=True)
    return t.values.cpu(), i[t.indices].cpu()


def _head_tops(score: torch.Tensor, k: int, split: HeadSplit
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    import torch

    heads = []
    cols = score.shape[1]
    for h in range(split.n_heads):
        lo, hi = h * split.head_dim, (h + 1) * split.head_dim
        part = score[lo:hi] if split.axis == 0 else score[:, lo:hi]
        t = torch.topk(part.reshape(-1), min(k, part.numel()), largest=True, sorted=True)
        r, c = t.indices // part.shape[1], t.indices % part.shape[1]
        if split.axis == 0:
            r = r + lo
        else:
            c = c + lo
        heads.append((t.values.cpu(), (r * cols + c).cpu()))
    return heads


@dataclass
class Pooled:
    """A score matrix pooled onto a coarse grid: `values[i, j]` is the max (or sum) of the
    scores in rows `row_edges[i]:row_edges[i + 1]` and columns `col_edges[j]:col_edges[j + 1]`
    of the full matrix."""

    values: torch.Tensor
    row_edges: list[int]
    col_edges: list[int]
    how: str = "max"

    def cell_of(self, row: int, col: int) -> tuple[int, int]:
        """The cell (i, j) that holds weight (row, col)."""
        import bisect

        return (bisect.bisect_right(self.row_edges, row) - 1,
                bisect.bisect_right(self.col_edges, col) - 1)


POOL_HOWS = ("max", "sum")


def bin_edges(n: int, bins: int) -> list[int]:
    """Edges of min(n, bins) near-equal bins over n items (`edges[i] = i * n // b`): every bin
    holds n // b or n // b + 1 items, none is empty."""
    b = max(1, min(int(n), int(bins)))
    return [i * int(n) // b for i in range(b + 1)]


def _bin_index(edges: Sequence[int], lo: int, hi: int, device: Any) -> torch.Tensor:
    """The bin of each item lo..hi-1 under `edges`."""
    import torch

    inner = torch.tensor(list(edges[1:-1]), dtype=torch.long, device=device)
    return torch.bucketize(torch.arange(lo, hi, device=device), inner, right=True)


def pool_rows_into(acc: torch.Tensor, rows: torch.Tensor, r0: int, row_edges: Sequence[int],
                   col_edges: Sequence[int], how: str = "max") -> None:
    """Pool `rows` (the score rows r0 .. r0 + len(rows) of a matrix) into `acc` (bins x bins,
    started at -inf for max, 0 for sum): so a matrix can be pooled a block of rows at a time,
    exactly, whatever the blocks' boundaries."""
    if how not in POOL_HOWS:
        raise ValueError(f"pool: unknown {how!r} (one of {', '.join(POOL_HOWS)})")
    reduce = "amax" if how == "max" else "sum"
    n, cols = rows.shape
    x = rows.to(acc.dtype)
    cidx = _bin_index(col_edges, 0, cols, x.device).expand(n, cols)
    part = x.new_zeros((n, acc.shape[1])).scatter_reduce_(1, cidx, x, reduce=reduce,
                                                          include_self=False)
    ridx = _bin_index(row_edges, r0, r0 + n, x.device)[:, None].expand(n, acc.shape[1])
    acc.scatter_reduce_(0, ridx, part, reduce=reduce, include_self=True)


def new_pool(shape: Sequence[int], grid: tuple[int, int], how: str = "max",
             device: Any = "cpu") -> Pooled:
    """An empty pooled map of a (rows, cols) matrix on a grid of at most `grid` cells."""
    import torch

    rows, cols = int(shape[0]), int(shape[1])
    re_, ce = bin_edges(rows, grid[0]), bin_edges(cols, grid[1])
    fill = -math.inf if how == "max" else 0.0
    values = torch.full((len(re_) - 1, len(ce) - 1), fill, dtype=torch.float32, device=device)
    return Pooled(values, re_, ce, how)


def pool_scores(score: Any, grid: tuple[int, int], how: str = "max") -> Pooled:
    """A 2-D score matrix max- or sum-pooled onto at most `grid` = (rows, cols) cells of
    near-equal bins (`bin_edges`): what the app draws as a tensor's heat map. A numpy array
    (or nested lists) is pooled with numpy, its `values` a numpy array (the app re-pools a
    stored map without loading torch); a torch tensor with torch. Pooling a pooled map again
    (max of max, sum of sum) gives the map of the coarser bins (`repool`)."""
    if how not in POOL_HOWS:
        raise ValueError(f"pool: unknown {how!r} (one of {', '.join(POOL_HOWS)})")
    if not hasattr(score, "detach"):
        import numpy as np

        a = np.asarray(score, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"pool_scores: a 2-D matrix is needed, got shape {a.shape}")
        re_, ce = bin_edges(a.shape[0], grid[0]), bin_edges(a.shape[1], grid[1])
        ufunc = np.maximum if how == "max" else np.add
        out = ufunc.reduceat(ufunc.reduceat(a, re_[:-1], axis=0), ce[:-1], axis=1)
        return Pooled(out, re_, ce, how)
    import torch

    x = torch.as_tensor(score)
    if x.dim() != 2:
        raise ValueError(f"pool_scores: a 2-D matrix is needed, got shape {tuple(x.shape)}")
    p = new_pool(x.shape, grid, how, x.device)
    pool_rows_into(p.values, x, 0, p.row_edges, p.col_edges, how)
    p.values = p.values.cpu()
    return p


def repool(p: Pooled, grid: tuple[int, int]) -> Pooled:
    """`p` on a coarser grid (at most `grid` cells): its cells pooled again, with the edges in
    the full matrix's rows and columns."""
    q = pool_scores(p.values, grid, p.how)
    return Pooled(q.values, [p.row_edges[i] for i in q.row_edges],
                  [p.col_edges[j] for j in q.col_edges], p.how)


def reduce_rows(fn: Callable[[int, int], torch.Tensor], shape: Sequence[int], k: int,
                split: HeadSplit | None = None, pool: tuple[int, int] | None = None
                ) -> Reduced:
    """Reduce per-weight scores computed a block of rows at a time (`fn(r0, r1)` gives the
    scores of rows r0:r1), never holding the whole score tensor: sum in float64, top/bottom k
    per block, then merged (exact: a global top-k weight is in its block's top-k). `pool`
    (a matrix only): also its max-pooled map on at most that grid (`pool_scores`)."""
    import torch

    rows = int(shape[0]) if len(shape) else 1
    numel = 1
    for d in shape:
        numel *= int(d)
    cols = numel // rows if rows else 0
    step = max(1, CHUNK // max(cols, 1))
    total = 0.0
    tv, ti, bv, bi = [], [], [], []
    pooled = None
    for r0 in range(0, rows, step):
        block = fn(r0, min(rows, r0 + step)).detach()
        if pool is not None and len(shape) == 2:
            if pooled is None:
                pooled = new_pool(shape, pool, "max", block.device)
            pool_rows_into(pooled.values, block.reshape(-1, cols), r0, pooled.row_edges,
                           pooled.col_edges)
        sc = block.reshape(-1)
        total += float(sc.sum(dtype=torch.float64))
        kk = min(k, sc.numel())
        t = torch.topk(sc, kk, largest=True, sorted=False)
        b = torch.topk(sc, kk, largest=False, sorted=False)
        tv.append(t.values)
        ti.append(t.indices + r0 * cols)
        bv.append(b.values)
        bi.append(b.indices + r0 * cols)
        del sc
    top_v, top_i = _merge(tv, ti, k, True)
    bot_v, bot_i = _merge(bv, bi, k, False)
    heads = None
    if split is not None and len(shape) == 2:  # attention matrices: small, scored whole
        heads = _head_tops(fn(0, rows).detach(), k, split)
    if pooled is not None:
        pooled.values = pooled.values.cpu()
    return Reduced(total=total, top_scores=top_v, top_idx=top_i, bottom_scores=bot_v,
                   bottom_idx=bot_i, heads=heads, pooled=pooled)


def reduce_scores(score: torch.Tensor, k: int, split: HeadSplit | None = None) -> Reduced:
    """Reduce a per-weight score tensor (same shape as the weight)."""
    shape = tuple(score.shape) or (1,)
    flat = score.reshape(shape)
    return reduce_rows(lambda a, b: flat[a:b], shape, k, split)


def head_split(kind: str, shape: Sequence[int], n_heads: int, n_kv_heads: int,
               head_dim: int) -> HeadSplit | None:
    """The head split of an attention matrix of `kind` (wstui naming), None for the rest or
    when the shape does not fit the config."""
    if len(shape) != 2:
        return None
    if kind == "attn_q" and shape[0] == n_heads * head_dim:
        return HeadSplit(0, n_heads, head_dim)
    if kind in ("attn_k", "attn_v") and shape[0] == n_kv_heads * head_dim:
        return HeadSplit(0, n_kv_heads, head_dim)
    if kind == "attn_o" and shape[1] == n_heads * head_dim:
        return HeadSplit(1, n_heads, head_dim)
    return None


# ------------------------------------------------------------------ activation recording
@dataclass
class Recording:
    """What the forward hooks saw: Σx² per input channel of each Linear (for wanda), the
    spikes of each MLP down-projection (super weights) and the residual stream's largest
    values per layer (massive activations)."""

    sq_in: dict[str, torch.Tensor] = field(default_factory=dict)
    down: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def _in_backward() -> bool:
    """True while autograd runs a backward pass: a checkpointed block recomputing its forward,
    whose activations the hooks have already seen once."""
    import torch

    task = getattr(torch._C, "_current_graph_task_id", None)
    return task is not None and task() != -1


@contextmanager
def checkpointed(modules: Sequence[Any]):
    """Activation checkpointing of each module for the duration of the `with` (each module
    keeps its input only and recomputes its forward in the backward pass): one more forward
    of the blocks buys activation memory of one block instead of all."""
    import functools

    from torch.utils.checkpoint import checkpoint

    saved = []
    try:
        for m in modules:
            own = m.__dict__.get("forward")
            saved.append((m, own))
            m.forward = functools.partial(checkpoint, m.forward, use_reentrant=False)
        yield
    finally:
        for m, own in saved:
            if own is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = own


def _down_stats(x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The output spike (token t, channel row) and the input channel that spikes at t."""
    x2 = x.detach().reshape(-1, x.shape[-1]).float()
    y2 = y.detach().reshape(-1, y.shape[-1]).float()
    ya = y2.abs()
    flat = int(ya.argmax())
    t, row = divmod(flat, y2.shape[1])
    col = int(x2[t].abs().argmax())
    return {"out_max": float(ya.reshape(-1)[flat]), "in_max": float(x2.abs().max()),
            "token": t, "row": row, "col": col,
            "act_in": float(x2[t, col]), "act_out": float(y2[t, row])}


@contextmanager
def record(*, linears: Mapping[str, Any] | None = None, downs: Mapping[str, Any] | None = None,
           layers: Sequence[Any] | None = None):
    """Forward hooks for the duration of the `with`: `linears` (key -> nn.Linear) accumulate
    Σx² per input channel, `downs` (key -> module) record spikes, `layers` (decoder blocks in
    depth order) record top-3 |h| and the median |h| of their output."""
    rec = Recording()
    handles = []

    def lin_hook(key: str):
        def fn(mod: Any, inp: Any, out: Any) -> None:
            if _in_backward():
                return
            x = _first(inp).detach()
            s = x.reshape(-1, x.shape[-1]).float().pow(2).sum(dim=0)
            rec.sq_in[key] = rec.sq_in[key] + s if key in rec.sq_in else s
        return fn

    def down_hook(key: str):
        def fn(mod: Any, inp: Any, out: Any) -> None:
            if not _in_backward():
                rec.down[key] = _down_stats(_first(inp), _first(out))
        return fn

    def layer_hook(i: int):
        def fn(mod: Any, inp: Any, out: Any) -> None:
            import torch

            if _in_backward():
                return
            a = _first(out).detach().float().abs().reshape(-1)
            top = torch.topk(a, min(3, a.numel()))
            rec.layers.append({"layer": i, "top3": [float(v) for v in top.values],
                               "median": float(a.median())})
        return fn

    try:
        for key, mod in (linears or {}).items():
            handles.append(mod.register_forward_hook(lin_hook(key)))
        for key, mod in (downs or {}).items():
            handles.append(mod.register_forward_hook(down_hook(key)))
        for i, mod in enumerate(layers or ()):
            handles.append(mod.register_forward_hook(layer_hook(i)))
        yield rec
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------ the scores
ScoreMap = dict[str, dict[str, Reduced]]  # tensor key -> metric -> Reduced


LossFn = Callable[[Any], Any]  # token ids -> scalar mean next-token loss


def gradient_scores(model: Callable[..., Any], ids: torch.Tensor,
                    params: Mapping[str, torch.nn.Parameter], *, k: int,
                    splits: Mapping[str, HeadSplit | None] | None = None,
                    metrics: Iterable[str] = GRADIENT_METRICS,
                    loss_fn: LossFn | None = None,
                    pool: tuple[int, int] | None = None) -> tuple[float, ScoreMap]:
    """(loss, scores): one forward and backward of the mean next-token loss (`loss_fn(ids)`,
    default `next_token_loss(model, ids)`); each gradient is reduced to `grad_x_weight` |g⊙w|
    and `fisher` g² as soon as it is complete, then freed. `pool`: each matrix's |g⊙w| also
    max-pooled onto at most that grid (`Reduced.pooled`, the app's heat map)."""
    import torch

    metrics = [m for m in metrics if m in GRADIENT_METRICS]
    splits = splits or {}
    out: ScoreMap = {}
    handles = []
    was = {key: p.requires_grad for key, p in params.items()}

    def hook(key: str):
        def fn(p: torch.Tensor) -> None:
            g = p.grad
            with torch.no_grad():
                res: dict[str, Reduced] = {}
                shape = tuple(p.shape) or (1,)
                gv, pv = g.reshape(shape), p.detach().reshape(shape)
                for m in metrics:
                    if m == "grad_x_weight":
                        def fn(a: int, b: int) -> torch.Tensor:
                            return (gv[a:b] * pv[a:b]).abs_()
                    else:
                        def fn(a: int, b: int) -> torch.Tensor:
                            return gv[a:b] * gv[a:b]
                    res[m] = reduce_rows(fn, shape, k, splits.get(key),
                                         pool if m == "grad_x_weight" else None)
                out[key] = res
            p.grad = None
        return fn

    try:
        for key, p in params.items():
            p.requires_grad_(True)
            p.grad = None
            handles.append(p.register_post_accumulate_grad_hook(hook(key)))
        with torch.enable_grad():
            loss = loss_fn(ids) if loss_fn else next_token_loss(model, ids)
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        for key, p in params.items():
            p.requires_grad_(was[key])
            p.grad = None
    for key in params:  # a weight the loss does not reach has zero gradient
        if key not in out:
            z = torch.zeros_like(params[key])
            out[key] = {m: reduce_scores(z, k, splits.get(key)) for m in metrics}
    return float(loss.detach()), out


def wanda_scores(params: Mapping[str, torch.Tensor], sq_in: Mapping[str, torch.Tensor], *,
                 k: int, splits: Mapping[str, HeadSplit | None] | None = None
                 ) -> dict[str, Reduced]:
    """|W_ij|·‖X_j‖₂ for every weight whose input norms were recorded (a Linear's, shape
    (out, in)); other tensors get none."""
    import torch

    splits = splits or {}
    res = {}
    with torch.no_grad():
        for key, w in params.items():
            sq = sq_in.get(key)
            if sq is None or w.dim() != 2 or w.shape[1] != sq.numel():
                continue
            norms = sq.sqrt().to(w.device)[None, :]
            wd = w.detach()
            res[key] = reduce_rows(lambda a, b, wd=wd, norms=norms: wd[a:b].abs() * norms,
                                   tuple(w.shape), k, splits.get(key))
    return res


def magnitude_scores(params: Mapping[str, torch.Tensor], *, k: int,
                     splits: Mapping[str, HeadSplit | None] | None = None
                     ) -> dict[str, Reduced]:
    import torch

    splits = splits or {}
    with torch.no_grad():
        out = {}
        for key, w in params.items():
            shape = tuple(w.shape) or (1,)
            wd = w.detach().reshape(shape)
            out[key] = reduce_rows(lambda a, b, wd=wd: wd[a:b].abs(), shape, k, splits.get(key))
        return out


def rademacher(shape: Sequence[int], gen: torch.Generator, device: Any = "cpu"
               ) -> torch.Tensor:
    import torch

    v = torch.randint(0, 2, tuple(shape), generator=gen, dtype=torch.int8)
    return (v.float() * 2 - 1).to(device)


def hutchinson(model: Callable[..., Any], ids: torch.Tensor,
               params: Mapping[str, torch.nn.Parameter], *, probes: int, seed: int, k: int,
               splits: Mapping[str, HeadSplit | None] | None = None,
               loss_fn: LossFn | None = None
               ) -> tuple[dict[str, Reduced], dict[str, float], dict[str, torch.Tensor]]:
    """Hessian diagonal of the mean next-token loss by Hutchinson's estimator: the mean over
    `probes` Rademacher v of v⊙Hv (Hv by double backward). Returns per tensor the reduced
    |estimate| (its `total` is Σ of the signed estimate, the block's trace), the standard error
    of that Σ over probes, and the per-weight estimate itself."""
    import torch

    if probes < 1:
        raise ValueError(f"probes must be at least 1, got {probes}")
    keys = list(params)
    ps = [params[kk] for kk in keys]
    was = [p.requires_grad for p in ps]
    gen = torch.Generator().manual_seed(int(seed))
    est = [torch.zeros_like(p) for p in ps]
    sums = torch.zeros(probes, len(ps), dtype=torch.float64)
    try:
        for p in ps:
            p.requires_grad_(True)
        # the fused CPU/GPU attention kernels have no double backward: use the math one
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            loss = loss_fn(ids) if loss_fn else next_token_loss(model, ids)
            grads = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
            live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            for j in range(probes):
                vs = [rademacher(ps[i].shape, gen, ps[i].device) for i in live]
                hv = torch.autograd.grad([grads[i] for i in live], [ps[i] for i in live],
                                         grad_outputs=vs, retain_graph=j < probes - 1,
                                         allow_unused=True)
                with torch.no_grad():
                    for i, v, h in zip(live, vs, hv):
                        if h is None:
                            continue
                        d = v * h
                        est[i] += d
                        sums[j, i] = float(d.sum(dtype=torch.float64))
            del grads
    finally:
        for p, w in zip(ps, was):
            p.requires_grad_(w)
    splits = splits or {}
    reduced: dict[str, Reduced] = {}
    stderr: dict[str, float] = {}
    per_weight: dict[str, torch.Tensor] = {}
    for i, key in enumerate(keys):
        e = est[i] / probes
        r = reduce_scores(e.abs(), k, splits.get(key))
        r.total = float(sums[:, i].mean())
        reduced[key] = r
        stderr[key] = float(sums[:, i].std(unbiased=True) / math.sqrt(probes)) if probes > 1 \
            else math.nan
        per_weight[key] = e
    return reduced, stderr, per_weight


# ----------------------------------------------------------------------------- top-k
@dataclass(frozen=True)
class Pick:
    """One weight: tensor key, flat index, score."""

    key: str
    idx: int
    score: float


def merge_top(reduced: Mapping[str, Reduced], k: int, *, bottom: bool = False,
              keys: Iterable[str] | None = None) -> list[Pick]:
    """The k best (or worst) weights over the tensors in `keys` (default all), from each
    tensor's own top/bottom k: exact, since a global top-k weight is in its tensor's top-k."""
    cands: list[Pick] = []
    for key in (keys if keys is not None else reduced):
        r = reduced.get(key)
        if r is None:
            continue
        sc, ix = (r.bottom_scores, r.bottom_idx) if bottom else (r.top_scores, r.top_idx)
        cands.extend(Pick(key, int(i), float(s)) for s, i in zip(sc.tolist(), ix.tolist()))
    cands.sort(key=lambda p: (p.score if bottom else -p.score, p.key, p.idx))
    return cands[:k]


def head_top(reduced: Mapping[str, Reduced], k: int) -> list[tuple[str, int, list[Pick]]]:
    """Per (tensor, head) the k best weights, for tensors with a head split."""
    out = []
    for key, r in reduced.items():
        for h, (sc, ix) in enumerate(r.heads or ()):
            picks = [Pick(key, int(i), float(s)) for s, i in zip(sc.tolist(), ix.tolist())]
            out.append((key, h, picks[:k]))
    return out


def random_picks(sizes: Mapping[str, int], k: int, seed: int) -> list[Pick]:
    """k distinct weights drawn uniformly over all the tensors' weights (the random control)."""
    import numpy as np

    keys = list(sizes)
    bounds = np.cumsum([0, *(int(sizes[kk]) for kk in keys)])
    total = int(bounds[-1])
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(total, size=min(k, total), replace=False))
    where = np.searchsorted(bounds, flat, side="right") - 1
    return [Pick(keys[w], int(f - bounds[w]), math.nan) for f, w in zip(flat, where)]


# ----------------------------------------------------------------------- perturbation
def bf16_flip_top_exponent(x: torch.Tensor) -> torch.Tensor:
    """x rounded to bfloat16 with its top exponent bit (bit 14) flipped, back as float32: a
    single-event upset of the kind that turns 0.01 into ~1e36."""
    import torch

    bits = x.to(torch.bfloat16).view(torch.int16)
    return (bits ^ 0x4000).view(torch.bfloat16).to(x.dtype)


def perturbed_values(w: torch.Tensor, idx: torch.Tensor, method: str, *, scale: float = 1.0,
                     gen: torch.Generator | None = None) -> torch.Tensor:
    """The new values of w.flatten()[idx] under `method`. `gauss` adds N(0, (scale·σ_W)²),
    σ_W the standard deviation of the whole tensor, so that `--scale 1` is one typical weight."""
    import torch

    vals = w.reshape(-1)[idx]
    if method == "zero":
        return torch.zeros_like(vals)
    if method == "sign_flip":
        return -vals
    if method == "bit_flip":
        return bf16_flip_top_exponent(vals)
    if method == "gauss":
        sigma = float(w.float().std()) if w.numel() > 1 else float(w.abs().mean())
        noise = torch.randn(vals.shape, generator=gen, dtype=torch.float32)
        return vals + (noise * scale * sigma).to(vals.dtype).to(vals.device)
    raise ValueError(f"unknown perturbation method {method!r} (one of {', '.join(METHODS)})")


@contextmanager
def perturbed(params: Mapping[str, torch.Tensor], picks: Sequence[Pick], method: str, *,
              scale: float = 1.0, seed: int = 0):
    """Apply `method` to the picked weights for the duration of the `with`, then write the
    saved originals back bit for bit."""
    import torch

    by_key: dict[str, list[int]] = {}
    for p in picks:
        by_key.setdefault(p.key, []).append(p.idx)
    gen = torch.Generator().manual_seed(int(seed))
    saved = []
    try:
        with torch.no_grad():
            for key, idxs in by_key.items():
                w = params[key]
                flat = w.data.view(-1)
                idx = torch.tensor(sorted(set(idxs)), dtype=torch.long, device=flat.device)
                saved.append((flat, idx, flat[idx].clone()))
                flat[idx] = perturbed_values(w.data, idx, method, scale=scale, gen=gen)
        yield
    finally:
        with torch.no_grad():
            for flat, idx, orig in saved:
                flat[idx] = orig


# ----------------------------------------------------------------------- super weights
def is_spike(out_maxes: Sequence[float], ratio: float = SPIKE_RATIO) -> tuple[int, bool]:
    """(layer of the largest output, whether it exceeds `ratio` x the median over layers)."""
    import numpy as np

    a = np.asarray(out_maxes, dtype=np.float64)
    layer = int(np.argmax(a))
    med = float(np.median(a))
    return layer, bool(a[layer] > ratio * med) if med > 0 else bool(a[layer] > 0)


def find_super_weights(model: Callable[..., Any], ids: torch.Tensor,
                       downs: Sequence[tuple[str, Any, torch.Tensor]], *,
                       ratio: float = SPIKE_RATIO, max_iter: int = MAX_SUPER_WEIGHTS,
                       first: Mapping[str, dict[str, Any]] | None = None
                       ) -> list[dict[str, Any]]:
    """Yu et al. 2024: with hooks on every MLP down-projection (`downs`: key, module, weight
    in depth order), take the layer whose largest |output| is a spike (> `ratio` x the
    median over layers); its super weight is W[row, col], row the output channel of the spike
    and col the input channel that spikes at the same token. Zero it, rerun, repeat while a
    spike remains (at most `max_iter`). Weights are restored on return. `first` may pass the
    stats of a forward already run (saves one pass)."""
    import torch

    found: list[dict[str, Any]] = []
    zeroed: list[tuple[torch.Tensor, int, int, float]] = []
    mods = {key: mod for key, mod, _ in downs}
    weights = {key: w for key, _, w in downs}
    order = [key for key, _, _ in downs]
    try:
        stats = dict(first) if first else None
        for _ in range(max_iter):
            if stats is None:
                with record(downs=mods) as rec, torch.inference_mode():
                    model(ids)
                stats = rec.down
            if any(key not in stats for key in order):
                break
            layer, spike = is_spike([stats[key]["out_max"] for key in order], ratio)
            if not spike:
                break
            key = order[layer]
            s = stats[key]
            w = weights[key]
            row, col = s["row"], s["col"]
            if any(z[0] is w and z[1] == row and z[2] == col for z in zeroed):
                break  # zeroing it did not remove the spike: no further super weight
            value = float(w[row, col].detach())  # no grad: a plain number
            found.append({"key": key, "layer": layer, "row": row, "col": col, "value": value,
                          "act_in": s["act_in"], "act_out": s["act_out"],
                          "token": s["token"]})
            zeroed.append((w, row, col, value))
            with torch.no_grad():
                w[row, col] = 0.0
            stats = None
    finally:
        with torch.no_grad():
            for w, row, col, value in zeroed:
                w[row, col] = value
    return found


# --------------------------------------------------------------------------- statistics
def rankdata(x: Sequence[float]) -> np.ndarray:
    """Ranks with ties averaged (scipy.stats.rankdata's default)."""
    import numpy as np

    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    sa = a[order]
    i = 0
    while i < a.size:
        j = i
        while j + 1 < a.size and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho over the pairs where both are finite; None with fewer than 3 or a
    constant side."""
    import numpy as np

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    rx, ry = rankdata(x[ok]), rankdata(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def jaccard(a: Iterable[Any], b: Iterable[Any]) -> float | None:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return None
    return len(sa & sb) / len(sa | sb)


def cluster_rows(x: np.ndarray, ks: Sequence[int] = range(2, 11), seed: int = 0
                 ) -> dict[str, Any]:
    """k-means of the rows of x (standardised columns) for each k up to n/3, keeping the k with
    the best Calinski–Harabasz score (the embedding analyzer's k-means and CH)."""
    import numpy as np
    import torch

    from analyzers.embedding import calinski_harabasz, greedy_kmeans_pp, lloyd

    n = x.shape[0]
    none = {"k": None, "ch": None, "labels": []}
    if n < 3 or x.shape[1] == 0:
        return none
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    # CH rises again as k nears n (clusters of one or two rows have no within dispersion):
    # keep at least three rows per cluster on average
    ks = [k for k in ks if 2 <= k <= n // 3]
    if not ks:
        return none
    starts = greedy_kmeans_pp(z, max(ks), np.random.default_rng(seed))
    ks = [k for k in ks if k <= starts.shape[0]]
    labels = lloyd(torch.from_numpy(z.astype(np.float32)),
                   torch.from_numpy(starts.astype(np.float32)), ks)
    best: tuple[float, int, Any] | None = None
    for k, lab in sorted(labels.items()):
        ch = calinski_harabasz(z, lab.numpy())
        if math.isnan(ch):
            continue
        if best is None or ch > best[0]:
            best = (ch, k, lab)
    if best is None:
        return none
    return {"k": best[1], "ch": best[0], "labels": [int(v) for v in best[2].tolist()]}
