"""The inference runner: a table, a plan and a query in; a run folder out.

`run_table` runs one table (one ordering) and `run_orderings` several orderings of the
same rows; both take what to run as `RunSpec` fields and how as `BatchOptions` (an
object and/or its fields by name), and hand specs to `ggr_kv.run.batch.run_batch`, which prepares every run
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
from typing import Any

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.reorder.registry import ORIGINAL, get_ordering
from ggr_kv.run.batch import RunResult, run_batch
from ggr_kv.run.options import BatchOptions, split_settings
from ggr_kv.run.prepare import DEFAULT_MAX_TOKENS, RunSpec, restrict_plan

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "BatchOptions",
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
        return ORIGINAL
    inner = getattr(plan, "method", None)
    return str(inner) if isinstance(getattr(plan, "plan", None), ReorderPlan) and inner else "custom"


def run_table(
    table: Any,
    plan: Any = None,
    query: Any = "",
    *,
    method: str | None = None,
    options: BatchOptions | None = None,
    **settings: Any,
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
    method : the ordering's label (default: the plan's method, else ``"original"``
        without a plan, ``"custom"`` with one).
    options : how the run is carried out (`BatchOptions`: ``out_dir``, ``llm``,
        ``server_url``, ``max_concurrency``, ``reset_prefix_cache``, ``predict``,
        ``progress``, ...); its fields may also be given by name.
    **settings : `RunSpec` fields by name: ``instruction``, ``engine`` (settings when
        the runner starts the engine; default tiny-llama), ``sampling``
        (``SamplingParams`` fields over ``temperature=0``, the query's ``max_tokens`` and
        ``ignore_eos=True`` for dummy weights), ``dataset`` (label), ``run_id`` (default
        ``{dataset}-{method}-{timestamp}``; a taken name raises `FileExistsError` before
        anything runs), ``repeats`` (passes over all rows on the warm engine), ``fds``
        and ``knobs`` (for ``reorder()`` when ``method`` is planned here), ``no_cache_by``;
        and `BatchOptions` fields.

    Returns
    -------
    RunResult, also written to ``out_dir/run_id/``.

    Raises
    ------
    ValueError : bad input, named (a too-long prompt names its rows), before any engine.
    FileExistsError : ``run_id`` is taken.
    TypeError : a keyword that is neither a `RunSpec` nor a `BatchOptions` field.
    """
    spec_kw, opts = split_settings(settings, options, fixed=("table", "method", "query", "plan"))
    spec = RunSpec(table, _label(plan, method), query, plan=plan, **spec_kw)
    (outcome,) = run_batch([spec], opts)
    assert outcome.result is not None
    return outcome.result


def _knobs_for(method: str, knobs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The knobs of ``knobs`` that ``method`` declares (None: none)."""
    o = get_ordering(method)
    mine = {k: v for k, v in (knobs or {}).items() if o is not None and k in o.knobs}
    return mine or None


def run_orderings(
    table: Any,
    methods: Sequence[str] = ("no_cache", "original", "sorted", "ggr"),
    query: Any = "",
    *,
    options: BatchOptions | None = None,
    **settings: Any,
) -> list[RunResult]:
    """Run several orderings of the same rows and query; one run folder each.

    Every plan is made and every prompt checked before an engine starts. The caching
    orderings share one engine (started once, or ``llm``); ``"no_cache"`` runs the input
    order on its own engine with ``enable_prefix_caching=False`` (one engine at a time:
    two rarely fit one GPU). With ``repeats`` > 1 the orderings' repeats interleave on
    the warm engine (A B C A B C ...), the prefix cache emptied before each.

    Parameters
    ----------
    methods : orderings of ``ggr_kv.reorder.registry`` (``"no_cache"`` and the methods).
    options, **settings : as in `run_table`, shared by every run. ``knobs`` go to the
        methods that declare them (a knob none of ``methods`` takes is an error);
        ``run_id``: with one method, that run's id; with several, the prefix of
        ``{run_id}-{method}``.

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
    spec_kw, opts = split_settings(settings, options, fixed=("table", "method", "query", "plan"))
    run_id, knobs = spec_kw.pop("run_id", None), spec_kw.pop("knobs", None)
    taken = {k for m in methods for k in (_knobs_for(m, knobs) or {})}
    if knobs and set(knobs) - taken:
        raise TypeError(f"knob(s) {sorted(set(knobs) - taken)} are taken by none of {methods}")
    specs = [
        RunSpec(table, m, query, knobs=_knobs_for(m, knobs),
                run_id=(run_id if len(methods) == 1 else f"{run_id}-{m}") if run_id else None,
                **spec_kw)
        for m in methods
    ]
    outcomes = run_batch(specs, opts)
    return [o.result for o in outcomes if o.result is not None]
