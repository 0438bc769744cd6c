"""The results store: every evaluated design's row, keyed by (case hash, design hash, version).

Approach: plain SQL through the standard library's ``sqlite3`` (embedded, the default: one
file beside the exports, WAL journal so readers never block the writer) or PostgreSQL through
psycopg 3 (``postgresql://`` URLs, for a platform shared by many machines). Both speak the same
three tables, so one class holds the logic and only the connection and the placeholder differ:

- ``results(case_sha256, design_key, version, design, design_sha256, status, row, timestamp)``,
  primary key (case_sha256, design_key, version). ``row`` is the JSON of the whole result row
  (the exports' columns). ``design_key`` is the design's SHA-256 (every file it reads), or
  ``name:<file name>`` for a design refused before it could be hashed. One transaction per
  row, written as an upsert: a rerun replaces an error row and never duplicates one; a design
  evaluated by another package version keeps its earlier rows (history across versions).
- ``claims(case_sha256, design_key, version, owner, host, pid, claimed_at)``: an evaluator
  claims a design in a transaction before it computes it, and the row's transaction deletes the
  claim. A claim whose owner process is gone (same host: the pid is not alive; another host: older
  than ``stale_after`` seconds) may be taken over, so a killed evaluator's designs are redone by
  the next run and two live evaluators never compute one design twice.
- ``cases(case_sha256, name, first_seen)``: the case files seen, for the dashboard.

Failures of the store itself (full disk, read-only path, a server that went away) raise
:class:`StoreError` with one line saying what and where; rows already committed are kept, and
the design whose row could not be written is simply redone by the next run.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ._version import __version__
from .errors import LightweightError

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS results (
        case_sha256 TEXT NOT NULL, design_key TEXT NOT NULL, version TEXT NOT NULL,
        design TEXT NOT NULL, design_sha256 TEXT, status TEXT NOT NULL, row TEXT NOT NULL,
        timestamp TEXT NOT NULL, writer TEXT NOT NULL, PRIMARY KEY (case_sha256, design_key, version))""",
    """CREATE TABLE IF NOT EXISTS claims (
        case_sha256 TEXT NOT NULL, design_key TEXT NOT NULL, version TEXT NOT NULL,
        owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, claimed_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (case_sha256, design_key, version))""",
    """CREATE TABLE IF NOT EXISTS cases (
        case_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, first_seen TEXT NOT NULL)""",
]


def _now() -> str:
    """UTC time as ISO text that sorts as time (the store's ``timestamp`` column: when stored)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class StoreError(LightweightError):
    """The results store cannot be opened or written (full disk, read-only, server gone)."""


def open_store(location, version: str = __version__) -> "ResultStore":
    """A store from a path (SQLite), a ``postgresql://`` URL, or an open ResultStore (returned as is)."""
    if isinstance(location, ResultStore):
        return location
    text = os.fspath(location)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text, version=version)
    return SQLiteStore(text, version=version)


