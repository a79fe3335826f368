"""`StepLog`: the append-only per-step record one source keeps, read through cursors.

A source (the engine's permanent step logger, or a poller) appends one row per engine
step (per changed poll for pollers). Readers never detach anything: a collection window
takes a `Cursor` at its start, pins the log so rows from there on are kept, and copies
its rows at its end. Running totals of every counter are kept as well, so cumulative
numbers since any cursor (``collect_internal_stats``) need no stored rows at all; rows
that no open window needs are not kept, so a permanent logger's memory stays bounded.

Thread-safe: vLLM calls the writers from the thread running the engine loop while
readers may run anywhere.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["COUNTER_FIELDS", "RAW_FIELDS", "Cursor", "StepLog", "Totals"]

_NAN = math.nan

#: fields of a raw row, in order. Times are absolute ``time.monotonic()`` seconds.
RAW_FIELDS: tuple[str, ...] = (
    "t_engine",  # engine core's clock when it built the step's outputs (NaN: unknown)
    "t_recv",  # when the frontend (or poller) received it
    "engine",  # engine index
    "num_outputs",  # requests with output this step (NaN: unknown)
    "kv_cache_usage",  # GPU KV usage after the step, 0-1
    "cpu_cache_usage",  # offload tier's CPU usage, 0-1 (NaN: no tier / not reported)
    "num_running",
    "num_waiting",
    # counters from here on: per-step deltas, summed into running totals
    "prefix_queries",  # tokens looked up in the GPU prefix cache
    "prefix_hits",
    "prefix_preempted_queries",  # lookups of re-admitted preempted requests (not above)
    "prefix_preempted_hits",
    "connector_queries",  # tokens looked up in the KV connector (offload) tier
    "connector_hits",
    "host_hits",  # connector hits supplied by host memory
    "offload_load_bytes",  # host -> GPU
    "offload_store_bytes",  # GPU -> host
    "num_preemptions",
    "prompt_tokens",
    "generation_tokens",
    "has_sched",  # 1 when the row carries scheduler stats
    "has_iter",  # 1 when the row carries iteration stats
)
_IDX = {k: i for i, k in enumerate(RAW_FIELDS)}
_FIRST_COUNTER = _IDX["prefix_queries"]
#: counter fields (running totals are kept for these)
COUNTER_FIELDS: tuple[str, ...] = RAW_FIELDS[_FIRST_COUNTER:]
_ITER = (_IDX["num_preemptions"], _IDX["prompt_tokens"], _IDX["generation_tokens"])
_SCHED = tuple(
    _IDX[k]
    for k in (
        "kv_cache_usage",
        "num_running",
        "num_waiting",
        "prefix_queries",
        "prefix_hits",
        "prefix_preempted_queries",
        "prefix_preempted_hits",
        "connector_queries",
        "connector_hits",
        "host_hits",
    )
)  # fmt: skip  -- the order of fields.read_scheduler_stats
_OFFLOAD = (_IDX["offload_load_bytes"], _IDX["offload_store_bytes"], _IDX["cpu_cache_usage"])
_HAS_ITER = _IDX["has_iter"]
_KV, _CPU = _IDX["kv_cache_usage"], _IDX["cpu_cache_usage"]
_COUNTER_POS = tuple(enumerate(range(len(RAW_FIELDS) - len(COUNTER_FIELDS), len(RAW_FIELDS))))


@dataclass(frozen=True)
class Cursor:
    """A position in a `StepLog`: the next row's index, the totals there, and when.

    ``t`` is ``time.monotonic()`` (s) when the cursor was taken.
    """

    index: int
    totals: tuple[float, ...]
    seen: tuple[int, ...]
    t: float


@dataclass(frozen=True)
class Totals:
    """Counters summed over the rows since a cursor.

    Attributes
    ----------
    values : counter field -> sum (tokens, bytes or requests); None where no row since
        the cursor reported that field (e.g. connector hits without a connector).
    rows : rows since the cursor; ``sched_rows`` / ``iter_rows``: those with scheduler /
        iteration stats.
    last_kv_cache_usage, last_cpu_cache_usage : the latest gauge readings (0-1) in the
        whole log, None before any.
    since_s : seconds since the cursor was taken.
    """

    values: dict[str, float | None]
    rows: int
    sched_rows: int
    iter_rows: int
    last_kv_cache_usage: float | None
    last_cpu_cache_usage: float | None
    since_s: float


class StepLog:
    """Per-step rows of one source, with running totals, cursors and pins.

    Parameters
    ----------
    name : what feeds it (for messages), e.g. ``"stat_logger"``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._n = 0  # rows ever appended (global index of the next row)
        self._rows: list[list[float]] = []  # kept rows; _rows[0] has global index _base
        self._base = 0
        self._pins: dict[int, int] = {}
        self._tot = [0.0] * len(COUNTER_FIELDS)
        self._seen = [0] * len(COUNTER_FIELDS)
        self._last_kv = _NAN
        self._last_cpu = _NAN
        self._open: tuple[list[float], Any] | None = None
        #: diagnostics: rows from the output tap, record() calls merged into a tap row,
        #: record() calls with no matching tap row (receive time only)
        self.n_tapped = 0
        self.n_merged = 0
        self.n_unmatched = 0

    # -- writers -------------------------------------------------------------------------
    def _append(self, row: list[float]) -> None:
        """Store ``row`` (if a window needs it) and add its counters; lock held."""
        self._n += 1
        if self._pins:
            self._rows.append(row)
        tot, seen, isnan = self._tot, self._seen, math.isnan
        for j, i in _COUNTER_POS:
            v = row[i]
            if not isnan(v):
                tot[j] += v
                seen[j] += 1
        if not isnan(row[_KV]):
            self._last_kv = row[_KV]
        if not isnan(row[_CPU]):
            self._last_cpu = row[_CPU]

    @staticmethod
    def _blank(t_engine: float, engine: int, num_outputs: float) -> list[float]:
        row = [_NAN] * len(RAW_FIELDS)
        row[0], row[1], row[2], row[3] = t_engine, time.monotonic(), float(engine), num_outputs
        for i in _ITER:
            row[i] = 0.0
        row[_IDX["has_sched"]] = row[_HAS_ITER] = 0.0
        return row

    @staticmethod
    def _put_sched(row: list[float], sched: tuple, offload: tuple) -> None:
        for i, v in zip(_SCHED, sched):
            row[i] = v
        for i, v in zip(_OFFLOAD, offload):
            row[i] = v
        row[_IDX["has_sched"]] = 1.0

    def add_step(
        self,
        t_engine: float,
        engine: int,
        num_outputs: int,
        sched: tuple | None,
        offload: tuple,
        key: Any,
    ) -> None:
        """One engine step as the output tap saw it (``EngineCoreOutputs``).

        ``sched``: `ggr_kv.collector.fields.read_scheduler_stats` values or None;
        ``offload``: `ggr_kv.collector.offload.read_connector_payload` values; ``key``:
        the ``SchedulerStats`` object, so the stat logger's ``record`` of the same step
        can add its iteration stats to this row.
        """
        row = self._blank(t_engine, engine, float(num_outputs))
        if sched is not None:
            self._put_sched(row, sched, offload)
        with self._lock:
            self._append(row)
            self._open = (row, key)
            self.n_tapped += 1

    def merge_iteration(self, key: Any, it: tuple | None) -> bool:
        """Add a ``StatLoggerBase.record`` call's iteration stats to the tap's row of the
        same step (same ``SchedulerStats`` object ``key``). False when there is no such
        row (no tap): then call `add_record`."""
        with self._lock:
            if self._open is None or self._open[1] is not key:
                return False
            row, self._open = self._open[0], None
            self.n_merged += 1
            if it is not None:  # the tap row counted these as 0 (seen) already
                for i, v in zip(_ITER, it):
                    row[i] = float(v)
                    self._tot[i - _FIRST_COUNTER] += v
                row[_HAS_ITER] = 1.0
                self._tot[_HAS_ITER - _FIRST_COUNTER] += 1
            return True

    def add_record(
        self, engine: int, sched: tuple | None, offload: tuple, it: tuple | None
    ) -> None:
        """A ``record`` call that matched no tap row: a row of its own (receive time only)."""
        row = self._blank(_NAN, engine, _NAN)
        if sched is not None:
            self._put_sched(row, sched, offload)
        if it is not None:
            for i, v in zip(_ITER, it):
                row[i] = float(v)
            row[_HAS_ITER] = 1.0
        with self._lock:
            self.n_unmatched += 1
            self._append(row)

    def add_row(self, values: dict[str, float]) -> None:
        """A row from named values (pollers); missing fields are NaN, flags 0."""
        row = [_NAN] * len(RAW_FIELDS)
        row[_IDX["has_sched"]] = row[_IDX["has_iter"]] = 0.0
        for k, v in values.items():
            row[_IDX[k]] = float(v)
        with self._lock:
            self._append(row)

    # -- readers -------------------------------------------------------------------------
    @property
    def n_kept(self) -> int:
        """Rows currently stored (only what open windows need)."""
        with self._lock:
            return len(self._rows)

    def cursor(self) -> Cursor:
        """The current position (rows appended after it are 'since' it)."""
        with self._lock:
            return Cursor(self._n, tuple(self._tot), tuple(self._seen), time.monotonic())

    def pin(self, token: int, cursor: Cursor) -> None:
        """Keep rows from ``cursor`` on until `unpin` (a window is open)."""
        with self._lock:
            if not self._pins and not self._rows:
                self._base = self._n
            self._pins[token] = cursor.index

    def unpin(self, token: int) -> None:
        """Release a pin; rows no pin needs any more are dropped."""
        with self._lock:
            self._pins.pop(token, None)
            keep_from = min(self._pins.values()) if self._pins else self._n
            drop = max(0, min(keep_from, self._n) - self._base)
            if drop:
                del self._rows[:drop]
                self._base += drop

    def rows_since(self, cursor: Cursor) -> list[list[float]]:
        """Copies of the rows appended since ``cursor`` (it must be pinned)."""
        with self._lock:
            if cursor.index < self._base:
                raise RuntimeError(
                    f"{self.name}: rows since index {cursor.index} were not kept (pin the "
                    "cursor while the window is open)"
                )
            return [list(r) for r in self._rows[cursor.index - self._base :]]

    def totals_since(self, cursor: Cursor) -> Totals:
        """Counter sums since ``cursor`` (no stored rows needed)."""
        with self._lock:
            tot, seen, n = list(self._tot), list(self._seen), self._n
            kv, cpu = self._last_kv, self._last_cpu
        vals: dict[str, float | None] = {}
        for j, k in enumerate(COUNTER_FIELDS):
            vals[k] = tot[j] - cursor.totals[j] if seen[j] > cursor.seen[j] else None
        return Totals(
            values=vals,
            rows=n - cursor.index,
            sched_rows=int(vals["has_sched"] or 0),
            iter_rows=int(vals["has_iter"] or 0),
            last_kv_cache_usage=None if math.isnan(kv) else kv,
            last_cpu_cache_usage=None if math.isnan(cpu) else cpu,
            since_s=time.monotonic() - cursor.t,
        )
