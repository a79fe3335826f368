"""Per-request table from vLLM ``RequestOutput`` objects or OpenAI-compatible responses."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.schema import REQUEST_COLUMNS

__all__ = ["EXTRA_REQUEST_COLUMNS", "requests_frame"]

_NAN = math.nan
#: per-request columns beside REQUEST_COLUMNS
EXTRA_REQUEST_COLUMNS: tuple[str, ...] = (
    "first_token_s",  # engine time of the first token, s since the collector's window start
)
_FIELDS = (
    "request_id", "prompt_tokens", "num_cached_tokens", "output_tokens", "e2e_s", "ttft_s",
    "queued_s", "first_token_s",
)  # fmt: skip


def requests_frame(
    outputs: Iterable[Any], rows: Sequence[int] | np.ndarray | None, t0: float | None
) -> pd.DataFrame:
    """Per-request table: `ggr_kv.core.schema.REQUEST_COLUMNS` + `EXTRA_REQUEST_COLUMNS`.

    Parameters
    ----------
    outputs : vLLM ``RequestOutput`` objects in run order, or OpenAI-compatible
        completion responses (dicts, or objects with ``model_dump()``), one prompt per
        response. A response dict may carry client-measured ``e2e_s`` / ``ttft_s`` /
        ``queued_s`` (seconds); the server reports none.
    rows : original row position of each output (default ``0..n-1``).
    t0 : the window start, ``time.monotonic()`` s (None: ``first_token_s`` is NaN).

    Raises
    ------
    ValueError
        if ``rows`` does not give one integer per output, or a response has several
        choices.
    TypeError
        for an output of another kind (the message gives its position).
    """
    outs = list(outputs)
    n = len(outs)
    if rows is None:
        row_arr = np.arange(n, dtype=np.int64)
    else:
        row_arr = np.asarray(rows)
        if row_arr.ndim != 1 or len(row_arr) != n:
            raise ValueError(f"rows has {len(row_arr)} entries but there are {n} outputs")
        if not np.issubdtype(row_arr.dtype, np.integer):
            raise ValueError(f"rows must be integer row positions, got dtype {row_arr.dtype}")
        row_arr = row_arr.astype(np.int64)
    recs = [_record(o, i, t0) for i, o in enumerate(outs)]
    df = pd.DataFrame.from_records(recs, columns=list(_FIELDS))
    df.insert(0, "slot", np.arange(n, dtype=np.int64))
    df.insert(0, "row", row_arr)
    df["request_id"] = df["request_id"].astype(object)
    for c in ("prompt_tokens", "num_cached_tokens", "output_tokens"):
        v = pd.to_numeric(df[c], errors="coerce").astype(float)
        df[c] = v.astype(np.int64) if n and v.notna().all() else v
    for c in ("e2e_s", "ttft_s", "queued_s", "first_token_s"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    from_server = n and all(isinstance(o, Mapping) or hasattr(o, "model_dump") for o in outs)
    if from_server and df["num_cached_tokens"].isna().all():
        warnings.warn(
            "the server reported no cached tokens (usage.prompt_tokens_details is "
            "null); start it with --enable-prompt-tokens-details",
            stacklevel=3,
        )
    return df[[*REQUEST_COLUMNS, *EXTRA_REQUEST_COLUMNS]]


def _pos(x: Any) -> float:
    """A timestamp / latency, or NaN when vLLM left it unset (0 or None)."""
    if x is None:
        return _NAN
    x = float(x)
    return x if x > 0 else _NAN


def _record(o: Any, i: int, t0: float | None) -> tuple:
    if hasattr(o, "model_dump") and not isinstance(o, Mapping):
        o = o.model_dump()
    if isinstance(o, Mapping):
        return _openai_record(o, i)
    if hasattr(o, "prompt_token_ids") and hasattr(o, "outputs"):
        return _request_output_record(o, t0)
    raise TypeError(
        f"output {i} is a {type(o).__name__}; expected a vllm RequestOutput or an "
        "OpenAI-compatible completion response dict"
    )


def _request_output_record(o: Any, t0: float | None) -> tuple:
    ptoks = o.prompt_token_ids
    prompt = len(ptoks) if ptoks is not None else _NAN
    cached = _NAN if o.num_cached_tokens is None else o.num_cached_tokens
    out_toks = sum(len(c.token_ids) for c in (o.outputs or []))
    e2e = ttft = queued = first = _NAN
    m = o.metrics
    if m is not None and hasattr(m, "first_token_latency"):  # V1 RequestStateStats
        ttft = _pos(m.first_token_latency)
        ft, lt = _pos(m.first_token_ts), _pos(m.last_token_ts)  # engine monotonic clock
        e2e = ttft + (lt - ft)
        queued = _pos(m.scheduled_ts) - _pos(m.queued_ts)
        first = ft - t0 if t0 is not None else _NAN
    return (str(o.request_id), prompt, cached, out_toks, e2e, ttft, queued, first)


def _openai_record(d: Mapping, i: int) -> tuple:
    choices = d.get("choices") or []
    if len(choices) != 1:
        raise ValueError(
            f"response {i} (id {d.get('id')!r}) has {len(choices)} choices; send one prompt "
            "per request (n=1) so usage counts belong to one row"
        )
    usage = d.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}

    def num(x: Any) -> float:
        return _NAN if x is None else float(x)

    return (
        str(d.get("id")),
        num(usage.get("prompt_tokens")),
        num(details.get("cached_tokens")),
        num(usage.get("completion_tokens")),
        num(d.get("e2e_s")),
        num(d.get("ttft_s")),
        num(d.get("queued_s")),
        _NAN,
    )
