"""Execute a run: its prompts through an engine or a server, stage by stage.

`EngineHandle` is one engine (an offline ``vllm.LLM``) or one OpenAI-compatible vLLM
server; `run_stages` sends a prepared run's prompts in run order through it (one
``llm.generate`` call per stage, or bounded-concurrency requests to the server) with the
metrics collector on, each stage on the rows the previous stage kept, and returns the
outputs in ORIGINAL row order with the stage's steps, requests and summary.
`EngineHandle.reset` empties the prefix cache between runs.

An offline engine gets token ids by default (``submit="ids"``: tokenized with its own
tokenizer before the job's timer starts, ``tokenize_s`` kept apart;
`ggr_kv.engine.submit`), or the texts (``submit="text"``: vLLM tokenizes them inside the
job time). A server always gets the texts.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import build_prompts
from ggr_kv.core.schema import add_running_totals
from ggr_kv.core.table import Table
from ggr_kv.datasets.queries import Query
from ggr_kv.engine.submit import DEFAULT_SUBMIT, check_submit, submit_inputs
from ggr_kv.run.prepare import restrict_plan

__all__ = ["SERVER_SCRAPE_INTERVAL_S", "EngineHandle", "Pass", "Staged", "aggregate", "run_stages"]

#: seconds between scrapes of a server's /metrics (the server has no per-step hook)
SERVER_SCRAPE_INTERVAL_S = 0.05


@dataclass
class Pass:
    """One batch of prompts through the engine, in run order: output texts, prompt and
    output tokens per request, the collector's tables, the generate wall time (s), how
    the prompts went in (``submit``) and the seconds spent tokenizing them before the
    timer started (0 for text)."""

    texts: list[str]
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    steps: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    job_s: float
    submit: str = "text"
    tokenize_s: float = 0.0


def _offline_pass(
    llm: Any, prompts: list[str], rows: np.ndarray, sampling: dict, progress: bool,
    salt: str | None = None, submit: str = DEFAULT_SUBMIT,
) -> Pass:
    from vllm import SamplingParams

    from ggr_kv.collector.vllm_collector import VLLMMetricsCollector

    params = SamplingParams(**sampling)
    inputs, tokenize_s = submit_inputs(llm, prompts, submit, salt)  # before the timer
    with warnings.catch_warnings():
        # the run asked for caching off (no_cache): no warning that hits will be 0
        warnings.filterwarnings("ignore", message="prefix caching is off")
        col = VLLMMetricsCollector(llm, sample_resources=True).start()
    try:
        t0 = time.perf_counter()
        outs = llm.generate(inputs, params, use_tqdm=progress)  # one call: vLLM batches
        job_s = time.perf_counter() - t0
    finally:
        col.stop()
    texts = [o.outputs[0].text if o.outputs else "" for o in outs]
    ptoks = np.array([len(o.prompt_token_ids or ()) for o in outs], dtype=np.int64)
    otoks = np.array(
        [len(o.outputs[0].token_ids) if o.outputs else 0 for o in outs], dtype=np.int64
    )
    return Pass(
        texts, ptoks, otoks, col.steps(), col.requests(outs, rows=rows), col.summary(), job_s,
        submit, tokenize_s,
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
) -> Pass:
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
    return Pass(
        texts, ptoks, otoks, col.steps(), col.requests(responses, rows=rows), col.summary(),
        job_s,
    )


# ------------------------------------------------------------------------ engine


class EngineHandle:
    """One engine (``llm``) or one server (``url``) that passes go through.

    Parameters
    ----------
    llm : a running ``vllm.LLM`` (None with ``url``).
    url : base URL of an OpenAI-compatible vLLM server.
    served_model : the model name the server answers to.
    max_concurrency : server requests in flight.
    progress : tqdm bars for each pass.
    submit : how an offline engine gets the prompts: ``"ids"`` (tokenized before the
        timer) or ``"text"`` (`ggr_kv.engine.submit`); a server always gets text.
    """

    def __init__(self, llm: Any = None, url: str | None = None, served_model: str | None = None,
                 max_concurrency: int = 32, progress: bool = True,
                 submit: str = DEFAULT_SUBMIT) -> None:
        self.llm, self.url, self.model = llm, url, served_model
        self.max_concurrency, self.progress = max_concurrency, progress
        self.submit = check_submit(submit)
        #: set per run: every request gets its own ``cache_salt`` (a ``no_cache`` run on a
        #: caching engine); None shares the cache as usual
        self.salt: str | None = None

    def run_pass(self, prompts: list[str], rows: np.ndarray, sampling: dict) -> Pass:
        """One batch of prompts (run order) through the engine, collector on."""
        if self.url:
            return _server_pass(self.url, self.model, prompts, rows, sampling,
                                self.max_concurrency, self.progress)
        if self.salt is not None and self.url:
            raise ValueError("a salted no_cache run needs an offline engine, not a server")
        return _offline_pass(self.llm, prompts, rows, sampling, self.progress, self.salt,
                             self.submit)

    def reset(self) -> bool:
        """Empty the prefix cache; False (with a warning) when it could not be emptied."""
        if self.url:
            return _reset_server_cache(self.url)
        ok = bool(self.llm.reset_prefix_cache())
        if not ok:
            warnings.warn(
                "llm.reset_prefix_cache() returned False (blocks still in use): this run may "
                "hit blocks of an earlier run",
                stacklevel=3,
            )
        return ok


# ------------------------------------------------------------------------ stages


def _combine_steps(frames: list[pd.DataFrame], offsets_s: list[float]) -> pd.DataFrame:
    """Concatenate stage step tables: time and step numbers continue, cumulative
    columns are recomputed over the whole run, a ``stage`` column (1, 2, ...) is added."""
    parts, step0 = [], 0
    for k, (f, off) in enumerate(zip(frames, offsets_s), start=1):
        f = f.assign(t_s=f["t_s"] + off, step=f["step"] + step0, stage=k)
        if "t_recv_s" in f:
            f["t_recv_s"] = f["t_recv_s"] + off
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
    "prefix_preempted_queries",
    "prefix_preempted_hits",
    "steps_without_outputs",
    "offload_queries",
    "offload_hits",
    "offload_host_hits",
    "offload_load_bytes",
    "offload_store_bytes",
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
    for key in ("max_kv_cache_usage", "max_cpu_cache_usage"):
        peaks = [s.get(key) for s in summaries]
        peaks = [p for p in peaks if isinstance(p, (int, float))]
        out[key] = max(peaks) if peaks else None
    for rate, (h_key, q_key) in {"prefix_cache_hit_rate": ("prefix_cache_hits",
                                                           "prefix_cache_queries"),
                                 "offload_hit_rate": ("offload_hits", "offload_queries")}.items():
        q, h = out.get(q_key), out.get(h_key)
        out[rate] = float(h) / float(q) if q and h is not None else None
    out["stages"] = len(summaries)
    return out




@dataclass
class Staged:
    """All stages of one pass over the rows; per-row columns in ORIGINAL row order.

    Attributes
    ----------
    columns : ``output``, ``prompt_tokens``, ``output_tokens`` and, per stage kind,
        ``answer`` / ``score`` / ``stageK_output`` / ``stage_reached``.
    steps, requests : the collector's tables (stages joined, ``stage`` column when several).
    summary : the collector's summary (stages combined).
    job_s : generate wall time over all stages, s.
    prompt_tokens, output_tokens : totals (tokens).
    stages : per-stage details.
    submit : how the prompts went in (``"ids"`` or ``"text"``).
    tokenize_s : seconds spent tokenizing prompts before the timer (all stages; 0 for
        text, which vLLM tokenizes inside ``job_s``).
    """

    columns: dict[str, np.ndarray]
    steps: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    job_s: float
    prompt_tokens: int
    output_tokens: int
    stages: list[dict[str, Any]]
    submit: str = "text"
    tokenize_s: float = 0.0


def _stage_meta(k: int, st: Any, p: Pass, n_rows: int) -> dict[str, Any]:
    return {
        "stage": k,
        "kind": st.kind,
        "query": st.text,
        "fields": list(st.fields) if st.fields is not None else None,
        "max_tokens": st.max_tokens,
        "rows": n_rows,
        "job_s": p.job_s,
        "tokenize_s": p.tokenize_s,
        "prompt_tokens": int(p.prompt_tokens.sum()),
        "output_tokens": int(p.output_tokens.sum()),
        "summary": p.summary,
    }


def run_stages(
    table: Table,
    plan: ReorderPlan,
    query: Query,
    instruction: str,
    engine: EngineHandle,
    sampling: dict[str, Any],
) -> Staged:
    """Run each stage of ``query`` on the rows the previous stage kept (a filter's
    ``keep``), every stage's prompts in the plan's order and field orders (cut to the
    stage's fields), through ``engine`` with ``sampling`` plus the stage's max_tokens."""
    n = table.n_rows
    rows = np.arange(n, dtype=np.int64)  # original rows that reach the current stage
    output = np.full(n, "", dtype=object)
    reached = np.zeros(n, dtype=np.int64)
    ptok = np.zeros(n, dtype=np.int64)
    otok = np.zeros(n, dtype=np.int64)
    cols: dict[str, np.ndarray] = {}
    passes: list[Pass] = []
    requests: list[pd.DataFrame] = []
    offsets: list[float] = []
    stages_meta: list[dict[str, Any]] = []
    multi = len(query.stages) > 1
    for k, st in enumerate(query.stages, start=1):
        if not len(rows):
            break
        sub, sub_plan, original = restrict_plan(table, plan, rows, st.fields)
        prompts = build_prompts(sub, sub_plan, st.text, instruction)
        run_rows = original[sub_plan.row_order]  # original row of each run slot
        p = engine.run_pass(prompts, run_rows, {**sampling, "max_tokens": st.max_tokens})
        offsets.append(float(sum(x.job_s for x in passes)))
        passes.append(p)
        req = p.requests
        if multi and "first_token_s" in req:  # the stage's clock continues the run's
            req = req.assign(first_token_s=req["first_token_s"] + offsets[-1])
        requests.append(req.assign(stage=k) if multi else req)
        texts = np.array(p.texts, dtype=object)
        output[run_rows] = texts
        reached[run_rows] = k
        ptok[run_rows] += p.prompt_tokens
        otok[run_rows] += p.output_tokens
        if multi:
            col = np.full(n, None, dtype=object)
            col[run_rows] = texts
            cols[f"stage{k}_output"] = col
        if st.kind in ("choice", "score"):  # normalized answers
            dtype = float if st.kind == "score" else object
            name = ("answer" if st.kind == "choice" else "score") + (f"_stage{k}" if multi else "")
            col = np.full(n, np.nan, dtype=dtype)
            col[run_rows] = np.asarray(st.parse(p.texts), dtype=dtype)
            cols[name] = col
        meta = _stage_meta(k, st, p, len(run_rows))
        if k < len(query.stages):
            keep = np.asarray(st.passes(p.texts), dtype=bool)
            rows = np.sort(run_rows[keep])
            meta["kept_rows"] = int(keep.sum())
        stages_meta.append(meta)
    if multi:  # rows a filter dropped have no final output
        cols["stage_reached"] = reached
        output = np.where(reached == len(query.stages), output, "")
    cols = {"output": output, "prompt_tokens": ptok, "output_tokens": otok, **cols}
    return Staged(
        cols,
        _combine_steps([p.steps for p in passes], offsets) if multi else passes[0].steps,
        pd.concat(requests, ignore_index=True) if multi else requests[0],
        _combine_summaries([p.summary for p in passes]),
        float(sum(p.job_s for p in passes)),
        int(ptok.sum()),
        int(otok.sum()),
        stages_meta,
        passes[0].submit if passes else "text",
        float(sum(p.tokenize_s for p in passes)),
    )


def aggregate(query: Query, outputs: pd.DataFrame) -> dict[str, Any] | None:
    """An aggregation query's result: mean of the valid 1-5 scores (`aggregate_scores`)."""
    if query.qtype != "aggregation":
        return None
    from ggr_kv.datasets.queries import aggregate_scores

    last = query.stages[-1]
    reached = outputs["stage_reached"] == len(query.stages) if "stage_reached" in outputs else None
    texts = outputs["output"] if reached is None else outputs.loc[reached, "output"]
    s = aggregate_scores(list(texts), last)
    return {
        "mean_score": s.mean,
        "rows": s.n,
        "valid": s.n_valid,
        "invalid_fraction": s.invalid_fraction,
        "counts": s.counts,
        "scale": list(last.score_range),
    }
