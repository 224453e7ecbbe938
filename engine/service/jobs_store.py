"""Jobs and their states in one SQLite file (WAL mode): the queue survives a killed server.

The table is the queue: pending jobs run in ``seq`` order (the autoincrement key, so submission order).
States and moves::

    pending --claim--> in_progress --finish--> succeeded | failed | canceled --expire--> expired
       |                    |  ^
       +--cancel--> canceled  +--requeue (shutdown, server restart)--> pending

Durability: WAL with ``synchronous=FULL``, so a job answered 202 is on disk before the answer leaves
(power loss included). Live progress (stage, percent) is not stored: it changes many times a second and a
job interrupted by a restart starts over.

Reads on the hot path (a job by id, queue positions, the pending count) come from an in-memory mirror
written through by every write, never from SQLite: the server is the file's only writer (its data folder
is locked), and a SQLite read releases and retakes the GIL, which under load queues it behind the request
threads (5-17 ms tails measured for a sub-millisecond read). The mirror keeps the ``MIRROR_JOBS`` most
recently written jobs and every pending job's place; an older job is read from SQLite. One writer
connection behind a lock; each reading thread has its own connection.
"""

from __future__ import annotations

import bisect
import enum
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


class JobState(enum.Enum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.PENDING, JobState.IN_PROGRESS)


FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)
MIRROR_JOBS = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    options TEXT NOT NULL,
    picture TEXT NOT NULL,
    timeout_s REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq);
"""


@dataclass(frozen=True)
class Job:
    """One stored job. ``options``: the JobOptions as a dict; ``result``: the runner's summary once
    succeeded; ``picture``: the upload's file name inside the job's folder."""

    seq: int
    id: str
    idempotency_key: str | None
    fingerprint: str
    state: JobState
    options: dict
    picture: str
    timeout_s: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    cancel_requested: bool
    error: str | None
    result: dict | None

    @staticmethod
    def from_row(row: sqlite3.Row) -> Job:
        return Job(seq=row["seq"], id=row["id"], idempotency_key=row["idempotency_key"],
                   fingerprint=row["fingerprint"], state=JobState(row["state"]),
                   options=json.loads(row["options"]), picture=row["picture"], timeout_s=row["timeout_s"],
                   created_at=row["created_at"], started_at=row["started_at"],
                   finished_at=row["finished_at"], attempts=row["attempts"],
                   cancel_requested=bool(row["cancel_requested"]), error=row["error"],
                   result=json.loads(row["result"]) if row["result"] else None)


class QueueFull(Exception):
    """The bounded queue holds ``pending`` jobs already (the API answers 429)."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"{pending} jobs pending")
        self.pending = pending


