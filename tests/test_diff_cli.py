"""`wstui scan A --diff B`: tables, strict JSON, CSV, exit codes; Scope.compare_with agrees."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import save_file

from wstui import jsonio
from wstui.api import Scope
from wstui.cli import main
from wstui.documents.diff import CSV_COLUMNS


@pytest.fixture(autouse=True)
def cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))


def test_demo_diff_tables_json_csv(demo_paths, tmp_path, capsys):
    out_json, out_csv = tmp_path / "d.json", tmp_path / "d.csv"
    rc = main(["scan", str(demo_paths.base), "--diff", str(demo_paths.finetuned),
               "--json", str(out_json), "--csv", str(out_csv), "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    for heading in ("Most changed", "Per block", "Per kind", "Only in A", "Only in B"):
        assert heading in text
    assert "model.final_norm.weight" in text and "large_change" in text
    doc = jsonio.loads_strict(out_json.read_text())
    assert doc["schema"] == "wstui.diff/1"
    assert doc["pairs"][0]["name"] == "model.layers.3.self_attn.o_proj.weight"
    assert doc["top_issues"][0]["code"] == "large_change"
    assert doc["only_in_a"] == ["model.norm.weight"]
    with out_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == len(doc["pairs"])
    assert rows[0]["name"] == doc["pairs"][0]["name"] and rows[0]["rank"] == "1"
    assert float(rows[0]["rel_change"]) == pytest.approx(
        doc["pairs"][0]["metrics"]["compare"]["rel_change"])

    # Scope.compare_with is the same engine: the same numbers
    with Scope(demo_paths.base, device="cpu") as s:
        report = s.compare_with(demo_paths.finetuned)
    by_name = {p["name"]: p["metrics"]["compare"] for p in doc["pairs"]}
    assert [p.name for p in report.pairs] == [p["name"] for p in doc["pairs"]]
    for p in report.pairs:
        assert jsonio.strict(p.compare) == by_name[p.name]


def test_unrelated_architectures_exit_2_one_line(tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4)}, str(a))
    save_file({"encoder.layer.0.attention.self.query.weight": torch.randn(4, 4)}, str(b))
    rc = main(["scan", str(a), "--diff", str(b)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "share no tensor name" in err


def test_missing_b_is_bad_input(tmp_path, demo_paths, capsys):
    rc = main(["scan", str(demo_paths.base), "--diff", str(tmp_path / "nope.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_fail_on_warn_and_no_spectral(demo_paths, capsys):
    rc = main(["scan", str(demo_paths.base), "--diff", str(demo_paths.finetuned),
               "--methods", "stats", "--fail-on", "warn", "--quiet", "--no-cache"])
    assert rc == 1
    assert capsys.readouterr().out == ""


def test_tensors_glob_limits_both_sides(demo_paths, tmp_path, capsys):
    out = tmp_path / "d.json"
    rc = main(["scan", str(demo_paths.base), "--diff", str(demo_paths.finetuned), "--tensors",
               "model.layers.3.*", "--json", str(out), "--quiet", "--no-cache"])
    assert rc == 0
    doc = jsonio.loads_strict(out.read_text())
    assert len(doc["pairs"]) == 9 and not doc["only_in_a"] and not doc["only_in_b"]
    assert doc["summary"]["by_block"][0]["block"] == 3


def test_tables_fit_80_columns(demo_paths, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    rc = main(["scan", str(demo_paths.base), "--diff", str(demo_paths.finetuned), "--no-cache"])
    out = capsys.readouterr().out
    assert rc == 0 and "3.attn.o_proj" in out  # short names, not cut to "m…"
    assert max(len(line) for line in out.splitlines()) <= 80
