"""Figures, report and README table of the 800-row H200 runs (``results/h200/orderings-800rows``).

Run here (no GPU needed) after ``experiments/gpu_orderings.py`` filled the folder:

    python experiments/h200_figures.py results/h200/orderings-800rows

Writes ``figures/`` (PNG + SVG, never overwriting), ``report.md`` for the orderings, a
KV-cache sweep figure, the simulator's prediction of the movies runs beside the
measured hits, and prints the Markdown tables that ``results/h200/README.md`` holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ggr_kv.analysis.plots import RC, caption, color_for, plot_comparison, save_figure
from ggr_kv.analysis.report import markdown_table, summary_table, write_report
from ggr_kv.run.runs import load_run, load_runs, simulate_run


def main(folder: str) -> None:
    root = Path(folder)
    main_runs = sorted(p for p in root.iterdir() if (p / "run.json").exists()
                       and not p.name.startswith("kv"))
    sweep_runs = sorted(p for p in root.iterdir() if p.name.startswith("kv"))
    out = root / "figures"

    predicted = {}
    for m in ("original", "sorted", "ggr"):
        # the run.json names the GPU machine's model folder; its tokenizer is Llama-3's
        sim = simulate_run(load_run(root / f"movies-{m}"), tokenizer="llama3")
        predicted[m] = sim
        meas = load_run(root / f"movies-{m}").meta["summary"]
        print(f"movies {m}: predicted hits {sim.summary['prefix_cache_hits']}, "
              f"measured {meas['prefix_cache_hits']}, queries {meas['prefix_cache_queries']}")
    movies = [p for p in main_runs if p.name.startswith("movies-") and "no_cache" not in p.name]
    figs = plot_comparison(movies, predicted=predicted, out_dir=out / "movies")
    write_report(figs.runs, out / "movies", figures=figs.files, predicted=predicted,
                 title="H200, movies: measured and simulated")
    figs = plot_comparison(main_runs, out_dir=out)
    path = write_report(figs.runs, out, figures=figs.files,
                        title="H200: every bundled dataset x ordering")
    print(summary_table(figs.runs))
    print(f"report: {path}")

    runs, _ = load_runs(sweep_runs)
    runs["kv_blocks"] = runs["num_kv_blocks"].astype(int)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for m, g in runs.sort_values("kv_blocks").groupby("method"):
            kw = {"color": color_for(m), "marker": "o", "label": m}
            axes[0].plot(g["kv_blocks"], g["job_s"], **kw)
            axes[1].plot(g["kv_blocks"], 100 * g["hit_rate"], **kw)
            axes[2].plot(g["kv_blocks"], g["preemptions"], **kw)
        for ax, yl in zip(axes, ["job time (s)", "prefix-cache hit rate (%)", "preemptions"]):
            ax.set_xscale("log")
            ax.set_xlabel("KV-cache blocks (16 tokens each)")
            ax.set_ylabel(yl)
        axes[0].legend()
        fig.suptitle("movies, 800 rows: KV-cache size sweep (num_gpu_blocks_override)")
        fig.text(0.01, -0.04, caption(runs), fontsize=8)
        save_figure(fig, out, "kv_sweep")
    cols = ["kv_blocks", "method", "job_s", "hit_rate", "peak_kv_usage", "preemptions"]
    print(markdown_table(runs.sort_values(["kv_blocks", "method"], ascending=[False, True])[cols]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/h200/orderings-800rows")
