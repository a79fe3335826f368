"""Run folders as tidy DataFrames: one row per run, one row per engine step.

`load_run` reads one folder written by ``ggr_kv.run`` (``run.json``, ``steps``,
``requests``); `load_runs` reads many and returns

- ``runs``: one row per run (dataset, ordering, model, rows, prompt tokens, job time,
  measured prefix-cache hit rate, peak KV usage, preemptions, vLLM version, device, ...)
  with speedups against the ``original`` and ``no_cache`` runs of the same comparison
  group (same dataset, rows, query, model, device, vLLM version and engine settings
  other than prefix caching);
- ``steps``: every run's per-step rows (``schema.STEP_COLUMNS`` plus resource columns)
  with ``run_id``, ``ordering``, ``dataset``, ``model`` and ``group`` added, and windowed
  rates (`add_windowed_rates`).

A run of several repeats (``repeats`` in run.json) is one row: ``job_s`` is the median
repeat's job time with ``job_s_min`` / ``job_s_max`` beside it, and its step and request
numbers are the median repeat's (``load_runs(..., repeats="all")`` keeps every repeat's
steps, with a ``repeat`` column). Run folders written before repeats existed read as one
repeat.

Every number here is computed from what the run recorded; nothing is estimated.
"""

from __future__ import annotations

import glob
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ggr_kv.core.paths import project_path
from ggr_kv.core.schema import REQUEST_COLUMNS, STEP_COLUMNS
from ggr_kv.reorder.registry import NO_CACHE, ORIGINAL, ordering_names

__all__ = [
    "DEFAULT_WINDOW_STEPS",
    "Run",
    "RunTables",
    "add_windowed_rates",
    "find_run_dirs",
    "latest_comparison",
    "load_run",
    "load_runs",
    "ordering_of",
    "run_dataset",
    "runs_table",
    "simulate_run",
]

#: steps per window of the windowed hit rate and token rates
DEFAULT_WINDOW_STEPS = 16

#: engine arguments that do not split a comparison group (they ARE the comparison)
_NOT_ENGINE_SETTINGS = frozenset({"enable_prefix_caching", "model", "load_format"})
_REQUIRED = ("run_id", "dataset", "method", "model")


@dataclass(frozen=True)
class Run:
    """One run folder, as recorded.

    Attributes
    ----------
    path : the run folder.
    meta : ``run.json`` as a dict.
    steps : per-step rows (``schema.STEP_COLUMNS`` plus resource columns).
    requests : per-request rows (``schema.REQUEST_COLUMNS``); empty if not recorded.
    """

    path: Path
    meta: dict[str, Any]
    steps: pd.DataFrame = field(repr=False)
    requests: pd.DataFrame = field(repr=False)

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def ordering(self) -> str:
        return ordering_of(self.meta)

    @property
    def record(self) -> Any:
        """``run.json`` as a typed `ggr_kv.run.rundir.RunRecord` (old files too)."""
        from ggr_kv.run.rundir import RunRecord

        return RunRecord.from_dict(self.meta)

    @property
    def median_repeat(self) -> int:
        """The repeat whose numbers stand for the run (1 for runs without repeats)."""
        return int(((self.meta.get("repeats") or {}).get("median_repeat")) or 1)

    def repeat_rows(self, frame: pd.DataFrame, repeat: int | None = None) -> pd.DataFrame:
        """The rows of ``frame`` (steps or requests) of one repeat (default: the median)."""
        if "repeat" not in frame.columns:
            return frame
        want = self.median_repeat if repeat is None else repeat
        return frame[frame["repeat"] == want].reset_index(drop=True)


class RunTables(NamedTuple):
    """What `load_runs` returns: ``runs, steps = load_runs(...)``."""

    runs: pd.DataFrame
    steps: pd.DataFrame


def ordering_of(meta: dict[str, Any]) -> str:
    """The ordering label of a run: its ``method``, or ``no_cache`` with caching off.

    A run of the original order with prefix caching disabled is the ``no_cache``
    baseline; another method with caching off becomes ``<method>+no_cache``.
    """
    method = str(meta.get("method"))
    caching = meta.get("enable_prefix_caching")
    if caching is None:
        caching = (meta.get("engine_args") or {}).get("enable_prefix_caching", True)
    if method == NO_CACHE or caching:
        return method
    return NO_CACHE if method == ORIGINAL else f"{method}+{NO_CACHE}"


