"""Do the counts of one run's prefix-cache hits agree? The one check: `CounterCheck`.

Up to three counts of the same prompt tokens served from the prefix cache:

- the collector's (vLLM's ``prefix_cache_hits``, plus its KV-connector / CPU-offload
  tier hits, since the requests count both),
- the requests' own (the sum of ``num_cached_tokens``, local + connector hits at the
  first scheduling),
- ``ggr_kv.simulate``'s replay of the same prompts on the same engine (runs only).

vLLM 0.26 counts a prefix-cache lookup again each time scheduling of a request is
retried (KV pressure, connector deferral; fixed in 0.27.1, vLLM issue 43736), so under a
small KV pool its counters exceed the requests' totals: 0.9-2.0% more hits on an H200.
`COUNTER_TOLERANCE` is the one tolerance: a gap above it is a mismatch.

`counter_check` compares a collector window with its requests; ``ggr_kv.run.counters``
builds the same `CounterCheck` for a run (every repeat checked, the simulator beside).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

__all__ = ["COUNTER_TOLERANCE", "CounterCheck", "counter_check"]

#: largest gap between two hit counts that is not a mismatch, as a fraction of the
#: looked-up prompt tokens: 0.5%. Below vLLM 0.26's retry double count (0.9-2.0%), above
#: rounding: where nothing double counts, the counts agree to the token.
COUNTER_TOLERANCE = 0.005


@dataclass
class CounterCheck:
    """Counts of the same prefix-cache hits side by side (tokens), and whether they agree.

    Attributes
    ----------
    collector_hits, collector_queries : vLLM's counters through the metrics collector
        (hits include the KV-connector / CPU-offload tier, as ``num_cached_tokens`` does).
    request_cached_tokens, request_prompt_tokens : sums over the requests'
        ``num_cached_tokens`` and prompt tokens (what vLLM returned per request).
    simulated_hits, simulated_queries : `ggr_kv.simulate` for the same prompts, engine and
        output lengths; None where not simulated (``note`` says why).
    simulated_preemptions : the simulator's preemption count.
    simulate_s : wall time of the simulation, s.
    tolerance : `COUNTER_TOLERANCE` unless given.
    max_gap_tokens : the largest gap between two available hit counts.
    mismatch : a hit gap above ``tolerance`` x the looked-up prompt tokens (in any
        repeat, for a run); None with fewer than two counts.
    mismatched_repeats : a run's repeats with such a gap.
    note : what limits the comparison, or None.
    hits_diff, queries_diff : collector minus requests (None without both).
    """

    collector_hits: int | None
    collector_queries: int | None
    request_cached_tokens: int | None
    request_prompt_tokens: int | None
    simulated_hits: int | None = None
    simulated_queries: int | None = None
    simulated_preemptions: int | None = None
    simulate_s: float | None = None
    tolerance: float = COUNTER_TOLERANCE
    max_gap_tokens: int | None = None
    mismatch: bool | None = None
    mismatched_repeats: list[int] = field(default_factory=list)
    note: str | None = None
    hits_diff: int | None = None
    queries_diff: int | None = None

    @classmethod
    def compare(
        cls,
        collector_hits: int | None,
        collector_queries: int | None,
        request_cached_tokens: int | None,
        request_prompt_tokens: int | None,
        *,
        tolerance: float = COUNTER_TOLERANCE,
        **rest: Any,
    ) -> CounterCheck:
        """Compare the counts given (``rest``: the other fields, e.g. ``simulated_hits``).

        Raises
        ------
        ValueError
            if ``tolerance`` is negative.
        """
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        ch, cq = collector_hits, collector_queries
        rh, rq = request_cached_tokens, request_prompt_tokens
        hits = [int(v) for v in (ch, rh, rest.get("simulated_hits")) if v is not None]
        gap = max(hits) - min(hits) if len(hits) >= 2 else None
        base = rq if rq is not None else (cq or 0)
        return cls(
            ch, cq, rh, rq, tolerance=float(tolerance), max_gap_tokens=gap,
            mismatch=None if gap is None else bool(gap > tolerance * base),
            hits_diff=ch - rh if ch is not None and rh is not None else None,
            queries_diff=cq - rq if cq is not None and rq is not None else None,
            **rest,
        )

    @property
    def consistent(self) -> bool | None:
        """The counts agree within the tolerance; None when fewer than two are known."""
        return None if self.mismatch is None else not self.mismatch

    @property
    def hit_rate_collector(self) -> float | None:
        """Collector hits / queries (0-1)."""
        c, q = self.collector_hits, self.collector_queries
        return c / q if c is not None and q else None

    @property
    def hit_rate_requests(self) -> float | None:
        """Requests' cached / prompt tokens (0-1)."""
        c, q = self.request_cached_tokens, self.request_prompt_tokens
        return c / q if c is not None and q else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``run.json``'s ``counters``), ``consistent`` included."""
        return {**asdict(self), "consistent": self.consistent}


def _sum(df: pd.DataFrame, col: str) -> int | None:
    if col not in df or len(df) == 0 or df[col].isna().any():
        return None
    return int(df[col].sum())


def _num(x: Any) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def counter_check(
    summary: Mapping[str, Any], requests: pd.DataFrame, tolerance: float = COUNTER_TOLERANCE
) -> CounterCheck:
    """Compare a collector summary with the requests of the same window.

    Parameters
    ----------
    summary : `VLLMMetricsCollector.summary` of the window (``prefix_cache_hits``,
        ``prefix_cache_queries``, ``connector_hits``, ``collection_method``).
    requests : `VLLMMetricsCollector.requests` of the same outputs
        (``num_cached_tokens``, ``prompt_tokens``).
    tolerance : allowed hit gap as a fraction of the requests' prompt tokens.

    Raises
    ------
    ValueError
        if ``tolerance`` is negative.
    """
    rh, rq = _sum(requests, "num_cached_tokens"), _sum(requests, "prompt_tokens")
    ch, cq = _num(summary.get("prefix_cache_hits")), _num(summary.get("prefix_cache_queries"))
    conn = _num(summary.get("connector_hits"))
    if ch is not None and conn is not None:
        ch += conn
    note = None
    if summary.get("collection_method") == "request_only":
        ch = cq = None
        note = "request_only: the collector read no engine counters to compare"
    elif ch is None or cq is None:
        note = "the collector has no prefix-cache counters for this window"
    elif rh is None or rq is None:
        note = (
            "some requests report no num_cached_tokens / prompt_tokens (a server without "
            "--enable-prompt-tokens-details?)"
        )
    return CounterCheck.compare(ch, cq, rh, rq, tolerance=tolerance, note=note)
