"""Solve time of ``blocks`` against ``ggr`` on one core (issue 19 item 5).

Run::

    python benchmarks/bench_order_speed.py [--adrs PATH] [--repeats 3] [--million] [--before REF]

Tables: the paper's real ``beer`` (28,479 x 9, from the ADRS snapshot, see
`paper_ggr.py`), ``contributions`` (15,000 x 15, real), a generated 320 x 57 table
(`wide_table`: the shape of the issue's 57-column table, which is not here) and with
``--million`` the generated 1M x 8 table of `bench_reorder.synthetic_table`. The process
is pinned to one core (``os.sched_setaffinity``). Each ordering runs ``--repeats`` times
from a loaded `Table` (``blocks``: llama3, block 16, the table's first query, tokenizing
included); wall and CPU seconds, median (min). Writes the part of
``benchmarks/RESULTS-orderings.md`` between ``bench:speed:begin``/``end``.

``--before REF`` (a git ref, e.g. ``int``) times REF's ``ggr_kv`` against the working
tree's in the same run: REF is exported (``git archive``) to a temp folder and the two
versions run in alternating child processes (``--code DIR``), ``--rounds`` times each;
each cell pools the repeats of all rounds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
if "--code" in sys.argv:  # child of --before: import this copy of ggr_kv
    sys.path.insert(0, sys.argv[sys.argv.index("--code") + 1])

import paper_ggr
from bench_orderings import ADRS_BEER, GENERIC_QUERY, RESULTS, shared_dir, write_part
from bench_reorder import SYNTH_FDS, synthetic_table

from ggr_kv.core.table import Table
from ggr_kv.datasets import load_dataset
from ggr_kv.reorder import reorder

BEGIN, END = "<!-- bench:speed:begin -->", "<!-- bench:speed:end -->"


def wide_table(n: int = 320, seed: int = 0) -> pd.DataFrame:
    """A generated n x 57 table: flags, low- and mid-cardinality codes, unique text."""
    rng = np.random.default_rng(seed)
    cols = {}
    for j in range(12):
        cols[f"flag_{j}"] = rng.choice(["True", "False"], n, p=[0.2, 0.8])
    for j in range(20):
        cols[f"kind_{j}"] = rng.choice([f"kind {j}-{k}" for k in range(5)], n)
    for j in range(15):
        names = [f"a longer shared name {j} number {k}" for k in range(30)]
        cols[f"name_{j}"] = rng.choice(names, n)
    for j in range(10):
        pad = rng.integers(20, 120, n)
        cols[f"text_{j}"] = [f"free text {j} of row {i} " + "x" * int(pad[i]) for i in range(n)]
    return pd.DataFrame(cols)


def tables(adrs, million: bool):
    out = []
    if adrs is not None:
        tmp = Path(tempfile.mkdtemp(prefix="ggr-kv-beer-")) / "beer.csv"
        tmp.write_bytes(paper_ggr._read(adrs, ADRS_BEER))
        ds = load_dataset(tmp)
        out.append(("beer (real)", ds.table(), list(ds.fds), ds.query(ds.query_types[0]).text))
    c = shared_dir() / "contributions.csv"
    if c.is_file():
        out.append(("contributions (real)", load_dataset(c).table(), None, GENERIC_QUERY))
    out.append(("wide 320 x 57 (generated)", Table.from_frame(wide_table()), None, GENERIC_QUERY))
    if million:
        out.append(("synthetic 1M x 8 (generated)", Table.from_frame(synthetic_table(1_000_000)),
                    SYNTH_FDS, GENERIC_QUERY))  # fmt: skip
    return out


def _time(fn, repeats):
    walls, cpus, res = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return walls, cpus, res


def _fmt(xs):
    return f"{np.median(xs):.2f} ({min(xs):.2f})"


def measure(args, adrs) -> dict[str, dict]:
    """Per table: the repeats' wall and CPU seconds of ``ggr`` and ``blocks``, stages."""
    import ggr_kv

    print("ggr_kv from", Path(ggr_kv.__file__).parent, flush=True)
    out = {}
    for label, t, fds, q in tables(adrs, args.million):
        reps = 1 if t.n_rows > 200_000 else args.repeats
        gw, gc, _ = _time(lambda: reorder(t, "ggr", fds=fds), reps)
        bw, bc, res = _time(
            lambda: reorder(t, "blocks", fds=fds, tokenizer="llama3", block_size=16, query=q), reps
        )
        out[label] = {"gw": gw, "gc": gc, "bw": bw, "bc": bc, "stages": res.info["timings"]}
        print(label, {k: v for k, v in out[label].items() if k != "stages"}, flush=True)
    return out


