"""Honest counters: three counts of one run's prefix-cache hits, side by side.

vLLM's own counters (read by the metrics collector), the sum of the requests'
``num_cached_tokens`` and `ggr_kv.simulate`'s replay of the same prompts on the same
engine should agree. They did not always: vLLM 0.26 counts a prefix-cache lookup again
each time a request's scheduling is retried under KV pressure (fixed in 0.27.1), which
read 0.9-2.0% more hits than the requests on an H200. `counter_check` records all three
and flags a gap above `COUNTER_TOLERANCE`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.run.rundir import CounterCheck, RepeatRecord

__all__ = ["COUNTER_TOLERANCE", "SimCounts", "counter_check", "simulate_counts"]

#: largest gap between two hit counts that is not a mismatch: 0.5% of the looked-up
#: prompt tokens
COUNTER_TOLERANCE = 0.005


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
    need = ("block_size", "num_kv_blocks", "max_num_seqs", "max_num_batched_tokens")
    missing = [k for k in need if facts.get(k) is None]
    if missing:
        return SimCounts(note=f"not simulated: the engine does not report {missing}")
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
    res = simulate(
        toks, offs, out.clip(min=1),
        block_size=int(facts["block_size"]),
        num_blocks=int(facts["num_kv_blocks"]),
        max_num_seqs=int(facts["max_num_seqs"]),
        max_num_batched_tokens=int(facts["max_num_batched_tokens"]),
        enable_prefix_caching=bool(facts.get("enable_prefix_caching", True)),
        progress=None if progress else False,
    )
    s = res.summary
    return SimCounts(int(s["prefix_cache_hits"]), int(s["prefix_cache_queries"]),
                     int(s["num_preemptions"]), time.perf_counter() - t0)


def _collector_hits(r: RepeatRecord) -> int | None:
    """The collector's hits as ``num_cached_tokens`` counts them: GPU prefix cache plus the
    KV-connector (CPU offload) tier."""
    if r.prefix_cache_hits is None:
        return None
    return int(r.prefix_cache_hits) + int(r.connector_hits or 0)


def _gap(values: list[int | None]) -> int | None:
    got = [int(v) for v in values if v is not None]
    return max(got) - min(got) if len(got) >= 2 else None


def counter_check(
    repeats: list[RepeatRecord], median_repeat: int, sim: SimCounts,
    tolerance: float = COUNTER_TOLERANCE,
) -> CounterCheck:
    """Put the three hit counts side by side (the median repeat's) and flag every repeat
    whose counts differ by more than ``tolerance`` x its looked-up prompt tokens."""
    bad: list[int] = []
    for r in repeats:
        gap = _gap([_collector_hits(r), r.request_cached_tokens, sim.hits])
        base = r.prefix_cache_queries or r.request_prompt_tokens or 0
        if gap is not None and gap > tolerance * base:
            bad.append(r.repeat)
    med = next(r for r in repeats if r.repeat == median_repeat)
    gap = _gap([_collector_hits(med), med.request_cached_tokens, sim.hits])
    any_gap = any(
        _gap([_collector_hits(r), r.request_cached_tokens, sim.hits]) is not None for r in repeats
    )
    return CounterCheck(
        collector_hits=_collector_hits(med),
        collector_queries=med.prefix_cache_queries,
        request_cached_tokens=med.request_cached_tokens,
        request_prompt_tokens=med.request_prompt_tokens,
        simulated_hits=sim.hits,
        simulated_queries=sim.queries,
        simulated_preemptions=sim.preemptions,
        simulate_s=sim.seconds,
        tolerance=tolerance,
        max_gap_tokens=gap,
        mismatch=bool(bad) if any_gap else None,
        mismatched_repeats=bad,
        note=sim.note,
    )