class ResultStore:
    """Rows by (case, design, version) with claims; subclasses give the connection."""

    placeholder = "?"
    where = ""

    def __init__(self, version: str = __version__):
        self.version = version
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # -------------------------------------------------------------- subclass hooks
    def _transaction(self):
        raise NotImplementedError

    def _failed(self, exc: Exception, doing: str) -> StoreError:
        return StoreError(f"results store {self.where}: cannot {doing}: {exc}")

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _run(self, doing: str, work):
        """Run ``work(cursor)`` in one transaction; StoreError on any failure of the store."""
        try:
            with self._transaction() as cursor:
                return work(cursor)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - sqlite3/psycopg raise many types; one clear line
            raise self._failed(exc, doing) from None

    # -------------------------------------------------------------- rows
    def register_case(self, case_sha256: str, name: str) -> None:
        """Remember a case file's name for the dashboard (first name wins)."""
        now = _now()
        self._run("register the case", lambda cur: cur.execute(self._sql(
            "INSERT INTO cases (case_sha256, name, first_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (case_sha256) DO NOTHING"), (case_sha256, name, now)))

    def put(self, case_sha256: str, design_key: str, row: dict, owner: str | None = None) -> None:
        """Insert or replace one row (and drop the claim on it) in one transaction."""
        text = json.dumps(row, sort_keys=True, allow_nan=True)

        def work(cur):
            cur.execute(self._sql(
                "INSERT INTO results (case_sha256, design_key, version, design, design_sha256, status, row, "
                "timestamp, writer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_sha256, design_key, "
                "version) DO UPDATE SET design = excluded.design, design_sha256 = excluded.design_sha256, "
                "status = excluded.status, row = excluded.row, timestamp = excluded.timestamp, "
                "writer = excluded.writer"),
                (case_sha256, design_key, self.version, str(row.get("design", "")), row.get("design_sha256"),
                 str(row.get("status", "error")), text, _now(), self.owner))
            cur.execute(self._sql("DELETE FROM claims WHERE case_sha256 = ? AND design_key = ? AND version = ?"),
                        (case_sha256, design_key, self.version))
        self._run("write a result row (is the disk full or the path read-only?)", work)

    def get(self, case_sha256: str, design_key: str) -> dict | None:
        """The row of this version for a design, or None."""
        def work(cur):
            cur.execute(self._sql("SELECT row FROM results WHERE case_sha256 = ? AND design_key = ? "
                                  "AND version = ?"), (case_sha256, design_key, self.version))
            found = cur.fetchone()
            return None if found is None else json.loads(found[0])
        return self._run("read a result row", work)

    def finished(self, case_sha256: str, design_key: str, since: str) -> dict | None:
        """The row of a design nobody holds a claim on that is ok or was stored since ``since``."""
        def work(cur):
            cur.execute(self._sql("SELECT r.row, r.status, r.timestamp, r.writer FROM results r WHERE r.case_sha256 = ? "
                                  "AND r.design_key = ? AND r.version = ? AND NOT EXISTS (SELECT 1 FROM claims c "
                                  "WHERE c.case_sha256 = r.case_sha256 AND c.design_key = r.design_key "
                                  "AND c.version = r.version)"), (case_sha256, design_key, self.version))
            found = cur.fetchone()
            if found is None or not (found[1] == "ok" or found[2] >= since or self._writer_alive(found[3])):
                return None
            return json.loads(found[0])
        return self._run("read a result row", work)

    def rows(self, case_sha256: str | None = None, version: str | None = None) -> list[dict]:
        """Every stored row (all versions unless ``version``), by case, design name and version."""
        query, args = "SELECT row, version FROM results", []
        conditions = []
        if case_sha256 is not None:
            conditions.append("case_sha256 = ?")
            args.append(case_sha256)
        if version is not None:
            conditions.append("version = ?")
            args.append(version)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        query += " ORDER BY case_sha256, design, version"

        def work(cur):
            cur.execute(self._sql(query), tuple(args))
            out = []
            for text, row_version in cur.fetchall():
                row = json.loads(text)
                row["version"] = row_version
                out.append(row)
            return out
        return self._run("read the results", work)

    def cases(self) -> dict[str, str]:
        """{case_sha256: case file name} of every case seen."""
        def work(cur):
            cur.execute("SELECT case_sha256, name FROM cases")
            return dict(cur.fetchall())
        return self._run("read the cases", work)

    # -------------------------------------------------------------- claims
    def _alive(self, host: str, pid: int, claimed_at: float, stale_after: float) -> bool:
        if host == self.host:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return time.time() - claimed_at < stale_after

    def _writer_alive(self, writer: str) -> bool:
        """Whether a row was written by another evaluator that is still running (a concurrent run:
        its rows, error rows too, are this run's rows)."""
        host, _, rest = writer.partition(":")
        pid = rest.partition(":")[0]
        return (writer != self.owner and host == self.host and pid.isdigit() and int(pid) != os.getpid()
                and self._alive(host, int(pid), 0, 0))

    def claim(self, case_sha256: str, design_key: str, stale_after: float = 3600.0,
              unless_done: bool = True, done_since: str | None = None) -> bool:
        """Take a design for this evaluator; False if a live evaluator holds it, or if a row of this
        version exists that is ok (with ``unless_done``) or written since ``done_since`` (an ISO UTC
        time: the start of this run, so a row another evaluator just wrote counts as done)."""
        key = (case_sha256, design_key, self.version)

        def work(cur):
            cur.execute(self._sql("SELECT status, timestamp, writer FROM results WHERE case_sha256 = ? "
                                  "AND design_key = ? AND version = ?"), key)
            found = cur.fetchone()
            if found is not None and ((unless_done and found[0] == "ok")
                                      or (done_since is not None and found[1] >= done_since)
                                      or self._writer_alive(found[2])):
                return False
            cur.execute(self._sql(
                "INSERT INTO claims (case_sha256, design_key, version, owner, host, pid, claimed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_sha256, design_key, version) DO NOTHING"),
                key + (self.owner, self.host, os.getpid(), time.time()))
            if cur.rowcount == 1:
                return True
            cur.execute(self._sql("SELECT owner, host, pid, claimed_at FROM claims WHERE case_sha256 = ? "
                                  "AND design_key = ? AND version = ?" + self._lock_clause), key)
            owner, host, pid, claimed_at = cur.fetchone()
            if owner != self.owner and self._alive(host, pid, claimed_at, stale_after):
                return False
            cur.execute(self._sql("UPDATE claims SET owner = ?, host = ?, pid = ?, claimed_at = ? "
                                  "WHERE case_sha256 = ? AND design_key = ? AND version = ?"),
                        (self.owner, self.host, os.getpid(), time.time()) + key)
            return True
        return self._run("claim a design", work)

    _lock_clause = ""

    def claim_holder(self, case_sha256: str, design_key: str) -> str | None:
        """The owner of the claim on a design, or None."""
        def work(cur):
            cur.execute(self._sql("SELECT owner FROM claims WHERE case_sha256 = ? AND design_key = ? "
                                  "AND version = ?"), (case_sha256, design_key, self.version))
            found = cur.fetchone()
            return None if found is None else found[0]
        return self._run("read a claim", work)

    def release_claims(self) -> None:
        """Drop this evaluator's claims (designs it did not finish are free for others)."""
        self._run("release claims", lambda cur: cur.execute(
            self._sql("DELETE FROM claims WHERE owner = ?"), (self.owner,)))

    def close(self) -> None:
        raise NotImplementedError


