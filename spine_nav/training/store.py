"""Training sessions kept in SQLite (stdlib ``sqlite3``; no ROS).

One database file (``--db``), WAL journal so a second trainee session (another process) can write at the
same time: each write is one short transaction, a writer that finds the file locked waits up to
``busy_timeout_s`` (SQLite's busy handler) instead of failing, so nothing is lost.

Schema (version 1)::

    trainee(id, name UNIQUE, created_s)
    train_case(id, case_dir, seed, variant, ground_truth, UNIQUE(case_dir, seed, variant))
    attempt(id, trainee_id, case_id, mode, source, started_s, ended_s, status)   status: unfinished | finished
    screw_result(id, attempt_id, screw_id, level, status, entry_error_mm, tip_error_mm, angular_error_deg,
                 breach_mm, gr_grade, grade_basis, grade_note, time_to_place_s, guard_violations,
                 depth_overruns, tip_ref_mm (json), axis_ref (json), ended_s)
    tool_sample(attempt_id, t_s, screw_id, x_mm, y_mm, z_mm, ax, ay, az)   the attempt's tool stream:
                 tool tip and shaft axis in Reference (mm), t_s from the attempt's start

An attempt is written as ``unfinished`` when it starts; its tool stream and screws are written as they
happen; only a clean end marks it ``finished``. A session that dies (page closed mid-screw, process
killed) leaves it ``unfinished``, with everything recorded up to then.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trainee(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS train_case(
    id INTEGER PRIMARY KEY, case_dir TEXT NOT NULL, seed INTEGER, variant TEXT NOT NULL,
    ground_truth INTEGER NOT NULL, UNIQUE(case_dir, seed, variant));
CREATE TABLE IF NOT EXISTS attempt(
    id INTEGER PRIMARY KEY, trainee_id INTEGER NOT NULL REFERENCES trainee(id),
    case_id INTEGER NOT NULL REFERENCES train_case(id), mode TEXT NOT NULL, source TEXT NOT NULL,
    started_s REAL NOT NULL, ended_s REAL, status TEXT NOT NULL DEFAULT 'unfinished');
CREATE TABLE IF NOT EXISTS screw_result(
    id INTEGER PRIMARY KEY, attempt_id INTEGER NOT NULL REFERENCES attempt(id), screw_id TEXT NOT NULL,
    level TEXT NOT NULL, status TEXT NOT NULL, entry_error_mm REAL, tip_error_mm REAL, angular_error_deg REAL,
    breach_mm REAL, gr_grade TEXT, grade_basis TEXT, grade_note TEXT, time_to_place_s REAL,
    guard_violations INTEGER, depth_overruns INTEGER, tip_ref_mm TEXT, axis_ref TEXT, ended_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tool_sample(
    attempt_id INTEGER NOT NULL REFERENCES attempt(id), t_s REAL NOT NULL, screw_id TEXT NOT NULL,
    x_mm REAL NOT NULL, y_mm REAL NOT NULL, z_mm REAL NOT NULL, ax REAL NOT NULL, ay REAL NOT NULL, az REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tool_sample_attempt ON tool_sample(attempt_id, t_s);
CREATE INDEX IF NOT EXISTS screw_result_attempt ON screw_result(attempt_id);
"""

SCREW_FIELDS = ("screw_id", "level", "status", "entry_error_mm", "tip_error_mm", "angular_error_deg", "breach_mm",
                "gr_grade", "grade_basis", "grade_note", "time_to_place_s", "guard_violations", "depth_overruns")


class StoreError(RuntimeError):
    """The database file cannot be used (message names the file)."""


