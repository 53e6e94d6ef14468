"""The result cache: SQLite in WAL mode, one row per (file, tensor, analyzer, version, options).

Why SQLite: every finished analyzer result is committed on its own in a short transaction, so a
scan killed at any moment (even SIGKILL) leaves a database that opens and holds everything that
finished; WAL lets two scans of one model read and write at once. A row is valid only while the
file's size and mtime_ns are those it was computed for (DESIGN §7).

Faults (issue 13): only real damage (SQLite says "not a database", or `integrity_check` fails)
sets the file aside as `*.corrupt-<time>`. A lock held by another process or a read-only file
is not damage: the cache is then read-only or bypassed, never renamed. A lock costs the workers
one short wait at most: writes that cannot get it are kept in memory and retried by a
background thread, and what is still unwritten at the end is dropped with a notice. Nothing
here prints: `notices()` gives one line per problem for the caller to show.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
import weakref
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


#: longest wait for a lock on the workers' path (once; later tries do not wait)
BUSY_TIMEOUT_S = 2.0
#: wait per try once the cache is known to be contended
CONTENDED_TIMEOUT_S = 0.05
#: how often the background thread retries writes that met a lock
RETRY_EVERY_S = 0.5
#: how long `flush` (end of a scan, exit) waits for a lock before dropping what is unwritten
FLUSH_TIMEOUT_S = 2.0

_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 8, 11, 26

_INSERT = ("INSERT OR REPLACE INTO results "
           "(file, size, mtime_ns, tensor, analyzer, version, opts, value, created) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

_Row = tuple[str, int, int, str, str, str, str, str, float]


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_busy(exc: BaseException) -> bool:
    return _code(exc) in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in str(exc)


def _is_read_only(exc: BaseException) -> bool:
    return _code(exc) == _SQLITE_READONLY or "readonly" in str(exc)


def _is_damage(exc: BaseException) -> bool:
    """SQLite's own word that the file is damaged. An OperationalError (locked, read-only,
    cannot open, I/O error) never is: the file may be perfectly good."""
    if isinstance(exc, sqlite3.OperationalError):
        return False
    return _code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (
        _code(exc) is None and ("not a database" in str(exc) or "malformed" in str(exc)))


_live: weakref.WeakSet[ResultCache] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    """Writes still waiting for a lock when the process ends (the app, the API): one last try,
    then one line on stderr for what is lost. The CLI flushes before it prints its report."""
    for cache in list(_live):
        cache.flush()
        for line in cache.new_notices():
            print(f"wstui: {line}", file=sys.stderr)


class ResultCache:
    """Thread-safe handle on the cache database; every `put` is its own short transaction."""

    def __init__(self, path: str | Path | None = None, *,
                 timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()  # the connection
        self._plock = threading.Lock()  # the pending writes
        self._timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self.read_only = False
        self._contended = False
        self._pending: dict[tuple[str, str, str, str, str], _Row] = {}
        self._retry: threading.Thread | None = None
        self._notices: list[str] = []
        self._shown = 0
        self._closed = False
        self._open()
        _live.add(self)

    # ------------------------------------------------------------------------ opening
    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._notice(f"result cache not used: cannot create {self.path.parent}: "
                         f"{exc.strerror or exc}")
            return
        # Two processes opening a new file at once race to switch it to WAL, and SQLite may
        # answer the loser "locked" at once, without its busy wait: try again until the wait
        # is spent (a loaded 2-core box lost that race in a test of two concurrent scans).
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                self._conn = self._connect()
                return
            except sqlite3.DatabaseError as exc:
                err = exc
            if not _is_busy(err) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if self._damaged(err):
            self._start_anew(err)
            return
        # Locked, read-only file or folder, cannot open: a good file is never renamed.
        why = ("locked by another process" if _is_busy(err)
               else "read-only" if _is_read_only(err) else str(err))
        try:
            self._conn = self._connect_read_only()
        except sqlite3.DatabaseError:
            self._notice(f"result cache {self.path} not used ({why})")
            return
        self.read_only = True
        self._notice(f"result cache {self.path} is {why}: read only, this run's results "
                     "are not saved")

    def _connect(self) -> sqlite3.Connection:
        """Open read-write. A database that has our schema needs no write here, so a lock held
        by another process does not stop it from opening."""
        conn = sqlite3.connect(
            self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout_s * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process in WAL mode (only an OS crash can lose
            # the last transactions), and much faster than FULL for many small commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not {"results", "meta"} <= tables:
                conn.executescript(_CREATE)
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                             (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                conn.execute("DELETE FROM results")
                conn.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=self._timeout_s, isolation_level=None,
                               check_same_thread=False)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                raise sqlite3.OperationalError("written by another wstui version")
        except BaseException:
            conn.close()
            raise
        return conn

    def _damaged(self, exc: sqlite3.DatabaseError) -> bool:
        """True only for real damage: "not a database", or `integrity_check` fails."""
        if isinstance(exc, sqlite3.OperationalError):
            return False
        if _code(exc) == _SQLITE_NOTADB or "not a database" in str(exc):
            return True
        try:
            uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=self._timeout_s)
            try:
                return conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
            finally:
                conn.close()
        except sqlite3.OperationalError:
            return False  # cannot tell (locked, unreadable): leave the file alone
        except sqlite3.DatabaseError:
            return True

    def _set_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = Path(f"{self.path}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                os.replace(p, Path(f"{aside}{suffix}"))
        return aside

    # ------------------------------------------------------------------------ problems
    def _notice(self, line: str) -> None:
        if line not in self._notices:
            self._notices.append(line)

    def notices(self) -> list[str]:
        """One line per problem met so far (set aside, locked, read-only, results dropped)."""
        return list(self._notices)

    def new_notices(self) -> list[str]:
        """The notices not yet taken: what the caller shows now (each is shown once)."""
        lines = self._notices[self._shown:]
        self._shown += len(lines)
        return lines

    def _problem(self, exc: sqlite3.DatabaseError, doing: str) -> None:
        """Sort an error met while reading or writing (called without the connection lock)."""
        if _is_busy(exc):
            self._set_contended()
        elif _is_read_only(exc):
            self.read_only = True
            self._notice(f"result cache {self.path} is read-only: this run's results are not "
                         "saved")
        elif _is_damage(exc):
            self._recover(exc)
        else:
            self._notice(f"result cache {self.path}: {doing} failed: {exc}")

    def _set_contended(self) -> None:
        """After one lock timeout, tries no longer wait: the workers never stall twice."""
        if self._contended:
            return
        self._contended = True
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute(f"PRAGMA busy_timeout={int(CONTENDED_TIMEOUT_S * 1000)}")

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """Damage found mid-run: confirm it, set the file aside and go on with a new one."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self._conn = None
            if not self._damaged(exc):
                self._notice(f"result cache {self.path} not used for the rest of this run: {exc}")
                return
            self._start_anew(exc)

    def _start_anew(self, err: sqlite3.DatabaseError) -> None:
        """Set a damaged database aside (one notice) and open a new one in its place."""
        aside = self._set_aside()
        self._notice(f"result cache {self.path} is damaged ({err}): set aside as "
                     f"{aside.name}, starting a new one")
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            self._notice(f"result cache not used: {exc}")

    # --------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.flush()
        self._closed = True
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ reading
    def lookup_file(
        self, fkey: FileKey, wanted: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str], TensorResult]:
        """All cached fragments of one file, in one query.

        `wanted` is the set of (analyzer, version, options hash) the caller can use; the answer
        maps (tensor name, analyzer) to the fragment. Rows of an older version of the file are
        deleted on the way (the file changed: they can never match again). A cache that cannot
        be read is a miss, never an error.
        """
        want = set(wanted)
        out: dict[tuple[str, str], TensorResult] = {}
        rows: list[tuple[str, str, str, str, str]] = []
        err: sqlite3.DatabaseError | None = None
        stale_err: sqlite3.DatabaseError | None = None
        with self._lock:
            if self._conn is not None:
                try:
                    rows = self._conn.execute(
                        "SELECT tensor, analyzer, version, opts, value FROM results "
                        "WHERE file=? AND size=? AND mtime_ns=?",
                        (fkey.path, fkey.size, fkey.mtime_ns),
                    ).fetchall()
                except sqlite3.DatabaseError as exc:
                    err = exc
                if err is None and not self.read_only:
                    try:
                        self._conn.execute(
                            "DELETE FROM results WHERE file=? AND (size!=? OR mtime_ns!=?)",
                            (fkey.path, fkey.size, fkey.mtime_ns),
                        )
                    except sqlite3.DatabaseError as exc:  # busy: tidy up another time
                        stale_err = exc
        for e, doing in ((err, "reading"), (stale_err, "tidying")):
            if e is not None:
                if doing == "reading" and _is_busy(e):
                    self._notice(f"result cache {self.path} is locked by another process: "
                                 "some cached results were not read")
                self._problem(e, doing)
        with self._plock:
            rows += [(r[3], r[4], r[5], r[6], r[7]) for r in self._pending.values()
                     if r[:3] == (fkey.path, fkey.size, fkey.mtime_ns)]
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
        with self._plock:
            pending = self._pending.get((fkey.path, tensor, analyzer, version, opts))
        if pending is not None and pending[1:3] == (fkey.size, fkey.mtime_ns):
            return fragment_from_json(pending[7])
        row = None
        err: sqlite3.DatabaseError | None = None
        with self._lock:
            if self._conn is None:
                return None
            try:
                row = self._conn.execute(
                    "SELECT value FROM results WHERE file=? AND size=? AND mtime_ns=? AND "
                    "tensor=? AND analyzer=? AND version=? AND opts=?",
                    (fkey.path, fkey.size, fkey.mtime_ns, tensor, analyzer, version, opts),
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                err = exc
        if err is not None:
            self._problem(err, "reading")
        if row is None:
            return None
        try:
            return fragment_from_json(row[0])
        except (ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------------------ writing
    def put(
        self,
        fkey: FileKey,
        tensor: str,
        analyzer: str,
        version: str,
        opts: str,
        fragment: TensorResult,
    ) -> None:
        """Store one analyzer's fragment (committed at once, or retried later off the caller's
        thread when another process holds the lock). Never raises for a cache problem."""
        if self.read_only or self._closed:
            return
        row: _Row = (fkey.path, fkey.size, fkey.mtime_ns, tensor, analyzer, version, opts,
                     fragment_to_json(fragment), time.time())
        key = (fkey.path, tensor, analyzer, version, opts)
        with self._plock:
            if self._pending:  # a lock was met: queue behind it, do not wait again
                self._pending[key] = row
                self._start_retry_locked()
                return
        err: sqlite3.DatabaseError | None = None
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute(_INSERT, row)
                return
            except sqlite3.DatabaseError as exc:
                err = exc
        if _is_busy(err):
            self._set_contended()
            with self._plock:
                self._pending[key] = row
                self._start_retry_locked()
        else:
            self._problem(err, "saving a result")

    def pending(self) -> int:
        """Writes waiting for a lock."""
        with self._plock:
            return len(self._pending)

    def _start_retry_locked(self) -> None:
        if self._retry is None or not self._retry.is_alive():
            self._retry = threading.Thread(target=self._retry_loop, name="wstui-cache-retry",
                                           daemon=True)
            self._retry.start()

    def _retry_loop(self) -> None:
        while not self._closed:
            time.sleep(RETRY_EVERY_S)
            if self._write_pending(CONTENDED_TIMEOUT_S):
                return

    def _write_pending(self, wait_s: float) -> bool:
        """One try at writing every queued row in one transaction; True when none is left."""
        with self._plock:
            rows = dict(self._pending)
        if not rows:
            return True
        err: sqlite3.DatabaseError | None = None
        with self._lock:
            conn = self._conn
            if conn is None or self.read_only:  # said already (read-only, not used)
                with self._plock:
                    self._pending.clear()
                return True
            else:
                try:
                    conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(_INSERT, list(rows.values()))
                    conn.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    err = exc
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute(f"PRAGMA busy_timeout={int(CONTENDED_TIMEOUT_S * 1000)}")
        if err is not None and _is_busy(err):
            return False
        with self._plock:
            for k, r in rows.items():
                if self._pending.get(k) is r:
                    del self._pending[k]
            left = len(self._pending)
        if err is not None:
            self._dropped(len(rows), str(err))
            if not _is_busy(err):
                self._problem(err, "saving results")
        return left == 0

    def _dropped(self, n: int, why: str) -> None:
        self._notice(f"{n} results not saved in the result cache {self.path} ({why})")

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Write what waits for a lock, waiting for it at most `timeout_s`; drop the rest with
        a notice (they are computed again next time)."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            left = deadline - time.monotonic()
            if self._write_pending(max(0.0, min(left, 0.5))):
                return
            if time.monotonic() >= deadline:
                with self._plock:
                    n = len(self._pending)
                    self._pending.clear()
                self._dropped(n, "locked by another process")
                return

    # ------------------------------------------------------------------------ misc
    def count(self) -> int:
        with self._lock:
            if self._conn is None:
                return 0
            return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def clear(self) -> None:
        with self._plock:
            self._pending.clear()
        with self._lock:
            if self._conn is not None:
                self._conn.execute("DELETE FROM results")
