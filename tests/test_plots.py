"""Figures drawn from real run folders (tiny-llama on the CPU engine) and real simulations.

One module-scoped comparison (no_cache, original, ggr over 12 movie rows) is run once;
every test reads its run folders.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from conftest import COMPARISON_ORDERINGS
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ggr_kv.analysis.plots import (
    SIMULATED_COLOR,
    caption,
    color_for,
    fig_hit_rate,
    fig_job_time,
    fig_kv_usage,
    fig_predicted_vs_measured,
    fig_reorder_scores,
    fig_resources,
    full_window_rates,
    plot_comparison,
    save_figure,
    windowed_equals_cumulative,
)
from ggr_kv.reorder.registry import color_of, orderings
from ggr_kv.run.runs import add_windowed_rates, load_runs, simulate_run

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def comparison(tiny_comparison) -> Path:
    return tiny_comparison


@pytest.fixture(scope="module")
def tables(comparison):
    return load_runs(comparison)


def _svg_texts(path: Path) -> str:
    root = ET.parse(path).getroot()
    return " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def _svg_group_colors(path: Path, prefix: str) -> dict[str, set[str]]:
    """gid -> colors (stroke/fill) used inside the SVG group with that id."""
    root = ET.parse(path).getroot()
    out: dict[str, set[str]] = {}
    for g in root.iter(f"{SVG}g"):
        gid = g.get("id", "")
        if gid.startswith(prefix):
            styles = " ".join(e.get("style", "") for e in g.iter())
            out[gid] = set(re.findall(r"(?:stroke|fill): (#[0-9a-f]{6})", styles))
    return out


@pytest.mark.vllm
def test_every_figure_saved_as_png_and_svg_beside_the_runs(comparison, tables):
    res = plot_comparison(comparison)
    assert res.out_dir == comparison / "figures"
    expected = {
        "hit_rate",
        "kv_usage",
        "queue",
        "token_rates",
        "resources",
        "job_time",
        "hit_rate_bars",
    }
    assert set(res.files) == expected
    for name, files in res.files.items():
        assert [p.name for p in files] == [f"{name}.png", f"{name}.svg"]
        png, svg = files
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert ET.parse(svg).getroot().tag == f"{SVG}svg"


@pytest.fixture(scope="module")
def reorder_scores_table():
    from ggr_kv.analysis.report import reorder_scores
    from ggr_kv.datasets import load_dataset

    ds = load_dataset("movies", n=60, sample="head")
    scores, _ = reorder_scores(
        ds,
        ["original", "sorted", "ggr"],
        query=ds.query("filter").text,
        tokenizer="llama3",
        block_size=16,
    )
    return scores


@pytest.mark.slow
def test_saving_again_never_overwrites(reorder_scores_table, tmp_path):
    fig = fig_reorder_scores(reorder_scores_table, title="movies, 60 rows")
    first = save_figure(fig, tmp_path, "reorder")
    assert [p.name for p in first] == ["reorder.png", "reorder.svg"]
    before = [p.read_bytes() for p in first]
    second = save_figure(fig, tmp_path, "reorder")
    assert [p.name for p in second] == ["reorder-2.png", "reorder-2.svg"]
    assert [p.read_bytes() for p in first] == before
    # a stray SVG alone also moves the pair on, so PNG and SVG keep one name
    (tmp_path / "x.svg").write_text("<svg/>")
    assert [p.name for p in save_figure(fig, tmp_path, "x")] == ["x-2.png", "x-2.svg"]
    assert (tmp_path / "x.svg").read_text() == "<svg/>"


@pytest.mark.slow
def test_reorder_score_bars_use_the_ordering_colors(reorder_scores_table, tmp_path):
    fig = fig_reorder_scores(reorder_scores_table)
    patches = [p for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith("bar:")]
    assert len(patches) == 4 * 3  # PHC + three hit rates, three methods each
    for p in patches:
        assert mcolors.to_hex(p.get_facecolor()) == color_of(p.get_gid()[4:])
    texts = _svg_texts(save_figure(fig, tmp_path, "r")[1])
    assert "tokenizer: llama3" in texts and "KV block: 16 tokens" in texts
    ggr = reorder_scores_table.set_index("method").loc["ggr", "block_hit_rate"]
    assert f"{100 * ggr:.1f}%" in texts


@pytest.mark.vllm
def test_each_ordering_keeps_its_color_in_lines_bars_and_svg(comparison, tables, tmp_path):
    runs, steps = tables
    fig = fig_hit_rate(runs, steps)
    lines = [
        ln for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith("line:")
    ]
    assert lines, "no run curves drawn"
    seen = set()
    for ln in lines:
        ordering = ln.get_gid().split(":")[1]
        seen.add(ordering)
        assert mcolors.to_hex(ln.get_color()) == color_of(ordering)
    assert seen == {"original", "ggr"}  # no_cache has no lookups, so no hit-rate curve
    bars = fig_job_time(runs)
    patches = [p for ax in bars.axes for p in ax.patches if (p.get_gid() or "").startswith("bar:")]
    assert {p.get_gid() for p in patches} == {f"bar:{o}" for o in COMPARISON_ORDERINGS}
    for p in patches:
        assert mcolors.to_hex(p.get_facecolor()) == color_of(p.get_gid()[4:])
    # and in the written SVG
    svg = save_figure(fig, tmp_path, "hit_rate")[1]
    groups = _svg_group_colors(svg, "line:")
    assert groups
    for gid, colors in groups.items():
        assert color_of(gid.split(":")[1]) in colors
    assert color_for("some-new-method") == color_for("some-new-method")
    assert color_for("some-new-method") not in {o.color for o in orderings()}


@pytest.mark.vllm
def test_caption_names_model_weights_vllm_device_and_block_size(comparison, tables, tmp_path):
    runs, steps = tables
    meta = json.loads(next(comparison.glob("*/run.json")).read_text())
    text = caption(runs)
    for part in (
        f"model: {meta['model']} (dummy weights)",
        f"vLLM {meta['vllm_version']}",
        f"device: {meta['device']}",
        f"KV block: {meta['block_size']} tokens",
    ):
        assert part in text
    svg = save_figure(fig_hit_rate(runs, steps, window=1), tmp_path, "hit_rate")[1]
    texts = _svg_texts(svg)
    assert f"{meta['model']} (dummy weights)" in texts
    assert f"vLLM {meta['vllm_version']}" in texts
    # which hit rate each panel shows, and percent ticks
    assert "cumulative: Σhits / Σqueries since start" in texts
    assert "windowed: Δhits / Δqueries over last 1 steps" in texts
    assert "100%" in texts


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in [*ax.texts, *ax.get_xticklabels()]]


@pytest.mark.vllm
def test_job_time_labels_are_the_recorded_speedups(comparison, tables):
    runs, _ = tables
    job = {
        json.loads(p.read_text())["method"]: json.loads(p.read_text())["timings"]["job_s"]
        for p in comparison.glob("*/run.json")
    }
    texts = _texts(fig_job_time(runs))
    assert f"{job['ggr']:.2f} s" in texts
    ggr = next(t for t in texts if t.startswith("ggr\n"))
    assert f"{job['original'] / job['ggr']:.2f}× vs original" in ggr
    assert f"{job['no_cache'] / job['ggr']:.2f}× vs no cache" in ggr


def _overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts whose drawn boxes intersect."""
    fig.canvas = FigureCanvasAgg(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in [*ax.texts, *ax.get_xticklabels(), ax.title]
             if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent(r)) for t in texts]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:]
            if ba.overlaps(bb)]


