"""Pooling a score matrix for the app's heat map (`analyzers.sensitivity.pool_scores`) against a
hand computation; the same map from torch, numpy, a block of rows at a time and the gradient
pass; the study's cache entry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from analyzers import sensitivity as S

# a 5 x 7 matrix 0..34; on a 2 x 3 grid: rows [0, 2) [2, 5), columns [0, 2) [2, 4) [4, 7)
X = np.arange(35, dtype=np.float64).reshape(5, 7)
MAX = [[8, 10, 13], [29, 31, 34]]  # the last element of each cell (the matrix increases)
SUM = [[0 + 1 + 7 + 8, 2 + 3 + 9 + 10, 4 + 5 + 6 + 11 + 12 + 13],
       [14 + 15 + 21 + 22 + 28 + 29, 16 + 17 + 23 + 24 + 30 + 31,
        18 + 19 + 20 + 25 + 26 + 27 + 32 + 33 + 34]]


def test_bin_edges_are_near_equal_and_never_empty() -> None:
    assert S.bin_edges(5, 2) == [0, 2, 5]
    assert S.bin_edges(7, 3) == [0, 2, 4, 7]
    assert S.bin_edges(3, 48) == [0, 1, 2, 3]  # fewer items than bins: one bin each
    e = S.bin_edges(49152, 48)
    assert len(e) == 49 and {b - a for a, b in itertools.pairwise(e)} == {1024}


@pytest.mark.parametrize("make", [np.asarray, torch.as_tensor])
def test_pool_scores_by_hand(make) -> None:
    p = S.pool_scores(make(X), (2, 3))
    assert p.row_edges == [0, 2, 5] and p.col_edges == [0, 2, 4, 7]
    assert np.asarray(p.values).tolist() == MAX
    assert np.asarray(S.pool_scores(make(X), (2, 3), "sum").values).tolist() == SUM
    assert p.cell_of(4, 3) == (1, 1) and p.cell_of(0, 6) == (0, 2)


def test_pool_by_row_blocks_and_repool_give_the_same_map(monkeypatch) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 30, generator=g)
    whole = S.pool_scores(x, (7, 4))
    monkeypatch.setattr(S, "CHUNK", 30 * 3)  # 3 rows per block: blocks cut across bins
    red = S.reduce_rows(lambda a, b: x[a:b], (50, 30), 5, pool=(7, 4))
    assert torch.equal(red.pooled.values, whole.values)
    fine = S.pool_scores(x.numpy(), (25, 15))
    coarse = S.repool(fine, (7, 4))
    direct = S.pool_scores(x.numpy(), (7, 4))
    # the coarse map of the fine one: the max over the union of its cells, edges in the matrix
    for i in range(len(coarse.row_edges) - 1):
        for j in range(len(coarse.col_edges) - 1):
            r0, r1 = coarse.row_edges[i:i + 2]
            c0, c1 = coarse.col_edges[j:j + 2]
            assert coarse.values[i, j] == pytest.approx(float(x[r0:r1, c0:c1].max()))
    assert direct.values.shape == coarse.values.shape
    with pytest.raises(ValueError):
        S.pool_scores(X, (2, 2), "mean")


def test_gradient_pass_pools_grad_x_weight() -> None:
    from tests.sens_models import tiny_llama

    model = tiny_llama(0)
    ids = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    _, scores = S.gradient_scores(model, ids, params, k=3, pool=(4, 5))
    for p in params.values():
        p.requires_grad_(True)
    logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    grads = torch.autograd.grad(loss, list(params.values()))
    for p in params.values():
        p.requires_grad_(False)
    for (key, p), g in zip(params.items(), grads):
        red = scores[key]["grad_x_weight"]
        if p.dim() != 2:
            assert red.pooled is None
            continue
        want = S.pool_scores((g * p).abs().detach(), (4, 5)).values
        assert torch.allclose(red.pooled.values, want, rtol=1e-5, atol=0)
        # the hottest cell holds the tensor's top weight
        top = int(red.top_idx[0])
        cell = red.pooled.cell_of(top // p.shape[1], top % p.shape[1])
        assert red.pooled.values[cell] == red.pooled.values.max()
        assert scores[key]["fisher"].pooled is None


def test_heat_levels_log_scale() -> None:
    from wstui.render.sensitivity import RAMP, heat_levels

    lev, lo, hi = heat_levels([[1e-6, 1e-3], [0.0, 1.0]])
    assert hi == 1.0 and lo == pytest.approx(1e-4)  # four decades below the top
    assert lev[1][1] == len(RAMP) - 1 and lev[1][0] == 0 and lev[0][0] == 0
    assert 0 < lev[0][1] < len(RAMP) - 1


def test_cache_entry_round_trip_and_a_changed_file_misses(tmp_path) -> None:
    import os

    from tests.sens_models import save_llama_dir
    from wstui.checkpoint import open_checkpoint
    from wstui.engine import sensitivity_cache as C

    folder = save_llama_dir(tmp_path / "m")
    settings = {"tokens": 64, "heatmaps": [48, 64]}
    doc, maps = {"schema": "wstui.sensitivity/1", "perplexity": 3.0}, {"t": {"values": None}}
    with open_checkpoint(folder) as ckpt:
        assert C.load(ckpt, settings, tmp_path / "c") is None
        path = C.save(ckpt, settings, doc, maps, tmp_path / "c")
        assert path is not None and path.parent.name == "sensitivity"
        assert C.load(ckpt, settings, tmp_path / "c") == (doc, maps)
        assert C.load(ckpt, {**settings, "tokens": 128}, tmp_path / "c") is None
        st = os.stat(folder / "tokenizer.json")
        os.utime(folder / "tokenizer.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert C.load(ckpt, settings, tmp_path / "c") is None
