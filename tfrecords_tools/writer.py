"""Parallel, atomic writing of sharded TFRecords: `PREFIX-00000-of-000NN.tfrecord`.

Records are built in a thread pool (decoding and encoding in TensorFlow and PIL release the
GIL), in input order, at most `4 x workers` ahead of the writer, so memory stays bounded.
Every shard is written as `NAME.tmp-<pid>`; when all records are done the shards are renamed
to their final names (`os.replace`, atomic). A failed or interrupted run removes its temporary
files, so no file that looks like a valid shard (or a complete `-of-NN` set) is ever left
behind by a run that did not finish; a run killed outright (SIGKILL) leaves its `.tmp-<pid>` files,
which the next run with the same prefix removes. With `overwrite`, the old set is removed before
the renames, so a kill between two renames leaves an incomplete set that readers reject. With
`skip_bad`, a record whose builder raises
`DataError` is skipped and counted with its reason instead.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf
from tqdm import tqdm

from indep_seg.data.files import DataError

__all__ = [
    "ConversionSummary",
    "write_sharded",
    "shard_names",
    "existing_shards",
    "remove_stale_temporaries",
]

TARGET_SHARD_BYTES = 100 * 2**20


@dataclasses.dataclass
class ConversionSummary:
    records: int = 0
    shards: list = dataclasses.field(default_factory=list)
    bytes: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # [(file, reason)]
    seconds: float = 0.0
    unboxed: int = 0  # photos left out: no boxes.csv row and no mask

    def to_dict(self) -> dict:
        return {
            "records": self.records,
            "shards": list(self.shards),
            "bytes": self.bytes,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "seconds": round(self.seconds, 3),
            "unboxed": self.unboxed,
        }

    def format(self) -> str:
        lines = [
            f"wrote {self.records} records in {len(self.shards)} shard(s), {self.bytes:,} bytes, "
            f"{self.seconds:.1f} s; skipped {len(self.skipped)}"
        ]
        for path in self.shards[:3]:
            lines.append(f"  {path}")
        if len(self.shards) > 3:
            lines.append(f"  ... ({len(self.shards) - 3} more)")
        if self.unboxed:
            lines.append(f"{self.unboxed} photo(s) without a boxes.csv row are not written")
        if self.skipped:
            reasons = collections.Counter(r.split(" (")[0] for _, r in self.skipped)
            lines.append("skipped:")
            for f, r in self.skipped:
                lines.append(f"  {f}: {r}")
            lines.append(
                "skipped by reason: " + ", ".join(f"{n} x {r}" for r, n in reasons.most_common())
            )
        return "\n".join(lines)


def shard_names(prefix, num_shards: int) -> list[str]:
    prefix = os.fspath(prefix)
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def existing_shards(prefix) -> list[str]:
    prefix = os.fspath(prefix)
    return sorted(
        glob.glob(
            glob.escape(prefix) + "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].tfrecord"
        )
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(prefix) -> list[str]:
    """Removes `PREFIX-*.tfrecord.tmp-<pid>` files left by a killed run (its pid no longer alive);
    returns their paths. A live writer's temporaries are left alone."""
    removed = []
    for t in glob.glob(glob.escape(os.fspath(prefix)) + "-*.tfrecord.tmp-*"):
        pid = t.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.remove(t)
                removed.append(t)
            except FileNotFoundError:
                pass
    return removed