@pytest.mark.vllm
def test_job_time_with_repeats_shows_median_and_spread_without_overlapping_labels(tables, tmp_path):
    runs, _ = tables
    # three jobs per ordering: this run's time, and 0.8x / 1.3x of it (as repeats would)
    reps = pd.concat([runs.assign(run_id=runs["run_id"] + f"-r{k}", job_s=runs["job_s"] * f)
                      for k, f in enumerate((1.0, 0.8, 1.3))], ignore_index=True)
    fig = fig_job_time(reps)
    svg = save_figure(fig, tmp_path, "job")[1]
    assert len(_svg_group_colors(svg, "spread")) == len(fig.axes), "no min-max error bars"
    ggr = runs.set_index("ordering").loc["ggr", "job_s"]
    assert f"{ggr:.2f} s\n[{0.8 * ggr:.2f}-{1.3 * ggr:.2f}]" in _texts(fig)
    assert "median of 3 jobs" in fig._supxlabel.get_text()
    assert _overlaps(fig) == []
    # five comparison groups side by side: still no overlaps
    many = pd.concat([reps.assign(group=g, group_label=f"movies, tiny-llama, config {g}",
                                  run_id=reps["run_id"] + f"-g{g}") for g in range(5)],
                     ignore_index=True)
    assert _overlaps(fig_job_time(many)) == []


@pytest.mark.vllm
def test_short_runs_get_no_windowed_panels_that_repeat_the_cumulative_ones(tables, tmp_path):
    runs, steps = tables
    longest = int(steps.groupby("run_id").size().max())
    short = fig_hit_rate(runs, steps, window=longest)  # every window reaches the start
    assert len([ax for ax in short.axes if ax.get_visible()]) == 2
    assert "windowed" not in " ".join(ax.get_title() for ax in short.axes)
    assert windowed_equals_cumulative(add_windowed_rates(steps, longest))
    per_step = fig_hit_rate(runs, steps, window=1)
    assert len(per_step.axes) == 4
    texts = _svg_texts(save_figure(short, tmp_path, "short")[1])
    assert f"windowed rate (last {longest} steps) not drawn" in texts


