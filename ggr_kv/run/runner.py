"""The inference runner: a table, a plan and a query in; a run folder out.

`run_table` builds every prompt with the one serializer (`ggr_kv.core.prompts`), sends them
in run order — offline as ONE ``llm.generate`` call (vLLM batches them), or to an
OpenAI-compatible vLLM server with bounded concurrency — with the metrics collector
on, maps the outputs back to the ORIGINAL row order, and writes ``results/<run_id>/``
(see `ggr_kv.run.rundir` and DEVELOPERS.md). `run_orderings` runs several orderings of the
same rows and query on one engine, resetting the prefix cache between them.

Scripts that start an engine need an ``if __name__ == "__main__":`` guard; notebooks
set ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` before importing vLLM.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.plan import PlanError, ReorderPlan
from ggr_kv.core.prompts import DEFAULT_INSTRUCTION, build_prompts
from ggr_kv.core.schema import add_running_totals
from ggr_kv.core.table import Table, load_table
from ggr_kv.engine.config import (
    EngineConfig,
    engine_facts,
    hardware_info,
    make_llm,
    server_facts,
    shutdown_llm,
    started_config,
)
from ggr_kv.run.rundir import (
    check_run_dir_free,
    claim_run_dir,
    new_run_id,
    package_versions,
    write_run_files,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "RunResult",
    "restrict_plan",
    "run_orderings",
    "run_table",
]

#: output tokens per row when the query does not say (a custom query string)
DEFAULT_MAX_TOKENS = 16

#: seconds between scrapes of a server's /metrics (the server has no per-step hook)
SERVER_SCRAPE_INTERVAL_S = 0.05

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
    "enforce_eager",
    "load_format",
    "seed",
    "distributed_executor_backend",
    "server_url",
)


@dataclass
class RunResult:
    """What one run produced; the same numbers are in its run folder.

    Attributes
    ----------
    path : the run folder.
    run_id : its name.
    summary : the collector's summary (prefix-cache hits/queries in tokens, 0-1 rates).
    timings : ``reorder_s``, ``engine_start_s``, ``job_s`` (generate wall time),
        ``total_s``, all seconds.
    outputs : ``row``, ``slot``, ``output`` (+ query-specific columns), ORIGINAL order.
    steps : one row per engine step (``schema.STEP_COLUMNS`` + resource columns).
    requests : one row per request (``schema.REQUEST_COLUMNS``).
    meta : the ``run.json`` content.
    """

    path: Path
    run_id: str
    summary: dict[str, Any]
    timings: dict[str, float]
    outputs: pd.DataFrame = field(repr=False)
    steps: pd.DataFrame = field(repr=False)
    requests: pd.DataFrame = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def hit_rate(self) -> float:
        """Prefix-cache hit rate of this run: hit tokens / looked-up tokens (0-1)."""
        v = self.summary.get("prefix_cache_hit_rate")
        return float(v) if v is not None else float("nan")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _StageSpec:
    """One LLM call per row, normalized from a ``queries.Stage`` or a plain string."""

    text: str
    max_tokens: int
    kind: str = "text"  # "text", "choice", "score"
    fields: tuple[str, ...] | None = None
    stage: Any = None  # the queries.Stage (parse / passes), None for a plain string


@dataclass(frozen=True)
class _QuerySpec:
    text: str
    qtype: str
    stages: tuple[_StageSpec, ...]
    obj: Any  # the queries.Query, or None for a plain string


def _query_spec(query: Any, max_tokens: int | None = None) -> _QuerySpec:
    """Normalize a ``queries.Query`` or a query string; ``max_tokens`` overrides every
    stage's limit."""
    if isinstance(query, str):
        st = _StageSpec(query, int(max_tokens or DEFAULT_MAX_TOKENS))
        return _QuerySpec(query, "custom", (st,), None)
    text = getattr(query, "text", None)
    if not isinstance(text, str):
        raise TypeError(
            f"query must be a str or a ggr_kv.datasets.queries.Query, got {type(query).__name__}"
        )
    raw = tuple(getattr(query, "stages", None) or ()) or (query,)
    stages = tuple(
        _StageSpec(
            st.text,
            int(max_tokens or getattr(st, "max_tokens", None) or DEFAULT_MAX_TOKENS),
            str(getattr(st, "kind", "text")),
            tuple(st.fields) if getattr(st, "fields", None) is not None else None,
            st if hasattr(st, "parse") else None,
        )
        for st in raw
    )
    return _QuerySpec(text, str(getattr(query, "qtype", None) or "custom"), stages, query)


