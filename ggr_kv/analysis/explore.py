"""Notebook 01's control: pick a dataset, a reorder method and a KV block size; see the
scores and the first prompts of that ordering.

`explore` computes one view (no widgets, testable); `reorder_explorer` displays the
current view as ordinary output, then, where ipywidgets and a live frontend exist,
dropdowns that redraw it in place (``IPython.display`` handles). Under papermill or
nbval nothing is interactive and the static view stays in the executed notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["ExploreView", "explore", "reorder_explorer"]


@dataclass
class ExploreView:
    """One ordering of one table, scored.

    Attributes
    ----------
    dataset, method : what was reordered, and how.
    block_size : KV block size of the block hit rate, tokens.
    scores : one row: PHC (characters²), char / token / block hit rates (0-1), prompt
        tokens, solver seconds and what the method optimizes.
    prompts : the first prompts in run order, each field as ``name: value``.
    """

    dataset: str
    method: str
    block_size: int
    scores: pd.DataFrame
    prompts: pd.DataFrame
    info: dict = field(default_factory=dict)


_CACHE: dict[tuple, Any] = {}


def explore(dataset: str, method: str, block_size: int, *, rows: int = 200,
            query_type: str = "filter", tokenizer: str = "llama3", n_prompts: int = 6
            ) -> ExploreView:
    """Reorder ``rows`` head rows of ``dataset`` with ``method`` and score the plan with
    blocks of ``block_size`` tokens (reorderings are cached per dataset and method)."""
    from ggr_kv.analysis.report import plan_preview, reorder_scores
    from ggr_kv.datasets import load_dataset

    key = (dataset, rows, query_type)
    if key not in _CACHE:
        ds = load_dataset(dataset, n=rows or None, sample="head")
        _CACHE[key] = (ds, ds.query(query_type))
    ds, query = _CACHE[key]
    scores, results = reorder_scores(ds, [method], query=query.text, tokenizer=tokenizer,
                                     block_size=block_size)
    res = results[method]
    return ExploreView(str(ds.name), method, block_size, scores,
                       plan_preview(ds, res.plan, n=n_prompts), dict(res.info))


def _styled_scores(view: ExploreView) -> Any:
    cols = ["method", "rows", "phc", "char_hit_rate", "token_hit_rate", "block_hit_rate",
            "prompt_tokens", "solver_s", "optimizes"]
    d = view.scores[[c for c in cols if c in view.scores]]
    return d.style.format({"phc": "{:,}", "char_hit_rate": "{:.1%}", "token_hit_rate": "{:.1%}",
                           "block_hit_rate": "{:.1%}", "prompt_tokens": "{:,}",
                           "solver_s": "{:.3f}"}).hide(axis="index").set_caption(
        f"{view.dataset}: {view.method}, {view.block_size}-token KV blocks")


def reorder_explorer(datasets: Sequence[str], methods: Sequence[str],
                     block_sizes: Sequence[int], *, interactive: bool = True, **kwargs: Any
                     ) -> ExploreView:
    """Show the first dataset / method / block size, with dropdowns to change them.

    Parameters
    ----------
    datasets, methods, block_sizes : the choices (the first of each is shown first).
    interactive : add the dropdowns (needs ipywidgets; without it, only the static view).
    kwargs : passed to `explore` (``rows``, ``query_type``, ``tokenizer``, ``n_prompts``).

    Returns the view shown first.
    """
    from IPython.display import Markdown, display

    view = explore(datasets[0], methods[0], int(block_sizes[0]), **kwargs)
    if interactive:
        try:
            import ipywidgets as w
        except ImportError:  # the static view below is still complete
            interactive = False
    if interactive:
        pick = {
            "dataset": w.Dropdown(options=list(datasets), description="dataset"),
            "method": w.Dropdown(options=list(methods), description="method"),
            "block_size": w.Dropdown(options=[int(b) for b in block_sizes],
                                     description="block size"),
        }
        display(w.HBox(list(pick.values())))
        # a reopened notebook keeps this text but not the kernel behind the dropdowns
        display(Markdown("_If the dropdowns above do nothing or are missing (a notebook "
                         "reopened from disk: their kernel side is gone), run this cell again "
                         "(Shift+Enter)._"))
    h_scores = display(_styled_scores(view), display_id=True)
    h_prompts = display(view.prompts, display_id=True)
    if interactive:
        def redraw(_change: Any = None) -> None:
            v = explore(pick["dataset"].value, pick["method"].value,
                        int(pick["block_size"].value), **kwargs)
            h_scores.update(_styled_scores(v))
            h_prompts.update(v.prompts)

        for widget in pick.values():
            widget.observe(redraw, names="value")
    return view
