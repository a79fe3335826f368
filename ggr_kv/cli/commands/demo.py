"""``ggr-kv demo``: the notebooks end to end on the bundled default, CPU engine.

Executes ``01_reorder`` (reorder scores), ``02_inference`` (every ordering through vLLM
with the collector) and ``03_curves`` (figures + report) with papermill into a new
``results/demo-<time>/`` folder; the executed notebooks are kept there as logs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import time

from ggr_kv.core.paths import CHECKOUT_DIR

NOTEBOOKS = CHECKOUT_DIR / "notebooks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="movies", help="bundled dataset (default: movies)")
    p.add_argument("--rows", type=int, default=150, help="rows to run through vLLM")
    p.add_argument("--model", default="tiny-llama", help="models.SHAPES name or model path")
    p.add_argument("--out-dir", default="results", help="folder of result folders")
    p.add_argument(
        "--orderings", nargs="+", default=["no_cache", "original", "sorted", "ggr"],
        help="orderings to run",
    )


def main(args: argparse.Namespace) -> int:
    import papermill as pm

    from ggr_kv.core.paths import project_path
    from ggr_kv.run.runs import load_runs

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = project_path(args.out_dir)
    name = f"demo-{args.dataset}-{stamp}"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=False)  # never reuse an earlier demo's folder
    logs = folder / "notebooks"
    logs.mkdir()
    t0 = time.perf_counter()
    steps = [
        ("01_reorder.ipynb", {"dataset": args.dataset, "rows": args.rows}),
        ("02_inference.ipynb", {
            "dataset": args.dataset, "rows": args.rows, "orderings": args.orderings,
            "model": args.model, "out_dir": str(out), "comparison": name,
            "max_tokens": 4, "engine_args": {},
        }),
        ("03_curves.ipynb", {"runs_path": str(folder), "out_dir": str(out),
                             "run_if_missing": False}),
    ]
    for nb, params in steps:
        print(f"[demo] {nb} ...", flush=True)
        pm.execute_notebook(str(NOTEBOOKS / nb), str(logs / nb), parameters=params,
                            cwd=str(NOTEBOOKS), progress_bar=False)
    tables = load_runs(str(folder))
    cols = ["method", "rows", "prompt_tokens", "job_s", "hit_rate", "peak_kv_usage",
            "speedup_vs_original", "speedup_vs_no_cache"]
    runs = tables.runs[[c for c in cols if c in tables.runs.columns]]
    print(runs.to_string(index=False))
    summary = {"folder": str(folder), "wall_s": round(time.perf_counter() - t0, 1),
               "figures": sorted(p.name for p in (folder / "figures").glob("*.png"))}
    print(json.dumps(summary, indent=1))
    return 0