def _as_table(table: Any) -> tuple[Table, str | None, Any, dict | None]:
    """``(Table, dataset name, fds, dataset metadata)`` from a Table, DataFrame, path or
    ``datasets.Dataset`` (name, fds and metadata None where unknown)."""
    if callable(getattr(table, "table", None)) and hasattr(table, "frame"):  # Dataset
        meta = table.metadata() if callable(getattr(table, "metadata", None)) else None
        return table.table(), str(table.name), getattr(table, "fds", None), meta
    t = load_table(table)
    name = Path(str(table)).stem if isinstance(table, (str, Path)) else None
    return t, name, None, None


def _as_plan(plan: Any, table: Table) -> tuple[ReorderPlan, str | None, float | None, dict]:
    """``(plan, method, reorder seconds, reorder info)`` from a plan, ReorderResult, None
    (the input order) or a plan JSON path."""
    if plan is None:
        return ReorderPlan.identity(table), "original", None, {}
    if isinstance(plan, ReorderPlan):
        plan.check(table)
        return plan, None, None, {}
    inner = getattr(plan, "plan", None)
    if isinstance(inner, ReorderPlan):  # reorder.ReorderResult
        inner.check(table)
        info = dict(getattr(plan, "info", None) or {})
        return inner, getattr(plan, "method", None), getattr(plan, "seconds", None), info
    if isinstance(plan, (str, Path)):
        return ReorderPlan.from_json(Path(plan), table), None, None, {}
    raise PlanError(
        f"plan must be a ReorderPlan, a reorder() result or a plan .json path, got "
        f"{type(plan).__name__}"
    )


def restrict_plan(
    table: Table,
    plan: ReorderPlan,
    rows: Sequence[int] | np.ndarray | None = None,
    fields: Sequence[str] | None = None,
) -> tuple[Table, ReorderPlan, np.ndarray]:
    """Cut a table to some rows and fields, keeping the plan's row order and each row's
    field order for what is left (how a query stage sees the rows that reach it).

    Parameters
    ----------
    rows : original row positions to keep (default: all).
    fields : columns to keep (default: all).

    Returns
    -------
    ``(sub_table, sub_plan, original)``: sub-table row i is original row ``original[i]``.
    """
    plan.check(table)
    n = table.n_rows
    rows = np.arange(n, dtype=np.int64) if rows is None else np.unique(np.asarray(rows))
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise PlanError(f"{table.source}: row positions must be in 0..{n - 1}")
    all_rows = len(rows) == n
    cols = list(table.columns) if fields is None else [c for c in table.columns if c in fields]
    if fields is not None:
        missing = [f for f in fields if f not in table.columns]
        if missing:
            raise PlanError(
                f"{table.source}: the query reads columns {missing}, which the table does not "
                f"have. Available columns: {list(table.columns)}"
            )
    if all_rows and len(cols) == table.n_cols:
        return table, plan, np.arange(n, dtype=np.int64)
    original = np.sort(np.asarray(rows, dtype=np.int64))
    col_idx = [table.col_index(c) for c in cols]
    if not col_idx:
        raise PlanError(f"{table.source}: no fields left to show ({list(fields or [])})")
    frame = pd.DataFrame(table.cells[np.ix_(original, col_idx)], columns=cols)
    sub = Table.from_frame(frame, table.source)
    new_pos = np.full(n, -1, dtype=np.int64)
    new_pos[original] = np.arange(len(original))
    slots = new_pos[plan.row_order] >= 0
    new_col = np.full(table.n_cols, -1, dtype=np.int64)
    new_col[col_idx] = np.arange(len(col_idx))
    perm = new_col[plan.field_perm[slots].astype(np.int64)]
    perm = perm[perm >= 0].reshape(int(slots.sum()), len(col_idx))  # keeps each row's order
    return sub, ReorderPlan(tuple(cols), new_pos[plan.row_order[slots]], perm), original


