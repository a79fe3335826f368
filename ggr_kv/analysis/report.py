"""A short Markdown report per comparison: the numbers behind each figure.

`write_report` writes ``report.md`` next to the figures of ``ggr_kv.analysis.plots`` (never
overwriting: ``report-2.md``, ... when it exists). Every number comes from the runs
table of ``ggr_kv.run.runs.load_runs``; rates are shown as percentages, times in seconds.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.analysis.plots import caption

__all__ = [
    "figure_numbers",
    "markdown_table",
    "plan_preview",
    "reorder_scores",
    "report_text",
    "summary_table",
    "write_report",
]

Fmt = Callable[[Any], str]


def _num(decimals: int) -> Fmt:
    return lambda v: "" if pd.isna(v) else f"{v:,.{decimals}f}"


def _pct(v: Any) -> str:
    return "n/a" if pd.isna(v) else f"{100 * float(v):.1f}%"


def _x(v: Any) -> str:
    return "" if pd.isna(v) else f"{float(v):.2f}×"


def _int(v: Any) -> str:
    return "" if pd.isna(v) else f"{int(v):,}"


def markdown_table(df: pd.DataFrame, formats: Mapping[str, Fmt] | None = None) -> str:
    """``df`` as a GitHub Markdown table; ``formats`` maps a column to a cell formatter."""
    formats = formats or {}
    cols = list(df.columns)

    def cell(c: str, v: Any) -> str:
        text = formats[c](v) if c in formats else ("" if v is None or v is pd.NA else str(v))
        return text.replace("|", "\\|").replace("\n", " ")

    numeric = {c for c in cols if pd.api.types.is_numeric_dtype(df[c])}
    lines = ["| " + " | ".join(cols) + " |"]
    lines.append("|" + "|".join("---:" if c in numeric else "---" for c in cols) + "|")
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(cols, row)) + " |")
    return "\n".join(lines)


#: runs-table column -> (report header, formatter)
_SUMMARY: dict[str, tuple[str, Fmt]] = {
    "dataset": ("dataset", str),
    "ordering": ("ordering", str),
    "rows": ("rows", _int),
    "prompt_tokens": ("prompt tokens", _int),
    "job_s": ("job s", _num(2)),
    "speedup_vs_original": ("speedup vs original", _x),
    "speedup_vs_no_cache": ("speedup vs no cache", _x),
    "hit_rate": ("hit rate", _pct),
    "peak_kv_usage": ("peak KV usage", _pct),
    "preemptions": ("preemptions", _int),
    "vllm_version": ("vLLM", str),
    "device": ("device", str),
}


def _table(runs: pd.DataFrame, spec: Mapping[str, tuple[str, Fmt]]) -> str:
    cols = [c for c in spec if c in runs]
    if runs["group"].nunique() > 1 and "group_label" not in cols:
        spec = {"group_label": ("group", str), **spec}
        cols = ["group_label", *cols]
    df = runs[cols].rename(columns={c: spec[c][0] for c in cols})
    return markdown_table(df, {spec[c][0]: spec[c][1] for c in cols})


def summary_table(runs: pd.DataFrame) -> str:
    """The main table: dataset, ordering, rows, prompt tokens, job s, speedups, hit
    rate, peak KV usage, preemptions, vLLM version, device (Markdown)."""
    return _table(runs, _SUMMARY)


def figure_numbers(
    runs: pd.DataFrame, predicted: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Figure name -> Markdown table of the numbers that figure shows."""
    out = {
        "hit_rate": _table(
            runs,
            {
                "ordering": ("ordering", str),
                "prefix_queries": ("looked-up tokens", _int),
                "prefix_hits": ("hit tokens", _int),
                "hit_rate": ("cumulative hit rate (end)", _pct),
                "request_hit_rate": ("cached / prompt tokens (per request)", _pct),
            },
        ),
        "kv_usage": _table(
            runs,
            {
                "ordering": ("ordering", str),
                "num_kv_blocks": ("KV blocks", _int),
                "block_size": ("block size (tokens)", _int),
                "peak_kv_usage": ("peak usage", _pct),
                "mean_kv_usage": ("mean usage (over steps)", _pct),
            },
        ),
        "queue": _table(
            runs,
            {
                "ordering": ("ordering", str),
                "steps": ("engine steps", _int),
                "max_running": ("max running", _int),
                "max_waiting": ("max waiting", _int),
                "preemptions": ("preemptions", _int),
            },
        ),
        "token_rates": _table(
            runs,
            {
                "ordering": ("ordering", str),
                "prompt_tok_s": ("prompt tokens/s (of job time)", _num(1)),
                "generation_tokens": ("generated tokens", _int),
                "generation_tok_s": ("generated tokens/s (of job time)", _num(1)),
            },
        ),
        "resources": _table(
            runs,
            {
                "ordering": ("ordering", str),
                "mean_gpu_util": (
                    "mean GPU util (%)",
                    lambda v: "not sampled" if pd.isna(v) else f"{v:.1f}",
                ),
                "mean_cpu_percent": (
                    "mean process CPU (%)",
                    lambda v: "not sampled" if pd.isna(v) else f"{v:.1f}",
                ),
            },
        ),
        "job_time": _table(
            runs,
            {
                "ordering": ("ordering", str),
                "job_s": ("job s", _num(2)),
                "speedup_vs_original": ("speedup vs original", _x),
                "speedup_vs_no_cache": ("speedup vs no cache", _x),
                "engine_start_s": ("engine start s", _num(1)),
                "reorder_s": ("reorder s", _num(3)),
            },
        ),
        "hit_rate_bars": _table(
            runs,
            {
                "ordering": ("ordering", str),
                "hit_rate": ("hit rate", _pct),
            },
        ),
    }
    if predicted:
        rows = []
        for o, pred in predicted.items():
            ps = getattr(pred, "steps", pred)
            meas = runs[runs["ordering"] == o]
            rows.append(
                {
                    "ordering": o,
                    "predicted hit rate (end)": float(ps["hit_rate_cum"].dropna().iloc[-1])
                    if ps["hit_rate_cum"].notna().any()
                    else np.nan,
                    "measured hit rate (end)": float(meas["hit_rate"].median()),
                    "predicted peak KV usage": float(ps["kv_cache_usage"].max()),
                    "measured peak KV usage": float(meas["peak_kv_usage"].median()),
                    "predicted steps": len(ps),
                    "measured steps": float(meas["steps"].median()),
                }
            )
        df = pd.DataFrame(rows)
        fm = {c: _pct for c in df.columns if "hit rate" in c or "KV" in c}
        fm.update({"predicted steps": _int, "measured steps": _int})
        out["predicted_vs_measured"] = markdown_table(df, fm)
    return out


