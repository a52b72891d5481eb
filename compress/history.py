"""Results history: every report appended to an embedded SQLite database, for trends and for
"no worse than the last accepted run".

Rows are keyed by model hash (sha256 of the checkpoint the candidate was made from) and recipe hash
(sha256 of the passes and their settings, as recorded in the report), so runs of the same recipe on
the same model form one trend. Several processes may write at once: the database runs in WAL mode
with a busy timeout, and each row is one transaction, so a row is either fully there or not at all.
The schema is versioned (PRAGMA user_version) and migrated forward on open.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress._version import __version__
from compress.errors import BadInput
from compress.report import Report

DEFAULT_PATH = Path(".compress") / "history.db"
ENV_VAR = "COMPRESS_HISTORY"

# Migration n brings a database from user_version n to n + 1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recorded TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        command TEXT NOT NULL,
        model_sha256 TEXT NOT NULL,
        model_name TEXT,
        recipe_sha256 TEXT NOT NULL,
        report_sha256 TEXT NOT NULL,
        tool_version TEXT NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX runs_by_key ON runs (model_sha256, recipe_sha256, id);
    """,
    """
    ALTER TABLE runs ADD COLUMN gate_status TEXT CHECK (gate_status IN ('pass', 'fail'));
    ALTER TABLE runs ADD COLUMN verdict TEXT;
    CREATE INDEX runs_by_report ON runs (report_sha256);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def default_history_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def recipe_sha256(report: Report) -> str:
    """The recipe hash: the passes and their settings that made the candidate."""
    return canonical_sha256(report.candidate.get("recipe") or [])


class UnknownModel(BadInput):
    """The report does not say which model the candidate was made from."""


def model_sha256(report: Report) -> str:
    """The model hash: the checkpoint the candidate was made from (else the baseline file)."""
    from compress.checkpoint import sha256_file

    known = report.candidate.get("source_sha256")
    if known:
        return known
    path = report.baseline.get("path")
    if path and Path(path).is_file():
        return sha256_file(Path(path))
    if report.baseline.get("state_sha256"):  # a model built in code: the hash of its tensors
        return report.baseline["state_sha256"]
    raise UnknownModel(
        "the report does not say which model the candidate was made from (no source_sha256, and its "
        f"baseline file {path!r} is not here)."
    )


@dataclass
class Run:
    """One row of the history."""

    id: int
    recorded: str
    command: str
    model_sha256: str
    model_name: str | None
    recipe_sha256: str
    report_sha256: str
    gate_status: str | None
    report: dict
    verdict: dict | None

    def load_report(self) -> Report:
        return Report.from_dict(self.report, f"history run #{self.id}")

    def label(self) -> str:
        return f"run #{self.id} of {self.recorded} ({self.command})"


class History:
    """A history database at `path` (created on first write, with its folder).

    Example:
        >>> from compress.history import History
        >>> h = History(".compress/history.db")                        # doctest: +SKIP
        >>> h.append(report, command="notebook")                        # doctest: +SKIP
        >>> [r.gate_status for r in h.runs(model_sha256(report))]        # doctest: +SKIP
    """

    def __init__(self, path: str | Path | None = None, timeout: float = 30.0):
        self.path = Path(path) if path is not None else default_history_path()
        self.timeout = timeout

    # ---- writing ------------------------------------------------------------------------------
    def append(
        self,
        report: Report,
        *,
        command: str,
        model: str | None = None,
        verdict: Any | None = None,
    ) -> int:
        """Append one report (with its gate verdict, if any) as one row; returns the row id."""
        data = report.to_dict()
        row = (
            command,
            model or model_sha256(report),
            report.baseline.get("name"),
            recipe_sha256(report),
            canonical_sha256(data),
            __version__,
            json.dumps(data),
            _status(verdict),
            json.dumps(verdict.to_dict()) if verdict is not None else None,
        )
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (command, model_sha256, model_name, recipe_sha256, report_sha256, "
                "tool_version, report, gate_status, verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid)

    def record_verdict(self, report: Report, verdict: Any, *, command: str = "gate") -> int:
        """Store a gate verdict on the report's latest row, appending the report if it is not there."""
        digest = canonical_sha256(report.to_dict())
        with self._write() as db:
            found = db.execute(
                "SELECT id FROM runs WHERE report_sha256 = ? ORDER BY id DESC LIMIT 1", (digest,)
            ).fetchone()
            if found:
                db.execute(
                    "UPDATE runs SET gate_status = ?, verdict = ? WHERE id = ?",
                    (_status(verdict), json.dumps(verdict.to_dict()), found[0]),
                )
                return int(found[0])
        return self.append(report, command=command, verdict=verdict)

    def check(self) -> None:
        """Open (creating or migrating) the database once: BadInput now if it is locked or corrupt."""
        with self._write():
            pass

    # ---- reading ------------------------------------------------------------------------------
    def runs(
        self, model: str | None = None, recipe: str | None = None, limit: int | None = None
    ) -> list[Run]:
        """Runs oldest first, for one model (and recipe) when given; the last `limit` of them."""
        where, args = _filter(model, recipe)
        sql = f"SELECT {_COLUMNS} FROM runs {where} ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._read() as db:
            rows = [] if db is None else db.execute(sql, args).fetchall()
        return [_run(r) for r in reversed(rows)]

    def last_accepted(self, model: str, recipe: str, *, exclude_report: str | None = None) -> Run | None:
        """The latest run of this model and recipe that passed its gate (not the report itself)."""
        sql = (
            f"SELECT {_COLUMNS} FROM runs WHERE model_sha256 = ? AND recipe_sha256 = ? "
            "AND gate_status = 'pass' AND report_sha256 != ? ORDER BY id DESC LIMIT 1"
        )
        with self._read() as db:
            row = None if db is None else db.execute(sql, (model, recipe, exclude_report or "")).fetchone()
        return _run(row) if row else None

    def models(self) -> list[tuple[str, str | None, int, str]]:
        """(model hash, name, number of runs, last recorded) for every model in the history."""
        sql = (
            "SELECT model_sha256, MAX(model_name), COUNT(*), MAX(recorded) FROM runs "
            "GROUP BY model_sha256 ORDER BY MAX(id)"
        )
        with self._read() as db:
            return [] if db is None else [tuple(r) for r in db.execute(sql).fetchall()]

    # ---- connections --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue up instead of failing mid-way)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            self._migrate(db)
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            yield None
            return
        with self._connect() as db:
            self._migrate(db)
            yield db

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.path.is_dir():
            raise BadInput(f"{self.path}: is a folder; the history is a database file.")
        db = None
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._refuse_foreign(db)  # before WAL mode, which would change another program's file
            db.execute("PRAGMA journal_mode = WAL")
            yield db
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise BadInput(
                    f"{self.path}: the history database is locked by another process (waited "
                    f"{self.timeout:g} s); nothing was written. Try again, or use another --history file."
                ) from None
            raise BadInput(f"{self.path}: cannot use the history database ({exc}).") from None
        except sqlite3.DatabaseError as exc:
            raise BadInput(
                f"{self.path}: is not a readable compress history database ({exc}); it was left as is. "
                "Move it away or use another --history file."
            ) from None
        finally:
            if db is not None:
                db.close()

    def _refuse_foreign(self, db: sqlite3.Connection) -> None:
        """BadInput for an SQLite file that is not a history this compress may change; reads only."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and (version == 0 or "runs" not in tables):
            raise BadInput(f"{self.path}: is an SQLite database but not a compress history; left as is.")
        self._refuse_newer(version)

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BadInput(
                f"{self.path}: history schema version {version} was written by a newer compress "
                f"(this one reads up to {SCHEMA_VERSION}); nothing was changed."
            )

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        self._refuse_newer(version)
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise BadInput(f"{self.path}: is an SQLite database but not a compress history; left as is.")
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


_COLUMNS = (
    "id, recorded, command, model_sha256, model_name, recipe_sha256, report_sha256, gate_status, "
    "report, verdict"
)


def _filter(model: str | None, recipe: str | None) -> tuple[str, tuple]:
    clauses, args = [], []
    if model:
        clauses.append("model_sha256 = ?")
        args.append(model)
    if recipe:
        clauses.append("recipe_sha256 = ?")
        args.append(recipe)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _run(row) -> Run:
    return Run(
        id=row[0],
        recorded=row[1],
        command=row[2],
        model_sha256=row[3],
        model_name=row[4],
        recipe_sha256=row[5],
        report_sha256=row[6],
        gate_status=row[7],
        report=json.loads(row[8]),
        verdict=json.loads(row[9]) if row[9] else None,
    )


def _status(verdict: Any | None) -> str | None:
    if verdict is None:
        return None
    return "pass" if verdict.passed else "fail"