# ------------------------------------------------------------------ one generation


@dataclass
class _Pass:
    """One batch of prompts through the engine, in run order."""

    texts: list[str]
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    steps: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    job_s: float


def _offline_pass(
    llm: Any, prompts: list[str], rows: np.ndarray, sampling: dict, progress: bool
) -> _Pass:
    from vllm import SamplingParams

    from ggr_kv.collector.vllm_collector import VLLMMetricsCollector

    params = SamplingParams(**sampling)
    with VLLMMetricsCollector(llm, sample_resources=True) as col:
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=progress)  # one call: vLLM batches
        job_s = time.perf_counter() - t0
    texts = [o.outputs[0].text if o.outputs else "" for o in outs]
    ptoks = np.array([len(o.prompt_token_ids or ()) for o in outs], dtype=np.int64)
    otoks = np.array(
        [len(o.outputs[0].token_ids) if o.outputs else 0 for o in outs], dtype=np.int64
    )
    return _Pass(
        texts, ptoks, otoks, col.steps(), col.requests(outs, rows=rows), col.summary(), job_s
    )


async def _send_all(
    url: str, bodies: list[dict], max_concurrency: int, timeout_s: float, progress: bool
) -> tuple[list[dict], float]:
    """POST every body to ``/v1/completions``, at most ``max_concurrency`` in flight,
    started in run order; returns the responses in run order and the wall time
    (first send to last response, s)."""
    import httpx
    from tqdm.auto import tqdm

    sem = asyncio.Semaphore(max_concurrency)
    limits = httpx.Limits(
        max_connections=max_concurrency, max_keepalive_connections=max_concurrency
    )
    results: list[dict] = [{} for _ in bodies]
    bar = tqdm(total=len(bodies), desc="requests", unit="req", disable=not progress)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:

        async def one(i: int, body: dict) -> None:
            async with sem:  # FIFO: requests start in run order
                sent = time.perf_counter()
                r = await client.post(f"{url}/v1/completions", json=body)
                done = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(
                    f"{url}/v1/completions answered {r.status_code} for run slot {i}: "
                    f"{r.text[:500]}"
                )
            d = r.json()
            d["e2e_s"] = done - sent  # client-measured; collector.requests() reads it
            results[i] = d
            bar.update(1)

        t0 = time.perf_counter()
        try:
            await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        finally:
            bar.close()
        job_s = time.perf_counter() - t0
    return results, job_s


def _reset_server_cache(url: str) -> bool:
    import httpx

    try:
        r = httpx.post(f"{url}/reset_prefix_cache", timeout=30)
    except httpx.HTTPError as e:
        warnings.warn(f"{url}: could not reset the prefix cache: {e}", stacklevel=3)
        return False
    if r.status_code == 200:
        return True
    warnings.warn(
        f"{url}/reset_prefix_cache answered {r.status_code}: the server keeps earlier runs' "
        "blocks, so this run may hit them. Start the server with VLLM_SERVER_DEV_MODE=1 to "
        "allow resets.",
        stacklevel=3,
    )
    return False


