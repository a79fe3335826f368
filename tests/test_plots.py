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

from ggr_kv.analysis.plots import (
    ORDERING_COLORS,
    caption,
    color_for,
    fig_hit_rate,
    fig_job_time,
    fig_predicted_vs_measured,
    fig_reorder_scores,
    fig_resources,
    plot_comparison,
    save_figure,
)
from ggr_kv.run.runs import load_runs, simulate_run

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


def test_reorder_score_bars_use_the_ordering_colors(reorder_scores_table, tmp_path):
    fig = fig_reorder_scores(reorder_scores_table)
    patches = [p for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith("bar:")]
    assert len(patches) == 4 * 3  # PHC + three hit rates, three methods each
    for p in patches:
        assert mcolors.to_hex(p.get_facecolor()) == ORDERING_COLORS[p.get_gid()[4:]]
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
        assert mcolors.to_hex(ln.get_color()) == ORDERING_COLORS[ordering]
    assert seen == {"original", "ggr"}  # no_cache has no lookups, so no hit-rate curve
    bars = fig_job_time(runs)
    patches = [p for ax in bars.axes for p in ax.patches if (p.get_gid() or "").startswith("bar:")]
    assert {p.get_gid() for p in patches} == {f"bar:{o}" for o in COMPARISON_ORDERINGS}
    for p in patches:
        assert mcolors.to_hex(p.get_facecolor()) == ORDERING_COLORS[p.get_gid()[4:]]
    # and in the written SVG
    svg = save_figure(fig, tmp_path, "hit_rate")[1]
    groups = _svg_group_colors(svg, "line:")
    assert groups
    for gid, colors in groups.items():
        assert ORDERING_COLORS[gid.split(":")[1]] in colors
    assert color_for("some-new-method") == color_for("some-new-method")
    assert color_for("some-new-method") not in ORDERING_COLORS.values()


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
    svg = save_figure(fig_hit_rate(runs, steps), tmp_path, "hit_rate")[1]
    texts = _svg_texts(svg)
    assert f"{meta['model']} (dummy weights)" in texts
    assert f"vLLM {meta['vllm_version']}" in texts
    # which hit rate each panel shows, and percent ticks
    assert "cumulative: Σhits / Σqueries since start" in texts
    assert "windowed: Δhits / Δqueries over last 16 steps" in texts
    assert "100%" in texts


@pytest.mark.vllm
def test_job_time_labels_are_the_recorded_speedups(comparison, tables):
    runs, _ = tables
    job = {
        json.loads(p.read_text())["method"]: json.loads(p.read_text())["timings"]["job_s"]
        for p in comparison.glob("*/run.json")
    }
    fig = fig_job_time(runs)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    ggr = next(t for t in labels if t.startswith(f"{job['ggr']:.2f} s"))
    assert f"{job['original'] / job['ggr']:.2f}× vs original" in ggr
    assert f"{job['no_cache'] / job['ggr']:.2f}× vs no cache" in ggr


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
    assert all(mcolors.to_hex(ln.get_color()) == ORDERING_COLORS["simulated"] for ln in sim)
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
