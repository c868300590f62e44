"""Batching for servers: a worker thread gathers concurrent requests into batches for the engine.

Callers :meth:`Batcher.submit` a :class:`GenerationJob` and wait on its future (or read its
``on_text`` pieces). The worker takes the first waiting job, keeps gathering for
``window_s`` seconds or until ``max_batch_size`` jobs are waiting, groups them by
:meth:`Engine.batch_key` (same sampling settings) and hands each group to
:meth:`Engine.generate_rows`. While a group runs, the engine may ask for more jobs with its key
(continuous batching: the transformers engine takes them between decoding steps, up to
``max_batch_size`` rows in all); jobs with other settings wait for their own batch, in order.
The model runs only in that worker, under the engine lock. A job whose ``cancel`` is set before
its turn is answered at once with finish reason "cancelled". ``max_batch_size: 1`` serves
requests strictly one at a time (the behaviour before batching).

Regrouping: clients that each wait for their reply before sending the next request (chat UIs, most
benchmark and eval loops) come back a few milliseconds apart once a batch ends, often later than
``window_s``. The clients likely to send next are those of the previous batch plus those whose
requests arrived while it ran; while fewer jobs are gathered, the worker waits up to ``regroup_s``
for the rest, so N such clients keep forming batches of N; a lone client (a batch of one, nothing
arriving meanwhile) never waits longer than ``window_s``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from typing import Any

from tunery.inference.engine import Engine, GenerationJob, Joiners
from tunery.logging import get_logger

logger = get_logger(__name__)


class Batcher:
    """One worker thread serving :class:`GenerationJob` rows in batches of up to ``max_batch_size``."""

    def __init__(self, engine: Engine, max_batch_size: int = 8, window_s: float = 0.01,
                 regroup_s: float = 0.2) -> None:
        self.engine = engine
        self.max_batch_size = max(1, int(max_batch_size))
        self.window_s = max(0.0, float(window_s))
        self.regroup_s = max(self.window_s, float(regroup_s))
        self._count_lock = threading.Lock()
        self._running = False  # a batch is generating
        self._last_rows = 0  # rows of the previous batch (at its largest, joiners included)
        self._arrived = 0  # jobs submitted while the previous batch was generating
        self._queue: queue.Queue[GenerationJob | None] = queue.Queue()
        self._held: deque[GenerationJob] = deque()  # taken off the queue by joiners, other settings: next
        self._stopping = False  # close() was seen while a batch ran
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.stats: Counter[str] = Counter()  # batches, rows, largest batch, finish reasons
        self.history: deque[tuple[str, int]] = deque(maxlen=256)  # (finish reason, completion tokens) per job

    def submit(self, job: GenerationJob) -> GenerationJob:
        """Queue ``job`` for the worker (started on first use); returns it."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tunery-batcher", daemon=True)
                self._thread.start()
        with self._count_lock:
            self._arrived += self._running
        self._queue.put(job)
        return job

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=60)

    def _gather(self, first: GenerationJob) -> tuple[list[GenerationJob], bool]:
        jobs, stop = [first], False
        start = time.monotonic()
        with self._count_lock:
            expected = min(self._last_rows + self._arrived, self.max_batch_size)
        while len(jobs) < self.max_batch_size:
            if self._held:
                jobs.append(self._held.popleft())
                continue
            try:  # what queued up during the previous batch is taken at once
                job = self._queue.get_nowait()
            except queue.Empty:
                wait = self.regroup_s if len(jobs) < expected else self.window_s
                left = start + wait - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if job is None:
                stop = True
                break
            jobs.append(job)
        return jobs, stop

    def _joiners(self, key: Any, joined: list[GenerationJob]) -> Joiners:
        """Jobs with batch key ``key`` that may join a running batch of ``live`` rows (up to
        max_batch_size); each one handed over is also appended to ``joined``."""

        def take(live: int) -> list[GenerationJob]:
            while not self._stopping:  # move what arrived into the held line, in order
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._stopping = True
                else:
                    self._held.append(job)
            joining: list[GenerationJob] = []
            for job in list(self._held):
                if live + len(joining) >= self.max_batch_size:
                    break
                try:
                    same = job.extra is None and self.engine.batch_key(job.gen) == key
                except Exception:  # bad settings: failed when its own batch comes
                    same = False
                if same:
                    self._held.remove(job)
                    joining.append(job)
            self.stats["rows"] += len(joining)
            self.stats["joined"] += len(joining)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], live + len(joining))
            with self._count_lock:  # joiners are served already: not clients to regroup for
                self._arrived = max(0, self._arrived - len(joining))
                self._last_rows = max(self._last_rows, live + len(joining))
            joined.extend(joining)
            return joining

        return take

    def _run(self) -> None:
        while True:
            if self._held:
                first = self._held.popleft()
            elif self._stopping:
                return
            else:
                first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._gather(first)
            with self._count_lock:
                self._running, self._last_rows, self._arrived = True, len(jobs), 0
            groups: dict[Any, list[GenerationJob]] = {}
            for job in jobs:
                try:
                    key = self.engine.batch_key(job.gen)
                except Exception as exc:  # bad settings fail this job only
                    job.fail(exc)
                    continue
                groups.setdefault(key, []).append(job)
            for key, group in groups.items():
                self.stats["batches"] += 1
                self.stats["rows"] += len(group)
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))
                joined: list[GenerationJob] = []
                try:
                    self.engine.generate_rows(group, self._joiners(key, joined))
                except Exception as exc:  # generate_rows should not raise; never let the worker die
                    logger.exception("batched generation failed")
                    for job in group + joined:
                        job.fail(exc)
                for job in group + joined:
                    self._record(job)
            with self._count_lock:
                self._running = False
            if stop:
                self._stopping = True

    def _record(self, job: GenerationJob) -> None:
        if not job.future.done() or job.future.exception() is not None:
            self.stats["failed"] += 1
            return
        replies = job.future.result()
        if replies:
            self.stats[replies[0].finish_reason] += 1
            self.history.append((replies[0].finish_reason, replies[0].completion_tokens))