def _server_pass(
    url: str,
    model: str,
    prompts: list[str],
    rows: np.ndarray,
    sampling: dict,
    max_concurrency: int,
    progress: bool,
    timeout_s: float = 600.0,
) -> _Pass:
    from ggr_kv.collector.vllm_collector import VLLMMetricsCollector

    bodies = [{"model": model, "prompt": p, **sampling} for p in prompts]
    col = VLLMMetricsCollector.from_url(
        url, interval_s=SERVER_SCRAPE_INTERVAL_S, sample_resources=True
    )
    col.start()
    try:
        # asyncio.run in a worker thread: works in scripts and inside Jupyter's own loop
        with ThreadPoolExecutor(1) as ex:
            fut = ex.submit(
                asyncio.run, _send_all(url, bodies, max_concurrency, timeout_s, progress)
            )
            responses, job_s = fut.result()
    finally:
        col.stop()
    texts = [(r.get("choices") or [{}])[0].get("text") or "" for r in responses]
    usage = [r.get("usage") or {} for r in responses]
    ptoks = np.array([u.get("prompt_tokens") or 0 for u in usage], dtype=np.int64)
    otoks = np.array([u.get("completion_tokens") or 0 for u in usage], dtype=np.int64)
    return _Pass(
        texts, ptoks, otoks, col.steps(), col.requests(responses, rows=rows), col.summary(),
        job_s,
    )


# ------------------------------------------------------------------------ stages


def _combine_steps(frames: list[pd.DataFrame], offsets_s: list[float]) -> pd.DataFrame:
    """Concatenate stage step tables: time and step numbers continue, cumulative
    columns are recomputed over the whole run, a ``stage`` column (1, 2, ...) is added."""
    parts, step0 = [], 0
    for k, (f, off) in enumerate(zip(frames, offsets_s), start=1):
        f = f.assign(t_s=f["t_s"] + off, step=f["step"] + step0, stage=k)
        step0 += len(f)
        parts.append(f)
    return add_running_totals(pd.concat(parts, ignore_index=True))


_SUMMED = (
    "prefix_cache_hits",
    "prefix_cache_queries",
    "num_preemptions",
    "num_steps",
    "num_rows",
    "prompt_tokens",
    "generation_tokens",
    "connector_queries",
    "connector_hits",
    "duration_s",
)


def _combine_summaries(summaries: list[dict]) -> dict[str, Any]:
    """One summary over several stages: counts add up, peaks take the max, the hit rate
    is recomputed from the summed counts."""
    if len(summaries) == 1:
        return dict(summaries[0])
    out = dict(summaries[-1])
    for key in _SUMMED:
        vals = [s.get(key) for s in summaries]
        out[key] = sum(vals) if all(isinstance(v, (int, float)) for v in vals) else None
    peaks = [s.get("max_kv_cache_usage") for s in summaries]
    peaks = [p for p in peaks if isinstance(p, (int, float))]
    out["max_kv_cache_usage"] = max(peaks) if peaks else None
    q, h = out.get("prefix_cache_queries"), out.get("prefix_cache_hits")
    out["prefix_cache_hit_rate"] = float(h) / float(q) if q and h is not None else None
    out["stages"] = len(summaries)
    return out


@dataclass
class _Staged:
    """All stages of one run, combined; per-row columns in ORIGINAL row order."""

    columns: dict[str, np.ndarray]
    steps: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    job_s: float
    prompt_tokens: int
    output_tokens: int
    stages: list[dict[str, Any]]


