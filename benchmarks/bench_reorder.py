"""Time every reorder method against a plain pandas ``sort_values`` and score their PHC.

Run::

    .venv/bin/python benchmarks/bench_reorder.py                  # 1k .. 1M rows
    .venv/bin/python benchmarks/bench_reorder.py --sizes 1000 10000 --random 50
    .venv/bin/python benchmarks/bench_reorder.py --out r.md        # another output file

What it measures

- Synthetic tables (`ggr_kv.datasets.benchtables.synthetic_reviews`: 8 movie-review-like
  columns, one FD group with long text, low-cardinality columns, near-unique columns), 1k to 1M rows: a plain
  ``df.sort_values(all columns)`` (the baseline) and ``original``, ``sorted``, ``ggr``
  (our defaults), ``ggr`` with ``preset="paper"``, in the same run; ``ophr`` on a
  10-row slice. ``solver s`` is `ReorderResult.seconds`; ``total s`` adds building the
  `Table` from the DataFrame (stringify + factorize), which a user calling
  ``reorder(df, ...)`` also waits for. ``x sort`` columns divide by the ``sort_values``
  time. PHC: the paper's prefix hit count (characters^2).
- The real samples in ``../shared/datasets`` (label columns and the unnamed id column
  dropped, FD groups from that folder's README).
- Ablations of our GGR changes on the samples and on a synthetic table.
- Random small tables: each method's PHC relative to the best method (OPHR included
  where it fits), to check the defaults are robust beyond one table shape.

Output: the generated part of ``benchmarks/RESULTS-reorder.md`` (between the
``bench:begin``/``bench:end`` markers; the hand-written analysis outside them stays).
The block it replaces is appended to ``benchmarks/RESULTS-reorder-history.md``, so no
earlier run is lost. With ``--out PATH`` an existing file is never overwritten: a
timestamped name is used instead.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ggr_kv import __version__
from ggr_kv.core.table import Table
from ggr_kv.datasets.benchtables import SYNTHETIC_FDS as SYNTH_FDS
from ggr_kv.datasets.benchtables import synthetic_reviews as synthetic_table
from ggr_kv.reorder import reorder

SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "RESULTS-reorder.md"
HISTORY = ROOT / "benchmarks" / "RESULTS-reorder-history.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
LABELS = ["manual_labels", "gpt4o", "llama3-8b", "llama3-70b", "Unnamed: 0"]
SAMPLES = {
    "movies_small": ("movies_small.csv", [("rotten_tomatoes_link", "movie_title", "movie_info")]),
    "movies_100": (
        "movies_sampled_labelled.csv",
        [("movieinfo", "movietitle", "rottentomatoeslink")],
    ),
    "products_100": ("products_sampled_labelled.csv", [("product_title", "parent_asin")]),
    "posts_100": ("posts_sampled_labelled.csv", [("PostId", "Body")]),
    "contributions": ("contributions.csv", None),
}
ABLATIONS = [
    ("ggr, ours", {}),
    ("paper preset", {"preset": "paper"}),
    ("paper preset, no chunks", {"preset": "paper", "chunk_rows": None}),
    (
        "paper preset, no chunks/caps/early stop",
        {
            "preset": "paper",
            "chunk_rows": None,
            "row_stop": None,
            "col_stop": None,
            "early_stop": 0,
        },
    ),
    ("ours, split=value (paper's score)", {"split": "value"}),
    ("ours, split=column", {"split": "column"}),
    ("ours + chunk_rows=2000", {"chunk_rows": 2000}),
    ("ours + row_stop=4, col_stop=2", {"row_stop": 4, "col_stop": 2}),
    ("ours + early_stop=100000", {"early_stop": 100000}),
    ("ours + distinct_value_threshold=0.7", {"distinct_value_threshold": 0.7}),
    ("ours, constant_first=False", {"constant_first": False}),
]


def phc(table: Table, plan) -> int:
    """The paper's PHC (Eq. 1-2), from ``ggr_kv.reorder.metrics``."""
    from ggr_kv.reorder.metrics import phc as _phc

    return int(_phc(table, plan))


