"""``ggr-kv sweep SWEEP.yaml [MORE.yaml ...]``: run a grid of datasets x orderings x models x
engine settings.

Points run in this process, grouped by engine settings: one engine start per group, the
points' repeats interleaved on it (``--papermill``: the notebook once per point instead).
Resumable (points with a complete run folder are skipped; failed and interrupted ones are
retried in a new folder), failures are recorded and the sweep goes on; see
``ggr_kv.analysis.sweep`` for the file format and the folders it writes.
"""

from __future__ import annotations

import argparse
import sys
import json

from ggr_kv.cli.common import positive_int


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
        help="list the grid, the engine groups and which points are done; run nothing",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=None, metavar="N",
        help="passes per point (default: the file's 'repeats', else 1)",
    )
    parser.add_argument(
        "--papermill",
        action="store_true",
        help="run the notebook once per point with papermill (one engine start per point)",
    )
    parser.add_argument(
        "--kernel",
        default=None,
        metavar="NAME",
        help="Jupyter kernel for --papermill (default: the notebook's)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="per-cell timeout of --papermill, seconds (default: none)",
    )
    parser.add_argument(
        "--rerun-changed",
        action="store_true",
        help="run again (in new attempt folders) the done points whose settings changed; "
        "without it such a sweep is refused, naming them",
    )
    parser.add_argument(
        "--kv-space", type=float, default=None, metavar="GIB",
        help="GiB of KV cache of every engine (vllm-cpu: default 2, less when memory is short)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _print_dry_run(res) -> None:
    spec = res.spec
    print(f"sweep folder: {spec.out}")
    print(f"runner: {spec.runner}" + (f" ({spec.notebook})" if spec.runner == "papermill" else ""))
    print(f"{len(res.points)} grid points, {len(res.groups)} engine start(s):")
    for r in res.points:
        params = {
            k: v
            for k, v in r.point.parameters.items()
            if k not in ("out_dir", "comparison", "run_id")
        }
        print(f"  [{r.status:>11}] engine {r.group}  {r.point.point_id}  "
              f"{json.dumps(params, default=str)}")


def main(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from ggr_kv.analysis.sweep import load_sweep, run_sweep

    spec = load_sweep(args.sweep, out=args.out, repeats=args.repeats,
                      runner="papermill" if args.papermill else None)
    if not args.dry_run:
        from ggr_kv.engine.lifetime import leftovers_line

        left = leftovers_line()  # engines a killed run left behind hold memory
        if left:
            print(f"ggr-kv sweep: warning: {left}", file=sys.stderr, flush=True)
        from ggr_kv.engine.memory import announce, engine_memory

        announce(engine_memory(args.kv_space))  # the notebooks' kernels inherit it
    res = run_sweep(
        spec,
        rerun_changed=args.rerun_changed,
        dry_run=args.dry_run,
        progress=not args.no_progress,
        kernel_name=args.kernel,
        timeout=args.timeout,
    )
    if args.dry_run:
        _print_dry_run(res)
        return 0
    papermill = spec.runner == "papermill"
    statuses = ("done", "skipped", "failed", "interrupted", "todo")  # dry runs add "changed"
    counts = {s: sum(r.status == s for r in res.points) for s in statuses}
    print(f"sweep folder: {spec.out}")
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n or s in statuses[:3]))
    print("engine starts: one per point (each notebook starts its own)" if papermill
          else f"engine starts: {res.engine_starts}")
    for r in res.failed:
        print(f"  {r.status}: {r.point.point_id}: {r.error}")
    print(f"summary: {res.summary_csv}")
    print(f"state: {spec.out / 'sweep-state.json'}")
    for files in res.figures.values():
        print(f"figure: {files[0]}")
    return 1 if res.failed else 0