def _run_stages(
    table: Table,
    plan: ReorderPlan,
    spec: _QuerySpec,
    run_pass: Any,
) -> _Staged:
    """Run each stage on the rows the previous stage kept (a filter's ``keep``), every
    stage's prompts in the plan's order and field orders (cut to the stage's fields)."""
    n = table.n_rows
    rows = np.arange(n, dtype=np.int64)  # original rows that reach the current stage
    output = np.full(n, "", dtype=object)
    reached = np.zeros(n, dtype=np.int64)
    ptok = np.zeros(n, dtype=np.int64)
    otok = np.zeros(n, dtype=np.int64)
    cols: dict[str, np.ndarray] = {}
    passes: list[_Pass] = []
    requests: list[pd.DataFrame] = []
    offsets: list[float] = []
    stages_meta: list[dict[str, Any]] = []
    multi = len(spec.stages) > 1
    for k, st in enumerate(spec.stages, start=1):
        if not len(rows):
            break
        sub, sub_plan, original = restrict_plan(table, plan, rows, st.fields)
        prompts = build_prompts(sub, sub_plan, st.text, run_pass.instruction)
        run_rows = original[sub_plan.row_order]  # original row of each run slot
        p = run_pass(prompts, run_rows, st.max_tokens)
        offsets.append(float(sum(x.job_s for x in passes)))
        passes.append(p)
        requests.append(p.requests.assign(stage=k) if multi else p.requests)
        texts = np.array(p.texts, dtype=object)
        output[run_rows] = texts
        reached[run_rows] = k
        ptok[run_rows] += p.prompt_tokens
        otok[run_rows] += p.output_tokens
        if multi:
            col = np.full(n, None, dtype=object)
            col[run_rows] = texts
            cols[f"stage{k}_output"] = col
        if st.stage is not None and st.kind in ("choice", "score"):  # normalized answers
            dtype = float if st.kind == "score" else object
            name = ("answer" if st.kind == "choice" else "score") + (f"_stage{k}" if multi else "")
            col = np.full(n, np.nan, dtype=dtype)
            col[run_rows] = np.asarray(st.stage.parse(p.texts), dtype=dtype)
            cols[name] = col
        meta = {
            "stage": k,
            "kind": st.kind,
            "query": st.text,
            "fields": list(st.fields) if st.fields is not None else None,
            "max_tokens": st.max_tokens,
            "rows": len(run_rows),
            "job_s": p.job_s,
            "prompt_tokens": int(p.prompt_tokens.sum()),
            "output_tokens": int(p.output_tokens.sum()),
            "summary": p.summary,
        }
        if k < len(spec.stages):
            keep = (
                np.asarray(st.stage.passes(p.texts), dtype=bool)
                if st.stage is not None
                else np.ones(len(run_rows), dtype=bool)
            )
            rows = np.sort(run_rows[keep])
            meta["kept_rows"] = int(keep.sum())
        stages_meta.append(meta)
    if multi:  # rows a filter dropped have no final output
        cols["stage_reached"] = reached
        output = np.where(reached == len(spec.stages), output, "")
    cols = {"output": output, "prompt_tokens": ptok, "output_tokens": otok, **cols}
    return _Staged(
        cols,
        _combine_steps([p.steps for p in passes], offsets) if multi else passes[0].steps,
        pd.concat(requests, ignore_index=True) if multi else requests[0],
        _combine_summaries([p.summary for p in passes]),
        float(sum(p.job_s for p in passes)),
        int(ptok.sum()),
        int(otok.sum()),
        stages_meta,
    )


def _aggregate(spec: _QuerySpec, outputs: pd.DataFrame) -> dict[str, Any] | None:
    """An aggregation query's result: mean of the valid 1-5 scores (`aggregate_scores`)."""
    if spec.qtype != "aggregation":
        return None
    from ggr_kv.datasets.queries import aggregate_scores

    last = spec.stages[-1]
    reached = outputs["stage_reached"] == len(spec.stages) if "stage_reached" in outputs else None
    texts = outputs["output"] if reached is None else outputs.loc[reached, "output"]
    s = aggregate_scores(list(texts), last.stage)
    return {
        "mean_score": s.mean,
        "rows": s.n,
        "valid": s.n_valid,
        "invalid_fraction": s.invalid_fraction,
        "counts": s.counts,
        "scale": list(getattr(last.stage, "score_range", (1, 5))),
    }


# ------------------------------------------------------------------------ runner


def _engine_meta(llm: Any, server_url: str | None, engine: EngineConfig | None) -> dict:
    """Engine facts and settings, and the model label, for run.json."""
    if server_url is not None:
        facts = server_facts(server_url)
        args = {k: facts[k] for k in _ENGINE_ARG_KEYS if facts.get(k) is not None}
        return {"facts": facts, "engine_args": args, "model": facts["model"], "kwargs": None,
                "dummy": None, "start_s": None}
    facts = engine_facts(llm)
    started = started_config(llm)
    config, kwargs, start_s = started if started else (engine, None, None)
    args = {k: facts.get(k) for k in _ENGINE_ARG_KEYS if k in facts}
    if kwargs:  # settings passed through verbatim (extra) that facts do not cover
        args.update({k: v for k, v in kwargs.items() if k not in args and k != "disable_log_stats"})
    model = config.model if config is not None else facts["model"]
    return {"facts": facts, "engine_args": args, "model": model, "kwargs": kwargs,
            "dummy": facts.get("load_format") == "dummy", "start_s": start_s}


