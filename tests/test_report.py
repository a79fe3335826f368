"""Run tables (``ggr_kv.run.runs``) and Markdown reports (``ggr_kv.analysis.report``) against the
numbers the run folders themselves recorded.

The vLLM tests share the session's tiny comparison (``conftest.tiny_comparison``).
"""

from __future__ import annotations

import json
import math
import os
import re
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
        assert row["job s, median [min-max]"] == f"{m['timings']['job_s']:.2f}"
        assert row["speedup vs original"] == f"{base / m['timings']['job_s']:.2f}×"
        rate = m["summary"]["prefix_cache_hit_rate"]
        assert row["hit rate"] == ("n/a" if rate is None else f"{100 * rate:.1f}%")
        assert row["peak KV usage"] == f"{100 * m['summary']['max_kv_cache_usage']:.1f}%"
        assert row["preemptions"] == str(m["summary"]["num_preemptions"])
    assert "tiny-llama (dummy weights)" in text and "KV block: 128 tokens" in text
    vllm = recorded["ggr"]["vllm_version"]
    assert f"vLLM {vllm}" in text
    # every figure is linked, relative to the report, and the link resolves
    for name in res.files:
        assert f"![{name}]({name}.png)" in text
        assert (path.parent / f"{name}.png").is_file()
    # a second report never replaces the first
    again = write_report(res.runs, res.out_dir, figures=res.files)
    assert again.name == "report-2.md" and path.read_text() == text


@pytest.fixture(scope="module")
def full_report(comparison):
    """``ggr-kv report`` on the tiny comparison: (folder it wrote, report text, data)."""
    from ggr_kv.analysis.report import report_data
    from ggr_kv.cli.main import main

    before = set(comparison.glob("report-*"))
    assert main(["report", str(comparison)]) == 0
    (folder,) = set(comparison.glob("report-*")) - before
    runs, _ = load_runs(comparison)
    return folder, (folder / "report.md").read_text(), runs, report_data(runs)