class _SQLiteTransaction:
    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self):
        self.cursor = self.connection.cursor()
        self.cursor.execute("BEGIN IMMEDIATE")     # the write lock up front: claims are serialized
        return self.cursor

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                self.connection.execute("COMMIT")
            else:
                self.connection.execute("ROLLBACK")
        finally:
            self.cursor.close()
        return False


OPEN_TIMEOUT = 60.0
"""Seconds an evaluator keeps retrying to open a store that other evaluators hold locked."""


def _open_sqlite(path: Path, max_pages: int | None, timeout: float) -> sqlite3.Connection:
    """A connection to the store file in WAL mode with the schema made, retried while it is locked.

    Several evaluators started together open one new file at the same instant: switching the
    journal to WAL and creating the tables need the write lock, and SQLite answers "database is
    locked" at once (without its busy wait) when two connections race for that first switch. So
    the whole opening is retried with a growing pause until ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        connection = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        try:
            # WAL is a property of the file: only the first opener needs the exclusive switch
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            if max_pages is not None:    # tests: a store that fills up like a full disk
                connection.execute(f"PRAGMA max_page_count={int(max_pages)}")
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA:
                    connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:     # SQLite may have rolled back already (full disk)
                    connection.execute("ROLLBACK")
                raise
            return connection
        except sqlite3.OperationalError as exc:
            connection.close()
            message = str(exc).lower()
            if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.25)
        except BaseException:
            connection.close()
            raise


class SQLiteStore(ResultStore):
    """The store in one SQLite file (WAL journal, one transaction per row)."""

    def __init__(self, path, version: str = __version__, max_pages: int | None = None):
        super().__init__(version)
        self.path = Path(path)
        self.where = os.fsencode(self.path).decode("utf-8", "backslashreplace")
        if self.path.is_dir():
            raise StoreError(f"results store {self.where} is a folder; name a file such as results.sqlite")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = _open_sqlite(self.path, max_pages, OPEN_TIMEOUT)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"results store {self.where}: cannot open it: {exc} (is the path writable "
                             f"and the disk not full?)") from None

    def _transaction(self):
        return _SQLiteTransaction(self.connection)

    def close(self) -> None:
        self.connection.close()


class PostgresStore(ResultStore):
    """The store on a PostgreSQL server (psycopg 3), for a platform shared by many machines."""

    placeholder = "%s"
    _lock_clause = " FOR UPDATE"

    def __init__(self, url: str, version: str = __version__):
        super().__init__(version)
        try:
            import psycopg
        except ImportError:
            raise StoreError("a postgresql:// store needs psycopg: pip install 'lightweight[postgres]'") from None
        # never print the password: the host and database name say where
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        self.where = f"postgresql://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        try:
            self.connection = psycopg.connect(url, autocommit=False, connect_timeout=30)
            with self.connection.transaction():
                with self.connection.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(70711)")   # one schema creator at a time
                    for statement in SCHEMA:
                        cur.execute(statement)
        except Exception as exc:  # noqa: BLE001 - psycopg.OperationalError and friends
            raise StoreError(f"results store {self.where}: cannot open it: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None

    def _transaction(self):
        connection = self.connection

        class _Transaction:
            def __enter__(self_inner):
                self_inner.tx = connection.transaction()
                self_inner.tx.__enter__()
                self_inner.cursor = connection.cursor()
                return self_inner.cursor

            def __exit__(self_inner, kind, value, traceback):
                self_inner.cursor.close()
                return self_inner.tx.__exit__(kind, value, traceback)
        return _Transaction()

    def close(self) -> None:
        self.connection.close()
