"""``ggr-kv compare TABLE``: every ordering of one table through one engine, one report.

Plans every ordering of ``--methods`` and checks every prompt before the engine starts,
then runs them on ONE engine (or ``--server-url``), their ``--repeats`` interleaved
(A B C A B C ..., the prefix cache emptied before each) with `ggr_kv.run.run_batch`.
One comparison folder ``OUT_DIR/<table>-compare-<time>/`` holds a run folder per
ordering, ``figures/`` (PNG + SVG), ``report.md`` (speedups, hit rates, latency, the
counters' cross-check), ``live_curves.png`` (the curves as they were drawn while the runs
went), ``compare.json`` (arguments, wall time) and ``vllm.log`` (vLLM's output; on the
terminal with ``--verbose``). Prints the KV-cache size, one progress bar per ordering
and the table of job times and speedups.

Any CSV/TSV/Parquet file works with its own query (``--query TEXT``); a bundled dataset
defaults to its ``filter`` query. ``no_cache`` (the same prompts, no reuse) runs on the
same engine, each request with its own cache salt.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ggr_kv.cli.commands.run import add_engine_arguments, engine_config, engine_memory_for
from ggr_kv.cli.common import add_input_arguments, load_input, positive_int
from ggr_kv.core.atomic import write_atomic

#: orderings compared by default (ophr is exponential; no_cache on request)
DEFAULT_METHODS = ("original", "sorted", "ggr", "blocks")


def _methods(text: str) -> list[str]:
    from ggr_kv.reorder import METHODS

    methods = [m.strip() for m in text.split(",") if m.strip()]
    valid = ("no_cache", *METHODS)
    bad = [m for m in methods if m not in valid]
    if bad or not methods:
        raise argparse.ArgumentTypeError(
            f"unknown orderings {bad or [text]}; valid: {','.join(valid)}")
    if len(set(methods)) < len(methods):
        raise argparse.ArgumentTypeError(f"orderings repeat in {text!r}")
    return methods


def add_arguments(parser: argparse.ArgumentParser, *, model: str = "demo-llama",
                  rows: int | None = None) -> None:
    add_input_arguments(parser, rows=True)
    if rows is not None:
        parser.set_defaults(rows=rows)
    parser.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                        metavar="M1,M2,...",
                        help=f"orderings, comma-separated (default: {','.join(DEFAULT_METHODS)}; "
                        "also ophr, no_cache)")
    parser.add_argument("--repeats", type=positive_int, default=3, metavar="N",
                        help="timed jobs per ordering, interleaved; the report shows the median "
                        "[min-max] (default 3)")
    q = parser.add_mutually_exclusive_group()
    q.add_argument("--query", default=None, help="query text of every prompt")
    q.add_argument("--query-type", default=None,
                   help="a bundled dataset's query template (default: filter)")
    parser.add_argument("--instruction", default=None, help="instruction opening every prompt")
    parser.add_argument("--max-tokens", type=positive_int, default=4,
                        help="output tokens per row (default 4: the comparison is about prefill)")
    parser.add_argument("--server-url", default=None, help="use this running vLLM server instead")
    parser.add_argument("--max-concurrency", type=positive_int, default=32,
                        help="server requests in flight (default 32)")
    parser.add_argument("--out-dir", default="results",
                        help="folder of comparison folders (default: results)")
    parser.add_argument("--name", default=None,
                        help="comparison folder name (default: <table>-compare-<time>)")
    add_engine_arguments(parser, model=model)
    parser.add_argument("--no-simulate", action="store_true",
                        help="skip the simulator's replay in the report (faster on big tables)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true",
                        help="show vLLM's logs here (default: the folder's vllm.log)")


def _engine(args: argparse.Namespace) -> Any:
    """The engine of the options (None with a server)."""
    if args.server_url:
        return None
    return engine_config(args)


def _specs(args: argparse.Namespace, inp: Any, query: Any, engine: Any) -> list[Any]:
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.run import RunSpec

    return [RunSpec(inp.source, m, query, repeats=args.repeats, engine=engine,
                    dataset=inp.name, fds=inp.fds,
                    instruction=args.instruction or DEFAULT_INSTRUCTION,
                    sampling={"max_tokens": args.max_tokens}, no_cache_by="salt")
            for m in args.methods]


def compare(args: argparse.Namespace, *, record_name: str = "compare.json",
            prefix: str = "compare") -> Path:
    """Run the comparison ``args`` describe; returns its folder (see the module doc)."""
    from ggr_kv.analysis.live import LiveCurves
    from ggr_kv.cli.commands.run import _query
    from ggr_kv.core.jsonutil import dumps
    from ggr_kv.core.paths import project_path
    from ggr_kv.engine.logs import engine_log
    from ggr_kv.run import run_batch

    t0, started = time.perf_counter(), _dt.datetime.now()
    memory = engine_memory_for(args)  # before any slow work; fails early if memory is short
    if not args.server_url:  # the engine core in this process, as in the notebooks: on a
        from ggr_kv.engine.env import setup_vllm_env  # few cores, two processes spinning

        setup_vllm_env(in_process=True, quiet=False)  # for them is slower (logs: vllm.log)
    engine = _engine(args)
    inp = load_input(args.table, rows=args.rows, sep=args.sep)
    query = _query(args, inp.family)
    specs = _specs(args, inp, query, engine)
    name = args.name or f"{inp.name}-{prefix}-{started.strftime('%Y%m%d-%H%M%S')}"
    folder = project_path(args.out_dir) / name
    folder.mkdir(parents=True, exist_ok=False)  # never an earlier comparison's folder
    load0 = os.getloadavg()[0]
    live = LiveCurves(display=False)
    try:
        with engine_log(folder / "vllm.log", verbose=args.verbose), live:
            outcomes = run_batch(specs, out_dir=folder, server_url=args.server_url,
                                 max_concurrency=args.max_concurrency,
                                 progress=not args.no_progress)
    except BaseException:
        if not any(p.is_dir() for p in folder.iterdir()):  # refused before any run began
            shutil.rmtree(folder)
        elif not args.verbose:
            print(f"vLLM's log: {folder / 'vllm.log'}", file=sys.stderr)
        raise
    live.save(folder / "live_curves")
    record = {"command": prefix, "started": started.isoformat(timespec="seconds"),
              "wall_s": round(time.perf_counter() - t0, 1), "load_average": [load0, os.getloadavg()[0]],
              "kv_cache": memory.message if memory else None,
              "args": {k: v for k, v in vars(args).items() if k not in ("func", "debug")},
              "runs": [o.run_id for o in outcomes]}
    _report(folder, args, record)
    write_atomic(folder / record_name, dumps(record) + "\n")
    return folder


def _report(folder: Path, args: argparse.Namespace, record: dict) -> None:
    """Figures, report.md and the printed table of the comparison in ``folder``."""
    from ggr_kv.analysis.plots import plot_comparison
    from ggr_kv.analysis.report import demo_table, report_data, write_report
    from ggr_kv.run.runs import load_runs

    runs, steps = load_runs(str(folder))
    data = report_data(runs, simulate=not args.no_simulate)
    figs = plot_comparison(runs, steps, predicted=data.predicted or None,
                           out_dir=folder / "figures")
    report = write_report(figs.runs, folder, figures=figs.files, data=data,
                          title=f"{args.table}: {', '.join(args.methods)}")
    print()
    print(demo_table(runs, source=folder, demo=record), end="")
    print(f"\nreport: {report}\nfigures: {folder / 'figures'}")
    if not args.verbose:
        print(f"vLLM's log: {folder / 'vllm.log'}")
    bad = data.counts[~data.counts["agree"]]
    for r in bad.itertuples():
        print(f"warning: {r.run_id}: cached-token counts disagree: {r.disagreement}",
              file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    compare(args)
    return 0