@pytest.mark.vllm
def test_kv_usage_axis_is_scaled_to_the_data(tables, tmp_path):
    runs, steps = tables
    fig = fig_kv_usage(runs, steps)
    peak = float(steps["kv_cache_usage"].max())
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert lo == 0 and peak <= hi <= max(1.15 * peak, 0.01) + 1e-9
    assert peak < 0.5 and fig.axes[0].get_ylim()[1] < 0.6  # not a flat line on 0-100%
    assert "y axis scaled to the data" in _svg_texts(save_figure(fig, tmp_path, "kv")[1])


def test_token_rates_use_full_windows_only():
    # 40 steps of 100 prompt tokens every 0.5 s; the last step comes 1 ms after the one
    # before it (the offline loop's last record): a partial window spiked there
    t = np.r_[np.arange(1, 40) * 0.5, 19.501]
    steps = pd.DataFrame({"run_id": "r", "step": np.arange(40), "t_s": t,
                          "prompt_tokens": 100, "generation_tokens": 10,
                          "prefix_hits_cum": 0, "prefix_queries_cum": 0})
    rates = full_window_rates(steps, window=8)
    assert rates["prompt_tok_s_full"].iloc[:8].isna().all()  # no ramp from the start
    tail = rates["prompt_tok_s_full"].iloc[8:]
    assert tail.max() < 1.25 * 200 and tail.min() > 0.9 * 200  # 200 tokens/s, no spike
    per_step = add_windowed_rates(steps, window=1)["prompt_tok_s"]
    assert per_step.iloc[-1] > 100 * 200  # what a one-step window draws at the end


@pytest.mark.vllm
def test_gpu_panel_says_not_sampled_instead_of_drawing(comparison, tables, tmp_path):
    runs, steps = tables
    fig = fig_resources(runs, steps)
    svg_text = _svg_texts(save_figure(fig, tmp_path, "resources")[1])
    gpu_sampled = "gpu_util" in steps and steps["gpu_util"].notna().any()
    gpu_lines = [
        ln for ax in fig.axes for ln in ax.get_lines() if ax.get_ylabel().startswith("GPU")
    ]
    if gpu_sampled:
        assert gpu_lines
    else:
        assert not gpu_lines
        assert "GPU utilization was not sampled" in svg_text
    cpu_axes = [ax for ax in fig.axes if ax.get_ylabel().startswith("process CPU")]
    assert bool(cpu_axes) == bool(steps["cpu_percent"].notna().any())


@pytest.mark.vllm
def test_predicted_curves_overlay_measured_ones(comparison, tables):
    runs, steps = tables
    predicted = {
        r.ordering: simulate_run(r.path) for r in runs.itertuples() if r.ordering != "no_cache"
    }
    fig = fig_predicted_vs_measured(runs, steps, predicted)
    sim = [
        ln
        for ax in fig.axes
        for ln in ax.get_lines()
        if (ln.get_gid() or "").startswith("line:simulated:")
    ]
    assert {ln.get_gid() for ln in sim} == {"line:simulated:original", "line:simulated:ggr"}
    assert all(mcolors.to_hex(ln.get_color()) == SIMULATED_COLOR for ln in sim)
    assert all(ln.get_linestyle() == "--" for ln in sim)
    ggr_pred = next(
        ln for ln in sim if ln.get_gid().endswith("ggr") and np.nanmax(ln.get_ydata()) > 0
    )
    np.testing.assert_allclose(
        ggr_pred.get_ydata(), predicted["ggr"].steps["hit_rate_cum"].to_numpy(float)
    )
    with pytest.raises(ValueError, match="have no measured run"):
        fig_predicted_vs_measured(runs, steps, {"sorted": predicted["ggr"]})
    res = plot_comparison(runs, steps, predicted=predicted, save=False)
    assert "predicted_vs_measured" in res.figures and not res.files


@pytest.mark.vllm
def test_several_groups_need_an_explicit_group(comparison, tables):
    runs, steps = tables
    other = runs.assign(group=runs["group"] + 1, group_label="other", run_id=runs["run_id"] + "-b")
    both = pd.concat([runs, other], ignore_index=True)
    steps_b = pd.concat([steps, steps.assign(run_id=steps["run_id"] + "-b")], ignore_index=True)
    with pytest.raises(ValueError, match="comparison groups"):
        fig_hit_rate(both, steps_b)
    res = plot_comparison(both, steps_b, save=False)
    assert {"hit_rate_g0", "hit_rate_g1", "job_time"} <= set(res.figures)
    # bars: one panel per group
    assert len(res.figures["job_time"].axes) == 2
