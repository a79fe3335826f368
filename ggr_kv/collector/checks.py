"""Do the collector's prefix-cache counters agree with what the requests report?

vLLM 0.26 counts a prefix-cache lookup again each time scheduling of a request is
retried (KV pressure, connector deferral; fixed in 0.27.1, vLLM issue 43736), so under a
small KV pool its ``prefix_cache_{queries,hits}`` exceed the requests' totals by a few %.
Per-request ``num_cached_tokens`` (local + connector hits at the first scheduling) is not
affected. `counter_check` compares the two and says whether they agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

__all__ = ["DEFAULT_REL_TOL", "CounterCheck", "counter_check"]

#: default tolerance: |difference| <= this fraction of the requests' prompt tokens
DEFAULT_REL_TOL = 1e-3


@dataclass(frozen=True)
class CounterCheck:
    """Collector counters vs the requests' own numbers (tokens).

    Attributes
    ----------
    collector_hits : the collector's prefix-cache hits plus its connector (offload-tier)
        hits, since ``num_cached_tokens`` counts both.
    collector_queries : the collector's prefix-cache queries.
    request_hits, request_queries : sums of the requests' ``num_cached_tokens`` and
        ``prompt_tokens``.
    hits_diff, queries_diff : collector minus requests.
    hit_rate_collector, hit_rate_requests : hits / queries of each side (0-1).
    rel_tol : the tolerance used, a fraction of ``request_queries``.
    consistent : both differences within ``rel_tol * request_queries``; None when
        either side is missing (then ``note`` says why).
    note : what limits the comparison, or None.
    """

    collector_hits: int | None
    collector_queries: int | None
    request_hits: int | None
    request_queries: int | None
    hits_diff: int | None
    queries_diff: int | None
    hit_rate_collector: float | None
    hit_rate_requests: float | None
    rel_tol: float
    consistent: bool | None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``run.json``)."""
        return asdict(self)


def _sum(df: pd.DataFrame, col: str) -> int | None:
    if col not in df or df[col].isna().all() or len(df) == 0:
        return None
    if df[col].isna().any():
        return None
    return int(df[col].sum())


def _num(x: Any) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def counter_check(
    summary: Mapping[str, Any], requests: pd.DataFrame, rel_tol: float = DEFAULT_REL_TOL
) -> CounterCheck:
    """Compare a collector summary with the requests of the same window.

    Parameters
    ----------
    summary : `VLLMMetricsCollector.summary` of the window (``prefix_cache_hits``,
        ``prefix_cache_queries``, ``connector_hits``, ``collection_method``).
    requests : `VLLMMetricsCollector.requests` of the same outputs
        (``num_cached_tokens``, ``prompt_tokens``).
    rel_tol : allowed |difference| as a fraction of the requests' prompt tokens.

    Raises
    ------
    ValueError
        if ``rel_tol`` is negative.
    """
    if not rel_tol >= 0:
        raise ValueError(f"rel_tol must be >= 0, got {rel_tol!r}")
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
    both = None not in (ch, cq, rh, rq)
    hd = ch - rh if both else None
    qd = cq - rq if both else None
    ok = None
    if both:
        tol = rel_tol * rq
        ok = abs(hd) <= tol and abs(qd) <= tol
    return CounterCheck(
        collector_hits=ch,
        collector_queries=cq,
        request_hits=rh,
        request_queries=rq,
        hits_diff=hd,
        queries_diff=qd,
        hit_rate_collector=ch / cq if ch is not None and cq else None,
        hit_rate_requests=rh / rq if rh is not None and rq else None,
        rel_tol=float(rel_tol),
        consistent=ok,
        note=note,
    )
