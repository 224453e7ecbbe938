"""Live progress of running jobs (in memory) and change notifications for the event streams.

The worker reports each stage's start and end; the board keeps, per running job, the current stage, how
many stages have ended and their seconds. Progress is ``100 * ended / count`` (stages overlap, so the
stage index is not monotone; the count of ended stages is). A finished job leaves the board (its record
is in the store), so the board holds only running jobs.

``notify(job_id)`` (any thread) wakes the server-sent-event streams waiting on that job: each waiter is an
``asyncio.Event`` set through its own loop's ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field


@dataclass
class LiveProgress:
    stage: str | None = None
    stage_count: int = 0
    stages_ended: int = 0
    running: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # ended stage -> seconds

    @property
    def percent(self) -> float:
        return round(100.0 * self.stages_ended / self.stage_count, 1) if self.stage_count else 0.0


class ProgressBoard:
    def __init__(self) -> None:
        self._live: dict[str, LiveProgress] = {}
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()
        self.closing = False

    # ---------------------------------------------------------------------------- worker side (thread)
    def started(self, job_id: str) -> None:
        with self._lock:
            self._live[job_id] = LiveProgress()
        self.notify(job_id)

    def stage(self, job_id: str, count: int, name: str, seconds: float | None) -> None:
        with self._lock:
            live = self._live.get(job_id)
            if live is None:
                return
            live.stage_count = count
            if seconds is None:
                live.running.append(name)
                live.stage = name
            else:
                live.stages_ended += 1
                live.stages[name] = round(seconds, 6)
                if name in live.running:
                    live.running.remove(name)
                live.stage = live.running[-1] if live.running else name
        self.notify(job_id)

    def finished(self, job_id: str) -> LiveProgress | None:
        with self._lock:
            live = self._live.pop(job_id, None)
        self.notify(job_id)
        return live

    def get(self, job_id: str) -> LiveProgress | None:
        with self._lock:
            live = self._live.get(job_id)
            return None if live is None else LiveProgress(live.stage, live.stage_count, live.stages_ended,
                                                          list(live.running), dict(live.stages))

    # ------------------------------------------------------------------------------------ notifications
    def notify(self, job_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its stream is gone
                pass

    def close(self) -> None:
        """Shutdown: every stream wakes and ends."""
        self.closing = True
        with self._lock:
            ids = list(self._waiters)
        for job_id in ids:
            self.notify(job_id)

    def subscribe(self, job_id: str) -> asyncio.Event:
        """An event set at the job's next change (call from the stream's event loop)."""
        event = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add((asyncio.get_running_loop(), event))
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(job_id, set())
            waiters.difference_update({w for w in waiters if w[1] is event})
            if not waiters:
                self._waiters.pop(job_id, None)
