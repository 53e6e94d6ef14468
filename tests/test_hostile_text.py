"""Names from files never reach the terminal raw or as markup (DESIGN §10, issue 13 items 1-2).

Checkpoints here hold tensor names, a dtype, an index and a folder name built to attack the
terminal (OSC 0/52 and CSI 2J escapes, NUL, a newline that would forge an `ls` row, a bidi
override) or Rich/Textual markup (`[/x]`, `[link=…]`, `run[v2]`). Every face must show them
escaped, as `repr` would, without a traceback and with its usual exit code.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from wstui.render import plain, visible

ROOT = Path(__file__).resolve().parents[1]

OSC = "\x1b]0;TITLE\x1b\\\x1b]52;c;SGVsbG8=\x1b\\\x1b[2Jx.weight"
HOSTILE = {
    "osc": OSC,
    "close": "[/x].weight",
    "link": "[link=https://e.x]click[/link].weight",
    "newline": "forged.weight\n0      attn_q  fake.weight",
    "nul": "nul\x00name.weight",
    "bidi": "bidi\u202egpj.weight",
}
GHOST = "\x1b[2Jghost.weight"  # named by the index, held by no shard: a checkpoint note
ONLY_IN_A = "[/only]\x1b[2J.weight"
MISMATCH = "[b]shape\x07.weight"

#: characters that must never reach the terminal raw
FORBIDDEN = {chr(c) for c in range(0x20) if chr(c) != "\n"} | {chr(0x7F)} | {
    chr(c) for c in range(0x80, 0xA0)} | set("\u200b\u200e\u200f\u2028\u2029\u202a\u202b"
                                             "\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# ------------------------------------------------------------------------------ visible()
@pytest.mark.parametrize(("raw", "shown"), [
    ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("\x1b[2J", "\\x1b[2J"),
    ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
    ("nul\x00", "nul\\x00"),
    ("del\x7f c1\x85\x9b", "del\\x7f c1\\x85\\x9b"),
    ("bidi\u202eexe", "bidi\\u202eexe"),
    ("zw\u200bj\u200d \u2066iso\u2069 \u2028", "zw\\u200bj\\u200d \\u2066iso\\u2069 \\u2028"),
    ("lone\ud800surrogate", "lone\\ud800surrogate"),
    ("tag\U000e0041", "tag\\U000e0041"),
    ("naïve 日本語 Ελληνικά", "naïve 日本語 Ελληνικά"),
    ("[/x] [link=https://e.x]click[/link] :smile:", "[/x] [link=https://e.x]click[/link] :smile:"),
    ("back\\slash", "back\\slash"),  # nothing to escape: unchanged
    ("\x1b\\x1b", "\\x1b\\\\x1b"),  # ESC, backslash, "x1b": as repr shows it
])
def test_visible_escapes_what_repr_escapes(raw: str, shown: str) -> None:
    assert visible(raw) == shown
    assert not FORBIDDEN & set(visible(raw))


def test_visible_matches_repr_on_every_unprintable_bmp_char() -> None:
    assert visible(OSC) == repr(OSC)[1:-1]
    for code in range(0x10000):
        ch = chr(code)
        if ch in "'\\":  # quotes are repr's own; a lone backslash needs no escape
            continue
        assert visible(ch) == repr(ch)[1:-1], hex(code)


def test_visible_takes_any_object() -> None:
    assert visible(3) == "3"
    assert visible(Path("/tmp/a\x1bb")) == "/tmp/a\\x1bb"


def test_plain_is_text_never_markup() -> None:
    from rich.console import Console, Group

    text = plain("[bold]x[/bold] [/x] :smile: \x1b[31m", style="cyan")
    assert text.plain == "[bold]x[/bold] [/x] :smile: \\x1b[31m"
    assert text.style == "cyan"
    out = io.StringIO()
    Console(file=out, width=200).print(text)
    assert out.getvalue() == "[bold]x[/bold] [/x] :smile: \\x1b[31m\n"
    assert plain("3 tensors", highlight=True).spans  # coloured as a str cell would be
    out = io.StringIO()  # one line each, as Text lines in a Group (the Overview's) should be
    Console(file=out, width=80).print(Group(plain("a skipped"), plain("b skipped")))
    assert out.getvalue() == "a skipped\nb skipped\n"


def test_render_layer_imports_no_textual() -> None:
    code = "import sys, wstui.render; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ checkpoints
def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    """A safetensors file written by hand, so that any name and dtype string can be stored."""
    header: dict[str, object] = {}
    blobs, offset = [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _matrix(seed: int, scale: float = 1.0, *, nan: bool = True, n: int = 16) -> bytes:
    """An n x n F32 matrix; with a NaN, the tensor gets a critical `nonfinite` finding."""
    m = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32) * scale
    if nan:
        m[0, 0] = np.nan
    return m.tobytes()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`run[v2]/` (hostile names, an index naming a tensor no shard holds, a broken
    config.json), a B copy with other values, and a file whose dtypes are hostile."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "run[v2]"
    folder.mkdir()
    tensors = {name: ("F32", (16, 16), _matrix(i)) for i, name in enumerate(HOSTILE.values())}
    write_safetensors(folder / "model.safetensors", tensors)
    weight_map = {name: "model.safetensors" for name in [*tensors, GHOST]}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    (folder / "config.json").write_text("{not json \x1b[2J", encoding="utf-8")
    # diff mode: finite values (a NaN skips the comparison), one tensor only in B, one whose
    # shape differs, all with hostile names
    diff_a = root / "diff[v3]"
    diff_a.mkdir()
    common = {name: ("F32", (16, 16), _matrix(i, nan=False))
              for i, name in enumerate(HOSTILE.values())}
    write_safetensors(diff_a / "model.safetensors",
                      {**common, ONLY_IN_A: ("F32", (16, 16), _matrix(9, nan=False)),
                       MISMATCH: ("F32", (16, 16), _matrix(8, nan=False))})
    b = root / "b.safetensors"
    write_safetensors(b, {**{name: ("F32", (16, 16), _matrix(i, 2.0 + i, nan=False))
                             for i, name in enumerate(HOSTILE.values())},
                          MISMATCH: ("F32", (8, 8), _matrix(8, nan=False, n=8))})
    dtypes = root / "dtypes.safetensors"
    write_safetensors(dtypes, {"odd.weight": ("[/x]", (4,), bytes(4)),
                               "esc.weight": ("F\x1b[2J", (4,), bytes(4))})
    return {"folder": folder, "diff_a": diff_a, "b": b, "dtypes": dtypes}


def wstui(tmp: Path, *args: str) -> tuple[int, str, str]:
    """Run `python -m wstui ARGS` piped; (exit code, stdout, stderr), both strict UTF-8."""
    env = {**os.environ, "WSTUI_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT),
           "COLUMNS": "400"}
    proc = subprocess.run([sys.executable, "-m", "wstui", *args], env=env,
                          capture_output=True, timeout=300)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def assert_clean(*streams: str) -> None:
    """No control or bidi character reached the terminal, and nothing crashed."""
    for s in streams:
        leaked = FORBIDDEN & set(s)
        assert not leaked, f"raw {sorted(map(hex, map(ord, leaked)))} in output:\n{s[-2000:]}"
        assert "Traceback" not in s and "MarkupError" not in s, s[-2000:]


def assert_names_escaped(out: str) -> None:
    for name in HOSTILE.values():
        assert visible(name) in out, f"{visible(name)!r} not shown"


# ------------------------------------------------------------------------------ headless faces
def test_ls_shows_escaped_names_path_and_notes(hostile: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = wstui(tmp_path, "ls", str(hostile["folder"]))
    assert code == 0, err
    assert_clean(out, err)
    assert_names_escaped(out)
    assert "[link=https://e.x]click[/link].weight" in out  # shown, not turned into a link
    # the newline cannot forge a row: one line per tensor, the fake row is on the real one
    forged = [line for line in out.splitlines() if "fake.weight" in line]
    assert len(forged) == 1 and "forged.weight\\n0" in forged[0]
    # notes: the index names a tensor no shard holds; config.json is broken
    notes = [line for line in err.splitlines() if line.startswith("wstui: note: ")]
    assert any("in no shard" in n and "\\x1b[2Jghost.weight" in n for n in notes), err
    assert any("config.json" in n and "run[v2]" in n for n in notes), err


def test_ls_plain_lines_past_the_size(hostile: dict[str, Path], monkeypatch, capsys) -> None:
    """The fast path for big checkpoints escapes the same way."""
    from wstui.cli import main
    from wstui.render import ls

    monkeypatch.setattr(ls, "PLAIN_ROWS", 0)
    assert main(["ls", str(hostile["folder"])]) == 0
    out, err = capsys.readouterr()
    assert_clean(out, err)
    assert_names_escaped(out)
    assert len(out.splitlines()) == 2 + len(HOSTILE) + 1  # header, rule, rows, summary


def test_plain_lines_lay_out_as_the_rich_table(tmp_path: Path) -> None:
    """Past PLAIN_ROWS `ls` pads strings itself; the columns are the ones the Table had."""
    from rich.console import Console
    from rich.measure import Measurement

    from wstui.checkpoint import open_checkpoint
    from wstui.render.ls import plain_lines, table

    tensors = {"model.embed_tokens.weight": ("F32", (8, 4), bytes(128)),
               "model.layers.0.self_attn.q_proj.weight": ("F16", (4, 4), bytes(32)),
               "model.layers.1.mlp.up_proj.weight": ("BF16", (4, 4), bytes(32)),
               "lm_head.weight": ("F32", (8, 4), bytes(128)),
               "model.position_ids": ("I64", (3,), bytes(24))}
    write_safetensors(tmp_path / "m.safetensors", tensors)
    with open_checkpoint(tmp_path / "m.safetensors") as ckpt:
        tbl = table(ckpt)
        wide = Console(width=10_000)
        out = io.StringIO()
        Console(file=out, width=Measurement.get(wide, wide.options, tbl).maximum).print(tbl)
        rich_lines = [line.rstrip() for line in out.getvalue().splitlines()]
        assert plain_lines(ckpt) == rich_lines


def test_ls_hostile_dtypes(hostile: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = wstui(tmp_path, "ls", str(hostile["dtypes"]))
    assert_clean(out, err)
    if code == 0:  # a reader may also refuse unknown dtypes, with one line
        assert "[/x]" in out and "F\\x1b[2J" in out
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_scan_shows_escaped_names(hostile: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = wstui(tmp_path, "scan", str(hostile["folder"]), "--top-issues", "50")
    assert code == 0, err
    assert_clean(out, err)
    assert_names_escaped(out)
    assert "run[v2]" in out  # the path, not `run`
    assert "nonfinite" in out
    assert any(line.startswith("wstui: note: ") for line in err.splitlines())


def test_scan_diff_shows_escaped_names(hostile: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = wstui(tmp_path, "scan", str(hostile["diff_a"]), "--diff",
                           str(hostile["b"]), "--methods", "stats")
    assert code == 0, err
    assert_clean(out, err)
    assert_names_escaped(out)
    assert "diff[v3]" in out
    assert visible(ONLY_IN_A) in out and visible(MISMATCH) in out


def test_quant_is_clean(hostile: dict[str, Path], tmp_path: Path) -> None:
    code, out, err = wstui(tmp_path, "quant", str(hostile["folder"]), "--bits", "8,4",
                           "--granularity", "tensor")
    assert code == 0, err
    assert_clean(out, err)
    assert "run[v2]" in out
    assert any(line.startswith("wstui: note: ") for line in err.splitlines())


def test_bad_input_error_is_escaped(tmp_path: Path) -> None:
    bad = tmp_path / "bad\x1b]0;T\x07.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}xx")
    code, out, err = wstui(tmp_path, "ls", str(bad))
    assert code == 2
    assert_clean(out, err)
    assert "bad\\x1b]0;T\\x07.safetensors" in err and len(err.strip().splitlines()) == 1


def test_lone_surrogates_in_names_and_paths(tmp_path: Path) -> None:
    """A name with a lone surrogate, a path with an undecodable byte: strict UTF-8 output."""
    write_safetensors(tmp_path / "lone.safetensors",
                      {"lone\ud800.weight": ("F32", (2, 2), bytes(16))})
    code, out, err = wstui(tmp_path, "ls", str(tmp_path / "lone.safetensors"))
    assert_clean(out, err)
    if code == 0:  # a reader may also refuse the name, with one line
        assert "lone\\ud800.weight" in out
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    bad = os.fsencode(tmp_path) + b"/bad\xff.safetensors"
    with open(bad, "wb") as fh:
        fh.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}xx")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WSTUI_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "wstui", "ls", bad], env=env,
                          capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8")  # strict: the undecodable byte is shown escaped
    assert proc.returncode == 2 and "bad\\udcff.safetensors" in err
    assert_clean(err)


def test_progress_line_shows_the_current_tensor_escaped() -> None:
    from rich.console import Console

    from wstui.commands._run import ProgressBar

    class Engine:
        verb = "scanning"

        def progress(self) -> SimpleNamespace:  # what the bar reads of ScanEngine.progress()
            return SimpleNamespace(done=1, total=6, phase="cheap", eta_s=None,
                                   current="[/x]" + OSC)

    bar = ProgressBar(Engine())
    bar.update()
    out = io.StringIO()
    Console(file=out, width=300).print(bar.progress.get_renderable())
    assert_clean(out.getvalue())
    assert visible("[/x]" + OSC)[-60:] in out.getvalue()


# ------------------------------------------------------------------------------ the app
SIZE = (160, 48)


def _results(ckpt: object) -> dict[str, object]:
    """Deterministic results whose findings and errors quote the hostile names."""
    from analyzers.core import Finding, Severity
    from tests.app_support import fixed_result

    out = {}
    for i, ref in enumerate(ckpt.tensors):  # type: ignore[attr-defined]
        r = fixed_result(ref, i)
        r.findings.append(Finding("stats", "nonfinite", Severity.CRITICAL, 1, 0,
                                  f"{ref.name} has NaN [/x] [link=https://e.x]y[/link]"))
        r.errors["embedding"] = f"cannot read {ref.name}: \x1b[2J [/x]"
        out[ref.name] = r
    return out


def _screen_clean(app: object) -> str:
    svg = app.export_screenshot()  # type: ignore[attr-defined]
    assert_clean(svg.replace("\n", ""))
    return svg


async def test_app_tabs_filter_palette_survive_hostile_names(hostile: dict[str, Path],
                                                             tmp_path: Path) -> None:
    from tests.app_support import FakeEngine, wait_for
    from wstui.app.app import WstuiApp
    from wstui.app.widgets.table import FindingsTable, TensorTable
    from wstui.app.widgets.tree import LayerTree
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree

    ckpt = open_checkpoint(hostile["folder"])
    eng = FakeEngine(ckpt, results=_results(ckpt))
    app = WstuiApp(ckpt, build_tree(ckpt.tensors), lambda: eng, export_dir=tmp_path,
                   show_timings=False)
    notes: list[tuple[str, dict]] = []
    notify = app.notify

    def record(message: str, **kw: object) -> None:
        notes.append((message, kw))
        notify(message, **kw)  # type: ignore[arg-type]

    app.notify = record  # type: ignore[method-assign]
    with ckpt:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: eng.done and len(app.state.results) == len(HOSTILE))
            # the checkpoint notes arrive as notifications, escaped, never markup
            ghost = [m for m, kw in notes if "in no shard" in m]
            assert ghost and "\\x1b[2Jghost.weight" in ghost[0]
            assert all(kw.get("markup") is False for _, kw in notes)
            tree = app.main_screen.query_one(LayerTree)
            for name in HOSTILE.values():
                app.jump_to(name)
                await pilot.pause()
                node = tree.cursor_node
                assert node is not None and node.data.tensor.name == name
                label = node.label.plain
                assert visible(node.data.label) in label
                assert not FORBIDDEN & set(label)
                for key in "12345678":  # every tab on this tensor, then its block's tables
                    await pilot.press(key)
                    await pilot.pause()
                    _screen_clean(app)
                await pilot.press("1")
            assert "\\x1b]0;TITLE" in tree.root.children[0].children[0].label.plain or any(
                "\\x1b]0;TITLE" in n.label.plain for n in tree.nodes_by_key.values())
            # the model's Table and Findings tabs list every name as text
            app.jump_to(HOSTILE["close"])
            tree.move_cursor(tree.root)
            await pilot.pause()
            await pilot.press("5")
            await wait_for(pilot, lambda: app.main_screen.query_one(TensorTable).row_count > 0)
            await pilot.press("7")
            await wait_for(pilot, lambda: app.main_screen.query_one(FindingsTable).row_count > 0)
            svg = _screen_clean(app)
            assert "[/x].weight" in svg
            await pilot.press("1")  # the model's Overview lists the checkpoint notes
            await pilot.pause()
            assert "ghost.weight" in _screen_clean(app)
            # the filter: `[/` typed must neither crash nor be read as markup
            await pilot.press("5", "slash", "[", "/")
            await pilot.pause()
            assert tree.filter_text == "[/"
            _screen_clean(app)
            await pilot.press("escape", "escape")
            # the palette: hits quote tensor names
            await pilot.press("ctrl+p")
            await pilot.press(*"go to tensor")
            await pilot.pause(0.5)
            _screen_clean(app)
            await pilot.press("escape")
            await pilot.pause()
        assert app.return_code in (None, 0)


def test_palette_highlight_reads_no_markup() -> None:
    from textual.fuzzy import Matcher

    from wstui.app.palette import highlight

    text = "Go to tensor [/x] [link=https://e.x]click[/link].weight"
    content = highlight(Matcher("click"), text)
    assert content.plain == text  # Matcher.highlight would raise on `[/x]`
    marked = {i for span in content.spans for i in range(span.start, span.end)}
    assert "".join(text[i] for i in sorted(marked)) == "click"
    assert highlight(Matcher("go"), "Go to tensor a.weight").plain == "Go to tensor a.weight"


async def test_app_diff_tab_with_hostile_names(hostile: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.app_support import FakeEngine, wait_for
    from wstui.app.app import WstuiApp
    from wstui.app.widgets.table import DiffTable
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree

    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, ckpt_b = open_checkpoint(hostile["diff_a"]), open_checkpoint(hostile["b"])
    eng = FakeEngine(ckpt)
    app = WstuiApp(ckpt, build_tree(ckpt.tensors), lambda: eng, export_dir=tmp_path,
                   show_timings=False, checkpoint_b=ckpt_b,
                   diff_kw={"device": "cpu", "use_cache": False})
    with ckpt, ckpt_b:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("8")
            await wait_for(pilot, lambda: app.main_screen.query_one(DiffTable).row_count
                           == len(HOSTILE), timeout=60)
            svg = _screen_clean(app)
            assert "diff[v3]" in svg
            await pilot.press("d")  # swap A/B: the header names both checkpoints
            await pilot.pause()
            _screen_clean(app)
        assert app.return_code in (None, 0)
