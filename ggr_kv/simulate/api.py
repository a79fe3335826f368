"""Predict vLLM V1's prefix-cache hits, KV usage and preemptions without running a model.

`simulate` replays vLLM V1's scheduler and KV block pool step by step at block
granularity (see `ggr_kv.simulate.schedule` for the vLLM code it follows): chained hashes
of full blocks, hits capped by the last-token rule, blocks cached as soon as they are
allocated full, reference counts, the LRU free queue with eviction on reuse, FCFS
admission within the per-step token budget with chunked prefill, recompute
preemption of the newest running request, and one decode token per running request
per step until each reaches its output length.

There is no clock: ``t_s`` in `SimResult.steps` is the step index. Token counts are
tokens; fractions are 0-1.

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

from ggr_kv.core.blocks import block_hashes
from ggr_kv.core.schema import STEP_COLUMNS, add_running_totals
from ggr_kv.simulate.schedule import CoreResult, run_schedule

__all__ = ["SIM_REQUEST_COLUMNS", "SimResult", "simulate", "simulate_plan"]

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


@dataclass
class SimResult:
    """Predicted engine behaviour.

    Attributes
    ----------
    steps : one row per engine step, columns exactly `ggr_kv.core.schema.STEP_COLUMNS`;
        ``t_s`` is the step index (the simulator has no clock).
    requests : one row per prompt in run order, columns `SIM_REQUEST_COLUMNS`
        (plus ``row``, the original table row, from `simulate_plan`).
    summary : ``hit_rate`` (0-1), ``prefix_cache_hits`` / ``prefix_cache_queries``
        (tokens, as vLLM's counters count them: first admissions only),
        ``preempted_queries`` / ``preempted_hits`` (tokens, re-admissions after a
        preemption), ``peak_kv_usage`` (0-1), ``num_preemptions``, ``num_steps``,
        ``num_requests``, ``prompt_tokens``, ``generation_tokens``, ``evicted_blocks``.
    params : the engine parameters simulated.
    meta : versions, hardware and the wall time of the replay (``seconds``).
    """

    steps: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

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
    n = len(lens)
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
    return tokens, offsets, out.astype(np.int64)


def simulate(
    tokens: np.ndarray,
    offsets: np.ndarray,
    output_lens: int | np.ndarray,
    *,
    block_size: int,
    num_blocks: int,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int = 8192,
    enable_prefix_caching: bool = True,
    long_prefill_token_threshold: int = 0,
    enable_chunked_prefill: bool = True,
    scheduler_reserve_full_isl: bool = True,
    watermark: float = 0.0,
    progress: bool | None = None,
) -> SimResult:
    """Replay vLLM V1's scheduler and prefix cache over prompts submitted at once.

    Parameters
    ----------
    tokens, offsets : prompts in run order, CSR token ids exactly as vLLM sees them
        (BOS included); prompt i is ``tokens[offsets[i]:offsets[i + 1]]``.
    output_lens : tokens each request generates (one int for all, or one per prompt);
        vLLM's ``max_tokens`` with ``ignore_eos=True``.
    block_size : tokens per KV block (16 on GPU, 128 on the CPU backend).
    num_blocks : KV blocks in the pool as vLLM counts them (``num_gpu_blocks``, the
        log line "GPU KV cache size"/block size); one is vLLM's null block, so
        ``num_blocks - 1`` hold tokens.
    max_num_seqs : most requests running at once.
    max_num_batched_tokens : per-step token budget (tokens).
    enable_prefix_caching : False replays the engine with the prefix cache off.
    long_prefill_token_threshold : per-step cap of one request's prefill (tokens), 0 = off.
    enable_chunked_prefill, scheduler_reserve_full_isl, watermark : vLLM's scheduler
        options of the same names (defaults are vLLM's).
    progress : show a tqdm bar of finished requests (default: only above 20,000 prompts).

    Returns
    -------
    SimResult
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1 token, got {block_size}")
    if num_blocks < 2:
        raise ValueError(f"num_blocks must be >= 2 (one is vLLM's null block), got {num_blocks}")
    if max_num_seqs < 1 or max_num_batched_tokens < 1:
        raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
    if long_prefill_token_threshold < 0:
        raise ValueError("long_prefill_token_threshold must be >= 0 tokens")
    if not 0.0 <= watermark < 1.0:
        raise ValueError(f"watermark must be a fraction in [0, 1), got {watermark}")
    tokens, offsets, out = _check_inputs(tokens, offsets, output_lens)
    plen = np.diff(offsets)
    n = len(plen)
    # the most KV one request ever holds: its prompt plus all but its last output token
    need = -(-(plen + out - 1) // block_size)
    if n and need.max() > num_blocks - 1:
        worst = int(np.argmax(need))
        raise ValueError(
            f"prompt {worst} ({int(plen[worst])} tokens + {int(out[worst])} output) needs "
            f"{int(need[worst])} KV blocks of {block_size} tokens, but the pool has "
            f"{num_blocks - 1} usable blocks (num_blocks={num_blocks}); vLLM would refuse "
            "this max_model_len"
        )
    params = {
        "block_size": int(block_size),
        "num_blocks": int(num_blocks),
        "max_num_seqs": int(max_num_seqs),
        "max_num_batched_tokens": int(max_num_batched_tokens),
        "enable_prefix_caching": bool(enable_prefix_caching),
        "long_prefill_token_threshold": int(long_prefill_token_threshold),
        "enable_chunked_prefill": bool(enable_chunked_prefill),
        "scheduler_reserve_full_isl": bool(scheduler_reserve_full_isl),
        "watermark": float(watermark),
    }
    t0 = time.perf_counter()
    bh = block_hashes(tokens, offsets, block_size)
    show = n > 20_000 if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="simulate", unit="req")
    try:
        core = run_schedule(
            plen,
            out,
            bh.hashes,
            bh.block_offsets,
            block_size=block_size,
            num_blocks=num_blocks,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_prefix_caching=enable_prefix_caching,
            long_prefill_token_threshold=long_prefill_token_threshold,
            enable_chunked_prefill=enable_chunked_prefill,
            scheduler_reserve_full_isl=scheduler_reserve_full_isl,
            watermark=watermark,
            on_step=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    return _assemble(core, plen, out, params, seconds)


def _assemble(
    core: CoreResult, plen: np.ndarray, out: np.ndarray, params: dict, seconds: float
) -> SimResult:
    n_steps = len(core.queries)
    q = np.asarray(core.queries, dtype=np.int64)
    h = np.asarray(core.hits, dtype=np.int64)
    pre = np.asarray(core.num_preemptions, dtype=np.int64)
    steps = pd.DataFrame(
        {
            "t_s": np.arange(n_steps, dtype=np.float64),
            "step": np.arange(n_steps, dtype=np.int64),
            "kv_cache_usage": np.asarray(core.kv_usage, dtype=np.float64),
            "prefix_queries": q,
            "prefix_hits": h,
            "num_running": np.asarray(core.num_running, dtype=np.int64),
            "num_waiting": np.asarray(core.num_waiting, dtype=np.int64),
            "num_preemptions": pre,
            "prompt_tokens": np.asarray(core.prompt_tokens, dtype=np.int64),
            "generation_tokens": np.asarray(core.generation_tokens, dtype=np.int64),
            "connector_queries": np.zeros(n_steps, dtype=np.int64),
            "connector_hits": np.zeros(n_steps, dtype=np.int64),
        },
    )
    steps = add_running_totals(steps)[list(STEP_COLUMNS)]
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
    total_q = int(q.sum())
    total_h = int(h.sum())
    usage = steps["kv_cache_usage"]
    summary = {
        "hit_rate": total_h / total_q if total_q else float("nan"),
        "prefix_cache_hits": total_h,
        "prefix_cache_queries": total_q,
        "preempted_queries": int(sum(core.preempted_queries)),
        "preempted_hits": int(sum(core.preempted_hits)),
        "peak_kv_usage": float(usage.max()) if n_steps else 0.0,
        "num_preemptions": int(pre.sum()),
        "num_steps": n_steps,
        "num_requests": int(len(plen)),
        "prompt_tokens": int(plen.sum()),
        "generation_tokens": int(out.sum()),
        "evicted_blocks": int(sum(core.evictions)),
    }
    return SimResult(steps, requests, summary, params, _meta(seconds))


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
    **engine : keyword arguments of `simulate` (``block_size``, ``num_blocks``, ...).

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
    res = simulate(tokens, offsets, output_len, **engine)
    res.requests.insert(0, "row", plan.row_order.astype(np.int64))
    res.params.update({"query": query, "instruction": instr, "tokenizer": _tok_name(tokenizer)})
    return res


def _tok_name(tokenizer: Any) -> str:
    return tokenizer if isinstance(tokenizer, str) else str(getattr(tokenizer, "name", tokenizer))
