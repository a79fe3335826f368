"""The inference runner: a table, a plan and a query in; a run folder out.

`run_table` runs one table (one ordering) and `run_orderings` several orderings of the
same rows; both are specs for `ggr_kv.run.batch.run_batch`, which prepares every run
before an engine starts (plans, prompt lengths against ``max_model_len``), reserves the
run folders, starts one engine per engine setting, runs the repeats interleaved on it
with the prefix cache emptied before each, and writes each folder (`ggr_kv.run.rundir`):
prepare (`ggr_kv.run.prepare`), execute (`ggr_kv.run.execute`), record
(`ggr_kv.run.record`, a `RunRecord` written as run.json).

Prompts are built with the one serializer (`ggr_kv.core.prompts`) and sent in run order:
offline as ONE ``llm.generate`` call per stage (vLLM batches them), or to an
OpenAI-compatible vLLM server with bounded concurrency. Outputs map back to the ORIGINAL
row order.

Scripts that start an engine need an ``if __name__ == "__main__":`` guard; notebooks
set ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` before importing vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
from ggr_kv.engine.config import EngineConfig
from ggr_kv.run.batch import RunResult, run_batch
from ggr_kv.run.prepare import DEFAULT_MAX_TOKENS, RunSpec, restrict_plan

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "RunResult",
    "restrict_plan",
    "run_orderings",
    "run_table",
]


def _label(plan: Any, method: str | None) -> str:
    """The ordering label of a `run_table` call: ``method``, else a ``reorder()`` result's
    method, else ``original`` (no plan) or ``custom`` (a plan of unknown origin)."""
    if method:
        return method
    if plan is None:
        return "original"
    inner = getattr(plan, "method", None)
    return str(inner) if isinstance(getattr(plan, "plan", None), ReorderPlan) and inner else "custom"


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
    repeats: int = 1,
    predict: bool = True,
    fds: Any = None,
    knobs: dict[str, Any] | None = None,
) -> RunResult:
    """Run every row of ``table`` as one prompt, in ``plan``'s order, and save a run folder.

    Parameters
    ----------
    table : a `Table`, DataFrame, CSV/Parquet path or ``datasets.Dataset``.
    plan : a `ReorderPlan`, a ``reorder()`` result (its method and solver time are
        recorded), a plan JSON path, or None: the order of ``method`` (planned here with
        ``reorder()``; the input order for None, ``original`` or ``no_cache``).
    query : a ``queries.Query`` (type, max tokens, stages, fields) or the query text
        (``Query.custom(text)``, `DEFAULT_MAX_TOKENS` output tokens). A multi-stage query
        runs each stage on the rows the previous stage kept.
    instruction : the text every prompt starts with.
    llm : a running ``vllm.LLM`` to use (left running). Without it (and without
        ``server_url``) an engine is started from ``engine`` and stopped afterwards.
    engine : engine settings when the runner starts the engine (default: tiny-llama).
    sampling : ``SamplingParams`` fields over the defaults ``temperature=0``,
        ``max_tokens`` from the query (a ``max_tokens`` here overrides every stage's),
        and ``ignore_eos=True`` for dummy weights (every request then decodes exactly
        ``max_tokens`` tokens, so orderings do the same decode work).
    dataset, method : labels for run.json (defaults: from the table / plan, else
        ``"original"`` without a plan, ``"custom"`` with one).
    out_dir : folder of run folders (relative: to the project folder).
    run_id : the run folder's name; default ``{dataset}-{method}-{timestamp}``. A taken
        name raises `FileExistsError` before anything runs; the folder is reserved when
        the run starts and keeps an ``error.txt`` if it fails.
    server_url : base URL of a running vLLM server; prompts go to ``/v1/completions``,
        at most ``max_concurrency`` in flight, and the collector scrapes ``/metrics``.
    reset_prefix_cache : empty the prefix cache before each repeat, so hits come from it
        only.
    progress : show tqdm progress bars.
    repeats : passes over all rows on the warm engine; run.json keeps each repeat's
        job time and counters, their median and spread.
    predict : simulate the run and record collector, request and simulator hit counts
        side by side (``counters`` in run.json).
    fds, knobs : for ``reorder()`` when ``method`` is planned here (FD groups default
        to the dataset's; run facts such as the block size are added for methods that
        take them).

    Returns
    -------
    RunResult, also written to ``out_dir/run_id/``.

    Raises
    ------
    ValueError : bad input, named (a too-long prompt names its rows), before any engine.
    FileExistsError : ``run_id`` is taken.
    """
    spec = RunSpec(table, _label(plan, method), query, plan, repeats, engine, run_id, dataset,
                   fds, knobs, instruction, sampling)
    (outcome,) = run_batch([spec], out_dir=out_dir, llm=llm, server_url=server_url,
                           max_concurrency=max_concurrency,
                           reset_prefix_cache=reset_prefix_cache, predict=predict,
                           progress=progress)
    assert outcome.result is not None
    return outcome.result


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
    repeats: int = 1,
    reset_prefix_cache: bool = True,
    predict: bool = True,
) -> list[RunResult]:
    """Run several orderings of the same rows and query; one run folder each.

    Every plan is made and every prompt checked before an engine starts. The caching
    orderings share one engine (started once, or ``llm``); ``"no_cache"`` runs the input
    order on its own engine with ``enable_prefix_caching=False`` (one engine at a time:
    two rarely fit one GPU). With ``repeats`` > 1 the orderings' repeats interleave on
    the warm engine (A B C A B C ...), the prefix cache emptied before each.

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
    methods = list(methods)
    if not methods:
        raise ValueError("methods is empty; give at least one of 'no_cache', 'original', ...")
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise ValueError(f"methods repeat {dup}")
    specs = [
        RunSpec(table, m, query, None, repeats, engine,
                (run_id if len(methods) == 1 else f"{run_id}-{m}") if run_id else None,
                dataset, fds, knobs if m not in ("no_cache", "original") else None, instruction,
                sampling)
        for m in methods
    ]
    outcomes = run_batch(specs, out_dir=out_dir, llm=llm, server_url=server_url,
                         max_concurrency=max_concurrency, reset_prefix_cache=reset_prefix_cache,
                         predict=predict, progress=progress)
    return [o.result for o in outcomes if o.result is not None]