def _read_frame(folder: Path, stem: str, columns: tuple[str, ...], required: bool) -> pd.DataFrame:
    pq, csv = folder / f"{stem}.parquet", folder / f"{stem}.csv"
    if pq.is_file():
        df = pd.read_parquet(pq)
    elif csv.is_file():
        df = pd.read_csv(csv)
    elif required:
        raise FileNotFoundError(f"{folder}: no {stem}.parquet or {stem}.csv in this run folder")
    else:
        return pd.DataFrame(columns=list(columns))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{folder / (stem + '.parquet' if pq.is_file() else stem + '.csv')}: missing "
            f"columns {missing}. Available columns: {list(df.columns)}"
        )
    return df


def load_run(path: str | Path) -> Run:
    """Read one run folder (``run.json``, ``steps.parquet|csv``, ``requests.parquet|csv``).

    Raises
    ------
    FileNotFoundError : the folder or its ``run.json`` / steps file is missing.
    ValueError : ``run.json`` lacks a required key, or a table lacks schema columns.
    """
    folder = Path(path)
    rj = folder / "run.json"
    if not rj.is_file():
        raise FileNotFoundError(f"{folder}: not a run folder (no run.json)")
    try:
        meta = json.loads(rj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{rj}: not valid JSON ({e})") from None
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{rj}: missing keys {missing}")
    steps = _read_frame(folder, "steps", STEP_COLUMNS, required=True)
    requests = _read_frame(folder, "requests", REQUEST_COLUMNS, required=False)
    return Run(folder, meta, steps, requests)


def find_run_dirs(paths_or_glob: str | Path | Iterable[str | Path]) -> list[Path]:
    """Run folders named by ``paths_or_glob``, sorted, without duplicates.

    Each item may be a run folder, a folder holding run folders at any depth (a
    comparison or sweep folder), or a glob pattern of either.
    """
    items = [paths_or_glob] if isinstance(paths_or_glob, (str, Path)) else list(paths_or_glob)
    found: dict[Path, None] = {}
    for item in items:
        text = str(item)
        matches = (
            [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if glob.has_magic(text)
            else [Path(text)]
        )
        if not matches:
            raise FileNotFoundError(f"{text}: the pattern matches nothing")
        for m in matches:
            if (m / "run.json").is_file():
                found[m.resolve()] = None
            elif m.is_dir():
                for rj in sorted(m.rglob("run.json")):
                    found[rj.parent.resolve()] = None
            elif not glob.has_magic(text):
                raise FileNotFoundError(f"{m}: no such run folder")
    return sorted(found)


def _dummy_weights(meta: dict[str, Any]) -> bool:
    if "dummy_weights" in meta:
        return bool(meta["dummy_weights"])
    return (meta.get("engine_args") or {}).get("load_format") == "dummy"


def _engine_key(meta: dict[str, Any]) -> str:
    args = {
        k: v for k, v in (meta.get("engine_args") or {}).items() if k not in _NOT_ENGINE_SETTINGS
    }
    return json.dumps(args, sort_keys=True, default=str)


def _run_row(run: Run) -> dict[str, Any]:
    m, s = run.meta, run.repeat_rows(run.steps)
    timings = m.get("timings") or {}
    rep = m.get("repeats") or {}
    counters = m.get("counters") or {}
    queries = float(s["prefix_queries"].sum()) if len(s) else 0.0
    hits = float(s["prefix_hits"].sum()) if len(s) else 0.0
    job_s = timings.get("job_s", np.nan)
    req = run.repeat_rows(run.requests)
    req_prompt = float(req["prompt_tokens"].sum()) if len(req) else np.nan
    req_cached = float(req["num_cached_tokens"].sum()) if len(req) else np.nan

    def col_stat(name: str, how: str) -> float:
        if name not in s.columns or s[name].notna().sum() == 0:
            return np.nan
        return float(getattr(s[name], how)())

    return {
        "run_id": run.run_id,
        "path": str(run.path),
        "dataset": m["dataset"],
        "method": m["method"],
        "ordering": run.ordering,
        "query_type": m.get("query_type"),
        "model": m["model"],
        "dummy_weights": _dummy_weights(m),
        "rows": m.get("rows"),
        "prompt_tokens": m.get("prompt_tokens"),
        "enable_prefix_caching": m.get(
            "enable_prefix_caching", (m.get("engine_args") or {}).get("enable_prefix_caching")
        ),
        "block_size": m.get("block_size"),
        "num_kv_blocks": m.get("num_kv_blocks"),
        "job_s": float(job_s) if job_s is not None else np.nan,
        "reorder_s": timings.get("reorder_s", np.nan),
        "engine_start_s": timings.get("engine_start_s", np.nan),
        "total_s": timings.get("total_s", np.nan),
        "steps": len(s),
        "prefix_queries": queries,
        "prefix_hits": hits,
        # cumulative over the whole run: sum of per-step hits / sum of per-step queries
        "hit_rate": hits / queries if queries > 0 else np.nan,
        "cached_tokens": req_cached,
        "request_hit_rate": req_cached / req_prompt if req_prompt and req_prompt > 0 else np.nan,
        "peak_kv_usage": col_stat("kv_cache_usage", "max"),
        "mean_kv_usage": col_stat("kv_cache_usage", "mean"),
        "max_running": col_stat("num_running", "max"),
        "max_waiting": col_stat("num_waiting", "max"),
        "preemptions": float(s["num_preemptions"].sum()) if len(s) else 0.0,
        "generation_tokens": float(s["generation_tokens"].sum()) if len(s) else 0.0,
        "prompt_tok_s": float(s["prompt_tokens"].sum()) / job_s if job_s else np.nan,
        "generation_tok_s": float(s["generation_tokens"].sum()) / job_s if job_s else np.nan,
        "mean_gpu_util": col_stat("gpu_util", "mean"),
        "mean_cpu_percent": col_stat("cpu_percent", "mean"),
        "vllm_version": m.get("vllm_version"),
        "device": m.get("device"),
        "dtype": m.get("dtype"),
        "engine": _engine_key(m),
        "created": m.get("created"),
        "repeats": int(rep.get("count") or 1),
        "job_s_min": rep.get("job_s_min", job_s),
        "job_s_max": rep.get("job_s_max", job_s),
        "job_s_spread": rep.get("job_s_spread", 0.0),
        "simulated_hits": counters.get("simulated_hits", np.nan),
        "counter_mismatch": counters.get("mismatch"),
        "engine_id": (m.get("engine") or {}).get("engine_id"),
    }


#: columns that define a comparison group: runs that differ only in their ordering
GROUP_KEYS = ("dataset", "rows", "query_type", "model", "device", "vllm_version", "engine")


def _group_labels(runs: pd.DataFrame) -> pd.Series:
    """Short label per group: dataset, model, and the engine settings that vary."""
    engines = {e: json.loads(e) for e in runs["engine"].unique()}
    keys = sorted({k for d in engines.values() for k in d})
    varying = [
        k for k in keys if len({json.dumps(d.get(k), default=str) for d in engines.values()}) > 1
    ]

    def label(r: pd.Series) -> str:
        parts = [str(r["dataset"]), str(r["model"])]
        if runs["rows"].nunique() > 1:
            parts.append(f"{r['rows']} rows")
        if runs["query_type"].nunique() > 1:
            parts.append(str(r["query_type"]))
        parts += [f"{k}={engines[r['engine']].get(k)}" for k in varying]
        return ", ".join(parts)

    return runs.apply(label, axis=1)


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run, with comparison groups and speedups (see module docstring).

    ``speedup_vs_original`` = median job time of the group's ``original`` runs / this
    run's job time (>1: faster); likewise ``speedup_vs_no_cache``. NaN where the group
    has no such baseline.
    """
    df = pd.DataFrame([_run_row(r) for r in runs])
    if df.empty:
        return df
    keys = list(GROUP_KEYS)
    df["group"] = df.groupby(keys, dropna=False, sort=True).ngroup()
    df["group_label"] = _group_labels(df)
    for base in (ORIGINAL, NO_CACHE):
        med = df[df["ordering"] == base].groupby("group")["job_s"].median()
        df[f"speedup_vs_{base}"] = df["group"].map(med) / df["job_s"]
    order = {o: i for i, o in enumerate(ordering_names())}
    df["_o"] = df["ordering"].map(order).fillna(len(order))
    return df.sort_values(["group", "_o", "created"]).drop(columns="_o").reset_index(drop=True)


def add_windowed_rates(steps: pd.DataFrame, window: int = DEFAULT_WINDOW_STEPS) -> pd.DataFrame:
    """Add windowed rates per run (over the last ``window`` steps, or since the start).

    Adds ``hit_rate_window`` (Δprefix_hits / Δprefix_queries, 0-1, NaN without queries),
    ``prompt_tok_s`` and ``generation_tok_s`` (Δtokens / Δt_s, tokens per second) and
    ``dt_s``. Needs a ``run_id`` column; returns a new frame.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 step, got {window}")
    out = steps.copy()
    if out.empty:
        for c in ("dt_s", "hit_rate_window", "prompt_tok_s", "generation_tok_s"):
            out[c] = pd.Series(dtype=float)
        return out
    g = out.groupby("run_id", sort=False)
    out["dt_s"] = g["t_s"].diff().fillna(out["t_s"])
    cum = {
        "h": out["prefix_hits_cum"].astype(float),
        "q": out["prefix_queries_cum"].astype(float),
        "p": g["prompt_tokens"].cumsum().astype(float),
        "n": g["generation_tokens"].cumsum().astype(float),
        "t": out["t_s"].astype(float),
    }
    frame = pd.DataFrame(cum)
    frame["run_id"] = out["run_id"].to_numpy()
    # value before the window: `window` steps earlier, or 0 (the collector's start)
    prev = frame.groupby("run_id", sort=False).shift(window).fillna(0.0)
    d = frame.drop(columns="run_id") - prev
    with np.errstate(divide="ignore", invalid="ignore"):
        out["hit_rate_window"] = np.where(d["q"] > 0, d["h"] / d["q"].where(d["q"] > 0), np.nan)
        dt = d["t"].where(d["t"] > 0)
        out["prompt_tok_s"] = d["p"] / dt
        out["generation_tok_s"] = d["n"] / dt
    return out


def load_runs(
    paths_or_glob: str | Path | Iterable[str | Path],
    *,
    window: int = DEFAULT_WINDOW_STEPS,
    repeats: str = "median",
) -> RunTables:
    """Load run folders into ``(runs, steps)`` tables (see the module docstring).

    Parameters
    ----------
    paths_or_glob : run folders, folders holding run folders, or glob patterns.
    window : steps per window of the windowed rates in ``steps``.
    repeats : ``"median"`` (each run's median repeat in ``steps``) or ``"all"`` (every
        repeat, ``repeat`` column; windows do not cross repeats).
    """
    if repeats not in ("median", "all"):
        raise ValueError(f"repeats must be 'median' or 'all', got {repeats!r}")
    dirs = find_run_dirs(paths_or_glob)
    if not dirs:
        raise FileNotFoundError(f"{paths_or_glob}: no run folders (folders with run.json) found")
    loaded = [load_run(d) for d in dirs]
    dup = _repeated_ids(r.run_id for r in loaded)
    if dup:
        raise ValueError(f"run ids {dup} appear in more than one folder: {paths_or_glob}")
    runs = runs_table(loaded)
    info = runs.set_index("run_id")[["ordering", "dataset", "model", "group", "group_label"]]
    frames = []
    for r in loaded:
        s = (r.repeat_rows(r.steps) if repeats == "median" else r.steps).copy()
        if "repeat" not in s.columns:
            s["repeat"] = 1
        s.insert(0, "run_id", r.run_id)
        for c in info.columns:
            s[c] = info.at[r.run_id, c]
        frames.append(s)
    steps = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if repeats == "all" and len(steps):  # windows per (run, repeat)
        key = steps["run_id"].astype(str) + "#" + steps["repeat"].astype(str)
        rated = add_windowed_rates(steps.assign(run_id=key), window)
        return RunTables(runs, rated.assign(run_id=steps["run_id"].to_numpy()))
    return RunTables(runs, add_windowed_rates(steps, window))


def latest_comparison(out_dir: str | Path = "results") -> Path | None:
    """The most recently modified folder under ``out_dir`` whose children are run folders
    and that `load_runs` can load (no run id twice at any depth: a campaign folder of
    sharded replica runs is not a comparison).

    ``out_dir`` itself counts when it directly holds run folders (a sweep folder).
    Returns None when there is none. Relative paths resolve with `project_path`.
    """
    root = project_path(out_dir)
    if not root.is_dir():
        return None
    candidates = [root, *(p for p in root.iterdir() if p.is_dir())]
    found = [
        (max(rj.stat().st_mtime for rj in c.glob("*/run.json")), c)
        for c in candidates
        if any(c.glob("*/run.json"))
        and not _repeated_ids(json.loads(rj.read_text()).get("run_id", rj.parent.name)
                              for rj in c.rglob("run.json"))
    ]
    return max(found)[1] if found else None


def _repeated_ids(ids: Iterable[str]) -> list[str]:
    """The run ids that occur more than once, sorted (`load_runs` refuses them)."""
    return sorted(i for i, k in Counter(ids).items() if k > 1)


def run_dataset(run: Run | str | Path) -> Any:
    """Load the input rows of a recorded run again, from its ``dataset_info``.

    Uses the recorded source file (or bundled name), row count, sample mode and seed
    with ``ggr_kv.datasets.load_dataset``. `simulate_run` checks that the rows give the
    run's exact prompt lengths, so a table that changed since is caught there.

    Raises
    ------
    ValueError : the run records no ``dataset_info``.
    """
    from ggr_kv.datasets.catalog import load_dataset

    run = run if isinstance(run, Run) else load_run(run)
    info = run.meta.get("dataset_info")
    if not info:
        raise ValueError(f"{run.path}: run.json has no dataset_info; pass the table yourself")
    source = info.get("source")
    target = source if source and Path(source).is_file() else info.get("name")
    rows, total = info.get("rows"), info.get("total_rows")
    n = None if rows is None or (total is not None and rows >= total) else int(rows)
    sample = info.get("sample") or "head"
    if sample == "all":
        n, sample = None, "head"
    return load_dataset(target, n=n, sample=sample, seed=int(info.get("seed") or 0))


def simulate_run(run: Run | str | Path, table: Any = None, *, tokenizer: Any = None) -> Any:
    """Predict a recorded run with ``ggr_kv.simulate``: same prompts, plan and engine.

    Parameters
    ----------
    run : a `Run` or its folder.
    table : the input table of the run (a ``Table``, DataFrame, path or
        ``datasets.Dataset``); it must reproduce the run's prompts exactly. Default:
        `run_dataset` (the recorded dataset, sample and seed).
    tokenizer : default: the model folder the run used (``model_path`` in run.json).

    Returns
    -------
    ``simulate.SimResult`` with the run's block size, KV blocks, ``max_num_seqs``,
    ``max_num_batched_tokens``, prefix-caching setting and per-request output lengths.

    Raises
    ------
    ValueError : the table's columns or rows differ from the run's, its prompts do not
        tokenize to the run's prompt lengths, or the run had several query stages.
    """
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.table import Table, load_table
    from ggr_kv.simulate.api import simulate_plan
    from ggr_kv.simulate.config import SchedulerConfig

    run = run if isinstance(run, Run) else load_run(run)
    m = run.meta
    if table is None:
        table = run_dataset(run)
    frame = getattr(table, "frame", None)
    tbl = Table.from_frame(frame) if isinstance(frame, pd.DataFrame) else load_table(table)
    if m.get("stages"):
        raise ValueError(f"{run.path}: a run of several query stages cannot be simulated")
    cols = m.get("columns")
    if cols is not None and list(cols) != list(tbl.columns):
        raise ValueError(
            f"{run.path}: the run's columns {cols} differ from the table's {list(tbl.columns)}"
        )
    if m.get("rows") is not None and int(m["rows"]) != tbl.n_rows:
        raise ValueError(f"{run.path}: the run has {m['rows']} rows, the table {tbl.n_rows}")
    plan = ReorderPlan.from_json(run.path / "plan.json", tbl)
    req = run.repeat_rows(run.requests).sort_values("slot")
    if len(req) == tbl.n_rows:
        out_len = req["output_tokens"].to_numpy(np.int64).clip(min=1)
    else:
        from ggr_kv.run.prepare import DEFAULT_MAX_TOKENS

        out_len = int((m.get("sampling") or {}).get("max_tokens") or DEFAULT_MAX_TOKENS)
    if tokenizer is None:
        tokenizer = m.get("model_path") or m["model"]
    config = SchedulerConfig.from_engine(m)
    res = simulate_plan(tbl, plan, m.get("query") or "", m.get("instruction"), tokenizer,
                        out_len, config)
    if len(req) == tbl.n_rows:
        got = res.requests["prompt_tokens"].to_numpy()
        want = req["prompt_tokens"].to_numpy()
        if not np.array_equal(got, want):
            bad = int(np.flatnonzero(got != want)[0])
            raise ValueError(
                f"{run.path}: the table does not reproduce the run's prompts: slot {bad} has "
                f"{int(got[bad])} tokens here, {int(want[bad])} in the run"
            )
    return res
