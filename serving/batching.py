"""Server-side batching: concurrent requests of one signature and one example shape are
merged into one model call (TF Serving's `--enable_batching`).

Semantics of `BatchingOptions` (serving/config.py) follow TF Serving's BatchingParameters:
a batch closes when it holds `max_batch_size` examples, or `batch_timeout_micros` after
its first task arrived (0: as soon as a batch thread is free, so batches grow exactly
when the model is busy), `num_batch_threads` batches run at once, at most
`max_enqueued_batches` batches wait per queue (more is UNAVAILABLE, as TF Serving), and
with `allowed_batch_sizes` a batch is padded (repeating its last example) up to the next
allowed size. One queue per (servable, signature, example shapes and dtypes); string
inputs (encoded images of different sizes) are never merged.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import grpc
import numpy as np

from indep_seg.serving.config import BatchingOptions
from indep_seg.serving.errors import ServingError

__all__ = ["BatchScheduler"]


class _Task:
    __slots__ = ("inputs", "size", "done", "result", "error", "enqueued")

    def __init__(self, inputs, size):
        self.inputs = inputs
        self.size = size
        self.done = threading.Event()
        self.result = None
        self.error = None
        self.enqueued = time.monotonic()


class _Queue:
    __slots__ = ("key", "servable", "sig", "tasks", "rows")

    def __init__(self, key, servable, sig):
        self.key = key
        self.servable = servable
        self.sig = sig
        self.tasks = deque()
        self.rows = 0


class BatchScheduler:
    """Merges concurrent `run(servable, sig, inputs)` calls into batches.

    `run` blocks the calling (gRPC / HTTP worker) thread until its slice of the batch
    result is ready, so the servers need no change beyond calling it.
    """

    def __init__(self, options: BatchingOptions | None = None):
        self.options = (options or BatchingOptions()).validate()
        self._cv = threading.Condition()
        self._queues: dict = {}
        self._order = deque()  # keys with pending tasks, oldest first
        self._stopped = False
        self.batches_run = 0
        self.examples_run = 0
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{i}", daemon=True)
            for i in range(self.options.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    # --------------------------------------------------------------- client side
    def run(self, servable, sig, inputs: dict) -> dict:
        if any(a.dtype.kind in ("S", "O", "U") for a in inputs.values()):
            return servable.run(sig, inputs)
        size = int(next(iter(inputs.values())).shape[0])
        if size >= self.options.max_batch_size:
            return servable.run(sig, inputs)  # already a full batch
        key = (id(servable), sig.name) + tuple(
            (k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items())
        )
        task = _Task(inputs, size)
        with self._cv:
            if self._stopped:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE, "the batch scheduler is shutting down"
                )
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = _Queue(key, servable, sig)
            limit = self.options.max_enqueued_batches * self.options.max_batch_size
            if q.rows + size > limit:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full",
                )
            if not q.tasks:
                self._order.append(key)
            q.tasks.append(task)
            q.rows += size
            self._cv.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    # --------------------------------------------------------------- batch threads
    def _take_batch(self):
        """Pops the next batch (under the lock), honouring batch_timeout_micros."""
        opts = self.options
        timeout = opts.batch_timeout_micros / 1e6
        while True:
            if self._stopped:
                return None
            if not self._order:
                self._cv.wait()
                continue
            key = self._order[0]
            q = self._queues[key]
            if q.rows < opts.max_batch_size and timeout > 0:
                left = q.tasks[0].enqueued + timeout - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue
            self._order.popleft()
            tasks, rows = [], 0
            while q.tasks and rows + q.tasks[0].size <= opts.max_batch_size:
                t = q.tasks.popleft()
                tasks.append(t)
                rows += t.size
            q.rows -= rows
            if q.tasks:
                self._order.append(key)
            else:
                del self._queues[key]
            return q.servable, q.sig, tasks, rows

    def _worker(self):
        while True:
            with self._cv:
                job = self._take_batch()
            if job is None:
                return
            servable, sig, tasks, rows = job
            self._execute(servable, sig, tasks, rows)

    def _padded_size(self, rows):
        for s in self.options.allowed_batch_sizes:
            if s >= rows:
                return s
        return rows

    def _execute(self, servable, sig, tasks, rows):
        try:
            if len(tasks) == 1 and not self.options.allowed_batch_sizes:
                outputs = servable.run(sig, tasks[0].inputs)
                tasks[0].result = outputs
            else:
                keys = list(tasks[0].inputs)
                merged = {k: np.concatenate([t.inputs[k] for t in tasks], axis=0) for k in keys}
                target = self._padded_size(rows)
                if target > rows:
                    merged = {
                        k: np.concatenate([v, np.repeat(v[-1:], target - rows, axis=0)], axis=0)
                        for k, v in merged.items()
                    }
                outputs = servable.run(sig, merged)
                start = 0
                for t in tasks:
                    t.result = {k: v[start : start + t.size] for k, v in outputs.items()}
                    start += t.size
            self.batches_run += 1
            self.examples_run += rows
        except ServingError as e:
            if len(tasks) > 1:
                # One bad example must not fail its neighbours: rerun each task alone.
                for t in tasks:
                    try:
                        t.result = servable.run(sig, t.inputs)
                    except ServingError as e2:
                        t.error = e2
                    except Exception as e2:  # pragma: no cover
                        t.error = ServingError(
                            grpc.StatusCode.INTERNAL, f"{type(e2).__name__}: {e2}"
                        )
            else:
                for t in tasks:
                    t.error = e
        except Exception as e:  # pragma: no cover - never leave a caller hanging
            err = ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            for t in tasks:
                t.error = err
        finally:
            for t in tasks:
                t.done.set()

    def stop(self):
        with self._cv:
            self._stopped = True
            pending = [t for q in self._queues.values() for t in q.tasks]
            self._queues.clear()
            self._order.clear()
            self._cv.notify_all()
        for t in pending:
            t.error = ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            t.done.set()
        for th in self._threads:
            th.join(timeout=5)