def auto_num_shards(total_input_bytes: int, num_records: int) -> int:
    """About 100 MiB per shard (the tf.data guidance), at least 1, at most one per record."""
    return max(1, min(num_records, -(-int(total_input_bytes) // TARGET_SHARD_BYTES)))


def write_sharded(
    tasks,
    prefix,
    num_shards: int,
    *,
    workers: int | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "records",
    skipped=(),
) -> ConversionSummary:
    """Builds every task's record in parallel and writes them to `num_shards` shards (input order
    kept).

    Three steps: check the arguments and the output prefix (`_prepare_output`), build and write the
    records under temporary names (`_write_temporaries`), then put the finished set in place of
    any old one (`_publish`).

    Args:
        tasks: a list of `(name, build)` pairs; `build()` returns serialized record bytes, or
            raises `DataError` for a bad input (skipped and counted when `skip_bad`).
        prefix: output path prefix; shards are `PREFIX-00000-of-000NN.tfrecord`.
        num_shards: number of shards (records are split into contiguous runs).
        workers: threads building records (default: CPU count).
        overwrite: replace an existing shard set with this prefix (else an error).
        skipped: problems found before conversion (`(file, reason)`), reported in the summary.
    """
    tasks = list(tasks)
    prefix, num_shards, old = _prepare_output(tasks, prefix, num_shards, overwrite)
    finals = shard_names(prefix, num_shards)
    temps = [f"{f}.tmp-{os.getpid()}" for f in finals]
    summary = ConversionSummary(skipped=list(skipped))
    start = time.time()
    workers = max(1, int(workers or os.cpu_count() or 1))
    _write_temporaries(tasks, temps, workers, skip_bad, summary, progress, desc)
    _publish(temps, finals, old)
    summary.shards = finals
    summary.bytes = sum(os.path.getsize(f) for f in finals)
    summary.seconds = time.time() - start
    return summary


def _prepare_output(tasks, prefix, num_shards, overwrite):
    """Checks the arguments, creates the output folder, removes dead runs' temporaries; returns
    `(prefix, number of shards, the existing shards of this prefix)`."""
    if not tasks:
        raise DataError(f"{prefix}: nothing to convert (no input records)")
    if not (isinstance(num_shards, int) and num_shards >= 1):
        raise ValueError(f"num_shards: expected a positive integer, got {num_shards!r}")
    prefix = os.fspath(prefix)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    remove_stale_temporaries(prefix)
    old = existing_shards(prefix)
    if old and not overwrite:
        raise DataError(
            f"{old[0]}: output shards with prefix {prefix} already exist (use --overwrite)"
        )
    return prefix, min(num_shards, len(tasks)), old


def _built_records(tasks, workers):
    """Yields `(index, name, future)` in input order, with at most `4 * workers` records built
    ahead."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            pending = collections.deque()
            next_submit = 0
            for i, (name, _) in enumerate(tasks):
                while next_submit < len(tasks) and len(pending) < 4 * workers:
                    pending.append(pool.submit(tasks[next_submit][1]))
                    next_submit += 1
                yield i, name, pending.popleft()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _record_or_skip(future, name, skip_bad, summary):
    """The built record, or None for a bad input when `skip_bad` (counted in `summary.skipped`)."""
    try:
        return future.result()
    except DataError as e:
        if not skip_bad:
            raise
        text = str(e)
        summary.skipped.append(
            (name, text[len(f"{name}: ") :] if text.startswith(f"{name}: ") else text)
        )
        return None


def _write_temporaries(tasks, temps, workers, skip_bad, summary, progress, desc):
    """Writes record i to shard `i * num_shards // n` (contiguous runs, input order) under the
    temporary names `temps`; every shard exists afterwards (one whose records were all skipped is
    empty). On any error the temporaries are removed."""
    n, num_shards = len(tasks), len(temps)
    shard_of = [i * num_shards // n for i in range(n)]
    last_of_shard = {s: i for i, s in enumerate(shard_of)}
    writers = {}
    bar = tqdm(
        total=n,
        desc=desc,
        unit="rec",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    ok = False
    try:
        with contextlib.closing(_built_records(tasks, workers)) as built:  # closed: the pool stops
            for i, name, future in built:
                s = shard_of[i]
                if s not in writers:
                    writers[s] = tf.io.TFRecordWriter(temps[s])
                record = _record_or_skip(future, name, skip_bad, summary)
                if record is not None:
                    writers[s].write(record)
                    summary.records += 1
                if last_of_shard[s] == i:
                    writers[s].close()
                bar.update(1)
        for s in range(num_shards):
            if s not in writers:
                writers[s] = tf.io.TFRecordWriter(temps[s])
        ok = True
    finally:
        bar.close()
        for w in writers.values():
            try:
                w.close()
            except Exception:
                pass
        if not ok:
            for t in temps:
                if os.path.exists(t):
                    os.remove(t)


def _publish(temps, finals, old):
    """Renames the temporaries into place. The old set goes first, so that a kill between the
    renames leaves an incomplete `-of-NN` set (which every reader rejects), never a
    complete-looking mix of old and new shards."""
    for f in old:
        if os.path.exists(f):
            os.remove(f)
    for t, f in zip(temps, finals):
        os.replace(t, f)
