"""``ggr-kv demo``: the notebooks end to end on the bundled default, CPU engine.

Executes ``01_reorder`` (reorder scores, CPU block size), ``02_inference`` (every
ordering through vLLM, ``--repeats`` timed jobs each on the warm engine) and
``03_curves`` (figures + report) with papermill into a new ``results/demo-<time>/``
folder; the executed notebooks are kept there as logs, ``demo.json`` records the
arguments and the wall time. It ends with the table the README shows (the same one
``make demo-table`` writes into the README).

The default model, ``demo-llama`` (8 layers, hidden 512, dummy weights, real Llama-3
tokenizer), makes prefill most of a job's time on a CPU, so the prefix cache's savings
show in job times, as they do on a GPU with a real model
(``benchmarks/bench_demo_shape.py`` measures it). The 2-layer ``tiny-llama`` that tests
use makes prefill nearly free: orderings with 0% and 71% hits then take the same time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time

from ggr_kv.cli.common import positive_int
from ggr_kv.core.paths import CHECKOUT_DIR

NOTEBOOKS = CHECKOUT_DIR / "notebooks"

#: the demo's engine: dummy weights need no compilation to show the effect; eager mode
#: starts in a fraction of the time torch.compile takes on a CPU
DEMO_ENGINE = {"enforce_eager": True}
#: vLLM's KV block size on the CPU backend (tokens)
CPU_BLOCK_SIZE = 128


def _default_orderings() -> list[str]:
    """Every reorder method but ``ophr`` (exponential). ``no_cache`` is left out by default:
    its own engine start and three more full-prefill jobs would add ~2.5 min."""
    from ggr_kv.reorder import METHODS

    return [m for m in METHODS if m not in ("ophr", "trie")]  # trie: a baseline


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the notebook kernels)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _repeats_supported() -> bool:
    import inspect

    from ggr_kv.run import run_orderings

    return "repeats" in inspect.signature(run_orderings).parameters


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="movies", help="bundled dataset (default: movies)")
    p.add_argument("--rows", type=positive_int, default=150, help="rows to run through vLLM")
    p.add_argument("--model", default="demo-llama",
                   help="models.SHAPES name or model path (default: demo-llama)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="timed jobs per ordering; the table shows the median [min-max]")
    p.add_argument("--max-tokens", type=positive_int, default=4,
                   help="output tokens per row (few: the demo is about prefill)")
    p.add_argument("--out-dir", default="results", help="folder of result folders")
    p.add_argument("--orderings", nargs="+", default=None,
                   help="orderings to run (default: every method but ophr; add no_cache for "
                        "the baseline without prefix caching)")
    p.add_argument("--verbose", action="store_true", help="show vLLM's and transformers' logs")


def main(args: argparse.Namespace) -> int:
    import papermill as pm

    from ggr_kv.analysis.report import demo_table
    from ggr_kv.core.jsonutil import dumps
    from ggr_kv.core.paths import project_path
    from ggr_kv.engine.env import setup_vllm_env
    from ggr_kv.engine.models import SHAPES
    from ggr_kv.run.runs import load_runs

    if args.model not in SHAPES and not args.model.startswith((".", "/", "~")):
        from ggr_kv.engine.models import resolve_model

        resolve_model(args.model)  # a wrong --model fails here, before any notebook runs
    setup_vllm_env(quiet=not args.verbose)
    orderings = args.orderings or _default_orderings()
    if args.repeats > 1 and not _repeats_supported():
        print(f"[demo] this run layer has no repeats: 1 job per ordering, not {args.repeats}",
              file=sys.stderr)
        args.repeats = 1
    started = _dt.datetime.now()
    out = project_path(args.out_dir)
    name = f"demo-{args.dataset}-{started.strftime('%Y%m%d-%H%M%S')}"
    folder = out / name
    folder.mkdir(parents=True, exist_ok=False)  # never reuse an earlier demo's folder
    logs = folder / "notebooks"
    logs.mkdir()
    t0, cpu0, load0 = time.perf_counter(), _cpu_s(), os.getloadavg()[0]
    steps = [
        ("01_reorder.ipynb", {"dataset": args.dataset, "rows": args.rows,
                              "block_size": CPU_BLOCK_SIZE, "interactive": False}),
        ("02_inference.ipynb", {
            "dataset": args.dataset, "rows": args.rows, "orderings": orderings,
            "model": args.model, "out_dir": str(out), "comparison": name,
            "max_tokens": args.max_tokens, "engine_args": DEMO_ENGINE,
            "repeats": args.repeats, "verbose": args.verbose,
        }),
        ("03_curves.ipynb", {"runs_path": str(folder), "out_dir": str(out),
                             "run_if_missing": False, "verbose": args.verbose}),
    ]
    for nb, params in steps:
        print(f"[demo] {nb} ...", flush=True)
        pm.execute_notebook(str(NOTEBOOKS / nb), str(logs / nb), parameters=params,
                            cwd=str(NOTEBOOKS), progress_bar=sys.stderr.isatty())
    wall_s = time.perf_counter() - t0
    record = {"started": started.isoformat(timespec="seconds"), "wall_s": round(wall_s, 1),
              "cpu_s": round(_cpu_s() - cpu0, 1), "load_average": [load0, os.getloadavg()[0]],
              "args": {k: v for k, v in vars(args).items() if k not in ("func", "debug")},
              "orderings": orderings, "engine_args": DEMO_ENGINE}
    (folder / "demo.json").write_text(dumps(record) + "\n")
    runs, _ = load_runs(str(folder))
    print()
    print(demo_table(runs, source=folder, demo=record), end="")
    print(f"\nfigures and report: {folder / 'figures'}; notebooks run: {logs}")
    print("README table: make demo-table")
    return 0
