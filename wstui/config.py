"""The config file (DESIGN §6, §9): finding thresholds and key bindings in TOML.

`config.toml` in the user config dir (platformdirs), or the file `$WSTUI_CONFIG` names:

    [thresholds]          # the codes of `--threshold`, which still overrides them
    alpha_low = 1.5
    "int8_lossy.critical" = 14

    [keys]                # binding id -> keys, as Textual's `App.set_keymap` takes them
    "app.quit" = "q,ctrl+c"
    "tree.down" = ["j", "down"]

A file that is there but wrong is an error, never half applied: `ConfigError` says in one
line which file, which line and which key. A missing file is the empty config. Nothing here
imports Textual or torch: every face reads it (the scan CLI, the app, `Scope`).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

ENV = "WSTUI_CONFIG"
FILE_NAME = "config.toml"
SECTIONS = ("thresholds", "keys")
#: one key as Textual names it: `j`, `ctrl+p`, `question_mark`, `shift+tab`, `f5`
_KEY = re.compile(r"^[a-z0-9_]+(\+[a-z0-9_]+)*$|^[A-Z]$")


class ConfigError(ValueError):
    """A bad config file: `FILE:LINE: [section] key: what is wrong` (one line)."""


@dataclass(frozen=True)
class Config:
    """The effective config: where it came from (`found`: the file exists) and its tables."""

    path: Path
    found: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def config_path() -> Path:
    """`$WSTUI_CONFIG` when set, else `config.toml` in the platform's user config dir."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "wstui" / FILE_NAME
    return Path(platformdirs.user_config_dir("wstui")) / FILE_NAME


def load_config(path: str | Path | None = None, *,
                binding_ids: Collection[str] | None = None) -> Config:
    """Read and check the config file (`binding_ids`: the ids `[keys]` may name; None skips
    that check, for faces without bindings). Raises ConfigError."""
    from analyzers.core import DEFAULT_THRESHOLDS

    path = config_path() if path is None else Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        line = _decode_error_line(str(exc))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)|\s*\(at end of document\)", "",
                        str(exc))
        raise ConfigError(f"{path}:{line}: {reason}" if line else f"{path}: {reason}") from None

    def fail(section: str | None, key: str, problem: str) -> ConfigError:
        where = f"[{section}] {key}" if section else key
        return ConfigError(f"{path}:{_line_of(text, section, key)}: {where}: {problem}")

    for name, value in data.items():
        if name not in SECTIONS:
            raise fail(None, name, f"unknown table (known: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise fail(None, name, "must be a table, e.g. [" + name + "]")
    thresholds: dict[str, float] = {}
    for code, value in _flat(data.get("thresholds", {})).items():
        if code not in DEFAULT_THRESHOLDS:
            known = ", ".join(k for k in DEFAULT_THRESHOLDS if "." not in k)
            raise fail("thresholds", code, f"unknown threshold code (known: {known})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("thresholds", code, f"must be a number, got {_toml(value)}")
        if not math.isfinite(value):  # a NaN threshold never fires, an infinite one always
            raise fail("thresholds", code, f"must be a finite number, got {value}")
        thresholds[code] = float(value)
    keys: dict[str, str] = {}
    for binding, value in data.get("keys", {}).items():
        if binding_ids is not None and binding not in binding_ids:
            raise fail("keys", binding, "unknown binding id (`wstui --print-config` lists "
                       "them)")
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(k, str) for k in items):
            raise fail("keys", binding, f"must be a key or a list of keys, got {_toml(value)}")
        parts = [p.strip() for k in items for p in k.split(",")]
        bad = [p for p in parts if not _KEY.match(p)]
        if bad or not parts:
            raise fail("keys", binding, f"not a key name: {bad[0] if bad else ''!r} (e.g. "
                       "'j', 'ctrl+p', 'question_mark')")
        keys[binding] = ",".join(parts)
    return Config(path, True, thresholds, keys)


def merged_thresholds(config: Config, overrides: Mapping[str, float] | None) -> dict[str, float]:
    """The thresholds a face passes on: the config file's, then `--threshold` over them."""
    return {**config.thresholds, **(overrides or {})}


def describe(config: Config, bindings: Mapping[str, tuple[str, str]] | None = None) -> str:
    """`wstui --print-config`: the effective thresholds and keys as TOML, saying where each
    value came from (`bindings`: id -> (default keys, what it does))."""
    from analyzers.core import DEFAULT_THRESHOLDS

    state = "read" if config.found else "not found: defaults"
    lines = [f"# config file: {config.path} ({state})",
             f"# ${ENV} points elsewhere; --threshold CODE=VALUE overrides [thresholds]", "",
             "[thresholds]"]
    for code, default in DEFAULT_THRESHOLDS.items():
        value = config.thresholds.get(code, default)
        origin = "  # config file" if code in config.thresholds else ""
        lines.append(f"{_key(code)} = {_toml(value)}{origin}")
    lines += ["", "[keys]"]
    for binding, (default, what) in (bindings or {}).items():
        keys = config.keys.get(binding, default)
        origin = "config file; " if binding in config.keys else ""
        lines.append(f"{_key(binding)} = {_toml(keys)}  # {origin}{what}")
    return "\n".join(lines) + "\n"


def _flat(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`int8_lossy.critical = 14` unquoted is a nested table in TOML: the code it means."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return repr(value) if not isinstance(value, bool) else str(value).lower()


def _decode_error_line(message: str) -> int | None:
    m = re.search(r"at line (\d+)", message)
    return int(m.group(1)) if m else None


def _line_of(text: str, section: str | None, key: str) -> int:
    """The line of `key` (in `[section]`), for the one-line error; 1 when not found."""
    current: str | None = None
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1).strip('"\'')
            if section is None and current == key:
                return i
            continue
        m = re.match(r"^(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.-]+)\s*=", stripped)
        if m and current == section:
            name = m.group(1).strip('"\'')
            if name == key or (section is None and name.split(".")[0] == key):
                return i
        if section is None and current is None and stripped.startswith(f"{key}."):
            return i
    return 1
