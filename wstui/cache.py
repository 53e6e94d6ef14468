"""The result cache: SQLite in WAL mode, one row per (file, tensor, analyzer, version, options).

Why SQLite: every finished analyzer result is committed on its own in a short transaction, so a
scan killed at any moment (even SIGKILL) leaves a database that opens and holds everything that
finished; WAL plus a busy timeout lets two scans of one model write at once. A row is valid only
while the file's size and mtime_ns are those it was computed for (DESIGN §7).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult, to_plain

SCHEMA_VERSION = "1"
DB_NAME = "results.sqlite"

_CREATE = """
CREATE TABLE IF NOT EXISTS results (
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    tensor TEXT NOT NULL,
    analyzer TEXT NOT NULL,
    version TEXT NOT NULL,
    opts TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (file, tensor, analyzer, version, opts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def cache_dir() -> Path:
    """`$WSTUI_CACHE_DIR` when set (tests), else the platform's user cache dir."""
    env = os.environ.get("WSTUI_CACHE_DIR")
    if env:
        return Path(env)
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        return Path.home() / ".cache" / "wstui"
    return Path(platformdirs.user_cache_dir("wstui"))


def default_path() -> Path:
    return cache_dir() / DB_NAME


def options_hash(options: Mapping[str, Any] | None) -> str:
    """A short stable hash of the options that can change an analyzer's output."""
    text = json.dumps(to_plain(dict(options or {})), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FileKey:
    """A weight file as the cache sees it: resolved path, size and mtime_ns."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> FileKey:
        p = Path(path).resolve()
        st = p.stat()
        return cls(str(p), int(st.st_size), int(st.st_mtime_ns))


def fragment_to_json(fragment: TensorResult) -> str:
    """One analyzer's share of a TensorResult as JSON (NaN/Infinity allowed: internal)."""
    return json.dumps(fragment.to_dict(with_data=True), allow_nan=True, separators=(",", ":"))


def fragment_from_json(text: str) -> TensorResult:
    return TensorResult.from_dict(json.loads(text))


class ResultCache:
    """Thread-safe handle on the cache database; every `put` is its own short transaction."""

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._timeout_s = timeout_s
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError:
            # Not a database (or damaged beyond SQLite's own recovery): keep it aside, start anew.
            self._set_aside()
            self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose
            # the last transactions), and much faster than FULL for many small commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_CREATE)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
            )
            (schema,) = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if schema != SCHEMA_VERSION:
                conn.execute("DELETE FROM results")
                conn.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                os.replace(p, Path(f"{self.path}.corrupt-{stamp}{suffix}"))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup_file(
        self, fkey: FileKey, wanted: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str], TensorResult]:
        """All cached fragments of one file, in one query.

        `wanted` is the set of (analyzer, version, options hash) the caller can use; the answer
        maps (tensor name, analyzer) to the fragment. Rows of an older version of the file are
        deleted on the way (the file changed: they can never match again).
        """
        want = set(wanted)
        out: dict[tuple[str, str], TensorResult] = {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT tensor, analyzer, version, opts, value FROM results "
                "WHERE file=? AND size=? AND mtime_ns=?",
                (fkey.path, fkey.size, fkey.mtime_ns),
            ).fetchall()
            with contextlib.suppress(sqlite3.OperationalError):  # busy beyond the timeout
                self._conn.execute(
                    "DELETE FROM results WHERE file=? AND (size!=? OR mtime_ns!=?)",
                    (fkey.path, fkey.size, fkey.mtime_ns),
                )
        for tensor, analyzer, version, opts, value in rows:
            if (analyzer, version, opts) in want:
                try:
                    out[(tensor, analyzer)] = fragment_from_json(value)
                except (ValueError, KeyError, TypeError):
                    continue  # an unreadable row is a miss
        return out

    def get(
        self, fkey: FileKey, tensor: str, analyzer: str, version: str, opts: str
    ) -> TensorResult | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM results WHERE file=? AND size=? AND mtime_ns=? AND tensor=? "
                "AND analyzer=? AND version=? AND opts=?",
                (fkey.path, fkey.size, fkey.mtime_ns, tensor, analyzer, version, opts),
            ).fetchone()
        if row is None:
            return None
        try:
            return fragment_from_json(row[0])
        except (ValueError, KeyError, TypeError):
            return None

    def put(
        self,
        fkey: FileKey,
        tensor: str,
        analyzer: str,
        version: str,
        opts: str,
        fragment: TensorResult,
    ) -> None:
        """Store one analyzer's fragment (committed at once)."""
        value = fragment_to_json(fragment)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO results "
                "(file, size, mtime_ns, tensor, analyzer, version, opts, value, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (fkey.path, fkey.size, fkey.mtime_ns, tensor, analyzer, version, opts, value,
                 time.time()),
            )

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def clear(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM results")
