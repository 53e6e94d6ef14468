"""Every option is checked before work starts (the app included), errors are one line, a
closed pipe is a quiet exit 0, and failed tensors have their own exit code (3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wstui import jsonio
from wstui.cli import main
from wstui.commands._run import (
    EXIT_BAD_INPUT,
    EXIT_FINDINGS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TENSORS_FAILED,
    exit_code,
)

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "WSTUI_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("opts")
    g = torch.Generator().manual_seed(0)
    t = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(32, 16, generator=g)
         for i in range(3)}
    path = d / "model.safetensors"
    save_file(t, str(path))
    return path


# ----------------------------------------------------------------------- argparse level
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["scan", "{m}", "--methods", ""], "--methods: expected a comma-separated list"),
        (["scan", "{m}", "--methods", " , "], "--methods"),
        (["quant", "{m}", "--bits", ""], "--bits: expected a comma-separated list"),
        (["quant", "{m}", "--bits", "8,x"], "--bits: expected comma-separated integers"),
        (["scan", "{m}", "--threshold", "alpha_high=nan"], "finite"),
        (["scan", "{m}", "--threshold", "alpha_high=inf"], "finite"),
        (["scan", "{m}", "--threshold", "alpha_high=-Infinity"], "finite"),
        (["scan", "{m}", "--threshold", "=3"], "code=value"),
        (["scan", "{m}", "--top-issues", "-5"], "--top-issues: must be at least 0, got -5"),
        (["scan", "{m}", "--workers", "0"], "--workers: must be at least 1, got 0"),
        (["scan", "{m}", "--workers", "-1"], "--workers: must be at least 1, got -1"),
        (["quant", "{m}", "--workers", "0"], "--workers"),
        (["scan", "{m}", "--workers", "two"], "--workers: expected an integer"),
        (["ls", ""], "path: the path is empty"),
        (["scan", "  "], "path: the path is empty"),
        (["scan", "{m}", "--diff", ""], "the path is empty"),
        (["scan"], "required: path"),
        (["scan", "{m}", "--device", "tpu"], "invalid choice"),
        (["scan", "{m}", "--nope"], "unrecognized arguments: --nope"),
        (["{m}", "--workers", "0"], "--workers"),
        (["{m}", "--methods", ""], "--methods"),
        (["{m}", "--threshold", "alpha_low=nan"], "finite"),
    ],
)
def test_bad_options_are_one_line_exit_2(model, capsys, argv, needle):
    argv = [a.format(m=model) for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == EXIT_BAD_INPUT
    assert err.count("\n") == 1, err  # one line, no usage block
    prog = "wstui" if argv[0] not in ("scan", "ls", "quant") else f"wstui {argv[0]}"
    assert err.startswith(f"{prog}: error: "), err
    assert needle in err, err


# --------------------------------------------------------------------- the app command
def test_static_analyzer_names_match_the_registry():
    """The app checks --methods against a static list (the registry imports torch)."""
    from analyzers import core
    from wstui.commands.app import ANALYZER_NAMES

    real = [n for n in core.names() if core._REGISTRY[n].fn.__module__.startswith("analyzers.")]
    assert sorted(ANALYZER_NAMES) == sorted(real)


APP_PROBE = """
import sys
from wstui.cli import main
code = main(sys.argv[1:])
print("torch loaded" if "torch" in sys.modules else "no torch", code)
"""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "nope"], "unknown analyzer 'nope'"),
        (["--methods", "stats,spectrl"], "spectrl"),
        (["--threshold", "bogus=1"], "bogus"),
        (["--export-dir", "{m}"], "is not a folder"),
    ],
)
def test_app_refuses_bad_options_before_it_starts(model, tmp_path, args, needle):
    """Before: the app opened and showed "starting scan…" forever. Now one line and exit 2,
    with neither the app nor torch loaded."""
    args = [a.format(m=model) for a in args]
    r = subprocess.run([sys.executable, "-c", APP_PROBE, str(model), *args], env=_env(tmp_path),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.stdout.strip() == "no torch 2", (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("wstui: "), r.stderr
    assert needle in r.stderr


# --------------------------------------------------------------------------- pipes
def test_ls_into_head_exits_0_quietly(tmp_path):
    """`wstui ls BIG | head -1` exited 1 (rich's broken-pipe handler); coreutils exit 0."""
    path = tmp_path / "big.safetensors"
    save_file({f"model.layers.{i}.mlp.up_proj.weight": torch.zeros(2, 2) for i in range(3000)},
              str(path))
    proc = subprocess.Popen([sys.executable, "-m", "wstui", "ls", str(path)],
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read()
    assert proc.wait(60) == EXIT_OK, err
    assert b"block" in first and err == b""


# ---------------------------------------------------------------------- exit code 3
def test_exit_code_precedence():
    assert exit_code() == EXIT_OK
    assert exit_code(findings=True) == EXIT_FINDINGS
    assert exit_code(failed=True, findings=True) == EXIT_TENSORS_FAILED == 3
    assert exit_code(bad=True, failed=True, findings=True) == EXIT_BAD_INPUT
    assert exit_code(interrupted=True, bad=True, failed=True) == EXIT_INTERRUPTED


BOOM = """
import sys
from analyzers import core
from analyzers.core import Output

@core.register("fboom", version="1", default=False)
def fboom(ctx):
    if ".1." in ctx.name:
        raise RuntimeError("cannot analyze this one")
    return Output(metrics={"mean": float(ctx.tensor.mean())})

from wstui.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_failed_tensors_exit_3_with_the_report_and_json(model, tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-c", BOOM, "scan", str(model), "--methods", "fboom",
                        "--fail-on", "info", "--json", str(out), "--no-cache"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_TENSORS_FAILED, r.stderr
    assert "1 of 3 tensors failed to load or analyze" in r.stderr
    assert r.stdout  # the report is printed
    doc = jsonio.loads_strict(out.read_text())
    errors = {t["name"]: t["errors"] for t in doc["tensors"]}
    assert errors["model.layers.1.mlp.up_proj.weight"][0]["message"].startswith("RuntimeError")
    assert not errors["model.layers.0.mlp.up_proj.weight"]


def test_full_stdout_is_one_line_exit_2(model, tmp_path):
    """stdout on /dev/full: one line on stderr, exit 2 (before: a traceback)."""
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "wstui", "ls", str(model)], env=_env(tmp_path),
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == EXIT_BAD_INPUT
    assert r.stderr == "wstui: cannot write to stdout: No space left on device\n"
