"""``ggr-kv sweep SWEEP.yaml [MORE.yaml ...]``: run a notebook over a grid with papermill.

Resumable (points with a ``run.json`` are skipped), failures are recorded and the sweep
goes on; see ``ggr_kv.analysis.sweep`` for the file format and the folders it writes.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sweep",
        nargs="+",
        metavar="SWEEP.yaml",
        help="sweep file(s); later files override earlier ones (base + override)",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="sweep folder (default: the file's 'out')"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the grid and which points are done; run nothing",
    )
    parser.add_argument(
        "--kernel",
        default=None,
        metavar="NAME",
        help="Jupyter kernel for the notebooks (default: the notebook's)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="per-cell timeout in seconds (default: none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from ggr_kv.analysis.sweep import load_sweep, run_sweep

    spec = load_sweep(args.sweep, out=args.out)
    res = run_sweep(
        spec,
        dry_run=args.dry_run,
        progress=not args.no_progress,
        kernel_name=args.kernel,
        timeout=args.timeout,
    )
    if args.dry_run:
        print(f"sweep folder: {spec.out}")
        print(f"notebook: {spec.notebook}")
        print(f"{len(res.points)} grid points:")
        for r in res.points:
            params = {
                k: v
                for k, v in r.point.parameters.items()
                if k not in ("out_dir", "comparison", "run_id")
            }
            print(f"  [{r.status:>7}] {r.point.point_id}  {json.dumps(params, default=str)}")
        return 0
    counts = {s: sum(r.status == s for r in res.points) for s in ("done", "skipped", "failed")}
    print(f"sweep folder: {spec.out}")
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in res.failed:
        print(f"  failed: {r.point.point_id}: {r.error}")
    print(f"summary: {res.summary_csv}")
    for files in res.figures.values():
        print(f"figure: {files[0]}")
    return 1 if res.failed else 0
