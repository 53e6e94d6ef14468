"""`wstui quant PATH`: the quantization study as tables, JSON and CSV."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from wstui.checkpoint import open_checkpoint
from wstui.cli import EXIT_INTERRUPTED, exit_code


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf"
    return format(x, spec)


def _setting_label(row: dict[str, Any]) -> str:
    return "none" if row["bits"] is None else str(row["bits"])


def summary_tables(doc: dict[str, Any]) -> list:
    """Per (granularity, scheme) two rich tables, one per alpha: the study's summary rows.

    Split in two so that each fits an 80-column terminal."""
    from rich import box
    from rich.table import Table

    base = doc["summary"][0]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in doc["summary"][1:]:
        groups.setdefault((row["granularity"], row["scheme"]), []).append(row)
    titles = {"alpha": "alpha, free refit (WeightWatcher-comparable)",
              "alpha_fixed_xmin": "alpha, tail above the unquantized xmin"}
    tables = []
    for (gran, scheme), rows in groups.items():
        for key, title in titles.items():
            t = Table(title=f"{gran} {scheme} · {title}", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)
            for col in ("bits", "SQNR mean", "SQNR min", "α mean", "change", "corr",
                        "in [2,6]", "< 2", "no fit"):
                t.add_column(col, justify="right")
            for row in [base, *rows]:
                a = row[key]
                t.add_row(
                    _setting_label(row), _fmt(row["sqnr_mean"], ".1f"),
                    _fmt(row["sqnr_min"], ".1f"), _fmt(a["mean"]), _pct(a["change_pct"]),
                    _fmt(a["corr"]), str(a["in_2_6"]), str(a["below_2"]), str(a["no_fit"]),
                )
            tables.append(t)
    return tables


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}%"


def plan_table(doc: dict[str, Any]):
    from collections import Counter

    from rich import box
    from rich.table import Table

    t = Table(title="Mixed-precision plan: per layer the fewest bits with |Δα| ≤ 2% "
              "(fixed xmin) and SQNR ≥ 30 dB", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("granularity")
    t.add_column("scheme")
    t.add_column("bits per weight", justify="right")
    t.add_column("layers at each width")
    for p in doc["plan"]:
        counts = Counter(layer["bits"] for layer in p["layers"])
        spread = ", ".join(f"{b}-bit: {n}" for b, n in sorted(counts.items()))
        t.add_row(p["granularity"], p["scheme"], _fmt(p["avg_bits_per_weight"], ".2f"), spread)
    return t


def write_csv(doc: dict[str, Any], path: str) -> None:
    """The per-layer rows of the study, atomically (a kill mid-write keeps the old file)."""
    from wstui import outfile
    from wstui.quant import csv_rows

    rows = csv_rows(doc)
    outfile.write_csv(path, rows, list(rows[0]) if rows else ["name"])


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from wstui import jsonio
    from wstui.commands.scan import (
        _drive,
        _exit_now,
        _fail,
        cache_notices,
        checked_options,
        print_problems,
        write_outputs,
    )
    from wstui.listing import print_notes
    from wstui.outfile import is_stdout
    from wstui.quant import study_document, study_engine
    from wstui.render import plain, visible
    from wstui.scan import select_tensors

    try:
        checked_options(args)
    except ValueError as exc:
        return _fail(str(exc))
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        try:
            engine, spec = study_engine(
                ckpt, bits=args.bits, granularity=args.granularity, scheme=args.scheme,
                tensors=select_tensors(ckpt.tensors, args.tensors), device=args.device,
                workers=args.workers, use_cache=not args.no_cache,
            )
        except ValueError as exc:
            return _fail(f"bad quantization setting: {exc}")
        interrupted = _drive(engine, show_progress=not args.quiet and sys.stderr.isatty())
        report = engine.report()
        doc = study_document(ckpt, report, spec)
    write_failed = write_outputs((args.json, lambda target: jsonio.dump(doc, target)),
                                 (args.csv, lambda target: write_csv(doc, target)))
    if engine.error:
        print(f"wstui: quantization study failed: {engine.error}", file=sys.stderr)
    if not args.quiet:
        to_stdout = is_stdout(args.json) or is_stdout(args.csv)
        out = Console(stderr=to_stdout)  # stdout carries the `-` file alone
        note = " (GGUF: the study runs on the dequantized weights)" if doc["dequantized"] else ""
        path = visible(doc["checkpoint"]["path"])
        head = plain(f"{path}: {len(doc['layers'])} matrices, "
                     f"{doc['elapsed_s']:.1f} s on {doc['device']}{note}", highlight=True)
        head.stylize("bold", 0, len(path))
        out.print(head)
        for t in summary_tables(doc):
            out.print(t)
        out.print(plan_table(doc))
        if doc["skipped"]:
            out.print(plain(f"{len(doc['skipped'])} matrices skipped: " + "; ".join(
                f"{s['name']}: {s['reason']}" for s in doc["skipped"][:5]), highlight=True))
    print_problems(cache_notices(engine) + write_failed)
    n_failed = sum(1 for e in report.entries if e.result.errors)
    if n_failed and not interrupted:
        print(f"wstui: {n_failed} of {len(report.entries)} matrices failed to load or sweep "
              "(listed under skipped)", file=sys.stderr)
    if interrupted:
        print(f"wstui: interrupted: {len(doc['layers'])} matrices swept (kept in the cache)",
              file=sys.stderr)
        if not engine.wait(0):
            _exit_now(EXIT_INTERRUPTED)
    return exit_code(interrupted=interrupted, bad=bool(engine.error or write_failed),
                     failed=n_failed > 0)