_FIG_TITLES = {
    "hit_rate": "Prefix-cache hit rate over time and steps (cumulative and windowed)",
    "kv_usage": "KV-cache usage",
    "queue": "Running and waiting requests",
    "token_rates": "Prompt and generation throughput",
    "resources": "GPU / CPU utilization",
    "job_time": "Job time and speedups",
    "hit_rate_bars": "Hit rate per ordering",
    "predicted_vs_measured": "Simulator prediction vs measurement",
}


def report_text(
    runs: pd.DataFrame,
    *,
    figures: Mapping[str, list[Path]] | None = None,
    predicted: Mapping[str, Any] | None = None,
    title: str | None = None,
    relative_to: Path | None = None,
) -> str:
    """The report as Markdown text (see `write_report`)."""
    from ggr_kv import __version__

    datasets = ", ".join(dict.fromkeys(runs["dataset"].astype(str)))
    lines = [
        f"# {title or 'Orderings compared: ' + datasets}",
        "",
        caption(runs),
        "",
        (
            f"Written {_dt.datetime.now().astimezone().isoformat(timespec='seconds')} by ggr_kv "
            f"{__version__} (Python {platform.python_version()}) from {len(runs)} run folders. "
            "Hit rates are measured prefix-cache hits over looked-up prompt tokens, cumulative "
            "over the run; speedup = job time of the baseline (median over its runs in the same "
            "comparison group) / this run's job time."
        ),
        "",
        "## Runs",
        "",
        summary_table(runs),
        "",
    ]
    numbers = figure_numbers(runs, predicted)
    figures = dict(figures or {})
    names = list(dict.fromkeys([*numbers, *figures]))
    for name in names:
        base = name.split("_g")[0] if name not in _FIG_TITLES else name
        lines += [f"## {_FIG_TITLES.get(base, name)}", ""]
        for p in figures.get(name, []):
            if Path(p).suffix == ".png":
                rel = os.path.relpath(Path(p).resolve(), relative_to) if relative_to else p
                lines += [f"![{name}]({Path(rel).as_posix()})", ""]
        if base in numbers:
            lines += [numbers[base], ""]
    lines += ["## Run folders", ""]
    lines += [f"- `{r.run_id}`: {r.ordering}, {Path(r.path).name}" for r in runs.itertuples()]
    return "\n".join(lines) + "\n"