class JobStore:
    """The jobs table (module docstring). Safe to use from many threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._writer = self._connect()
        mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite at {self.path} refused WAL mode (got {mode})")
        self._writer.execute("PRAGMA synchronous=FULL")
        self._writer.executescript(_SCHEMA)
        self._mirror: OrderedDict[str, Job] = OrderedDict()  # most recently written last
        self._pending: list[int] = []  # seqs of pending jobs, sorted
        self._mirror_lock = threading.Lock()  # short: dict and list operations only
        self._reload_pending()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._writer.close()

    # ------------------------------------------------------------------------------------------ mirror
    def _mirrored(self, rows) -> list[Job]:
        """Record written rows in the mirror (called with the write lock held, so in commit order)."""
        jobs = [Job.from_row(row) for row in rows if row is not None]
        with self._mirror_lock:
            for job in jobs:
                old = self._mirror.pop(job.id, None)
                if old is not None and old.state is JobState.PENDING and job.state is not JobState.PENDING:
                    self._drop_pending(job.seq)
                elif job.state is JobState.PENDING and (old is None or old.state is not JobState.PENDING):
                    bisect.insort(self._pending, job.seq)
                self._mirror[job.id] = job
            while len(self._mirror) > MIRROR_JOBS:
                self._mirror.popitem(last=False)
        return jobs

    def _drop_pending(self, seq: int) -> None:
        i = bisect.bisect_left(self._pending, seq)
        if i < len(self._pending) and self._pending[i] == seq:
            del self._pending[i]

    def _reload_pending(self) -> None:
        """The mirror rebuilt from the file (start-up, recovery): pending jobs and the newest others."""
        rows = self._writer.execute("SELECT * FROM jobs WHERE state IN ('pending', 'in_progress') "
                                    "UNION SELECT * FROM (SELECT * FROM jobs ORDER BY seq DESC LIMIT ?) "
                                    "ORDER BY seq", (MIRROR_JOBS // 2,)).fetchall()
        with self._mirror_lock:
            self._mirror.clear()
            self._pending = []
        self._mirrored(rows)

    # ------------------------------------------------------------------------------------------- reads
    def get(self, job_id: str) -> Job | None:
        with self._mirror_lock:
            job = self._mirror.get(job_id)
        if job is not None:
            return job
        row = self._reader().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def by_key(self, key: str) -> Job | None:
        row = self._reader().execute("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
        return Job.from_row(row) if row else None

    def queue_position(self, job: Job) -> int:
        """1 for the next pending job to run, 2 for the one after, ...; 0 when not pending."""
        if job.state is not JobState.PENDING:
            return 0
        with self._mirror_lock:
            return bisect.bisect_left(self._pending, job.seq) + 1

    def pending(self) -> int:
        with self._mirror_lock:
            return len(self._pending)

    def counts(self) -> dict[JobState, int]:
        rows = self._reader().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        found = {JobState(state): n for state, n in rows}
        return {state: found.get(state, 0) for state in JobState}

    def ids(self) -> set[str]:
        return {row[0] for row in self._reader().execute("SELECT id FROM jobs")}

    # ------------------------------------------------------------------------------------------ writes
    def insert(self, *, job_id: str, key: str | None, fingerprint: str, options: dict, picture: str,
               timeout_s: float, queue_size: int) -> tuple[Job, bool]:
        """Add a pending job. Returns (job, True), or (the job already holding ``key``, False).
        Raises ``QueueFull`` when ``queue_size`` jobs are pending."""
        with self._lock:
            if key is not None:
                row = self._writer.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
                if row:
                    return Job.from_row(row), False
            pending = self.pending()
            if pending >= queue_size:
                raise QueueFull(pending)
            row = self._writer.execute(
                "INSERT INTO jobs (id, idempotency_key, fingerprint, state, options, picture, timeout_s, "
                "created_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) RETURNING *",
                (job_id, key, fingerprint, json.dumps(options), picture, timeout_s, time.time())).fetchone()
            job = self._mirrored([row])[0]
        return job, True

    def claim_next(self) -> Job | None:
        """The oldest pending job, moved to in_progress (attempts + 1); None when none is pending."""
        with self._lock:
            row = self._writer.execute(
                "UPDATE jobs SET state = 'in_progress', started_at = ?, attempts = attempts + 1 "
                "WHERE seq = (SELECT seq FROM jobs WHERE state = 'pending' ORDER BY seq LIMIT 1) RETURNING *",
                (time.time(),)).fetchone()
            jobs = self._mirrored([row])
        return jobs[0] if jobs else None

    def finish(self, job_id: str, state: JobState, *, error: str | None = None,
               result: dict | None = None) -> Job | None:
        """An in-progress job's outcome (``FINISHED`` states); None if it was not in progress."""
        assert state in FINISHED, state
        with self._lock:
            row = self._writer.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = ?, result = ? "
                "WHERE id = ? AND state = 'in_progress' RETURNING *",
                (state.value, time.time(), error, json.dumps(result) if result else None, job_id)).fetchone()
            jobs = self._mirrored([row])
        return jobs[0] if jobs else None

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a pending one at once (state canceled), an in-progress one is flagged
        (``cancel_requested``; the worker stops it at its next stage boundary). Returns the job after."""
        with self._lock:
            self._writer.execute(
                "UPDATE jobs SET state = 'canceled', finished_at = ?, error = 'canceled before it started' "
                "WHERE id = ? AND state = 'pending'", (time.time(), job_id))
            self._writer.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'in_progress'", (job_id,))
            row = self._writer.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            jobs = self._mirrored([row])
        return jobs[0] if jobs else None

    def requeue(self, job_id: str) -> None:
        """An in-progress job goes back to the head of the queue (its seq keeps its place)."""
        with self._lock:
            row = self._writer.execute(
                "UPDATE jobs SET state = 'pending', started_at = NULL WHERE id = ? AND state = 'in_progress' "
                "RETURNING *", (job_id,)).fetchone()
            self._mirrored([row])

    def recover(self, max_attempts: int) -> dict[str, int]:
        """After a restart: jobs left in progress run again (pending), unless they were being canceled
        (canceled) or have been interrupted ``max_attempts`` times (failed). Returns what was done."""
        now = time.time()
        with self._lock:
            self._writer.execute("BEGIN IMMEDIATE")
            canceled = self._writer.execute(
                "UPDATE jobs SET state = 'canceled', finished_at = ?, error = 'canceled' "
                "WHERE state = 'in_progress' AND cancel_requested = 1", (now,)).rowcount
            failed = self._writer.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = 'the server stopped while this "
                "job ran ' || attempts || ' times (fix: submit a smaller job, e.g. lower faces or "
                "texture_size, and report it if it repeats)' WHERE state = 'in_progress' AND attempts >= ?",
                (now, max_attempts)).rowcount
            requeued = self._writer.execute(
                "UPDATE jobs SET state = 'pending', started_at = NULL WHERE state = 'in_progress'").rowcount
            self._writer.execute("COMMIT")
            self._reload_pending()
        return {"requeued": requeued, "canceled": canceled, "failed": failed}

    def expire_due(self, ttl_s: float) -> list[str]:
        """Finished jobs older than ``ttl_s`` become expired; returns their ids (their files go next)."""
        with self._lock:
            rows = self._writer.execute(
                "UPDATE jobs SET state = 'expired' WHERE state IN ('succeeded', 'failed', 'canceled') "
                "AND finished_at < ? RETURNING *", (time.time() - ttl_s,)).fetchall()
            return [job.id for job in self._mirrored(rows)]

    def expired_ids(self) -> set[str]:
        return {row[0] for row in self._reader().execute("SELECT id FROM jobs WHERE state = 'expired'")}