def _is_lock_contention(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED (primary code; Python 3.11+ puts SQLite's code on the exception): another
    connection holds the file for now, worth waiting for."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


@dataclass(frozen=True)
class ToolSample:
    t_s: float
    screw_id: str
    tip_mm: tuple[float, float, float]   # Reference
    axis: tuple[float, float, float]     # Reference, unit, toward the tip


class SessionStore:
    """One connection per process/thread (``check_same_thread`` stays on unless ``any_thread``: then the
    caller serialises its use); every write is a transaction."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0, any_thread: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"--db {self.path}: is a directory")
        # SQLite does not always call its busy handler: switching a new file to WAL while another process opens it
        # too returns "database is locked" at once (4 processes opening one new file: 6 of 100 trials failed so, as
        # `spine-nav train` twice at the same time did in tests/test_train_cli.py). So the whole opening is retried
        # until busy_timeout_s, as the busy handler would have waited; any other error is final at once.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                self._open(busy_timeout_s, any_thread)
                return
            except sqlite3.DatabaseError as exc:
                self._close_quietly()
                if not _is_lock_contention(exc) or time.monotonic() >= deadline:
                    raise StoreError(f"--db {self.path}: not a usable SQLite database ({exc})") from exc
                time.sleep(0.02)
            except StoreError:
                self._close_quietly()
                raise

    def _open(self, busy_timeout_s: float, any_thread: bool) -> None:
        """Connect, WAL journal, create the schema if missing and check its version (one attempt)."""
        # any_thread: the caller serialises all use (the trainee page's requests come from worker threads)
        self.conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                    check_same_thread=not any_thread)
        self.conn.row_factory = sqlite3.Row
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"--db {self.path}: SQLite refused WAL mode (got {mode})")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        with self._tx():
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.conn.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"--db {self.path}: schema version {row[0]}, this spine_nav reads {SCHEMA_VERSION}")

    def _close_quietly(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass
            self.conn = None

    # ------------------------------------------------------------------ writes
    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self_inner):
                store.conn.execute("BEGIN IMMEDIATE")  # take the write lock now (waits busy_timeout)
                return store.conn

            def __exit__(self_inner, exc_type, exc, tb):
                store.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False
        return _Tx()

    def trainee_id(self, name: str) -> int:
        name = (name or "").strip()
        if not name:
            raise StoreError("--trainee: give a non-empty name")
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO trainee(name, created_s) VALUES(?, ?)", (name, time.time()))
            return int(c.execute("SELECT id FROM trainee WHERE name=?", (name,)).fetchone()[0])

    def case_id(self, case_dir: str, seed: int | None, variant: str, ground_truth: bool) -> int:
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO train_case(case_dir, seed, variant, ground_truth) VALUES(?, ?, ?, ?)",
                      (case_dir, seed, variant, int(ground_truth)))
            row = c.execute("SELECT id FROM train_case WHERE case_dir=? AND seed IS ? AND variant=?",
                            (case_dir, seed, variant)).fetchone()
            return int(row[0])

    def start_attempt(self, trainee: str, case: Mapping[str, Any], mode: str, source: str) -> int:
        """A new attempt, ``unfinished`` until :meth:`finish_attempt`. ``case``: training.case.case_key."""
        tid = self.trainee_id(trainee)
        cid = self.case_id(str(case["case_dir"]), case.get("seed"), str(case.get("variant") or "unknown"),
                           bool(case.get("ground_truth")))
        with self._tx() as c:
            cur = c.execute("INSERT INTO attempt(trainee_id, case_id, mode, source, started_s, status) "
                            "VALUES(?, ?, ?, ?, ?, 'unfinished')", (tid, cid, mode, source, time.time()))
            return int(cur.lastrowid)

    def add_samples(self, attempt_id: int, samples: Iterable[ToolSample]) -> int:
        rows = [(attempt_id, float(s.t_s), s.screw_id, *map(float, s.tip_mm), *map(float, s.axis)) for s in samples]
        if rows:
            with self._tx() as c:
                c.executemany("INSERT INTO tool_sample VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def add_screw(self, attempt_id: int, result: Mapping[str, Any], tip_ref_mm: Sequence[float] | None = None,
                  axis_ref: Sequence[float] | None = None) -> int:
        vals = [result.get(k) for k in SCREW_FIELDS]
        with self._tx() as c:
            cur = c.execute(
                f"INSERT INTO screw_result(attempt_id, {', '.join(SCREW_FIELDS)}, tip_ref_mm, axis_ref, ended_s) "
                f"VALUES(?, {', '.join('?' * len(SCREW_FIELDS))}, ?, ?, ?)",
                (attempt_id, *vals, json.dumps(None if tip_ref_mm is None else [float(v) for v in tip_ref_mm]),
                 json.dumps(None if axis_ref is None else [float(v) for v in axis_ref]), time.time()))
            return int(cur.lastrowid)

    def finish_attempt(self, attempt_id: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE attempt SET status='finished', ended_s=? WHERE id=?", (time.time(), attempt_id))

    # ------------------------------------------------------------------ reads
    def attempts(self, trainee: str | None = None) -> list[dict[str, Any]]:
        """Kept attempts (oldest first) with their case and screws."""
        q = ("SELECT a.id, t.name AS trainee, a.mode, a.source, a.started_s, a.ended_s, a.status, "
             "c.case_dir, c.seed, c.variant, c.ground_truth FROM attempt a JOIN trainee t ON t.id=a.trainee_id "
             "JOIN train_case c ON c.id=a.case_id")
        args: tuple = ()
        if trainee is not None:
            q += " WHERE t.name=?"
            args = (trainee,)
        out = []
        for row in self.conn.execute(q + " ORDER BY a.started_s, a.id", args).fetchall():
            a = dict(row)
            a["ground_truth"] = bool(a["ground_truth"])
            a["screws"] = self.screws(a["id"])
            a["tool_samples"] = int(self.conn.execute("SELECT COUNT(*) FROM tool_sample WHERE attempt_id=?",
                                                      (a["id"],)).fetchone()[0])
            out.append(a)
        return out

    def screws(self, attempt_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM screw_result WHERE attempt_id=? ORDER BY id", (attempt_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["tip_ref_mm"] = json.loads(d["tip_ref_mm"]) if d["tip_ref_mm"] else None
            d["axis_ref"] = json.loads(d["axis_ref"]) if d["axis_ref"] else None
            out.append(d)
        return out

    def attempt(self, attempt_id: int) -> dict[str, Any]:
        for a in self.attempts():
            if a["id"] == attempt_id:
                return a
        raise StoreError(f"--attempt {attempt_id}: no such attempt in {self.path}")

    def samples(self, attempt_id: int) -> list[ToolSample]:
        rows = self.conn.execute("SELECT t_s, screw_id, x_mm, y_mm, z_mm, ax, ay, az FROM tool_sample "
                                 "WHERE attempt_id=? ORDER BY t_s, rowid", (attempt_id,)).fetchall()
        return [ToolSample(r[0], r[1], (r[2], r[3], r[4]), (r[5], r[6], r[7])) for r in rows]

    def trainees(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM trainee ORDER BY name").fetchall()]

    def leaderboard(self) -> list[dict[str, Any]]:
        """Per trainee: screws graded, share of grade A, mean tip error (mm), attempts; best first."""
        rows = self.conn.execute(
            "SELECT t.name AS trainee, COUNT(DISTINCT a.id) AS attempts, COUNT(s.id) AS screws, "
            "SUM(CASE WHEN s.gr_grade='A' THEN 1 ELSE 0 END) AS grade_a, AVG(s.tip_error_mm) AS mean_tip_error_mm, "
            "AVG(s.angular_error_deg) AS mean_angular_error_deg "
            "FROM trainee t JOIN attempt a ON a.trainee_id=t.id LEFT JOIN screw_result s ON s.attempt_id=a.id "
            "AND s.status='placed' GROUP BY t.id").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["grade_a_share"] = (d["grade_a"] / d["screws"]) if d["screws"] else None
            out.append(d)
        out.sort(key=lambda d: (-(d["grade_a_share"] or 0.0), d["mean_tip_error_mm"] if d["mean_tip_error_mm"]
                                is not None else float("inf")))
        return out

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
