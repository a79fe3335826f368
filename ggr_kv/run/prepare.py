"""Prepare a run: everything that needs no engine, checked before one starts.

`RunSpec` says what to run (a table, an ordering or a ready plan, a `Query`, repeats,
engine settings); `prepare_run` turns it into a `PreparedRun`: the table loaded, the query
as a ``Query`` (``Query.custom(text)`` for plain text), the plan computed (its solver time
kept), and every prompt's length checked against the engine's ``max_model_len`` with the
model's own tokenizer, so a too-long row fails here, naming the rows, and not after an
engine start. `EngineContext` holds what the checks need to know about the engine
(tokenizer, max_model_len, block size), from its settings or from a running engine.

Reorder methods that want facts of the run (the block-aware ``blocks`` method of issue
10: ``tokenizer``, ``block_size``, ``query``, ``instruction``) get them from
`context_knobs`; when the block size is only known once the engine runs, planning waits
for it (`finish_plan`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import time
import warnings
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.plan import PlanError, ReorderPlan
from ggr_kv.core.prompts import DEFAULT_INSTRUCTION, build_prompts
from ggr_kv.core.table import Table, load_table
from ggr_kv.datasets.queries import Query
from ggr_kv.engine.config import EngineConfig
from ggr_kv.reorder.registry import CONTEXT_KNOBS, NO_CACHE, ORIGINAL, get_ordering

__all__ = [
    "CONTEXT_KNOBS",
    "DEFAULT_MAX_TOKENS",
    "EngineContext",
    "PreparedRun",
    "RunSpec",
    "as_query",
    "check_prompt_lengths",
    "check_sampling",
    "context_knobs",
    "finish_plan",
    "prepare_run",
    "restrict_plan",
]

#: output tokens per row when neither the query nor ``sampling`` says: `Query.custom`'s
#: default, the one default of the package
DEFAULT_MAX_TOKENS: int = inspect.signature(Query.custom).parameters["max_tokens"].default

#: rows named in a too-long-prompt error
_SHOW_ROWS = 5


@dataclass
class RunSpec:
    """One run to do: a table, its ordering, a query, repeats and engine settings.

    Attributes
    ----------
    table : a `Table`, DataFrame, CSV/Parquet path or ``datasets.Dataset``.
    method : the ordering: ``"no_cache"`` (input order, prefix caching off), a
        ``reorder.METHODS`` name (planned here), or a label for ``plan``.
    query : a ``queries.Query`` or the query text (``Query.custom(text)``).
    plan : a ready plan (`ReorderPlan`, a ``reorder()`` result or a plan JSON path)
        instead of planning ``method``; None plans ``method``.
    repeats : passes over every row, each on an emptied prefix cache (>= 1).
    engine : engine settings (default: tiny-llama); ``no_cache`` turns caching off.
    run_id : the run folder's name (default ``{dataset}-{method}-{timestamp}``).
    dataset : label for run.json (default: the dataset's name or file stem).
    fds, knobs : passed to ``reorder()`` (FD groups default to the dataset's).
    instruction : the text every prompt starts with.
    sampling : ``SamplingParams`` fields; ``max_tokens`` here overrides every stage's.
    no_cache_by : how a ``no_cache`` run avoids the cache: ``"engine"`` (its own engine
        with prefix caching off, as the GGR paper's baseline) or ``"salt"`` (the caching
        engine, every request its own ``cache_salt`` so no prompt reuses another's blocks:
        the same prefill work without a second engine start).
    """

    table: Any
    method: str = ORIGINAL
    query: Any = ""
    _: KW_ONLY  # the rest by name: RunSpec(table, "ggr", query, repeats=3, engine=...)
    plan: Any = None
    repeats: int = 1
    engine: EngineConfig | None = None
    run_id: str | None = None
    dataset: str | None = None
    fds: Any = None
    knobs: dict[str, Any] | None = None
    instruction: str = DEFAULT_INSTRUCTION
    sampling: dict[str, Any] | None = None
    no_cache_by: str = "engine"

    def __post_init__(self) -> None:
        if self.no_cache_by not in ("engine", "salt"):
            raise ValueError(f"no_cache_by must be 'engine' or 'salt', got {self.no_cache_by!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, (int, np.integer)) or (
            self.repeats < 1
        ):
            raise ValueError(f"repeats must be a positive integer, got {self.repeats!r}")
        self.repeats = int(self.repeats)

    @property
    def caching_off(self) -> bool:
        """Whether this run needs an engine with prefix caching off (``no_cache``)."""
        return self.method == NO_CACHE and self.no_cache_by == "engine"

    def engine_settings(self) -> EngineConfig:
        """The engine settings this run asks for (caching off for ``no_cache``)."""
        cfg = self.engine or EngineConfig()
        return cfg.replace(enable_prefix_caching=False) if self.caching_off else cfg


@dataclass
class EngineContext:
    """What prepare needs to know about the engine a run will use.

    Attributes
    ----------
    model : the folder or id vLLM loads (its tokenizer is the run's).
    max_model_len : longest prompt + output (tokens); None when unknown.
    block_size : KV block size (tokens); None until the engine runs, unless set.
    source : where these came from (``settings``, ``engine``, ``server``).
    """

    model: str | None
    max_model_len: int | None
    block_size: int | None
    source: str

    @functools.cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer (`ggr_kv.core.tokenizer.Tok`), or None if it cannot be
        loaded here (then prompt lengths are not checked: a warning says so)."""
        if self.model is None:
            return None
        return _load_tokenizer(str(self.model))


@functools.lru_cache(maxsize=8)
def _load_tokenizer(model: str) -> Any:
    from ggr_kv.core.tokenizer import load_tokenizer

    try:
        return load_tokenizer(model)
    except (ValueError, OSError) as e:
        warnings.warn(
            f"{model}: its tokenizer cannot be loaded here ({e}); prompt lengths are not "
            "checked before the engine starts and runs are not simulated",
            stacklevel=3,
        )
        return None


@dataclass
class PreparedRun:
    """A `RunSpec` ready to run; nothing in it needed an engine.

    Attributes
    ----------
    spec, index : the spec and its position in the batch.
    table, dataset, dataset_info : the rows, label and dataset metadata.
    method : the ordering label.
    query, instruction : the query (stages, max tokens) and instruction.
    sampling : SamplingParams fields from the spec, ``max_tokens`` taken out (it is in
        the query's stages).
    plan : the run order; None while it waits for the engine's block size.
    reorder_s, reorder_info : solver time (s) and its info (None / {} for ready plans).
    context : the knobs the runner supplied to the reorder method.
    tokens : stage-1 prompts in run order, ``(tokens, offsets)``, for the simulator.
    created : ISO time of preparing.
    prepare_s : wall time of preparing (reorder excluded), s.
    fds : FD groups for the reorder method (the spec's, else the dataset's).
    run_id, folder : set when the folder is reserved.
    """

    spec: RunSpec
    index: int
    table: Table
    dataset: str
    dataset_info: dict[str, Any] | None
    method: str
    query: Query
    instruction: str
    sampling: dict[str, Any]
    plan: ReorderPlan | None
    reorder_s: float | None
    reorder_info: dict[str, Any]
    context: dict[str, Any]
    tokens: tuple[np.ndarray, np.ndarray] | None
    created: str
    prepare_s: float
    fds: Any = None
    run_id: str | None = None
    folder: Path | None = field(default=None, repr=False)


def as_query(query: Any, max_tokens: int | None = None) -> Query:
    """A `Query` from a Query or query text; ``max_tokens`` overrides every stage's limit.

    Raises
    ------
    ValueError : empty text. TypeError : anything else than text or a Query.
    """
    if isinstance(query, str):
        if not query.strip():
            raise ValueError(
                "the query is empty: pass the query text or a ggr_kv.datasets.queries.Query "
                "(CLI: --query TEXT or --query-type TYPE)"
            )
        return Query.custom(query, int(max_tokens or DEFAULT_MAX_TOKENS))
    if not isinstance(query, Query):
        raise TypeError(
            f"query must be a str or a ggr_kv.datasets.queries.Query, got {type(query).__name__}"
        )
    if not max_tokens:
        return query
    stages = tuple(replace(s, max_tokens=int(max_tokens)) for s in query.stages)
    return replace(query, max_tokens=int(max_tokens), stages=stages)


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
    """``(plan, method, reorder seconds, reorder info)`` from a plan, ReorderResult or a
    plan JSON path."""
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


def context_knobs(
    method: str, *, tokenizer: Any, block_size: int | None, query: str, instruction: str
) -> dict[str, Any]:
    """The run facts (`CONTEXT_KNOBS`) that ``method`` takes, with this run's values:
    the model folder as ``tokenizer``, the engine's ``block_size``, the first stage's
    ``query`` text and the ``instruction``. Empty for methods that take none (the
    registry's ``Ordering.context``)."""
    o = get_ordering(method)
    wanted = set(o.context) if o is not None else set()
    values = {"tokenizer": tokenizer, "block_size": block_size, "query": query,
              "instruction": instruction}
    return {k: values[k] for k in CONTEXT_KNOBS if k in wanted}


def check_prompt_lengths(
    table: Table,
    plan: ReorderPlan,
    query: Query,
    instruction: str,
    tokenizer: Any,
    max_model_len: int | None,
    *,
    model: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize every stage's prompts with the model's tokenizer and refuse rows vLLM
    would refuse (prompt tokens >= ``max_model_len``: no room for one output token).

    Returns
    -------
    ``(tokens, offsets)`` of stage 1's prompts in run order (CSR, BOS included).

    Raises
    ------
    ValueError : naming the first rows that are too long (original row positions, from
        0), how many there are, the model, its tokenizer and ``max_model_len``.
    """
    first: tuple[np.ndarray, np.ndarray] | None = None
    for k, stage in enumerate(query.stages, start=1):
        sub, sub_plan, original = restrict_plan(table, plan, None, stage.fields)
        prompts = build_prompts(sub, sub_plan, stage.text, instruction)
        tokens, offsets = tokenizer.encode_batch(prompts)
        tokens, offsets = np.asarray(tokens, dtype=np.int32), np.asarray(offsets, dtype=np.int64)
        if first is None:
            first = (tokens, offsets)
        if max_model_len is None:
            continue
        lens = np.diff(offsets)
        rows = original[sub_plan.row_order]
        _refuse_long(table, rows, lens, stage, k, len(query.stages), tokenizer, max_model_len,
                     model)
    assert first is not None
    return first


def _refuse_long(table: Table, rows: np.ndarray, lens: np.ndarray, stage: Any, k: int,
                 n_stages: int, tokenizer: Any, max_model_len: int, model: str | None) -> None:
    """Raise for prompts with >= max_model_len tokens; warn for those whose output is cut."""
    where = f" (stage {k})" if n_stages > 1 else ""
    who = f"model {model}, tokenizer {getattr(tokenizer, 'name', tokenizer)}"
    bad = np.flatnonzero(lens >= max_model_len)
    if len(bad):
        order = bad[np.argsort(rows[bad], kind="stable")]
        shown = ", ".join(f"{int(rows[i])} ({int(lens[i]):,} tokens)" for i in order[:_SHOW_ROWS])
        more = f" and {len(bad) - _SHOW_ROWS} more" if len(bad) > _SHOW_ROWS else ""
        raise ValueError(
            f"{table.source}: {len(bad)} of {len(lens)} rows give prompts{where} of at least "
            f"max_model_len={max_model_len} tokens ({who}), which vLLM refuses: rows "
            f"{shown}{more} (0-based). Raise max_model_len, drop or shorten these rows, or "
            "give the query fewer fields"
        )
    cut = np.flatnonzero(lens + stage.max_tokens > max_model_len)
    if len(cut):
        shown = ", ".join(str(int(r)) for r in np.sort(rows[cut])[:_SHOW_ROWS])
        warnings.warn(
            f"{table.source}: {len(cut)} rows{where} leave less than max_tokens="
            f"{stage.max_tokens} tokens of max_model_len={max_model_len} ({who}): their "
            f"outputs are cut short (rows {shown}{' ...' if len(cut) > _SHOW_ROWS else ''})",
            stacklevel=4,
        )


def _plan_method(prep: PreparedRun, block_size: int | None, model: str | None) -> None:
    """Plan ``prep.method`` with ``reorder()`` (run facts supplied where wanted)."""
    from ggr_kv.reorder.methods import reorder

    spec = prep.spec
    ctx = context_knobs(prep.method, tokenizer=model, block_size=block_size,
                        query=prep.query.text, instruction=prep.instruction)
    knobs = {**ctx, **(spec.knobs or {})}  # the caller's own knobs win
    res = reorder(prep.table, prep.method, fds=prep.fds, **knobs)
    prep.plan, prep.reorder_s = res.plan, float(res.seconds)
    prep.reorder_info = dict(res.info or {})
    prep.context = {k: v for k, v in ctx.items() if k not in (spec.knobs or {})}


def prepare_run(spec: RunSpec, ctx: EngineContext, index: int = 0) -> PreparedRun:
    """Load, plan and check one run without an engine.

    The plan waits for the engine (``plan`` None) only when the method takes the block
    size and ``ctx`` does not know it yet; prompt lengths are then checked on the input
    order now and on the plan in `finish_plan`.

    Raises
    ------
    ValueError, TableError, PlanError, TypeError : bad table, plan, query, knobs, or
        prompts too long for ``max_model_len`` (named rows).
    """
    t0 = time.perf_counter()
    created = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    tbl, ds_name, ds_fds, ds_meta = _as_table(spec.table)
    sampling = dict(spec.sampling or {})
    query = as_query(spec.query, sampling.pop("max_tokens", None))
    prep = PreparedRun(
        spec=spec, index=index, table=tbl, dataset=spec.dataset or ds_name or "custom",
        dataset_info=ds_meta, method=spec.method, query=query, instruction=spec.instruction,
        sampling=sampling, plan=None, reorder_s=None, reorder_info={}, context={}, tokens=None,
        created=created, prepare_s=0.0, fds=spec.fds if spec.fds is not None else ds_fds,
    )
    if spec.plan is not None:
        prep.plan, _, prep.reorder_s, prep.reorder_info = _as_plan(spec.plan, tbl)
    elif spec.method == NO_CACHE:
        prep.plan = ReorderPlan.identity(tbl)
        prep.reorder_info = {"no_cache_by": spec.no_cache_by}
    else:
        o = get_ordering(spec.method)
        wants_block = o is not None and "block_size" in o.context
        if not wants_block or ctx.block_size is not None:
            _plan_method(prep, ctx.block_size, ctx.model)
    _check(prep, ctx, prep.plan or ReorderPlan.identity(tbl))
    prep.prepare_s = max(time.perf_counter() - t0 - (prep.reorder_s or 0.0), 0.0)
    return prep


def _check(prep: PreparedRun, ctx: EngineContext, plan: ReorderPlan) -> None:
    tok = ctx.tokenizer
    if tok is None:
        return
    tokens = check_prompt_lengths(prep.table, plan, prep.query, prep.instruction, tok,
                                  ctx.max_model_len, model=ctx.model)
    prep.tokens = tokens if prep.plan is not None else None


def check_sampling(prep: PreparedRun) -> None:
    """Build the run's ``vllm.SamplingParams`` once (no engine needed), so a bad sampling
    setting fails before an engine starts.

    Raises
    ------
    ValueError : naming the setting vLLM refused.
    """
    from ggr_kv.engine.config import import_vllm

    vllm = import_vllm()
    for stage in prep.query.stages:
        try:
            vllm.SamplingParams(**{"temperature": 0.0, **prep.sampling,
                                   "max_tokens": stage.max_tokens})
        except Exception as e:  # noqa: BLE001 - vLLM's validation errors have several types
            raise ValueError(f"sampling {prep.sampling}: vLLM refuses it: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def finish_plan(prep: PreparedRun, ctx: EngineContext) -> None:
    """Plan a run that waited for the engine's block size (``ctx`` from the running
    engine), then check its prompts again. No-op for a run already planned."""
    if prep.plan is not None:
        return
    _plan_method(prep, ctx.block_size, ctx.model)
    _check(prep, ctx, prep.plan)