def _best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _quiet_reorder(table, method, fds=None, **knobs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reorder(table, method, fds=fds, **knobs)


def bench_synthetic(sizes: list[int], repeat: int, ophr_rows: int) -> list[dict]:
    from tqdm.auto import tqdm

    rows = []
    cases = [
        ("original", {}, None, "original"),
        ("sorted", {}, SYNTH_FDS, "sorted"),
        ("ggr", {}, SYNTH_FDS, "ggr (ours)"),
        ("ggr", {}, None, "ggr (ours), FDs not declared"),
        ("ggr", {"preset": "paper"}, SYNTH_FDS, "ggr (paper preset)"),
    ]
    for n in tqdm(sizes, desc="synthetic sizes"):
        df = synthetic_table(n)
        cols = list(df.columns)
        sort_s = _best_time(lambda df=df, cols=cols: df.sort_values(cols), repeat)[0]
        load_s, table = _best_time(lambda df=df: Table.from_frame(df), 1)
        rows.append(
            {
                "rows": n,
                "method": "pandas sort_values (baseline)",
                "solver": sort_s,
                "total": sort_s,
                "x_solver": 1.0,
                "x_total": 1.0,
            }
        )
        for method, knobs, fds, label in cases:
            solver = []
            res = None
            for _ in range(repeat):
                res = _quiet_reorder(table, method, fds, **knobs)
                solver.append(res.seconds)
            s = min(solver)
            rows.append(
                {
                    "rows": n,
                    "method": label,
                    "solver": s,
                    "total": s + load_s,
                    "x_solver": s / sort_s,
                    "x_total": (s + load_s) / sort_s,
                    "phc": phc(table, res.plan),
                }
            )
        tiny = Table.from_frame(df.iloc[:ophr_rows][["review_type", "genre", "critic"]])
        res = reorder(tiny, "ophr")
        g = reorder(tiny, "ggr")
        rows.append(
            {
                "rows": tiny.n_rows,
                "method": "ophr (first rows; 3 short fields)",
                "solver": res.seconds,
                "total": res.seconds,
                "phc": phc(tiny, res.plan),
                "note": f"ggr: {phc(tiny, g.plan):,}",
            }
        )
    return rows


def _load_sample(fname: str) -> Table | None:
    path = SHARED / fname
    if not path.exists():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return Table.from_frame(df.drop(columns=[c for c in LABELS if c in df.columns]))


def _upper_bound(table: Table) -> int:
    """Sum over cells of len^2 * (count - 1): no plan can share more."""
    total = 0
    for j in range(table.n_cols):
        c = table.codes[:, j]
        cnt = np.bincount(c)
        w = np.zeros(len(cnt), dtype=np.int64)
        w[c] = table.lengths[:, j] ** 2
        total += int((w * np.maximum(cnt - 1, 0)).sum())
    return total


def bench_samples(ablation_rows: int) -> tuple[list[dict], list[dict]]:
    rows, abl = [], []
    tables = []
    for name, (fname, fds) in SAMPLES.items():
        t = _load_sample(fname)
        if t is None:
            print(f"skip {name}: {SHARED / fname} not found")
            continue
        tables.append((name, t, fds))
        ub = _upper_bound(t)
        for method in ("original", "sorted", "ggr"):
            res = _quiet_reorder(t, method, fds)
            p = phc(t, res.plan)
            rows.append(
                {
                    "sample": name,
                    "shape": f"{t.n_rows}x{t.n_cols}",
                    "method": method,
                    "fds": "declared" if fds else "-",
                    "solver": res.seconds,
                    "phc": p,
                    "of_ub": p / ub if ub else None,
                }
            )
    if ablation_rows:
        tables.append(
            (
                f"synthetic {ablation_rows:,}",
                Table.from_frame(synthetic_table(ablation_rows)),
                SYNTH_FDS,
            )
        )
    for name, t, fds in tables:
        base = None
        for label, knobs in ABLATIONS:
            res = _quiet_reorder(t, "ggr", fds, **knobs)
            p = phc(t, res.plan)
            base = p if base is None else base
            abl.append(
                {
                    "sample": name,
                    "variant": label,
                    "phc": p,
                    "vs_ours": p / base if base else None,
                    "solver": res.seconds,
                }
            )
    return rows, abl


def _random_table(rng: np.random.Generator, n: int, m: int) -> Table:
    data = {}
    for j in range(m):
        k = int(rng.choice([2, 3, 5, 10, int(rng.integers(1, max(2, n)))]))
        lens = rng.integers(1, 60, size=k)
        vals = np.array(["x" * int(ln) + str(i) for i, ln in enumerate(lens)], dtype=object)
        p = 1 / np.arange(1, k + 1) ** rng.uniform(0, 1.5)
        data[f"c{j}"] = vals[rng.choice(k, n, p=p / p.sum())]
    return Table.from_frame(pd.DataFrame(data))


def bench_random(n_tables: int, seed: int = 1) -> list[dict]:
    """PHC of each method relative to the best one, over random tables: half small
    (4-10 rows x 2-4 columns, OPHR included), half medium (10-400 rows x 2-6 columns)."""
    rng = np.random.default_rng(seed)
    variants = {
        "sorted": ("sorted", {}),
        "ggr (ours)": ("ggr", {}),
        "ggr split=value": ("ggr", {"split": "value"}),
        "ggr split=column": ("ggr", {"split": "column"}),
        "ggr (paper preset)": ("ggr", {"preset": "paper"}),
        "ophr": ("ophr", {}),
    }
    out = []
    for kind in ("small", "medium"):
        ratios: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range((n_tables + 1) // 2):
            if kind == "small":
                t = _random_table(rng, int(rng.integers(4, 11)), int(rng.integers(2, 5)))
            else:
                t = _random_table(rng, int(rng.integers(10, 401)), int(rng.integers(2, 7)))
            got = {}
            for name, (method, knobs) in variants.items():
                if method == "ophr" and kind != "small":
                    continue
                got[name] = phc(t, reorder(t, method, **knobs).plan)
            best = max(got.values()) or 1
            for name, v in got.items():
                ratios[name].append(v / best)
        for name, r in ratios.items():
            if r:
                a = np.array(r)
                out.append(
                    {
                        "kind": kind,
                        "method": name,
                        "tables": len(a),
                        "mean": a.mean(),
                        "min": a.min(),
                        "best": (a == 1.0).mean(),
                    }
                )
    return out


def _fmt(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 1e6 else f"{x:,.0f}"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return str(x)


def _table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for h, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(_fmt(r.get(k)) for _, k in cols) + " |\n" for r in rows)
    return head + body


def _hardware() -> str:
    import psutil

    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, load average "
        f"{load} at the start; Python {platform.python_version()}, numpy {np.__version__}, "
        f"pandas {pd.__version__}, ggr_kv {__version__}"
    )


def render(args, synth, samples, abl, rand, started: str, elapsed: float) -> str:
    cmd = " ".join(["benchmarks/bench_reorder.py", *sys.argv[1:]])
    md = [
        f"Run {started} ({elapsed:.0f} s); {_hardware()}.",
        f"Command: `.venv/bin/python {cmd}`\n",
        "### Synthetic tables (8 columns)\n",
        (
            "`solver s`: `ReorderResult.seconds`; `total s`: + building the Table from the "
            "DataFrame; `x sort`: divided by pandas `sort_values` over all 8 columns of the "
            f"same DataFrame (best of {args.repeat}). FD group: movie_title, movie_info, "
            "movie_link.\n"
        ),
        _table(
            synth,
            [
                ("rows", "rows"),
                ("method", "method"),
                ("solver s", "solver"),
                ("x sort (solver)", "x_solver"),
                ("total s", "total"),
                ("x sort (total)", "x_total"),
                ("PHC", "phc"),
                ("note", "note"),
            ],
        ),
    ]
    if samples:
        md += [
            "\n### Real samples (../shared/datasets)\n",
            "`of bound`: PHC / the upper bound sum(len^2 * (count - 1)) over all cells.\n",
            _table(
                samples,
                [
                    ("sample", "sample"),
                    ("rows x cols", "shape"),
                    ("method", "method"),
                    ("FD groups", "fds"),
                    ("solver s", "solver"),
                    ("PHC", "phc"),
                    ("of bound", "of_ub"),
                ],
            ),
        ]
    if abl:
        md += [
            "\n### GGR variants (FD groups declared)\n",
            "`vs ours`: PHC / PHC of our defaults on the same table.\n",
            _table(
                abl,
                [
                    ("table", "sample"),
                    ("variant", "variant"),
                    ("PHC", "phc"),
                    ("vs ours", "vs_ours"),
                    ("solver s", "solver"),
                ],
            ),
        ]
    if rand:
        md += [
            "\n### Random tables\n",
            (
                "Small: 4-10 rows x 2-4 columns (OPHR, the optimum, included); medium: "
                "10-400 rows x 2-6 columns; 2 to ~n distinct values per column, Zipf-skewed, "
                "1-60 characters. PHC / the best method's PHC on the same table: mean, "
                "minimum, and the fraction of tables where the method is (one of) the best.\n"
            ),
            _table(
                rand,
                [
                    ("tables", "kind"),
                    ("method", "method"),
                    ("n", "tables"),
                    ("mean", "mean"),
                    ("min", "min"),
                    ("best on", "best"),
                ],
            ),
        ]
    return "\n".join(md)


def write(block: str, out: Path | None) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if out is not None:
        if out.exists():
            out = out.with_name(f"{out.stem}-{stamp}{out.suffix}")
        out.write_text(f"# Reorder benchmark\n\n{block}\n")
        return out
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        old, tail = rest.split(END, 1)
        if old.strip():
            hist = HISTORY.read_text() if HISTORY.exists() else "# Earlier reorder benchmarks\n"
            HISTORY.write_text(f"{hist}\n## Replaced on {stamp}\n\n{old.strip()}\n")
    else:
        head = text or "# Reorder benchmark\n\n"
        tail = "\n"
    RESULTS.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")
    return RESULTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000, 10_000, 100_000, 1_000_000],
        help="synthetic table sizes (rows)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest counts")
    ap.add_argument("--ophr-rows", type=int, default=10, help="rows of the ophr slice")
    ap.add_argument(
        "--ablation-rows",
        type=int,
        default=100_000,
        help="rows of the synthetic table in the ablation (0: none)",
    )
    ap.add_argument("--random", type=int, default=200, help="random tables (0: none)")
    ap.add_argument("--no-samples", action="store_true", help="skip the real samples")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write a standalone file here instead of RESULTS-reorder.md",
    )
    args = ap.parse_args(argv)

    started = _dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    synth = bench_synthetic(args.sizes, args.repeat, args.ophr_rows)
    samples, abl = ([], []) if args.no_samples else bench_samples(args.ablation_rows)
    rand = bench_random(args.random) if args.random else []
    block = render(args, synth, samples, abl, rand, started, time.perf_counter() - t0)
    print(block)
    print(f"\nwrote {write(block, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