class _Runner:
    """Sends one stage's prompts (run order) through the engine or the server."""

    def __init__(self, llm, server_url, served_model, sampling, instruction,
                 max_concurrency, progress):
        self.llm, self.url, self.model = llm, server_url, served_model
        self.sampling, self.instruction = sampling, instruction
        self.max_concurrency, self.progress = max_concurrency, progress

    def __call__(self, prompts: list[str], rows: np.ndarray, max_tokens: int) -> _Pass:
        sp = {**self.sampling, "max_tokens": max_tokens}
        if self.url:
            return _server_pass(self.url, self.model, prompts, rows, sp,
                                self.max_concurrency, self.progress)
        return _offline_pass(self.llm, prompts, rows, sp, self.progress)


def _reset(llm: Any, server_url: str | None) -> bool:
    if server_url:
        return _reset_server_cache(server_url)
    ok = bool(llm.reset_prefix_cache())
    if not ok:
        warnings.warn(
            "llm.reset_prefix_cache() returned False (blocks still in use): this run may hit "
            "blocks of an earlier run",
            stacklevel=3,
        )
    return ok


def run_table(
    table: Any,
    plan: Any = None,
    query: Any = "",
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    llm: Any = None,
    engine: EngineConfig | None = None,
    sampling: dict[str, Any] | None = None,
    dataset: str | None = None,
    method: str | None = None,
    out_dir: str | Path = "results",
    run_id: str | None = None,
    server_url: str | None = None,
    max_concurrency: int = 32,
    reset_prefix_cache: bool = True,
    progress: bool = True,
) -> RunResult:
    """Run every row of ``table`` as one prompt, in ``plan``'s order, and save a run folder.

    Parameters
    ----------
    table : a `Table`, DataFrame, CSV/Parquet path or ``datasets.Dataset``.
    plan : a `ReorderPlan`, a ``reorder()`` result (its method and solver time are
        recorded), a plan JSON path, or None for the input order.
    query : a ``queries.Query`` (type, max tokens, stages, fields) or the query text. A
        multi-stage query runs each stage on the rows the previous stage kept.
    instruction : the text every prompt starts with.
    llm : a running ``vllm.LLM`` to use (left running). Without it (and without
        ``server_url``) an engine is started from ``engine`` and stopped afterwards.
    engine : engine settings when the runner starts the engine (default: tiny-llama).
    sampling : ``SamplingParams`` fields over the defaults ``temperature=0``,
        ``max_tokens`` from the query (a ``max_tokens`` here overrides every stage's),
        and ``ignore_eos=True`` for dummy weights (every request then decodes exactly
        ``max_tokens`` tokens, so orderings do the same decode work).
    dataset, method : labels for run.json (defaults: from the table / plan, else
        ``"custom"``; ``method`` is ``"original"`` when ``plan`` is None).
    out_dir : folder of run folders (relative: to the project folder).
    run_id : the run folder's name; default ``{dataset}-{method}-{timestamp}``. An
        existing folder raises `FileExistsError` before anything runs.
    server_url : base URL of a running vLLM server; prompts go to ``/v1/completions``,
        at most ``max_concurrency`` in flight, and the collector scrapes ``/metrics``.
    reset_prefix_cache : empty the prefix cache first, so hits come from this run only.
    progress : show tqdm progress bars.

    Returns
    -------
    RunResult, also written to ``out_dir/run_id/``.
    """
    t_start = time.perf_counter()
    created = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    from ggr_kv.core.paths import project_path

    out_dir = project_path(out_dir)
    tbl, ds_name, _, ds_meta = _as_table(table)
    the_plan, plan_method, reorder_s, reorder_info = _as_plan(plan, tbl)
    dataset = dataset or ds_name or "custom"
    method = method or plan_method or "custom"
    if run_id is not None:
        check_run_dir_free(out_dir, run_id)  # fail before any slow work
    spec = _query_spec(query, (sampling or {}).get("max_tokens"))
    if server_url is not None and llm is not None:
        raise ValueError("give either llm (an offline engine) or server_url, not both")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
    server_url = server_url.rstrip("/") if server_url else None

    owned = llm is None and server_url is None
    engine_start_s = None
    if owned:
        t0 = time.perf_counter()
        llm = make_llm(engine or EngineConfig())
        engine_start_s = time.perf_counter() - t0
    try:
        em = _engine_meta(llm, server_url, engine)
        facts = em["facts"]
        if engine_start_s is None:
            engine_start_s = em["start_s"]
        sp: dict[str, Any] = {"temperature": 0.0}
        if em["dummy"]:
            sp["ignore_eos"] = True
        sp.update({k: v for k, v in (sampling or {}).items() if k != "max_tokens"})
        cache_reset = _reset(llm, server_url) if reset_prefix_cache else False
        runner = _Runner(llm, server_url, facts.get("served_model"), sp, instruction,
                         max_concurrency, progress)
        staged = _run_stages(tbl, the_plan, spec, runner)
    finally:
        if owned:
            shutdown_llm(llm)

    n = tbl.n_rows
    outputs = pd.DataFrame({"row": np.arange(n), "slot": the_plan.inverse_order(),
                            **staged.columns})
    aggregate = _aggregate(spec, outputs)
    run_id = run_id or new_run_id(dataset, method, out_dir)
    timings = {
        "reorder_s": float(reorder_s) if reorder_s is not None else None,
        "engine_start_s": float(engine_start_s) if engine_start_s is not None else None,
        "job_s": staged.job_s,
        # this call's wall time (engine start included when it started the engine),
        # plus the solver time of a reorder() result
        "total_s": float(time.perf_counter() - t_start + (reorder_s or 0.0)),
    }
    meta: dict[str, Any] = {
        "run_id": run_id,
        "created": created,
        "dataset": dataset,
        "dataset_info": ds_meta,
        "method": method,
        "query_type": spec.qtype,
        "query": spec.text,
        "query_spec": spec.obj.to_dict() if hasattr(spec.obj, "to_dict") else None,
        "instruction": instruction,
        "rows": n,
        "columns": list(tbl.columns),
        "model": em["model"],
        "model_path": facts.get("model"),
        "dummy_weights": em["dummy"],
        "mode": "server" if server_url else "offline",
        "server_url": server_url,
        "max_concurrency": max_concurrency if server_url else None,
        "engine_args": em["engine_args"],
        "engine_kwargs": em["kwargs"],
        "vllm_version": facts.get("vllm_version"),
        "dtype": facts.get("dtype"),
        "block_size": facts.get("block_size"),
        "num_kv_blocks": facts.get("num_kv_blocks"),
        "enable_prefix_caching": facts.get("enable_prefix_caching"),
        "max_model_len": facts.get("max_model_len"),
        "max_num_seqs": facts.get("max_num_seqs"),
        "device": facts.get("device") or staged.summary.get("device"),
        "hardware": hardware_info(),
        "hardware_scope": "client (the server's machine is not visible)" if server_url
        else "engine",
        "versions": package_versions(),
        "sampling": {**sp, "max_tokens": [s.max_tokens for s in spec.stages]
                     if len(spec.stages) > 1 else spec.stages[0].max_tokens},
        "prefix_cache_reset": cache_reset,
        "timings": timings,
        "prompt_tokens": staged.prompt_tokens,
        "prompt_tokens_source": "vllm",
        "output_tokens": staged.output_tokens,
        "summary": staged.summary,
        "reorder": reorder_info or None,
        "stages": staged.stages if len(spec.stages) > 1 else None,
        "aggregate": aggregate,
    }
    folder = claim_run_dir(out_dir, run_id)
    write_run_files(folder, meta, steps=staged.steps, requests=staged.requests,
                    outputs=outputs, plan=the_plan)
    return RunResult(folder, run_id, staged.summary, timings, outputs, staged.steps,
                     staged.requests, meta)


