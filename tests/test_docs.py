"""docs/ stays in step with the code: every metric key a scan writes is explained in the
metrics guide, every finding code is in its table, and every schema has its page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analyzers.core import DEFAULT_THRESHOLDS
from wstui import Scope

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _documented_keys() -> set[str]:
    """Backticked words of the metrics guide (`near_zero_frac_1e-6`, `_1e-4` both count)."""
    return set(re.findall(r"`([A-Za-z0-9_.\-]+)`", (DOCS / "metrics.md").read_text()))


@pytest.fixture(scope="module")
def demo_doc(demo_paths) -> dict:
    with Scope(demo_paths.base, use_cache=False) as scope:
        return scope.scan(methods=["stats", "sparsity", "quantization", "embedding",
                                   "spectral", "quant_alpha"]).to_dict()


def test_every_scan_metric_key_is_in_the_metrics_guide(demo_doc: dict) -> None:
    documented = _documented_keys()
    keys: set[str] = set()
    for t in demo_doc["tensors"]:
        for section in t["metrics"].values():
            keys.update(section)
            for row in section.get("schemes", []):
                keys.update(row)
    assert len(keys) > 60
    missing = sorted(k for k in keys if k not in documented
                     and not any(k.endswith(d) and d.startswith("_") for d in documented))
    assert not missing, f"metric keys missing from docs/metrics.md: {missing}"


def test_every_finding_code_is_in_the_findings_table() -> None:
    text = (DOCS / "metrics.md").read_text()
    table = text[text.index("## Findings"):]
    codes = {k.split(".")[0] for k in DEFAULT_THRESHOLDS} | {"nonfinite"}
    missing = sorted(c for c in codes if f"| `{c}` |" not in table)
    assert not missing


def test_every_schema_has_a_page_and_the_readme_links_docs() -> None:
    index = (DOCS / "schemas" / "README.md").read_text()
    for name in ("scan", "diff", "quant", "ls", "view", "track"):
        assert f"`wstui.{name}/1`" in index and (DOCS / "schemas" / f"{name}.md").is_file()
    readme = (DOCS.parent / "README.md").read_text()
    assert "docs/metrics.md" in readme and "docs/schemas/README.md" in readme
    assert "docs/architecture.md" in readme


def test_the_architecture_page_names_every_layer() -> None:
    """docs/architecture.md names every module at the top of the package, every package, and
    every module of the engine: a module added without a word there fails here."""
    text = (DOCS / "architecture.md").read_text()
    pkg = DOCS.parent / "wstui"
    names = ["analyzers/", "commands/_run.py", "commands/_args.py", "add_arguments(parser)"]
    for p in sorted(pkg.iterdir()):
        if (p.name.startswith("_") and p.name != "_version.py") or p.name == "__pycache__":
            continue
        if p.is_dir() and (p / "__init__.py").exists():
            names.append(f"wstui/{p.name}/")
        elif p.suffix == ".py" and p.name not in ("cli.py", "api.py"):
            names.append(p.name)
    names += ["wstui/cli.py", "wstui/api.py"]
    names += [p.name for p in sorted((pkg / "engine").glob("*.py")) if p.name != "__init__.py"]
    missing = [n for n in names if n not in text]
    assert not missing, f"docs/architecture.md does not mention {missing}"