def write_report(
    runs: pd.DataFrame,
    out_dir: str | Path,
    *,
    figures: Mapping[str, list[Path]] | None = None,
    predicted: Mapping[str, Any] | None = None,
    title: str | None = None,
    name: str = "report",
) -> Path:
    """Write the comparison report as Markdown in ``out_dir``, never overwriting.

    Parameters
    ----------
    runs : the runs table of ``ggr_kv.run.runs.load_runs``.
    out_dir : the figures folder (figure links are written relative to it).
    figures : figure name -> saved files (``ComparisonFigures.files``).
    predicted : ordering -> simulator result, for the predicted-vs-measured numbers.

    Returns
    -------
    The path written: ``NAME.md``, or ``NAME-2.md``, ... when that exists.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = report_text(
        runs, figures=figures, predicted=predicted, title=title, relative_to=out.resolve()
    )
    k = 1
    while (path := out / (f"{name}.md" if k == 1 else f"{name}-{k}.md")).exists():
        k += 1
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
    return path


def reorder_scores(
    table: Any,
    methods: Sequence[str],
    *,
    fds: Any = None,
    query: str = "",
    instruction: str | None = None,
    tokenizer: Any = None,
    block_size: int | None = None,
    knobs: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Reorder ``table`` with each method and score each plan (``ggr_kv.reorder.metrics.score``).

    Parameters
    ----------
    table : a ``Table``, DataFrame, CSV/Parquet path or ``datasets.Dataset``.
    methods : names of ``ggr_kv.reorder.METHODS``.
    fds : FD groups for the reorder methods (default: a Dataset's own).
    knobs : method -> knobs for ``reorder`` (e.g. ``{"ophr": {"max_cells": 64}}``).

    Returns
    -------
    ``(scores, results)``: one row per method (``method``, ``rows``, ``phc``
    (characters^2), ``char_hit_rate``, ``token_hit_rate``, ``block_hit_rate`` (0-1),
    ``prompt_tokens``, ``token_hits`` and ``block_hits`` (tokens), ``solver_s`` (s)), and
    method -> ``ReorderResult``.
    """
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.core.table import Table, load_table
    from ggr_kv.reorder.methods import reorder
    from ggr_kv.reorder.metrics import score

    frame = getattr(table, "frame", None)
    if isinstance(frame, pd.DataFrame):
        fds = fds if fds is not None else getattr(table, "fds", None)
        tbl = Table.from_frame(frame, source=str(getattr(table, "name", "<Dataset>")))
    else:
        tbl = load_table(table)
    rows, results = [], {}
    for m in methods:
        res = reorder(tbl, m, fds=fds, **dict((knobs or {}).get(m, {})))
        s = score(
            tbl,
            res.plan,
            query=query,
            instruction=instruction or DEFAULT_INSTRUCTION,
            tokenizer=tokenizer,
            block_size=block_size,
        )
        d = s.to_dict()
        for kind in ("token", "block"):
            rate = d.get(f"{kind}_hit_rate")
            d[f"{kind}_hits"] = round(rate * d["prompt_tokens"]) if rate is not None else None
        rows.append({"method": m, **d, "solver_s": res.seconds})
        results[m] = res
    cols = [
        "method",
        "rows",
        "phc",
        "char_hit_rate",
        "token_hit_rate",
        "block_hit_rate",
        "prompt_tokens",
        "token_hits",
        "block_hits",
        "solver_s",
        "tokenizer",
        "block_size",
    ]
    return pd.DataFrame(rows)[cols], results


def plan_preview(table: Any, plan: Any, n: int = 8, width: int = 32) -> pd.DataFrame:
    """The first ``n`` prompts' rows in run order, fields in their planned order.

    Columns: ``slot``, ``row`` (original position), then ``field 1``, ``field 2``, ... each
    ``name: value`` cut to ``width`` characters. For showing what a reorder grouped.
    """
    from ggr_kv.core.table import Table, load_table

    frame = getattr(table, "frame", None)
    tbl = Table.from_frame(frame) if isinstance(frame, pd.DataFrame) else load_table(table)
    k = min(n, plan.n_rows)
    cols = np.asarray(tbl.columns, dtype=object)
    perm = plan.field_perm[:k]
    cells = tbl.cells[plan.row_order[:k][:, None], perm]
    text = np.char.add(np.char.add(cols[perm].astype(str), ": "), cells.astype(str))
    cut = np.vectorize(lambda s: s if len(s) <= width else s[: width - 1] + "…", otypes=[object])
    out = pd.DataFrame(
        cut(text) if text.size else text, columns=[f"field {j + 1}" for j in range(tbl.n_cols)]
    )
    out.insert(0, "row", plan.row_order[:k])
    out.insert(0, "slot", np.arange(k))
    return out
