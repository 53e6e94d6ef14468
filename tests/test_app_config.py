"""The config file: [thresholds] and [keys] in TOML, one-line errors naming file, line and
key, `wstui --print-config`, and every face using it (scan CLI, app, Scope)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from app_support import make_app, wait_for
from safetensors.numpy import save_file
from textual.widgets import TabbedContent

from wstui.cli import main
from wstui.config import ConfigError, config_path, load_config

GOOD = """\
[thresholds]
alpha_low = 1.5
int8_lossy.critical = 14     # unquoted: a dotted key

[keys]
"app.tab.table" = "t"
"tree.down" = ["j", "ctrl+n"]
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a config file and point WSTUI_CONFIG at it."""
    path = tmp_path / "config.toml"
    monkeypatch.setenv("WSTUI_CONFIG", str(path))

    def write(text: str) -> Path:
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_reads_thresholds_and_keys(config) -> None:
    path = config(GOOD)
    assert config_path() == path
    c = load_config(binding_ids={"app.tab.table", "tree.down"})
    assert c.found and c.path == path
    assert c.thresholds == {"alpha_low": 1.5, "int8_lossy.critical": 14.0}
    assert c.keys == {"app.tab.table": "t", "tree.down": "j,ctrl+n"}


def test_missing_file_is_the_empty_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WSTUI_CONFIG", str(tmp_path / "absent.toml"))
    c = load_config()
    assert not c.found and c.thresholds == {} and c.keys == {}


def test_default_path_is_the_user_config_dir(monkeypatch) -> None:
    monkeypatch.delenv("WSTUI_CONFIG", raising=False)
    assert config_path().name == "config.toml" and config_path().parent.name == "wstui"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("[thresholds]\nalpha_low = 1\nalpah_high = 3\n", 3, ["[thresholds] alpah_high",
                                                         "unknown threshold code"]),
    ("[thresholds]\n\nalpha_low = \"low\"\n", 3, ["[thresholds] alpha_low", "number"]),
    ("[thresholds]\nalpha_low = nan\n", 2, ["alpha_low", "finite"]),
    ("[keys]\n\"app.quit\" = \"x\"\n\"app.nope\" = \"y\"\n", 3, ["[keys] app.nope",
                                                                "unknown binding id"]),
    ("[keys]\n\"app.quit\" = \"ctrl j\"\n", 2, ["[keys] app.quit", "not a key name"]),
    ("[keys]\n\"app.quit\" = 3\n", 2, ["[keys] app.quit", "a key or a list"]),
    ("[colours]\nx = 1\n", 1, ["colours", "unknown table"]),
    ("[thresholds\nalpha_low = 1\n", 1, ["Expected"]),
])
def test_a_bad_file_is_one_line_naming_file_line_and_key(config, text, line, words) -> None:
    path = config(text)
    with pytest.raises(ConfigError) as err:
        load_config(binding_ids={"app.quit"})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:{line}: "), message
    for word in words:
        assert word in message


def test_bad_file_exits_2_with_one_line(config, capsys) -> None:
    config("[thresholds]\nalpah_high = 3\n")
    for argv in (["scan", "/nonexistent/model"], ["/nonexistent/model"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ":2: [thresholds] alpah_high" in err[0], err


def test_print_config_shows_effective_values_and_the_file(config, capsys) -> None:
    path = config(GOOD)
    assert main(["--print-config"]) == 0
    out = capsys.readouterr().out
    assert f"# config file: {path} (read)" in out
    assert "alpha_low = 1.5  # config file" in out
    assert "alpha_high = 6.0\n" in out  # a default, unmarked
    assert '"app.tab.table" = "t"  # config file' in out
    assert '"app.quit" = "q"' in out  # every binding id is listed


def test_cli_threshold_overrides_the_config_file(config) -> None:
    from wstui.commands._run import scan_options

    config(GOOD)
    args = argparse.Namespace(threshold=[("alpha_low", 1.8)])
    assert scan_options(args)["thresholds"] == {"alpha_low": 1.8, "int8_lossy.critical": 14.0}
    args = argparse.Namespace(threshold=[])
    assert scan_options(args)["thresholds"]["alpha_low"] == 1.5


def test_scope_uses_the_config_thresholds(config, tmp_path: Path) -> None:
    from wstui.api import Scope

    config(GOOD)
    model = tmp_path / "m.safetensors"
    save_file({"w": np.ones((4, 4), dtype=np.float32)}, str(model))
    with Scope(model) as s:
        assert s.options["thresholds"]["alpha_low"] == 1.5
    with Scope(model, options={"thresholds": {"alpha_low": 1.9}}) as s:
        assert s.options["thresholds"]["alpha_low"] == 1.9  # the caller's value wins


async def test_keymap_remaps_bindings_by_id() -> None:
    """[keys] goes through Textual's App.set_keymap: `t` opens the Table, `5` no longer."""
    from wstui.app.app import WstuiApp
    from wstui.app.screens.help import HelpScreen

    app, eng = make_app()
    remapped = WstuiApp(app.checkpoint, app.state.root, lambda: eng, show_timings=False,
                        keymap={"app.tab.table": "t", "app.help": "f1"})
    async with remapped.run_test(size=(100, 30)) as pilot:
        tabs = remapped.query_one(TabbedContent)
        await pilot.press("5")
        await pilot.pause()
        assert tabs.active == "overview"
        await pilot.press("t")
        await wait_for(pilot, lambda: tabs.active == "table")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(remapped.screen, HelpScreen))
    import io

    from rich.console import Console

    from wstui.app.screens.help import help_renderable

    console = Console(width=100, record=True, file=io.StringIO())
    console.print(help_renderable(remapped.keymap))
    text = console.export_text()
    assert "remapped" in text and "app.tab.table" in text  # `?` says what the file changed
