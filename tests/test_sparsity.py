"""sparsity: near-zero fractions, planted dead rows/columns found exactly, row-norm CV."""

from __future__ import annotations

import pytest
import torch

import analyzers


def _sp(t, **kw):
    r = analyzers.analyze("t", t, methods=["sparsity"], **kw)
    assert not r.errors, r.errors
    return r, r.metrics["sparsity"]


def test_near_zero_fractions_on_a_vector_only():
    r, m = _sp(torch.tensor([0.0, 1e-7, -1e-5, 1e-3, 0.5]))
    assert m == {"near_zero_frac_1e-6": 0.4, "near_zero_frac_1e-4": 0.6,
                 "near_zero_frac_1e-2": 0.8}
    assert r.findings == []


def test_planted_dead_rows_and_columns_found_exactly():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    w[[2, 40]] = 0.0
    w[:, [5, 7, 100]] = 1e-7
    r, m = _sp(w)
    assert (m["dead_rows"], m["dead_row_ids"]) == (2, [2, 40])
    assert (m["dead_cols"], m["dead_col_ids"]) == (3, [5, 7, 100])
    (f,) = r.findings
    assert (f.code, f.severity.value, f.value) == ("dead_units", "warn", 5.0)


def test_ids_capped_at_50_and_critical_over_10_percent_of_rows():
    w = torch.randn(100, 32, generator=torch.Generator().manual_seed(1))
    w[:60] = 0.0
    r, m = _sp(w)
    assert m["dead_rows"] == 60 and m["dead_row_ids"] == list(range(50))
    (f,) = r.findings
    assert f.severity.value == "critical" and f.value == pytest.approx(0.6)
    assert f.threshold == 0.10


def test_row_norm_cv():
    _, m = _sp(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    assert m["row_norm_cv"] == pytest.approx(0.5)
    assert m["dead_rows"] == 0 and m["dead_cols"] == 0


def test_three_dim_tensor_is_a_matrix_of_its_first_dim():
    w = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(2))
    w[1] = 0.0
    _, m = _sp(w)
    assert m["dead_rows"] == 1 and m["dead_row_ids"] == [1]


def test_one_by_n_is_not_a_matrix():
    _, m = _sp(torch.zeros(1, 8))
    assert "dead_rows" not in m and m["near_zero_frac_1e-6"] == 1.0
