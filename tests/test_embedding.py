"""embedding: planted low-norm rows, k-means choosing k, determinism, kinds."""

from __future__ import annotations

import pytest
import torch

import analyzers


def _emb(t, kind="embedding", **kw):
    r = analyzers.analyze("e", t, kind=kind, methods=["embedding"], **kw)
    assert not r.errors, r.errors
    return r


def _blobs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(32)[:3] * 12.0  # same norm: no low-norm rows
    return torch.cat([c + torch.randn(200, 32, generator=g) for c in centers])


def test_planted_low_norm_rows_found_exactly_lowest_first():
    w = torch.randn(2000, 64, generator=torch.Generator().manual_seed(0))
    w[17] *= 0.05
    w[3] *= 0.01
    w[500] *= 0.1
    r = _emb(w)
    m = r.metrics["embedding"]
    assert m["low_norm_rows"] == 3 and m["low_norm_row_ids"] == [3, 17, 500]
    assert m["norm_min"] == pytest.approx(float(w[3].norm()), rel=1e-5)
    assert m["norm_max"] == pytest.approx(float(w.norm(dim=1).max()), rel=1e-5)
    norms = w.double().norm(dim=1).numpy()
    import numpy as np

    assert m["norm_median"] == pytest.approx(float(np.median(norms)), rel=1e-6)
    (f,) = r.findings
    assert (f.code, f.severity.value, f.value) == ("low_norm_tokens", "info", 3.0)


def test_kmeans_picks_three_on_three_blobs_deterministically():
    w = _blobs()
    a, b = _emb(w).metrics["embedding"], _emb(w).metrics["embedding"]
    assert a["kmeans_k"] == 3 and a["kmeans_sizes"] == [200, 200, 200]
    assert a == b
    assert a["kmeans_ch"] > 100
    assert a["low_norm_rows"] == 0


def test_mean_cosine_to_centroid():
    w = torch.rand(50, 8) + 0.5
    w = torch.ones(50, 1) * w[0]  # every row the same direction
    assert _emb(w).metrics["embedding"]["mean_cosine_to_centroid"] == pytest.approx(1.0)
    g = torch.randn(4000, 16, generator=torch.Generator().manual_seed(1))
    assert abs(_emb(g).metrics["embedding"]["mean_cosine_to_centroid"]) < 0.2


def test_kmeans_rows_option_and_strided_sample():
    w = _blobs()
    m = _emb(w, options={"kmeans_rows": 90}).metrics["embedding"]
    assert m["kmeans_rows"] == 90 and m["kmeans_k"] == 3
    assert sum(m["kmeans_sizes"]) == 600  # sizes count every row


def test_only_embedding_and_lm_head_kinds():
    w = _blobs()
    assert "embedding" in _emb(w, kind="lm_head").metrics
    for kind in ("attn_q", None):
        r = _emb(w, kind=kind)
        assert "embedding" in r.skipped and "embedding" not in r.metrics


def test_degenerate_rows_give_no_clusters_and_no_warning(recwarn):
    m = _emb(torch.ones(20, 4)).metrics["embedding"]
    assert m["kmeans_k"] is None and m["low_norm_rows"] == 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_calinski_harabasz_matches_its_definition():
    import numpy as np

    from analyzers.embedding import calinski_harabasz

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 7)) + np.repeat(np.eye(7)[:5] * 4, 100, axis=0)
    labels = np.repeat(np.arange(5), 100)
    labels[:50] = 9  # label values need not be 0..k-1
    mean = x.mean(axis=0)
    between = within = 0.0
    for j in np.unique(labels):
        members = x[labels == j]
        c = members.mean(axis=0)
        between += len(members) * ((c - mean) ** 2).sum()
        within += ((members - c) ** 2).sum()
    expected = (between / 5) / (within / (500 - 6))
    assert calinski_harabasz(x, labels) == pytest.approx(expected, rel=1e-10)
    assert np.isnan(calinski_harabasz(x, np.zeros(500, dtype=int)))


def test_kmeans_scores_of_every_k_are_kept_for_the_plot():
    r = _emb(_blobs())
    m, scores = r.metrics["embedding"], r.data["embedding"]["kmeans_scores"]
    assert scores["k"] == list(range(2, 11))
    assert len(scores["ch"]) == 9
    best = scores["k"][scores["ch"].index(max(scores["ch"]))]
    assert best == m["kmeans_k"] == 3
    assert max(scores["ch"]) == m["kmeans_ch"]