@pytest.mark.vllm
def test_report_command_writes_figures_and_report_into_a_new_folder(comparison, full_report,
                                                                    capsys):
    from ggr_kv.cli.main import main

    folder, _text, _, _ = full_report
    assert folder.parent == comparison and (folder / "report.md").is_file()
    pngs = {p.stem for p in folder.glob("*.png")}
    assert {"hit_rate", "kv_usage", "queue", "token_rates", "job_time", "hit_rate_bars",
            "predicted_vs_measured"} <= pngs
    assert pngs == {p.stem for p in folder.glob("*.svg")}
    snapshot = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["report", str(comparison), "--no-simulate", "--no-score"]) == 0
    again = sorted(set(comparison.glob("report-*")) - {folder})
    assert len(again) == 1 and (again[0] / "report.md").is_file()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == snapshot  # untouched
    # an existing --out is refused with one line, exit 2
    capsys.readouterr()
    assert main(["report", str(comparison), "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and str(folder) in err[0]
    assert main(["report"]) == 2  # neither RUN_DIR nor --latest


@pytest.mark.vllm
def test_report_gives_ttft_and_e2e_percentiles_of_the_requests(full_report):
    _folder, text, runs, _data = full_report
    rows = {r["ordering"]: r for r in _table_rows(text, "| ordering | requests |")}
    for r in runs.itertuples():
        req = load_run(r.path).requests
        row = rows[r.ordering]
        assert row["requests"] == str(len(req))
        for col, name in (("ttft_s", "TTFT"), ("e2e_s", "end-to-end")):
            for q in (50, 99):
                want = np.percentile(req[col].dropna(), q)
                assert row[f"{name} p{q} s"] == f"{want:.3f}", (r.ordering, col, q)


@pytest.mark.vllm
def test_report_shows_phc_block_rate_and_objective_of_every_ordering(full_report):
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.table import Table
    from ggr_kv.reorder.metrics import score
    from ggr_kv.run.runs import run_dataset

    _folder, text, runs, _ = full_report
    rows = {r["ordering"]: r for r in _table_rows(text, "| ordering | optimizes |")}
    assert "PHC" in rows["ggr"]["optimizes"] and "input order" in rows["original"]["optimizes"]
    block_col = next(c for c in rows["ggr"] if c.startswith("block hit rate, predicted"))
    assert "128-token blocks" in block_col
    for r in runs[runs["ordering"] != "no_cache"].itertuples():
        run = load_run(r.path)
        tbl = Table.from_frame(run_dataset(run).frame)
        s = score(tbl, ReorderPlan.from_json(run.path / "plan.json", tbl),
                  query=run.meta["query"], instruction=run.meta["instruction"],
                  tokenizer=run.meta["model_path"], block_size=run.meta["block_size"])
        row = rows[r.ordering]
        assert row["PHC (characters²)"] == f"{s.phc:,.0f}"
        assert row[block_col] == f"{100 * s.block_hit_rate:.1f}%"
        # an unbounded cache: the prediction from the prompts alone is what vLLM cached
        assert row["hit rate, measured"] == row[block_col]
    assert rows["no_cache"][block_col] == "n/a (cache off)"


@pytest.mark.vllm
def test_report_cross_checks_three_hit_counts_and_flags_a_mismatch(comparison, full_report,
                                                                  tmp_path):
    from ggr_kv.analysis.report import report_data, report_text

    _, text, _runs, data = full_report
    assert data.counts["agree"].all(), data.counts
    ggr = data.counts.set_index("ordering").loc["ggr"]
    assert ggr["collector_hits"] == ggr["request_cached"] == ggr["simulated_hits"] > 0
    assert "MISMATCH:" not in text
    # a run whose requests report more cached tokens than the counters saw
    bad = tmp_path / "cmp"
    shutil.copytree(comparison, bad, ignore=shutil.ignore_patterns("report-*", "figures"))
    run_dir = next(p.parent for p in bad.glob("*/run.json")
                   if json.loads(p.read_text())["method"] == "ggr")
    req = pd.read_parquet(run_dir / "requests.parquet")
    req["num_cached_tokens"] += 128
    req.to_parquet(run_dir / "requests.parquet")
    (run_dir / "requests.csv").unlink()
    runs_b, _ = load_runs(bad)
    data_b = report_data(runs_b, score=False)
    flagged = data_b.counts[~data_b.counts["agree"]]
    assert list(flagged["ordering"]) == ["ggr"]
    assert "requests" in flagged["disagreement"].iloc[0]
    assert "MISMATCH: collector" in report_text(runs_b, data=data_b)


@pytest.mark.vllm
def test_report_has_no_raw_floats_and_whole_tables(full_report):
    _, text, _, _ = full_report
    assert not re.search(r"\d\.\d{4,}", text), re.findall(r"\S*\d\.\d{4,}\S*", text)[:5]
    assert "nan" not in text.lower().replace("nanosecond", "")
    for block in re.findall(r"((?:^\|.*\|\n)+)", text, flags=re.MULTILINE):
        widths = {ln.count("|") - ln.count("\\|") for ln in block.splitlines()}
        assert len(widths) == 1, block  # every row of a table has the header's cells


@pytest.mark.vllm
def test_demo_table_goes_into_the_readme_block(comparison, tmp_path):
    from ggr_kv.cli.main import main

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN demo-table (generated) -->\nold\n"
                      "<!-- END demo-table -->\noutro\n")
    assert main(["report", str(comparison), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- BEGIN demo-table (generated) -->\n| ordering |")
    assert text.endswith("<!-- END demo-table -->\noutro\n") and "old" not in text
    assert "jobs per ordering: 1" in text


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
    # a newer campaign folder whose sharded runs repeat run ids (as results/h200x2 in a
    # fresh clone) is no comparison: notebook 03 would fail to load it
    campaign = tmp_path / "campaign"
    shutil.copytree(comparison, campaign / "shards-a")
    shutil.copytree(comparison, campaign / "shards-b")
    shutil.copytree(next(comparison.glob("*/run.json")).parent,
                    campaign / "one-gpu")
    for rj in campaign.rglob("run.json"):
        os.utime(rj)  # newer than `new`'s
    assert any(campaign.glob("*/run.json"))
    assert latest_comparison(tmp_path) == new
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


def test_ideal_speedup_is_uncached_tokens_of_original_over_this():
    from ggr_kv.analysis.summary import ideal_speedups, job_time_stats

    runs = pd.DataFrame({
        "run_id": ["a", "b", "c", "d", "e"], "group": 0, "group_label": "g",
        "ordering": ["original", "ggr", "ggr", "ggr", "no_cache"],
        "job_s": [10.0, 4.0, 5.0, 9.0, 12.0], "hit_rate": [0.2, 0.6, 0.6, 0.6, np.nan],
    })
    stats = job_time_stats(runs).set_index("ordering")
    assert stats.loc["ggr", ["n", "job_s", "job_min_s", "job_max_s"]].tolist() == [3, 5, 4, 9]
    assert stats.loc["ggr", "speedup_vs_original"] == 2.0  # median 10 / median 5
    ideal = ideal_speedups(runs).set_index("ordering")
    assert ideal.loc["ggr", "ideal_speedup"] == pytest.approx(0.8 / 0.4)
    assert ideal.loc["ggr", "measured_over_ideal"] == pytest.approx(1.0)
    assert math.isnan(ideal.loc["no_cache", "ideal_speedup"])


def test_readme_block_replacement_keeps_everything_else(tmp_path):
    from ggr_kv.analysis.readme import read_block, replace_block

    p = tmp_path / "R.md"
    p.write_text("a\n<!-- BEGIN demo-table x -->\n1\n<!-- END demo-table -->\nb\n")
    assert replace_block(p, "demo-table", "2") is True
    assert p.read_text() == "a\n<!-- BEGIN demo-table x -->\n2\n<!-- END demo-table -->\nb\n"
    assert read_block(p, "demo-table") == "2\n"
    assert replace_block(p, "demo-table", "2\n") is False
    p.write_text("no markers\n")
    with pytest.raises(ValueError, match="R.md: no '<!-- BEGIN demo-table"):
        replace_block(p, "demo-table", "x")


@pytest.mark.vllm
def test_every_repeat_recorded_in_run_json_counts_in_the_job_time(comparison, tmp_path):
    from ggr_kv.analysis.report import summary_table
    from ggr_kv.analysis.summary import job_time_stats

    folder = tmp_path / "cmp"
    shutil.copytree(comparison, folder, ignore=shutil.ignore_patterns("report-*", "figures"))
    rj = next(p for p in folder.glob("*/run.json") if json.loads(p.read_text())["method"] == "ggr")
    meta = json.loads(rj.read_text())
    job = meta["timings"]["job_s"]
    meta["repeats"] = {"count": 3, "job_s": [job, 0.5 * job, 2.0 * job]}  # as the run layer writes
    rj.write_text(json.dumps(meta))
    runs, _ = load_runs(folder)
    ggr = job_time_stats(runs).set_index("ordering").loc["ggr"]
    assert (ggr["n"], ggr["job_s"], ggr["job_min_s"], ggr["job_max_s"]) == (
        3, job, 0.5 * job, 2.0 * job)
    row = next(r for r in _table_rows(summary_table(runs), "| dataset |") if r["ordering"] == "ggr")
    assert row["job s, median [min-max]"] == f"{job:.2f} [{0.5 * job:.2f}-{2 * job:.2f}] (n=3)"