def _row(label: str, d: dict) -> str:
    stages = ", ".join(f"{k} {v:.2f}" for k, v in d["stages"].items())
    return (f"| {label} | {_fmt(d['gw'])} | {_fmt(d['gc'])} | {_fmt(d['bw'])} | {_fmt(d['bc'])} | "
            f"{np.median(d['bc']) / np.median(d['gc']):.1f} | {stages} |")  # fmt: skip


def _before_after(args, argv) -> tuple[dict, dict]:
    """Run REF's and this tree's code in alternating child processes; pool the repeats."""
    scratch = Path(tempfile.mkdtemp(prefix="ggr-kv-before-"))
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "ggr_kv"],
                          check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(scratch)], input=arch, check=True)
    keep = [a for a in argv if a not in ("--before", args.before)]
    pooled: tuple[dict, dict] = ({}, {})
    for r in range(args.rounds):
        for i, code in enumerate((scratch, ROOT)):
            js = scratch / f"out-{r}-{i}.json"
            cmd = [sys.executable, __file__, *keep, "--code", str(code), "--json", str(js),
                   "--no-write"]  # fmt: skip
            subprocess.run(cmd, check=True)
            for label, d in json.loads(js.read_text()).items():
                acc = pooled[i].setdefault(label, {"gw": [], "gc": [], "bw": [], "bc": []})
                for k in ("gw", "gc", "bw", "bc"):
                    acc[k] += d[k]
                acc["stages"] = d["stages"]
    return pooled


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adrs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--million", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--before", help="git ref whose ggr_kv is timed beside this tree's")
    ap.add_argument("--rounds", type=int, default=2, help="with --before: runs of each version")
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    try:
        adrs = paper_ggr.resolve_source(args.adrs)
    except paper_ggr.SnapshotMissing:
        adrs = None
    t0 = time.perf_counter()
    if args.before is None:
        after, before = measure(args, adrs), None
        if args.json:
            Path(args.json).write_text(json.dumps(after))
            return 0
    else:
        before, after = _before_after(args, argv)
    header = [
        "| table | ggr wall | ggr CPU | blocks wall | blocks CPU | blocks / ggr (CPU) "
        "| blocks stages (wall s, last run) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    body = []
    if before is not None:
        body += [f"Before (`{args.before}`):", "", *header]
        body += [*[_row(k, v) for k, v in before.items()], "", "After (this tree):", ""]
    body += [*header, *[_row(k, v) for k, v in after.items()]]
    now = _dt.datetime.now().isoformat(timespec="seconds")
    pooled = f", {args.rounds} alternating rounds of each version" if before else ""
    text = "\n".join([
        BEGIN,
        f"Run {now} ({time.perf_counter() - t0:.0f} s); one core (affinity), load average "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end (shared 2-core machine).",
        "Command: `python benchmarks/bench_order_speed.py --adrs PATH"
        + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
        + (" --million" if args.million else "")
        + (f" --before {args.before}" if before else "")
        + (f" --rounds {args.rounds}" if before and args.rounds != 2 else "") + "`",
        "",
        f"Seconds, median (min) of the repeats{pooled}; `blocks`: llama3, block 16, "
        "tokenizing included.",
        "",
        *body,
        END,
    ])  # fmt: skip
    print(text)
    if not args.no_write and RESULTS.exists():
        write_part(RESULTS, text, BEGIN, END, "## Speed of `blocks` against `ggr`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
