"""Record a run: its repeats, engine facts and counters as a `RunRecord` plus the tables
of its run folder (steps and requests of every repeat, outputs of the median repeat).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.engine.config import (
    EngineConfig,
    engine_facts,
    hardware_info,
    server_facts,
    started_engine,
)
from ggr_kv.run.counters import check_repeats, simulate_counts
from ggr_kv.run.execute import Staged, aggregate
from ggr_kv.run.prepare import PreparedRun
from ggr_kv.run.rundir import (
    EngineUse,
    RepeatRecord,
    RepeatSummary,
    RunRecord,
    Timings,
    package_versions,
)

__all__ = ["INTERLEAVED", "EngineMeta", "RepeatOutcome", "RunFiles", "build_record",
           "engine_meta", "sampling_for"]

#: how a batch orders repeats on one engine (recorded in every run.json)
INTERLEAVED = (
    "interleaved: repeat k of every run on this engine before repeat k+1 (A B C A B C ...), "
    "prefix cache emptied before each, so drift and other load hit every ordering alike"
)

#: effective engine settings recorded as ``engine_args`` (from the live engine)
_ENGINE_ARG_KEYS = (
    "model",
    "dtype",
    "max_model_len",
    "block_size",
    "enable_prefix_caching",
    "prefix_caching_hash_algo",
    "kv_cache_dtype",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "max_num_seqs",
    "max_num_batched_tokens",
    "long_prefill_token_threshold",
    "enable_chunked_prefill",
    "enforce_eager",
    "load_format",
    "seed",
    "distributed_executor_backend",
    "server_url",
)


@dataclass
class EngineMeta:
    """Facts and settings of the engine (or server) runs go through.

    Attributes
    ----------
    facts : `engine_facts` / `server_facts`.
    engine_args : effective settings recorded in run.json.
    model : the model label (the shape name for engines `make_llm` started).
    kwargs : what was passed to ``vllm.LLM`` (None for a server or a foreign engine).
    dummy : random weights (None: unknown, a server).
    start_s : cold start, s (None: unknown).
    engine_id : the `make_llm` id (None: not started by it).
    """

    facts: dict[str, Any]
    engine_args: dict[str, Any]
    model: str
    kwargs: dict[str, Any] | None
    dummy: bool | None
    start_s: float | None
    engine_id: str | None


def engine_meta(llm: Any, server_url: str | None, settings: EngineConfig | None) -> EngineMeta:
    """Read the facts of a running engine or server, for run.json."""
    if server_url is not None:
        facts = server_facts(server_url)
        args = {k: facts[k] for k in _ENGINE_ARG_KEYS if facts.get(k) is not None}
        return EngineMeta(facts, args, facts["model"], None, None, None, None)
    facts = engine_facts(llm)
    started = started_engine(llm)
    config = started.config if started else settings
    kwargs = started.kwargs if started else None
    args = {k: facts.get(k) for k in _ENGINE_ARG_KEYS if k in facts}
    if kwargs:  # settings passed through verbatim (extra) that facts do not cover
        args.update({k: v for k, v in kwargs.items() if k not in args and k != "disable_log_stats"})
    model = config.model if config is not None else facts["model"]
    return EngineMeta(facts, args, model, kwargs, facts.get("load_format") == "dummy",
                      started.start_s if started else None,
                      started.engine_id if started else None)


def sampling_for(prep: PreparedRun, em: EngineMeta) -> dict[str, Any]:
    """SamplingParams fields of a run (``max_tokens`` comes per stage): greedy, and
    ``ignore_eos`` on dummy weights so every ordering decodes the same tokens."""
    sp: dict[str, Any] = {"temperature": 0.0}
    if em.dummy:
        sp["ignore_eos"] = True
    sp.update(prep.sampling)
    return sp


@dataclass
class RepeatOutcome:
    """One repeat as it ran: its stages, position on the engine, whether the cache was
    emptied first, and its wall time including the reset (s)."""

    repeat: int
    position: int
    staged: Staged
    reset: bool
    wall_s: float


@dataclass
class RunFiles:
    """What goes into a run folder."""

    record: RunRecord
    steps: pd.DataFrame
    requests: pd.DataFrame
    outputs: pd.DataFrame


def _total(req: pd.DataFrame, col: str) -> int | None:
    v = pd.to_numeric(req[col], errors="coerce").sum(min_count=1) if len(req) else np.nan
    return None if pd.isna(v) else int(v)


def _repeat_record(o: RepeatOutcome) -> RepeatRecord:
    s, req = o.staged.summary, o.staged.requests
    return RepeatRecord(
        repeat=o.repeat, position=o.position, job_s=o.staged.job_s, prefix_cache_reset=o.reset,
        prefix_cache_hits=s.get("prefix_cache_hits"),
        connector_hits=s.get("connector_hits"),
        prefix_cache_queries=s.get("prefix_cache_queries"),
        prefix_cache_hit_rate=s.get("prefix_cache_hit_rate"),
        request_cached_tokens=_total(req, "num_cached_tokens"),
        request_prompt_tokens=_total(req, "prompt_tokens"),
        num_preemptions=s.get("num_preemptions"), num_steps=s.get("num_steps"),
        max_kv_cache_usage=s.get("max_kv_cache_usage"),
        output_tokens=o.staged.output_tokens, tokenize_s=o.staged.tokenize_s,
    )


def _repeat_summary(outcomes: list[RepeatOutcome], requested: int) -> RepeatSummary:
    jobs = [o.staged.job_s for o in outcomes]
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i], i))
    med = statistics.median(jobs)
    return RepeatSummary(
        count=len(jobs), requested=requested, median_repeat=outcomes[order[(len(jobs) - 1) // 2]].repeat,
        job_s=jobs, job_s_median=med, job_s_min=min(jobs), job_s_max=max(jobs),
        job_s_spread=(max(jobs) - min(jobs)) / med if med > 0 else 0.0, schedule=INTERLEAVED,
    )


def _joined(frames: list[pd.DataFrame], outcomes: list[RepeatOutcome]) -> pd.DataFrame:
    return pd.concat([f.assign(repeat=o.repeat) for f, o in zip(frames, outcomes)],
                     ignore_index=True)


def build_record(
    prep: PreparedRun,
    outcomes: list[RepeatOutcome],
    em: EngineMeta,
    use: EngineUse,
    *,
    server_url: str | None,
    max_concurrency: int,
    predict: bool = True,
    progress: bool = True,
) -> RunFiles:
    """The record and tables of a run whose repeats all ran (``outcomes``, >= 1).

    ``summary``, ``outputs`` and the headline numbers are the median repeat's; steps and
    requests hold every repeat (``repeat`` column); ``counters`` compares the collector,
    the requests and (``predict``) the simulator.
    """
    t0 = time.perf_counter()
    rep = _repeat_summary(outcomes, prep.spec.repeats)
    med = next(o for o in outcomes if o.repeat == rep.median_repeat).staged
    n = prep.table.n_rows
    outputs = pd.DataFrame({"row": np.arange(n), "slot": prep.plan.inverse_order(), **med.columns})
    repeats = [_repeat_record(o) for o in outcomes]
    facts = em.facts
    multi = len(prep.query.stages) > 1
    if predict and server_url is None and not multi:
        salted = (prep.reorder_info or {}).get("no_cache_by") == "salt"  # nothing shared
        sim = simulate_counts(prep.tokens, med.requests,
                              {**facts, "enable_prefix_caching": False} if salted else facts,
                              progress=progress)
    else:
        from ggr_kv.run.counters import SimCounts

        sim = SimCounts(note="not simulated: " + ("a server run (its scheduler settings are "
                        "not visible)" if server_url else "a multi-stage query" if multi
                        else "predict=False"))
    counters = check_repeats(repeats, rep.median_repeat, sim)
    sp = sampling_for(prep, em)
    stages = prep.query.stages
    spent = sum(o.wall_s for o in outcomes) + prep.prepare_s + (time.perf_counter() - t0)
    total = spent + (prep.reorder_s or 0.0) + ((use.start_s or 0.0) if use.started_by_runner else 0)
    record = RunRecord(
        run_id=str(prep.run_id), created=prep.created, dataset=prep.dataset,
        dataset_info=prep.dataset_info, method=prep.method, query_type=prep.query.qtype,
        query=prep.query.text, query_spec=prep.query.to_dict(), instruction=prep.instruction,
        rows=n, columns=list(prep.table.columns), model=em.model, model_path=facts.get("model"),
        dummy_weights=em.dummy, mode="server" if server_url else "offline",
        server_url=server_url, max_concurrency=max_concurrency if server_url else None,
        submit=med.submit,
        engine_args=em.engine_args, engine_kwargs=em.kwargs,
        vllm_version=facts.get("vllm_version"), dtype=facts.get("dtype"),
        block_size=facts.get("block_size"), num_kv_blocks=facts.get("num_kv_blocks"),
        enable_prefix_caching=facts.get("enable_prefix_caching"),
        max_model_len=facts.get("max_model_len"), max_num_seqs=facts.get("max_num_seqs"),
        device=facts.get("device") or med.summary.get("device"), hardware=hardware_info(),
        hardware_scope="client (the server's machine is not visible)" if server_url else "engine",
        versions=package_versions(),
        sampling={**sp, "max_tokens": [s.max_tokens for s in stages] if multi
                  else stages[0].max_tokens},
        prefix_cache_reset=all(o.reset for o in outcomes),
        timings=Timings(prep.reorder_s, use.start_s, rep.job_s_median, total, med.tokenize_s),
        prompt_tokens=med.prompt_tokens, prompt_tokens_source="vllm",
        output_tokens=med.output_tokens, summary=med.summary,
        reorder=({**prep.reorder_info, "run_knobs": prep.context} if prep.context
                 else prep.reorder_info or None),
        stages=med.stages if multi else None, aggregate=aggregate(prep.query, outputs),
        repeats=rep, repeat_runs=repeats, counters=counters, engine=use,
    ).normalized()
    steps = _joined([o.staged.steps for o in outcomes], outcomes)
    requests = _joined([o.staged.requests for o in outcomes], outcomes)
    return RunFiles(record, steps, requests, outputs)
