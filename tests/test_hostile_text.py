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
    from rich.console import Console

    text = plain("[bold]x[/bold] [/x] :smile: \x1b[31m", style="cyan")
    assert text.plain == "[bold]x[/bold] [/x] :smile: \\x1b[31m"
    assert text.style == "cyan"
    out = io.StringIO()
    Console(file=out, width=200).print(text)
    assert out.getvalue() == "[bold]x[/bold] [/x] :smile: \\x1b[31m\n"
    assert plain("3 tensors", highlight=True).spans  # coloured as a str cell would be


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
    from wstui import listing
    from wstui.cli import main

    monkeypatch.setattr(listing, "PLAIN_ROWS", 0)
    assert main(["ls", str(hostile["folder"])]) == 0
    out, err = capsys.readouterr()
    assert_clean(out, err)
    assert_names_escaped(out)
    assert len(out.splitlines()) == 2 + len(HOSTILE) + 1  # header, rule, rows, summary


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


def test_progress_line_shows_the_current_tensor_escaped() -> None:
    from rich.console import Console

    from wstui.commands.scan import _ProgressBar

    class Engine:
        verb = "scanning"

        def progress(self) -> SimpleNamespace:  # what the bar reads of ScanEngine.progress()
            return SimpleNamespace(done=1, total=6, phase="cheap", eta_s=None,
                                   current="[/x]" + OSC)

    bar = _ProgressBar(Engine())
    bar.update()
    out = io.StringIO()
    Console(file=out, width=300).print(bar.progress.get_renderable())
    assert_clean(out.getvalue())
    assert visible("[/x]" + OSC)[-60:] in out.getvalue()
