"""Run tables (``ggr_kv.run.runs``) and Markdown reports (``ggr_kv.analysis.report``) against the
numbers the run folders themselves recorded.

The vLLM tests share the session's tiny comparison (``conftest.tiny_comparison``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COMPARISON_ORDERINGS

from ggr_kv.analysis.plots import plot_comparison
from ggr_kv.analysis.report import markdown_table, plan_preview, reorder_scores, write_report
from ggr_kv.core.paths import project_path
from ggr_kv.run.runs import (
    add_windowed_rates,
    find_run_dirs,
    latest_comparison,
    load_run,
    load_runs,
    simulate_run,
)


@pytest.fixture(scope="module")
def comparison(tiny_comparison) -> Path:
    return tiny_comparison


@pytest.fixture(scope="module")
def recorded(comparison) -> dict[str, dict]:
    """ordering -> run.json, read directly."""
    metas = [json.loads(p.read_text()) for p in comparison.glob("*/run.json")]
    return {m["method"]: m for m in metas}


def _table_rows(markdown: str, header_start: str) -> list[dict[str, str]]:
    lines = markdown.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith(header_start))
    head = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = []
    for ln in lines[i + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))))
    return rows


@pytest.mark.vllm
def test_runs_table_matches_what_each_run_recorded(comparison, recorded):
    runs, steps = load_runs(comparison)
    assert sorted(runs["ordering"]) == sorted(COMPARISON_ORDERINGS)
    assert runs["group"].nunique() == 1  # caching off does not split the comparison
    for r in runs.itertuples():
        m = recorded[r.ordering]
        s = m["summary"]
        assert r.prompt_tokens == m["prompt_tokens"]
        assert r.job_s == m["timings"]["job_s"]
        assert r.vllm_version == m["vllm_version"] and r.device == m["device"]
        assert r.block_size == m["block_size"] and r.dummy_weights
        assert r.prefix_queries == s["prefix_cache_queries"]
        assert r.prefix_hits == s["prefix_cache_hits"]
        if s["prefix_cache_hit_rate"] is None:
            assert math.isnan(r.hit_rate)
        else:
            assert r.hit_rate == pytest.approx(s["prefix_cache_hit_rate"])
        assert r.peak_kv_usage == pytest.approx(s["max_kv_cache_usage"])
        assert r.preemptions == s["num_preemptions"]
        assert r.steps == s["num_steps"] == (steps["run_id"] == r.run_id).sum()
        assert r.speedup_vs_original == pytest.approx(
            recorded["original"]["timings"]["job_s"] / m["timings"]["job_s"]
        )
        assert r.speedup_vs_no_cache == pytest.approx(
            recorded["no_cache"]["timings"]["job_s"] / m["timings"]["job_s"]
        )
    # GGR's rows share long prefixes; the input order of 12 rows shares none beyond a block
    assert recorded["ggr"]["summary"]["prefix_cache_hits"] > 0


@pytest.mark.vllm
def test_windowed_rates_bracket_per_step_and_cumulative(comparison):
    _, steps = load_runs(comparison, window=1)
    s = steps[steps["ordering"] == "ggr"]
    q = s["prefix_queries"].to_numpy(float)
    per_step = np.where(q > 0, s["prefix_hits"] / np.where(q > 0, q, 1), np.nan)
    np.testing.assert_allclose(s["hit_rate_window"], per_step)
    dt = np.diff(np.r_[0.0, s["t_s"].to_numpy(float)])
    np.testing.assert_allclose(s["generation_tok_s"], s["generation_tokens"] / dt)
    wide = add_windowed_rates(steps, window=len(steps))
    w = wide[wide["ordering"] == "ggr"]
    np.testing.assert_allclose(w["hit_rate_window"], w["hit_rate_cum"])
    assert steps is not wide and "hit_rate_window" in steps  # a new frame each time
    with pytest.raises(ValueError, match="at least 1 step"):
        add_windowed_rates(steps, window=0)


@pytest.mark.vllm
def test_report_table_holds_the_recorded_numbers(comparison, recorded, tmp_path):
    res = plot_comparison(comparison, out_dir=tmp_path / "figures")
    path = write_report(res.runs, res.out_dir, figures=res.files)
    assert path == tmp_path / "figures" / "report.md"
    text = path.read_text()
    rows = {r["ordering"]: r for r in _table_rows(text, "| dataset | ordering |")}
    assert set(rows) == set(COMPARISON_ORDERINGS)
    base = recorded["original"]["timings"]["job_s"]
    for o, m in recorded.items():
        row = rows[o]
        assert row["dataset"] == m["dataset"] == "movies"
        assert row["rows"] == str(m["rows"])
        assert row["prompt tokens"] == f"{m['prompt_tokens']:,}"
        assert row["job s"] == f"{m['timings']['job_s']:.2f}"
        assert row["speedup vs original"] == f"{base / m['timings']['job_s']:.2f}×"
        rate = m["summary"]["prefix_cache_hit_rate"]
        assert row["hit rate"] == ("n/a" if rate is None else f"{100 * rate:.1f}%")
        assert row["peak KV usage"] == f"{100 * m['summary']['max_kv_cache_usage']:.1f}%"
        assert row["preemptions"] == str(m["summary"]["num_preemptions"])
        assert row["vLLM"] == m["vllm_version"] and row["device"] == m["device"]
    assert "tiny-llama (dummy weights)" in text and "KV block: 128 tokens" in text
    # every figure is linked, relative to the report, and the link resolves
    for name in res.files:
        assert f"![{name}]({name}.png)" in text
        assert (path.parent / f"{name}.png").is_file()
    # a second report never replaces the first
    again = write_report(res.runs, res.out_dir, figures=res.files)
    assert again.name == "report-2.md" and path.read_text() == text


@pytest.mark.vllm
def test_bad_run_folders_are_named_in_errors(comparison, tmp_path):
    src = next(p.parent for p in comparison.glob("*/run.json"))
    # not a run folder
    with pytest.raises(FileNotFoundError, match="no run.json"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no run folders"):
        load_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        load_runs(str(tmp_path / "nothing-*"))
    # a steps table without a schema column
    bad = tmp_path / "bad" / src.name
    shutil.copytree(src, bad)
    (bad / "steps.parquet").unlink()
    pd.read_csv(bad / "steps.csv").drop(columns="prefix_hits").to_csv(
        bad / "steps.csv", index=False
    )
    with pytest.raises(ValueError, match=r"steps.csv: missing columns \['prefix_hits'\]"):
        load_run(bad)
    # the same run id twice
    dup = tmp_path / "dup"
    shutil.copytree(src, dup / "a")
    shutil.copytree(src, dup / "b")
    with pytest.raises(ValueError, match="appear in more than one folder"):
        load_runs(dup)


@pytest.mark.vllm
def test_latest_comparison_and_folder_discovery(comparison, tmp_path):
    old, new = tmp_path / "cmp-old", tmp_path / "cmp-new"
    shutil.copytree(comparison, old)
    shutil.copytree(comparison, new)
    for rj in old.glob("*/run.json"):
        os.utime(rj, (1_000_000, 1_000_000))
    assert latest_comparison(tmp_path) == new
    assert latest_comparison(tmp_path / "none") is None
    assert len(find_run_dirs([new, str(new / "*")])) == len(COMPARISON_ORDERINGS)  # no duplicates


@pytest.mark.vllm
def test_simulate_run_refuses_a_table_that_is_not_the_runs(comparison):
    from ggr_kv.datasets import load_dataset

    ggr = next(
        p.parent
        for p in comparison.glob("*/run.json")
        if json.loads(p.read_text())["method"] == "ggr"
    )
    pred = simulate_run(ggr)  # the recorded dataset, sample and seed
    run = load_run(ggr)
    np.testing.assert_array_equal(
        pred.requests["prompt_tokens"], run.requests.sort_values("slot")["prompt_tokens"]
    )
    with pytest.raises(ValueError, match="the run has 12 rows, the table 13"):
        simulate_run(ggr, load_dataset("movies", n=13, sample="head"))
    with pytest.raises(ValueError, match="does not reproduce the run's prompts"):
        simulate_run(ggr, load_dataset("movies", n=12, sample="tail"))


# -- no engine needed --------------------------------------------------------------
def test_markdown_table_escapes_and_aligns():
    df = pd.DataFrame({"name": ["a|b", "two\nlines"], "n": [1, 22], "rate": [0.5, np.nan]})
    text = markdown_table(df, {"rate": lambda v: "n/a" if pd.isna(v) else f"{v:.0%}"})
    lines = text.splitlines()
    assert lines[0] == "| name | n | rate |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| a\\|b | 1 | 50% |"
    assert lines[3] == "| two lines | 22 | n/a |"


def test_plan_preview_follows_the_plan():
    from ggr_kv.datasets import load_dataset

    ds = load_dataset("movies", n=40, sample="head")
    scores, results = reorder_scores(
        ds, ["original", "ggr"], query=ds.query("filter").text, tokenizer="llama3", block_size=16
    )
    assert list(scores["method"]) == ["original", "ggr"]
    assert (scores["token_hits"] <= scores["prompt_tokens"]).all()
    phc = scores.set_index("method")["phc"]
    assert phc["original"] == 0 < phc["ggr"]  # 40 head rows interleave movies
    plan = results["ggr"].plan
    frame_before = ds.frame.copy()
    prev = plan_preview(ds, plan, n=5, width=1000)
    pd.testing.assert_frame_equal(ds.frame, frame_before)  # the caller's data untouched
    assert list(prev["row"]) == list(plan.row_order[:5])
    for slot, pairs in zip(range(5), plan.apply(ds.table())):
        assert list(prev.iloc[slot, 2:]) == [f"{k}: {v}" for k, v in pairs]
    short = plan_preview(ds, plan, n=2, width=12)
    assert short.iloc[:, 2:].map(len).max().max() <= 12


def test_project_path_resolves_against_the_project(tmp_path):
    root = Path(__file__).resolve().parents[1]
    assert project_path("results", root / "notebooks") == root / "results"
    assert project_path("results", tmp_path) == tmp_path.resolve() / "results"
    assert project_path(tmp_path / "x") == tmp_path / "x"
