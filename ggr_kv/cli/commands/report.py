"""``ggr-kv report RUN_DIR...``: the figures and the Markdown report of run folders,
without opening notebook 03.

Each call writes a NEW folder (default ``<comparison>/report-<time>/``; ``--out`` must
not exist), so earlier figures and reports are never replaced. The report holds every
ordering's job time (median [min-max] over repeats), speedups, hit rate, PHC and
predicted block hit rate with the objective each method optimizes, ideal vs measured
speedup, TTFT / end-to-end latency p50 and p99, and the cross-check of the collector's,
the requests' and the simulator's cached-token counts.

``--table-only`` prints the README's demo table instead; ``--readme FILE`` writes it
between FILE's ``<!-- BEGIN demo-table`` / ``<!-- END demo-table -->`` lines.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

from ggr_kv.cli.common import positive_int

#: README block the demo table goes into
README_BLOCK = "demo-table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run folders, folders holding them (a comparison, a demo), or globs")
    p.add_argument("--latest", action="store_true",
                   help="the newest comparison folder under --results (e.g. the last demo)")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="where --latest looks (default: results)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="new folder for figures + report.md (must not exist; default: "
                        "<comparison>/report-<time>)")
    p.add_argument("--window", type=positive_int, default=16,
                   help="engine steps per window of windowed rates (default 16)")
    p.add_argument("--no-simulate", action="store_true",
                   help="skip the simulator replay (no predicted curves, no simulated hits)")
    p.add_argument("--no-score", action="store_true",
                   help="skip scoring each plan again (PHC, predicted block hit rate)")
    p.add_argument("--title", default=None, help="the report's title")
    p.add_argument("--table-only", action="store_true",
                   help="print the demo table (Markdown) and write nothing")
    p.add_argument("--readme", default=None, metavar="FILE",
                   help=f"write the demo table into FILE's {README_BLOCK} block")


def _run_dirs(args: argparse.Namespace) -> tuple[list[Path], Path]:
    from ggr_kv.analysis.plots import comparison_dir
    from ggr_kv.run.runs import find_run_dirs, latest_comparison

    if args.latest == bool(args.runs):
        raise ValueError("give RUN_DIR... or --latest (one of the two)")
    items = list(args.runs)
    if args.latest:
        newest = latest_comparison(args.results)
        if newest is None:
            raise FileNotFoundError(f"{args.results}: no comparison folders (run ggr-kv demo)")
        items = [newest]
    dirs = find_run_dirs(items)
    if not dirs:
        raise FileNotFoundError(f"{' '.join(map(str, items))}: no run folders (with run.json)")
    import pandas as pd

    return dirs, comparison_dir(pd.DataFrame({"path": [str(d) for d in dirs]}))


def _demo_record(folder: Path) -> dict | None:
    """The ``demo.json`` / ``compare.json`` of a demo or comparison folder (wall time),
    None elsewhere."""
    for name in ("demo.json", "compare.json"):
        meta = folder / name
        if meta.is_file():
            return json.loads(meta.read_text())
    return None


def main(args: argparse.Namespace) -> int:
    from ggr_kv.run.runs import load_runs

    dirs, common = _run_dirs(args)
    out = None
    if not (args.table_only or args.readme):
        if args.out:
            out = Path(args.out)
            if out.exists():
                raise FileExistsError(f"{out}: already exists; reports never replace earlier ones")
        else:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out, k = common / f"report-{stamp}", 1
            while out.exists():
                k += 1
                out = common / f"report-{stamp}-{k}"
    runs, steps = load_runs(dirs, window=args.window)
    if args.table_only or args.readme:
        from ggr_kv.analysis.report import demo_table

        table = demo_table(runs, source=common, demo=_demo_record(common))
        if args.readme:
            from ggr_kv.analysis.readme import replace_block

            changed = replace_block(args.readme, README_BLOCK, table)
            print(f"{args.readme}: {README_BLOCK} {'updated' if changed else 'unchanged'}",
                  file=sys.stderr)
        print(table, end="")
        return 0

    from ggr_kv.analysis.plots import plot_comparison
    from ggr_kv.analysis.report import report_data, summary_table, write_report

    data = report_data(runs, simulate=not args.no_simulate, score=not args.no_score,
                       progress=sys.stderr.isatty())
    out.mkdir(parents=True)
    figs = plot_comparison(runs, steps, predicted=data.predicted or None, out_dir=out,
                           window=args.window)
    path = write_report(figs.runs, out, figures=figs.files, data=data, title=args.title)
    print(summary_table(runs))
    flagged = data.counts[~data.counts["agree"]]
    for r in flagged.itertuples():
        print(f"warning: {r.run_id}: cached-token counts disagree: {r.disagreement}",
              file=sys.stderr)
    print(f"\n{len(figs.files)} figures and {path.name} in {out}")
    return 0
