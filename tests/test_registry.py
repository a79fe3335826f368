"""An ordering registered in one call (nothing else touched) reaches every place a user
sees orderings: ``ggr-kv reorder --help`` and its output, ``reorder()``, the run's
context, figure colors and legends, and the report's tables."""

from __future__ import annotations

import json

import matplotlib.colors as mcolors
import numpy as np
import pytest
from conftest import TINY_ENGINE

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.reorder.registry import (
    CONTEXT_KNOBS,
    Ordering,
    get_ordering,
    method_names,
    ordering_names,
    register,
    unregister,
)

NAME = "reversed_rows"
OPTIMIZES = "nothing: the input rows backwards (a test ordering)"
COLOR = "#123456"


def _reversed_rows(table, units, knobs):
    """The input's rows backwards, every row's fields as given (``step`` rows at a time)."""
    step = int(knobs.get("step", 1))
    rows = np.arange(table.n_rows)[::-1]
    rows = np.concatenate([np.sort(rows[i:i + step]) for i in range(0, len(rows), step)])
    perm = np.broadcast_to(np.arange(table.n_cols, dtype=np.int32), (table.n_rows, table.n_cols))
    return ReorderPlan(table.columns, rows, perm.copy()), {"knobs": {"step": step}}


@pytest.fixture
def dummy():
    """The dummy ordering, registered for one test and removed after it."""
    o = register(Ordering(NAME, OPTIMIZES, COLOR, _reversed_rows, knobs=("step",),
                          context=("block_size",)))
    yield o
    unregister(NAME)
    assert get_ordering(NAME) is None


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"x{i % 3},y{i}\n" for i in range(9)))
    return path


def test_registry_refuses_a_second_name_or_color():
    assert {"no_cache", "original", "sorted", "ggr", "ophr", "blocks"} <= set(ordering_names())
    with pytest.raises(ValueError, match="already registered"):
        register(Ordering("ggr", "x", "#abcdef"))
    with pytest.raises(ValueError, match="color"):
        register(Ordering("another", "x", get_ordering("ggr").color))
    with pytest.raises(ValueError, match="run facts"):
        register(Ordering("another", "x", "#abcdef", context=("gpu",)))
    assert get_ordering("another") is None


def test_a_registered_ordering_is_in_the_cli_help_and_output(dummy, csv, capsys):
    from ggr_kv.cli.main import main

    with pytest.raises(SystemExit) as ex:
        main(["reorder", "--help"])
    assert ex.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert NAME in help_text and " ".join(OPTIMIZES.split()) in help_text
    assert main(["reorder", str(csv), "--method", NAME, "--knob", "step=1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == NAME and out["optimizes"] == OPTIMIZES
    assert out["info"]["knobs"] == {"step": 1}
    # its knobs are checked like any method's
    assert main(["reorder", str(csv), "--method", NAME, "--knob", "depth=2"]) == 2
    assert "valid knobs: step" in capsys.readouterr().err


def test_a_registered_ordering_plans_runs_and_gets_its_run_facts(dummy, csv):
    from ggr_kv.reorder import reorder
    from ggr_kv.run.prepare import context_knobs

    res = reorder(csv, NAME)
    assert res.plan.row_order.tolist() == list(range(8, -1, -1))
    assert NAME in method_names() and NAME in ordering_names()
    got = context_knobs(NAME, tokenizer="t", block_size=16, query="q", instruction="i")
    assert got == {"block_size": 16} and set(got) <= set(CONTEXT_KNOBS)


def test_a_registered_ordering_is_in_the_score_figure_and_table(dummy, csv):
    from ggr_kv.analysis.plots import fig_reorder_scores
    from ggr_kv.analysis.report import markdown_table, reorder_scores

    scores, _ = reorder_scores(csv, ["original", NAME], query="Q?", tokenizer="llama3",
                               block_size=16)
    row = scores.set_index("method").loc[NAME]
    assert row["optimizes"] == OPTIMIZES
    fig = fig_reorder_scores(scores)
    bars = [p for ax in fig.axes for p in ax.patches if p.get_gid() == f"bar:{NAME}"]
    assert bars and all(mcolors.to_hex(p.get_facecolor()) == COLOR for p in bars)
    assert NAME in [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert NAME in markdown_table(scores[["method", "optimizes"]])


@pytest.mark.vllm
def test_a_registered_ordering_runs_and_shows_in_the_figures_and_report(dummy, tmp_path,
                                                                         engine_pool):
    from ggr_kv.analysis.plots import plot_comparison
    from ggr_kv.analysis.report import report_text
    from ggr_kv.datasets import load_dataset
    from ggr_kv.engine.config import EngineConfig
    from ggr_kv.run import run_orderings
    from ggr_kv.run.runs import load_runs

    ds = load_dataset("movies", n=6, sample="head")
    run_orderings(ds, methods=("original", NAME), query=ds.query("filter"),
                  llm=engine_pool.get(EngineConfig(**TINY_ENGINE)), sampling={"max_tokens": 2},
                  out_dir=tmp_path, progress=False)
    runs, steps = load_runs(tmp_path / "*")
    assert sorted(runs["ordering"]) == sorted(["original", NAME])
    figs = plot_comparison(runs, steps, save=False)
    bars = [p for ax in figs.figures["job_time"].axes for p in ax.patches
            if p.get_gid() == f"bar:{NAME}"]
    assert bars and mcolors.to_hex(bars[0].get_facecolor()) == COLOR
    legend = [t.get_text() for ax in figs.figures["hit_rate"].axes
              if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(NAME in t for t in legend), legend
    text = report_text(runs)
    objectives = text.split("## What each ordering optimizes")[1].split("## ")[0]
    assert f"| {NAME} | {OPTIMIZES} |" in objectives
