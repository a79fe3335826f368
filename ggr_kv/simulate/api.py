"""Predict vLLM V1's prefix-cache hits, KV usage and preemptions without running a model.

`simulate` replays vLLM V1's scheduler and KV block pool step by step at block
granularity (see `ggr_kv.simulate.schedule` for the vLLM code it follows): chained hashes
of full blocks, hits capped by the last-token rule, blocks cached as soon as they are
allocated full, reference counts, the LRU free queue with eviction on reuse, FCFS
admission within the per-step token budget with chunked prefill, recompute
preemption of the newest running request, and one decode token per running request
per step until each reaches its output length.

There is no clock: ``t_s`` in `SimResult.steps` is the step index; the work of each step
(`SimResult.work`) priced by an engine's throughputs gives seconds
(`ggr_kv.simulate.jobtime.predict_job_time`). Token counts are tokens; fractions are 0-1.

Entry points: `simulate` (token ids in run order -> `SimResult` with per-step and
per-request tables), `simulate_plan` (a table and a reorder plan, tokenized as vLLM
sees them), and `simulate_totals` (block hashes made once + a run order -> `SimTotals`,
no per-step tables: for a reorderer that judges many orders). All three take the
scheduler settings of `ggr_kv.simulate.config.SchedulerConfig`.

Example
-------
>>> from ggr_kv.core.blocks import to_csr
>>> tokens, offsets = to_csr([[1] * 40, [1] * 40])
>>> res = simulate(tokens, offsets, 1, block_size=16, num_blocks=10)
>>> res.summary["prefix_cache_hits"]  # the 2nd prompt reuses 2 full blocks
32
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.blocks import BlockHashes, block_hashes
from ggr_kv.core.schema import STEP_COLUMNS, add_running_totals
from ggr_kv.simulate.config import SchedulerConfig
from ggr_kv.simulate.schedule import CoreResult, run_schedule

__all__ = [
    "SIM_REQUEST_COLUMNS",
    "SIM_WORK_COLUMNS",
    "SimResult",
    "SimTotals",
    "simulate",
    "simulate_plan",
    "simulate_totals",
]

#: columns of `SimResult.requests` (``row`` only when built from a plan)
SIM_REQUEST_COLUMNS: tuple[str, ...] = (
    "slot",  # position in run order
    "prompt_tokens",
    "output_tokens",
    "num_cached_tokens",  # prefix-cache hit at first admission (RequestOutput.num_cached_tokens)
    "num_preemptions",
    "first_scheduled_step",
    "first_token_step",
    "finished_step",
)

#: columns of `SimResult.work`: the model's work per step, in tokens
SIM_WORK_COLUMNS: tuple[str, ...] = (
    "step",
    "scheduled_tokens",  # tokens the model computes this step (vLLM's num_scheduled_tokens)
    "prefill_tokens",  # of those: prompt chunks, including recomputes after preemption
    "decode_tokens",  # of those: one token of each request that already sampled
    "evicted_blocks",  # cached blocks evicted this step
    "num_scheduled",  # requests with tokens in this step
    "prefill_attn",  # attention pairs of the prefill chunks (query x key tokens)
    "decode_ctx",  # context tokens the decode tokens attend to
)


@dataclass
class SimTotals:
    """Totals of one replay (`simulate_totals`; `SimResult.summary` holds the same keys).

    Attributes
    ----------
    hit_rate : prefix_cache_hits / prefix_cache_queries (0-1; NaN without queries).
    prefix_cache_hits, prefix_cache_queries : tokens, as vLLM's counters count them
        (first admissions only).
    preempted_queries, preempted_hits : tokens, re-admissions after a preemption.
    peak_kv_usage : highest per-step KV usage (0-1, after each step as vLLM reports it).
    num_preemptions, num_steps, num_requests : counts.
    prompt_tokens, generation_tokens : tokens in the prompts; tokens generated.
    evicted_blocks : cached blocks evicted to make room.
    prefill_tokens : prompt tokens the model computed (not served from the cache),
        recomputes after a preemption included.
    decode_tokens : single-token decode inputs computed (generation tokens minus each
        request's first, plus any re-decode).
    scheduled_requests : requests scheduled, summed over steps (request-steps).
    prefill_attn : attention pairs (query token x key token) of all prefill chunks: a
        chunk of k tokens behind c computed ones attends ``k * c + k (k + 1) / 2``.
    decode_ctx : context tokens the decode tokens attend to, summed.
    num_cached_tokens : ``(num_requests,)`` hit tokens of each request's first admission,
        in run order (vLLM's ``RequestOutput.num_cached_tokens``).
    seconds : wall time of the replay (s).
    """

    hit_rate: float
    prefix_cache_hits: int
    prefix_cache_queries: int
    preempted_queries: int
    preempted_hits: int
    peak_kv_usage: float
    num_preemptions: int
    num_steps: int
    num_requests: int
    prompt_tokens: int
    generation_tokens: int
    evicted_blocks: int
    prefill_tokens: int
    decode_tokens: int
    num_cached_tokens: np.ndarray
    seconds: float
    scheduled_requests: int = 0
    prefill_attn: int = 0
    decode_ctx: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The scalar totals (not ``num_cached_tokens`` or ``seconds``) as a dict."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        del d["num_cached_tokens"], d["seconds"]
        return d


@dataclass
class SimResult:
    """Predicted engine behaviour.

    Attributes
    ----------
    steps : one row per engine step, columns exactly `ggr_kv.core.schema.STEP_COLUMNS`;
        ``t_s`` is the step index (the simulator has no clock).
    requests : one row per prompt in run order, columns `SIM_REQUEST_COLUMNS`
        (plus ``row``, the original table row, from `simulate_plan`).
    summary : the fields of `SimTotals` but ``num_cached_tokens`` and ``seconds``:
        ``hit_rate`` (0-1), ``prefix_cache_hits`` / ``prefix_cache_queries`` (tokens,
        first admissions only), ``preempted_queries`` / ``preempted_hits``,
        ``peak_kv_usage`` (0-1), ``num_preemptions``, ``num_steps``, ``num_requests``,
        ``prompt_tokens``, ``generation_tokens``, ``evicted_blocks``, ``prefill_tokens``
        and ``decode_tokens`` (tokens the model computes; see `SimTotals`).
    params : the engine parameters simulated (`SchedulerConfig.to_dict`).
    meta : versions, hardware and the wall time of the replay (``seconds``).
    work : one row per step, columns `SIM_WORK_COLUMNS` (what `ggr_kv.simulate.jobtime`
        turns into seconds).
    """

    steps: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    work: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SIM_WORK_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        """Summary, parameters and metadata as one JSON-ready dict (no per-step rows)."""
        return {"summary": dict(self.summary), "params": dict(self.params), "meta": dict(self.meta)}


def _check_inputs(
    tokens: np.ndarray, offsets: np.ndarray, output_lens: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets)
    if tokens.ndim != 1 or (tokens.size and tokens.dtype.kind not in "iu"):
        raise ValueError(f"tokens must be a 1-d array of integer token ids, got {tokens.dtype}")
    if offsets.ndim != 1 or len(offsets) < 1 or offsets.dtype.kind not in "iu":
        raise ValueError("offsets must be a 1-d integer array of n_prompts + 1 positions")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != len(tokens):
        raise ValueError(
            f"offsets must start at 0 and end at len(tokens)={len(tokens)}, "
            f"got {int(offsets[0])}..{int(offsets[-1])}"
        )
    lens = np.diff(offsets)
    if (lens < 0).any():
        raise ValueError(f"offsets decrease at prompt {int(np.flatnonzero(lens < 0)[0])}")
    if (lens == 0).any():
        raise ValueError(f"prompt {int(np.flatnonzero(lens == 0)[0])} is empty (0 tokens)")
    return tokens, offsets, _check_outputs(output_lens, len(lens))


def _check_outputs(output_lens: Any, n: int) -> np.ndarray:
    """``output_lens`` as ``(n,)`` int64, each >= 1, or a ValueError naming the bad one."""
    out = np.asarray(output_lens)
    if out.ndim == 0:
        out = np.full(n, out)
    if out.shape != (n,) or (out.size and out.dtype.kind not in "iu"):
        raise ValueError(
            f"output_lens must be one integer or {n} integers (one per prompt), "
            f"got shape {out.shape} dtype {out.dtype}"
        )
    if (out < 1).any():
        bad = int(np.flatnonzero(out < 1)[0])
        raise ValueError(
            f"output_lens[{bad}] = {int(out[bad])}: every request generates >= 1 token"
        )
    return out.astype(np.int64)


def simulate(
    tokens: np.ndarray,
    offsets: np.ndarray,
    output_lens: int | np.ndarray,
    config: SchedulerConfig | None = None,
    *,
    progress: bool | None = None,
    **settings: Any,
) -> SimResult:
    """Replay vLLM V1's scheduler and prefix cache over prompts submitted at once.

    Parameters
    ----------
    tokens, offsets : prompts in run order, CSR token ids exactly as vLLM sees them
        (BOS included); prompt i is ``tokens[offsets[i]:offsets[i + 1]]``.
    output_lens : tokens each request generates (one int for all, or one per prompt);
        vLLM's ``max_tokens`` with ``ignore_eos=True``.
    config : the engine's settings (`ggr_kv.simulate.config.SchedulerConfig`; from an
        engine's facts: ``SchedulerConfig.from_engine(facts)``).
    **settings : `SchedulerConfig` fields by name (``block_size=16, num_blocks=4096``,
        ...; defaults are vLLM's), instead of ``config`` or overriding some of its
        fields: ``block_size`` in tokens (16 on GPU, 128 on the CPU backend),
        ``num_blocks`` as vLLM's ``num_gpu_blocks`` (the null block included),
        ``max_num_batched_tokens`` the per-step budget in tokens.
    progress : show a tqdm bar of finished requests (default: only above 20,000 prompts).

    Returns
    -------
    SimResult

    See Also
    --------
    simulate_totals : the same replay without per-step tables, from precomputed block
        hashes and a row order (for callers that judge many orders).
    """
    config = SchedulerConfig.of(**{**(config.to_dict() if config else {}), **settings})
    tokens, offsets, out = _check_inputs(tokens, offsets, output_lens)
    plen = np.diff(offsets)
    _check_fits(plen, out, config)
    t0 = time.perf_counter()
    bh = block_hashes(tokens, offsets, config.block_size)
    core = _replay(bh, plen, out, config, None, progress)
    return _assemble(core, plen, out, config.to_dict(), time.perf_counter() - t0)


def simulate_totals(
    hashes: BlockHashes,
    output_lens: int | np.ndarray,
    config: SchedulerConfig,
    *,
    order: np.ndarray | None = None,
    progress: bool | None = False,
) -> SimTotals:
    """The replay of `simulate`, totals only: for callers that judge many row orders.

    Hash the prompts once (`ggr_kv.core.blocks.block_hashes`, in table row order), then
    call this per candidate ``order``: no tokens are hashed again and no per-step
    DataFrame is built. The totals equal `simulate`'s summary for the same prompts in
    the same order (tested); on 1,000 prompts it takes about half the time of
    `simulate` (`benchmarks/RESULTS-simulate.md`).

    Parameters
    ----------
    hashes : block hashes of every prompt, at ``config.block_size``.
    output_lens : tokens each request generates: one int, or one per prompt in the
        hashes' (row) order, permuted along with ``order``.
    config : the scheduler settings.
    order : run order, a permutation of (or a selection from) ``range(n_prompts)``;
        ``None`` runs the prompts as stored.
    progress : tqdm bar of finished requests (``None``: only above 20,000 prompts).

    Returns
    -------
    SimTotals
    """
    if hashes.block_size != config.block_size:
        raise ValueError(
            f"hashes were made with block_size={hashes.block_size}, the config has "
            f"block_size={config.block_size}"
        )
    plen = np.asarray(hashes.n_tokens, dtype=np.int64)
    n = len(plen)
    out = _check_outputs(output_lens, n)
    if (plen == 0).any():
        raise ValueError(f"prompt {int(np.flatnonzero(plen == 0)[0])} is empty (0 tokens)")
    if order is not None:
        order = np.asarray(order)
        if order.ndim != 1 or order.dtype.kind not in "iu" or (
            order.size and (order.min() < 0 or order.max() >= n)
        ):
            raise ValueError(f"order must be a 1-d array of prompt indices in [0, {n})")
        plen, out = plen[order], out[order]
    _check_fits(plen, out, config)
    t0 = time.perf_counter()
    core = _replay(hashes, plen, out, config, order, progress)
    return _totals(core, plen, out, time.perf_counter() - t0)


def _check_fits(plen: np.ndarray, out: np.ndarray, config: SchedulerConfig) -> None:
    """Refuse a request that could never fit the pool, as vLLM refuses its max_model_len."""
    if not len(plen):
        return
    # the most KV one request ever holds: its prompt plus all but its last output token
    B = config.block_size
    need = -(-(plen + out - 1) // B)
    if need.max() > config.usable_blocks:
        worst = int(np.argmax(need))
        raise ValueError(
            f"prompt {worst} ({int(plen[worst])} tokens + {int(out[worst])} output) needs "
            f"{int(need[worst])} KV blocks of {B} tokens, but the pool has "
            f"{config.usable_blocks} usable blocks (num_blocks={config.num_blocks}); vLLM "
            "would refuse this max_model_len"
        )


def _replay(
    bh: BlockHashes,
    plen: np.ndarray,
    out: np.ndarray,
    config: SchedulerConfig,
    order: np.ndarray | None,
    progress: bool | None,
) -> CoreResult:
    """`run_schedule` with a tqdm bar of finished requests when asked for."""
    n = len(plen)
    bar = None
    if (n > 20_000) if progress is None else progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="simulate", unit="req")
    try:
        return run_schedule(
            plen, out, bh.hashes, bh.block_offsets, config, order=order,
            on_step=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()


def _totals(core: CoreResult, plen: np.ndarray, out: np.ndarray, seconds: float) -> SimTotals:
    """The run's totals from the replay's per-step arrays."""
    s = core.steps
    q, h = int(s["queries"].sum()), int(s["hits"].sum())
    sched, dec = int(s["scheduled_tokens"].sum()), int(s["decode_tokens"].sum())
    return SimTotals(
        hit_rate=h / q if q else float("nan"),
        prefix_cache_hits=h,
        prefix_cache_queries=q,
        preempted_queries=int(s["preempted_queries"].sum()),
        preempted_hits=int(s["preempted_hits"].sum()),
        peak_kv_usage=float(s["kv_usage"].max()) if len(s["kv_usage"]) else 0.0,
        num_preemptions=int(s["num_preemptions"].sum()),
        num_steps=len(s["kv_usage"]),
        num_requests=len(plen),
        prompt_tokens=int(plen.sum()),
        generation_tokens=int(out.sum()),
        evicted_blocks=int(s["evictions"].sum()),
        prefill_tokens=sched - dec,
        decode_tokens=dec,
        num_cached_tokens=np.asarray(core.num_cached_tokens, dtype=np.int64),
        seconds=seconds,
        scheduled_requests=int(s["num_scheduled"].sum()),
        prefill_attn=int(s["prefill_attn"].sum()),
        decode_ctx=int(s["decode_ctx"].sum()),
    )


def _assemble(
    core: CoreResult, plen: np.ndarray, out: np.ndarray, params: dict, seconds: float
) -> SimResult:
    s = core.steps
    n_steps = len(s["kv_usage"])
    idx = np.arange(n_steps, dtype=np.int64)
    zeros = np.zeros(n_steps, dtype=np.int64)
    steps = pd.DataFrame(
        {
            "t_s": idx.astype(np.float64),
            "step": idx,
            "kv_cache_usage": s["kv_usage"],
            "prefix_queries": s["queries"],
            "prefix_hits": s["hits"],
            "num_running": s["num_running"],
            "num_waiting": s["num_waiting"],
            "num_preemptions": s["num_preemptions"],
            "prompt_tokens": s["prompt_tokens"],
            "generation_tokens": s["generation_tokens"],
            "connector_queries": zeros,
            "connector_hits": zeros.copy(),
        },
    )
    steps = add_running_totals(steps)[list(STEP_COLUMNS)]
    work = pd.DataFrame(
        {
            "step": idx,
            "scheduled_tokens": s["scheduled_tokens"],
            "prefill_tokens": s["scheduled_tokens"] - s["decode_tokens"],
            "decode_tokens": s["decode_tokens"],
            "evicted_blocks": s["evictions"],
            "num_scheduled": s["num_scheduled"],
            "prefill_attn": s["prefill_attn"],
            "decode_ctx": s["decode_ctx"],
        },
        columns=list(SIM_WORK_COLUMNS),
    )
    requests = pd.DataFrame(
        {
            "slot": np.arange(len(plen), dtype=np.int64),
            "prompt_tokens": plen.astype(np.int64),
            "output_tokens": out.astype(np.int64),
            "num_cached_tokens": np.asarray(core.num_cached_tokens, dtype=np.int64),
            "num_preemptions": np.asarray(core.num_preemptions_req, dtype=np.int64),
            "first_scheduled_step": np.asarray(core.first_scheduled_step, dtype=np.int64),
            "first_token_step": np.asarray(core.first_token_step, dtype=np.int64),
            "finished_step": np.asarray(core.finished_step, dtype=np.int64),
        },
        columns=list(SIM_REQUEST_COLUMNS),
    )
    summary = _totals(core, plen, out, seconds).to_dict()
    return SimResult(steps, requests, summary, params, _meta(seconds), work)


def _meta(seconds: float) -> dict[str, Any]:
    import os

    from ggr_kv import __version__

    return {
        "seconds": seconds,
        "clock": "none: t_s is the step index",
        "versions": {
            "ggr_kv": __version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "model_of": "vLLM V1 scheduler and KV cache manager, vllm 0.32 (sync scheduling)",
        "hardware": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
    }


def simulate_plan(
    table: Any,
    plan: Any,
    query: str,
    instruction: str | None,
    tokenizer: Any,
    output_len: int | np.ndarray,
    config: SchedulerConfig | None = None,
    **engine: Any,
) -> SimResult:
    """`simulate` the prompts of ``plan`` over ``table``, built and tokenized as vLLM sees them.

    Parameters
    ----------
    table : a `ggr_kv.core.table.Table`, a DataFrame or a .csv/.parquet path.
    plan : a `ggr_kv.core.plan.ReorderPlan` (run order and field orders).
    query, instruction : prompt text (``None`` = the package's default instruction).
    tokenizer : a name for `ggr_kv.core.tokenizer.load_tokenizer` (``"llama3"``, a model
        folder) or an object with ``.encode_batch(texts) -> (tokens, offsets)`` that
        adds BOS as the model's tokenizer does.
    output_len : tokens generated per request (one int, or one per run slot).
    config, **engine : the engine's settings, as `simulate` takes them (a
        `SchedulerConfig` and/or ``block_size=..., num_blocks=...``, ``progress``).

    Returns
    -------
    SimResult whose ``requests`` also hold ``row``, the original table row of each slot.
    """
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION, encode_prompts
    from ggr_kv.core.table import load_table

    table = load_table(table)
    plan.check(table)
    instr = DEFAULT_INSTRUCTION if instruction is None else instruction
    tokens, offsets = encode_prompts(table, plan, tokenizer, query, instr)
    res = simulate(tokens, offsets, output_len, config, **engine)
    res.requests.insert(0, "row", plan.row_order.astype(np.int64))
    res.params.update({"query": query, "instruction": instr, "tokenizer": _tok_name(tokenizer)})
    return res


def _tok_name(tokenizer: Any) -> str:
    return tokenizer if isinstance(tokenizer, str) else str(getattr(tokenizer, "name", tokenizer))
