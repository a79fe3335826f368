"""GGR and OPHR kernels before and after their split into named steps (issue 17 item 6).

Run::

    python benchmarks/bench_kernels.py [--before REV] [--repeats 7]

``REV`` (default ``3fdecfe``, the last commit with the one-piece kernels) is read with
``git show REV:ggr_kv/reorder/ggr.py`` (and ``ophr.py``) into a scratch folder and
imported beside the current modules, so both run in the same process, on the same
inputs, alternating, ``--repeats`` times; the table gives the median and min seconds of
each and checks that the outputs are identical. Writes the part of
``benchmarks/RESULTS-reorder.md`` between ``bench:kernels:begin``/``end``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ggr_kv.core.table import Table
from ggr_kv.datasets.benchtables import SYNTHETIC_FDS, synthetic_reviews
from ggr_kv.reorder import ggr as ggr_now
from ggr_kv.reorder import ophr as ophr_now
from ggr_kv.reorder.fd import resolve_fd_groups
from ggr_kv.reorder.units import build_units

RESULTS = ROOT / "benchmarks" / "RESULTS-reorder.md"
BEGIN, END = "<!-- bench:kernels:begin -->", "<!-- bench:kernels:end -->"


def load_rev(rev: str, name: str):
    """Module ``ggr_kv.reorder.<name>`` as of git revision ``rev``."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:ggr_kv/reorder/{name}.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp(prefix="ggr-kv-kernels-")) / f"{name}_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"{name}_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def cases():
    """(label, units, callable(module) -> output) of every timed case."""
    out = []
    for n in (20_000, 200_000):
        t = Table.from_frame(synthetic_reviews(n))
        units = build_units(t, resolve_fd_groups(t, SYNTHETIC_FDS)[0])
        for preset in ("ours", "paper"):
            out.append((f"ggr {preset}, synthetic {n:,} x 8", "ggr", units, preset))
    shared = ROOT.parent / "shared" / "datasets" / "contributions.csv"
    if shared.is_file():
        t = Table.from_frame(pd.read_csv(shared, dtype=str, keep_default_na=False))
        out.append(("ggr ours, contributions 15,000 x 15", "ggr", build_units(t), "ours"))
    rng = np.random.default_rng(3)
    df = pd.DataFrame({f"c{j}": rng.choice(["a", "bb", "ccc", "dddd"], 14) for j in range(4)})
    out.append(("ophr, random 14 x 4", "ophr", build_units(Table.from_frame(df)), None))
    return out


def _run(kind, mod, units, preset):
    if kind == "ggr":
        return mod.ggr_unit_order(units, mod.ggr_config(preset))[0]
    return mod.ophr_unit_order(units)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="3fdecfe")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    before = {"ggr": load_rev(args.before, "ggr"), "ophr": load_rev(args.before, "ophr")}
    now = {"ggr": ggr_now, "ophr": ophr_now}
    t0 = time.perf_counter()
    rows = []
    for label, kind, units, preset in cases():
        times = {"before": [], "after": []}
        outs = [_run(kind, mod[kind], units, preset) for mod in (before, now)]
        same = np.array_equal(*outs)
        for _ in range(args.repeats):  # alternate, so load changes hit both alike
            for which, mod in (("before", before[kind]), ("after", now[kind])):
                c = time.process_time()
                _run(kind, mod, units, preset)
                times[which].append(time.process_time() - c)
        b, a = np.median(times["before"]), np.median(times["after"])
        lo_b, lo_a = min(times["before"]), min(times["after"])
        rows.append(f"| {label} | {b:.3f} ({lo_b:.3f}) | {a:.3f} ({lo_a:.3f}) | "
                    f"{a / b:.2f} | {'yes' if same else 'NO'} |")  # fmt: skip
        print(rows[-1], flush=True)
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    text = "\n".join([
        BEGIN,
        f"Run {stamp} ({time.perf_counter() - t0:.0f} s); {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end.",
        f"Command: `python benchmarks/bench_kernels.py --before {args.before} "
        f"--repeats {args.repeats}`",
        "",
        f"CPU seconds, median (min) of {args.repeats} alternating runs in one process; "
        f"`before` = the kernels at `{args.before}`, `after` = this tree.",
        "",
        "| case | before s | after s | after / before | same output |",
        "|---|---:|---:|---:|---|",
        *rows,
        END,
    ])  # fmt: skip
    print(text)
    if not args.no_write:
        from bench_orderings import write_part

        write_part(RESULTS, text, BEGIN, END, "## Kernels split into named steps (issue 17 item 6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
