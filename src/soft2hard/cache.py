"""A SQLite cache of model responses, so that re-running an evaluation never sends the same request twice.

The key is the SHA-256 of a canonical JSON of everything that determines the answer: endpoint (for a server that
soft2hard starts, the model file and server settings instead of its port), model, the prompt or chat messages,
and the sampling parameters. API keys are never part of the key or the stored row.
Writes are one transaction each (WAL journal), so a process killed mid-run leaves every finished response in
place; a corrupt database file is reported as a one-line error naming it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from soft2hard.errors import Soft2HardError

SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now')))"""


def request_key(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


# what a damaged or foreign file raises: SQLite's errors, and UnicodeDecodeError where SQLite's own message quotes
# bytes that are not UTF-8 (a garbled schema)
_DB_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)


def _one_line(err: Exception) -> str:
    """SQLite's message on one line (a row that is not UTF-8 is quoted in it, newlines and all)."""
    return " ".join(str(err).split()) or type(err).__name__


class ResponseCache:
    """Thread-safe get/put of text responses keyed by the request dict."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = None
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.commit()
        except _DB_ERRORS as err:
            if self._db is not None:
                self._db.close()
            raise Soft2HardError(f"{self.path}: not a usable response cache ({_one_line(err)}); move it away to "
                                 "start afresh") from None

    def _unreadable(self, err: Exception) -> Soft2HardError:
        return Soft2HardError(f"{self.path}: unreadable response cache ({_one_line(err)}); move it away to start "
                              "afresh")

    def get(self, request: dict) -> str | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT response FROM responses WHERE key = ?",
                                       (request_key(request),)).fetchone()
            except _DB_ERRORS as err:  # a damaged file, another schema, text that is not UTF-8
                raise self._unreadable(err) from None
        if row is None:
            return None
        if not isinstance(row[0], str):
            raise Soft2HardError(f"{self.path}: a cached response is not text; move the cache away")
        return row[0]

    def put(self, request: dict, response: str) -> None:
        with self._lock:
            try:
                with self._db:
                    self._db.execute("INSERT OR REPLACE INTO responses (key, request, response) VALUES (?, ?, ?)",
                                     (request_key(request), json.dumps(request, sort_keys=True), response))
            except _DB_ERRORS as err:
                raise self._unreadable(err) from None

    def __len__(self) -> int:
        with self._lock:
            try:
                return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
            except _DB_ERRORS as err:
                raise self._unreadable(err) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()
