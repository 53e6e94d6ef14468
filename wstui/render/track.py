"""`wstui track`'s terminal table: per module kind the medians at up to `MAX_COLUMNS` steps."""

from __future__ import annotations

from typing import Any

#: steps shown in the terminal table (evenly picked, first and last kept)
MAX_COLUMNS = 8


def _picks(n: int, limit: int = MAX_COLUMNS) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def print_table(doc: dict[str, Any], console: Any) -> None:
    """Per module kind the median alpha and change against the first step, at up to
    `MAX_COLUMNS` steps; then one line of counts."""
    from rich.table import Table

    from wstui.render import visible

    steps = doc["steps"]
    cols = _picks(len(steps))
    table = Table(title="median per module kind (x: step)", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for i in cols:
        table.add_column(str(steps[i]["step"]), justify="right")
    for kind, row in doc["by_kind"].items():
        for metric in ("alpha", "stable_rank", "rel_change_first"):
            values = row.get(metric) or []
            if not any(v is not None for v in values):
                continue
            table.add_row(visible(kind), metric,
                          *["-" if values[i] is None else f"{values[i]:.3g}" for i in cols])
    console.print(table)
    c, run = doc["counts"], doc.get("run", {})
    where = f" on {visible(run.get('address'))}" if run.get("executor") == "ray" else ""
    console.print(f"{c['tensors']} tensors x {c['steps']} steps: {c['analyzed']} analyzed, "
                  f"{c['unchanged']} unchanged (taken from the step before){where}, "
                  f"{run.get('elapsed_s', 0.0):.1f} s", markup=False, highlight=False)