def run_orderings(
    table: Any,
    methods: Sequence[str] = ("no_cache", "original", "sorted", "ggr"),
    query: Any = "",
    *,
    fds: Any = None,
    knobs: dict[str, Any] | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
    llm: Any = None,
    engine: EngineConfig | None = None,
    sampling: dict[str, Any] | None = None,
    dataset: str | None = None,
    out_dir: str | Path = "results",
    run_id: str | None = None,
    server_url: str | None = None,
    max_concurrency: int = 32,
    progress: bool = True,
) -> list[RunResult]:
    """Run several orderings of the same rows and query; one run folder each.

    The caching orderings share one engine (started once, or ``llm``), with the prefix
    cache reset before each run. ``"no_cache"`` runs the input order on its own engine
    with ``enable_prefix_caching=False``, started only when asked for, first, and
    stopped before the caching engine starts (two engines rarely fit one GPU).

    Parameters
    ----------
    methods : ``"no_cache"`` and any of ``reorder.METHODS``.
    fds, knobs : passed to ``reorder()`` (FD groups default to the dataset's).
    run_id : with one method, that run's id; with several, the prefix of
        ``{run_id}-{method}``. Default ids are ``{dataset}-{method}-{timestamp}``.
    Other parameters : as in `run_table`.

    Returns
    -------
    list of RunResult, in the order of ``methods``.
    """
    from tqdm.auto import tqdm

    from ggr_kv.core.paths import project_path
    from ggr_kv.reorder.methods import reorder

    methods = list(methods)
    if not methods:
        raise ValueError("methods is empty; give at least one of 'no_cache', 'original', ...")
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise ValueError(f"methods repeat {dup}")
    tbl, ds_name, ds_fds, _ = _as_table(table)
    dataset = dataset or ds_name or "custom"
    fds = fds if fds is not None else ds_fds
    out = project_path(out_dir)
    ids = {
        m: (run_id if len(methods) == 1 else f"{run_id}-{m}") if run_id else None for m in methods
    }
    for m in methods:
        if ids[m]:
            check_run_dir_free(out, ids[m])
    if "no_cache" in methods and server_url is not None:
        raise ValueError(
            "'no_cache' needs an engine with prefix caching off; a server's setting cannot be "
            "changed per run. Run it against a server started with --no-enable-prefix-caching."
        )
    base = engine
    if base is None and llm is not None:
        started = started_config(llm)
        base = started[0] if started else None
    base = base or EngineConfig()

    plans: dict[str, Any] = {}
    for m in methods:
        if m != "no_cache":
            plans[m] = reorder(tbl, m, fds=fds, **(knobs or {}))

    results: dict[str, RunResult] = {}
    bar = tqdm(methods, desc="orderings", unit="run", disable=not progress)
    common: dict[str, Any] = {
        "instruction": instruction, "sampling": sampling, "dataset": dataset, "out_dir": out,
        "max_concurrency": max_concurrency, "progress": progress,
    }
    if "no_cache" in methods:
        bar.set_postfix_str("no_cache")
        results["no_cache"] = run_table(
            table, None, query, engine=base.replace(enable_prefix_caching=False),
            method="no_cache", run_id=ids["no_cache"], **common,
        )
        bar.update(1)
    rest = [m for m in methods if m != "no_cache"]
    if rest:
        owned = llm is None and server_url is None
        the_llm = make_llm(base) if owned else llm
        try:
            for m in rest:
                bar.set_postfix_str(m)
                results[m] = run_table(
                    table, plans[m], query, llm=the_llm, server_url=server_url, method=m,
                    run_id=ids[m], **common,
                )
                bar.update(1)
        finally:
            if owned:
                shutdown_llm(the_llm)
    bar.close()
    return [results[m] for m in methods]
