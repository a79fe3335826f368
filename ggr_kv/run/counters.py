"""Honest counters: three counts of one run's prefix-cache hits, side by side.

vLLM's own counters (read by the metrics collector), the sum of the requests'
``num_cached_tokens`` and `ggr_kv.simulate`'s replay of the same prompts on the same
engine should agree. They did not always: vLLM 0.26 counts a prefix-cache lookup again
each time a request's scheduling is retried under KV pressure (fixed in 0.27.1), which
read 0.9-2.0% more hits than the requests on an H200. `check_repeats` records all three
in the one ``ggr_kv.collector.CounterCheck`` and flags a gap above its tolerance in any
repeat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.collector.checks import COUNTER_TOLERANCE, CounterCheck
from ggr_kv.run.rundir import RepeatRecord
from ggr_kv.simulate.config import SchedulerConfig

__all__ = ["SimCounts", "check_repeats", "simulate_counts"]


@dataclass
class SimCounts:
    """The simulator's prediction for a run (or why there is none).

    Attributes
    ----------
    hits, queries, preemptions : predicted totals (tokens / count); None without a
        prediction.
    seconds : wall time of the simulation, s.
    note : why there is no prediction.
    """

    hits: int | None = None
    queries: int | None = None
    preemptions: int | None = None
    seconds: float | None = None
    note: str | None = None


def simulate_counts(
    tokens: tuple[np.ndarray, np.ndarray] | None,
    requests: pd.DataFrame,
    facts: dict[str, Any],
    *,
    progress: bool = True,
) -> SimCounts:
    """Replay a run with `ggr_kv.simulate.simulate`: its prompts (``tokens``, run order,
    tokenized with the model's tokenizer) and each request's measured output length
    (``requests``, one row per slot), on the engine's block size, KV blocks,
    ``max_num_seqs``, ``max_num_batched_tokens`` and prefix-caching setting (``facts``).

    Returns a `SimCounts` with a ``note`` instead of numbers when the run cannot be
    replayed (no tokenizer here, unknown engine settings, prompts of other lengths).
    """
    from ggr_kv.simulate.api import simulate

    if tokens is None:
        return SimCounts(note="not simulated: no tokenized prompts (tokenizer unavailable "
                              "or a multi-stage query)")
    try:
        config = SchedulerConfig.from_engine(facts)
    except ValueError as e:
        return SimCounts(note=f"not simulated: {e}")
    toks, offs = tokens
    lens = np.diff(offs)
    req = requests.sort_values("slot")
    if len(req) != len(lens):
        return SimCounts(note=f"not simulated: {len(req)} requests for {len(lens)} prompts")
    vllm_lens = pd.to_numeric(req["prompt_tokens"], errors="coerce").to_numpy()
    differ = int((vllm_lens != lens).sum())
    if differ:
        return SimCounts(note=f"not simulated: the tokenizer here gives {differ} prompts "
                              "another length than vLLM did")
    out = pd.to_numeric(req["output_tokens"], errors="coerce").fillna(1).to_numpy(np.int64)
    t0 = time.perf_counter()
    res = simulate(toks, offs, out.clip(min=1), config, progress=None if progress else False)
    s = res.summary
    return SimCounts(int(s["prefix_cache_hits"]), int(s["prefix_cache_queries"]),
                     int(s["num_preemptions"]), time.perf_counter() - t0)


def _collector_hits(r: RepeatRecord) -> int | None:
    """The collector's hits as ``num_cached_tokens`` counts them: GPU prefix cache plus the
    KV-connector (CPU offload) tier."""
    if r.prefix_cache_hits is None:
        return None
    return int(r.prefix_cache_hits) + int(r.connector_hits or 0)


def _check(r: RepeatRecord, sim: SimCounts, tolerance: float) -> CounterCheck:
    return CounterCheck.compare(
        _collector_hits(r), r.prefix_cache_queries, r.request_cached_tokens,
        r.request_prompt_tokens, tolerance=tolerance, simulated_hits=sim.hits,
        simulated_queries=sim.queries, simulated_preemptions=sim.preemptions,
        simulate_s=sim.seconds, note=sim.note,
    )


def check_repeats(
    repeats: list[RepeatRecord], median_repeat: int, sim: SimCounts,
    tolerance: float = COUNTER_TOLERANCE,
) -> CounterCheck:
    """The median repeat's `CounterCheck` (the simulator's counts beside), with every
    repeat whose counts differ by more than ``tolerance`` x its prompt tokens in
    ``mismatched_repeats`` and ``mismatch``."""
    checks = {r.repeat: _check(r, sim, tolerance) for r in repeats}
    bad = [k for k, c in checks.items() if c.mismatch]
    med = checks[median_repeat]
    known = any(c.mismatch is not None for c in checks.values())
    return replace(med, mismatch=bool(bad) if known else None, mismatched_repeats=bad)
