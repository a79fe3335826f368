"""What the notebooks show beside the figures: the runs table formatted for reading, and
a note saying when job times cannot show the prefix cache's effect, and why."""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["RUN_FORMATS", "effect_note", "styled_runs"]

#: column -> format of the runs tables in notebooks 02 and 03
RUN_FORMATS: dict[str, str] = {
    "prompt_tokens": "{:,.0f}", "job_s": "{:.2f} s", "hit_rate": "{:.1%}",
    "peak_kv_usage": "{:.1%}", "preemptions": "{:,.0f}", "speedup_vs_original": "{:.2f}×",
    "speedup_vs_no_cache": "{:.2f}×", "rows": "{:,.0f}",
}

#: dummy-weight shapes whose prefill is nearly free on a CPU
_SMALL_MODELS = ("tiny-llama",)
#: fewest rows and jobs per ordering whose job times show the effect here (the demo's)
_DEMO_ROWS, _DEMO_REPEATS = 150, 3


def styled_runs(runs: pd.DataFrame, columns: list[str]) -> Any:
    """``runs[columns]`` with rates as percentages, seconds and speedups rounded, NaN as
    "–" (a pandas Styler; the index hidden)."""
    d = runs[[c for c in columns if c in runs]]
    fmt = {c: f for c, f in RUN_FORMATS.items() if c in d}
    return d.style.format(fmt, na_rep="–").hide(axis="index")


def effect_note(runs: pd.DataFrame, *, model: str, repeats: int) -> str | None:
    """Why these runs' job times do not show what the cache saves, or None when they should.

    Reasons: a model whose prefill is nearly free on a CPU (``tiny-llama``), fewer rows
    than the demo's 150 (engine overhead dominates), fewer than 3 jobs per ordering (one
    job's time on a shared machine varies by up to 2x).
    """
    reasons = []
    if model in _SMALL_MODELS:
        reasons.append(f"{model} has 2 layers, so prefill costs almost nothing on a CPU and a "
                       "cached token saves almost no time")
    rows = int(runs["rows"].max()) if "rows" in runs and len(runs) else 0
    if rows < _DEMO_ROWS:
        reasons.append(f"{rows} rows make a job of a few engine steps, mostly fixed overhead")
    if repeats < _DEMO_REPEATS:
        reasons.append(f"{repeats} job(s) per ordering: a single job's time varies by up to 2x "
                       "on a shared machine")
    if not reasons:
        return None
    return ("These job times cannot show the prefix cache's effect (compare the hit rates "
            "instead): " + "; ".join(reasons) + ". The demo's shape shows it: model="
            f"'demo-llama', rows={_DEMO_ROWS}, repeats={_DEMO_REPEATS} (what `ggr-kv demo` runs).")
