"""Every ordering, ours and the baselines, on every real table: block and character hit rates.

Run::

    python benchmarks/bench_orderings.py --adrs PATH            # writes RESULTS-orderings.md
    python benchmarks/bench_orderings.py --tables beer --no-write

``--adrs`` (or ``GGR_KV_ADRS``): a local copy of the authors' repository lynnliu030/ADRS
(see `paper_ggr.py`); it adds the paper's own GGR as a baseline and its real ``beer``
table (28,479 x 9). Without it those columns and that table are left out, and the
output says so.

Tables: the real samples in ``../shared/datasets`` (or ``GGR_KV_SHARED_DATASETS``),
``beer`` from the ADRS snapshot, and with ``--generated`` the project's generated
tables of ``data/`` (labelled as generated).

Orderings: ``original``, ``sorted``, ``ggr``, ``ggr paper`` (our ``ggr`` with
``preset="paper"``), ``trie`` (rows in token-trie DFS order, fields as given), the
paper's GGR (its ``QuickGreedy``, 3 runs: median and spread), and ``blocks`` (solved
for each block size and query: its objective depends on them). Metrics: the block hit
rate of the project's prompts (llama3 tokenizer, unbounded cache) at blocks of 16, 32,
64 and 128 tokens, with a short query (the table's first query) and a long one (that
query plus a fixed ~150-token preamble), and the paper's character metric
(`ggr_kv.reorder.metrics.paper_char_hit_rate`; row order matters there).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import paper_ggr

from ggr_kv.datasets import DATASETS, load_dataset
from ggr_kv.reorder import reorder
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.fragments import PromptPieces
from ggr_kv.reorder.metrics import paper_char_hit_rate

RESULTS = ROOT / "benchmarks" / "RESULTS-orderings.md"
BEGIN, END = "<!-- bench:orderings:begin -->", "<!-- bench:orderings:end -->"
BLOCK_SIZES = (16, 32, 64, 128)
TOKENIZER = "llama3"
GENERIC_QUERY = "Summarize this row in one sentence."
PREAMBLE = (
    "You are a careful analyst. Read the record below field by field; each field is "
    "given as a JSON key and its value, and some values are long free text written by "
    "different people, with typos, abbreviations and units that are not always stated. "
    "Do not invent facts that are not in the record, do not use outside knowledge about "
    "the entities it names, and when the record does not contain enough information to "
    "decide, say so instead of guessing. Keep the answer as short as the question "
    "allows, in plain text without markdown, lists or explanations unless the question "
    "asks for them. Question: "
)
BIG_ROWS = 5000  # tables above this run the paper's solver --big-repeats times (minutes each)
OURS = ("original", "sorted", "ggr", "ggr paper", "trie")
ADRS_BEER = f"{paper_ggr.LLM_SQL}/datasets/beer.csv"


def shared_dir() -> Path:
    return Path(os.environ.get("GGR_KV_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))


def real_tables(adrs: Path | None, labels=None, generated: bool = False):
    """(label, Dataset, short query, kind) of every table to run."""
    out = []
    for path in sorted(shared_dir().glob("*.csv")):
        out.append((path.stem, load_dataset(path), "real"))
    if adrs is not None:
        tmp = Path(tempfile.mkdtemp(prefix="ggr-kv-beer-")) / "beer.csv"
        tmp.write_bytes(paper_ggr._read(adrs, ADRS_BEER))
        out.append(("beer", load_dataset(tmp), "real"))
    if generated:
        out += [(f"{n} (generated)", load_dataset(n), "generated") for n in sorted(DATASETS)]
    if labels:
        out = [o for o in out if o[0].split(" ")[0] in labels]
    return [
        (lab, ds, ds.query(ds.query_types[0]).text if ds.query_types else GENERIC_QUERY, kind)
        for lab, ds, kind in out
    ]


class Scorer:
    """Block hit rates at every block size for one table and prompt text (pieces reused)."""

    def __init__(self, table, query: str) -> None:
        self.table = table
        self.pieces = PromptPieces.build(table, TOKENIZER, query)
        self.scorers = {b: BlockScorer(self.pieces, b) for b in BLOCK_SIZES}

    def blocks(self, plan) -> dict[int, float]:
        return {b: s.plan_hits(plan).block_hit_rate for b, s in self.scorers.items()}


def score_plan(table, plan, query: str) -> dict:
    """``char`` and ``b16`` ... ``b128`` of ``plan`` (0-1)."""
    out = {"char": paper_char_hit_rate(table, plan)}
    out.update({f"b{b}": r for b, r in Scorer(table, query).blocks(plan).items()})
    return out


def _solve(table, method, fds, **knobs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = reorder(table, method, fds=fds if method != "original" else None, **knobs)
    return res.plan, time.perf_counter() - t0


def run_table(label, ds, query, kind, adrs, repeats, big_repeats=1) -> dict:
    """All orderings of one table, both queries: rates and solve seconds."""
    table, fds = ds.table(), list(ds.fds) or None
    res = {"label": label, "kind": kind, "rows": table.n_rows, "cols": table.n_cols,
           "rates": {}, "seconds": {}, "spread": {}}  # fmt: skip
    plans = {}
    for name in OURS:
        method, knobs = ("ggr", {"preset": "paper"}) if name == "ggr paper" else (name, {})
        if name == "trie":
            knobs = {"tokenizer": TOKENIZER, "query": query}
        plans[name], res["seconds"][name] = _solve(table, method, fds, **knobs)
    paper_runs = []
    if adrs is not None:
        reps = repeats if table.n_rows <= BIG_ROWS else big_repeats
        paper_runs = paper_ggr.paper_plans(adrs, table, fds, reps)
        res["seconds"]["paper GGR"] = float(np.median([s for _, s in paper_runs]))
    for qname, q in (("short", query), ("long", PREAMBLE + query)):
        sc = Scorer(table, q)
        rates = {name: sc.blocks(p) for name, p in plans.items()}
        if paper_runs:
            per = [sc.blocks(p) for p, _ in paper_runs]
            rates["paper GGR"] = {b: float(np.median([r[b] for r in per])) for b in BLOCK_SIZES}
            res["spread"][qname] = {b: (min(r[b] for r in per), max(r[b] for r in per))
                                    for b in BLOCK_SIZES}  # fmt: skip
        rates["blocks"], secs = {}, []
        for b in BLOCK_SIZES:
            knobs = {"tokenizer": TOKENIZER, "block_size": b, "query": q}
            plan, s = _solve(table, "blocks", fds, **knobs)
            rates["blocks"][b] = sc.scorers[b].plan_hits(plan).block_hit_rate
            secs.append(s)
        res["seconds"][f"blocks ({qname})"] = float(np.median(secs))
        res["rates"][qname] = rates
        print(f"{label} {qname}: " + "; ".join(
            f"{k} " + "/".join(f"{100 * v[b]:.2f}" for b in BLOCK_SIZES) for k, v in rates.items()
        ), flush=True)  # fmt: skip
    res["char"] = {name: paper_char_hit_rate(table, p) for name, p in plans.items()}
    if paper_runs:
        cs = [paper_char_hit_rate(table, p) for p, _ in paper_runs]
        res["char"]["paper GGR"] = float(np.median(cs))
        res["char_spread"] = (min(cs), max(cs))
    return res


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table_md(r: dict) -> list[str]:
    """One table's section: rates per query and block size, char metric, seconds."""
    names = [n for n in (*OURS, "paper GGR", "blocks") if n in r["rates"]["short"]]
    out = [f"### {r['label']} ({r['kind']}, {r['rows']:,} x {r['cols']})", ""]
    head = ["query", "block", *names, "blocks - best other", "ggr - paper GGR"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    fails = []
    for q in ("short", "long"):
        for b in BLOCK_SIZES:
            v = {n: r["rates"][q][n][b] for n in names}
            cells = []
            for n in names:
                c = _pct(v[n])
                if n == "paper GGR" and q in r["spread"]:
                    lo, hi = r["spread"][q][b]
                    c += f" ({_pct(lo)}-{_pct(hi)})" if hi > lo else ""
                cells.append(c)
            gain = v["blocks"] - max(v[n] for n in names if n != "blocks")
            dg = v["ggr"] - v["paper GGR"] if "paper GGR" in v else float("nan")
            tail = f" | {100 * gain:+.2f} | {100 * dg:+.2f} |"
            out.append(f"| {q} | {b} | " + " | ".join(cells) + tail)
            if gain < 0:
                fails.append(f"{r['label']}, {q} query, block {b}: blocks {100 * gain:+.2f} points")
            if dg < 0:
                fails.append(f"{r['label']}, {q} query, block {b}: ggr {100 * dg:+.2f} points")
    ch = r["char"]
    cc = [_pct(ch[n]) if n in ch else "-" for n in names]
    dg = ch["ggr"] - ch["paper GGR"] if "paper GGR" in ch else float("nan")
    out.append("| char (paper's metric) | - | " + " | ".join(cc) + f" | - | {100 * dg:+.2f} |")
    if dg < 0:
        fails.append(f"{r['label']}, character metric: ggr {100 * dg:+.2f} points")
    secs = ", ".join(f"{k} {v:.2f}" for k, v in r["seconds"].items())
    out += ["", f"Solve seconds: {secs}.", ""]
    return out, fails


def render(results: list[dict], cmd: str, wall: float, adrs: bool) -> str:
    now = _dt.datetime.now().isoformat(timespec="seconds")
    lines = [
        BEGIN,
        f"Run {now} ({wall:.0f} s); {platform.machine()}, {os.cpu_count()} CPUs, load average "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end.",
        f"Command: `{cmd}`",
        "",
        "Block hit rates (%) of the project's prompts, llama3 tokenizer, unbounded cache. "
        "`short`: the table's first query; `long`: the same after a fixed ~150-token "
        "preamble. `paper GGR`: median of its runs (spread in brackets when they differ). "
        "`blocks` is solved for each block size and query. `char`: the paper's character "
        "metric (values joined, trie over earlier rows). The paper's GGR ran "
        "--repeats times on tables up to "
        f"{BIG_ROWS:,} rows and --big-repeats times above (its solver took 5-12 minutes "
        "per run on the 15k-28k-row tables here); its runs are cached in "
        "`.cache/paper-ggr/`.",
        "",
    ]
    if not adrs:
        lines += ["No ADRS snapshot given: the paper's GGR and the beer table are left out.", ""]
    fails = []
    for r in results:
        md, f = table_md(r)
        lines += md
        fails += f
    lines += ["### Cells below target", ""]
    lines += [f"- {f}" for f in fails] if fails else ["None."]
    lines += ["", END]
    return "\n".join(lines)


def write_part(path: Path, text: str, begin: str, end: str, heading: str) -> None:
    """Replace the part of ``path`` between ``begin`` and ``end`` (``text`` holds both
    markers), or append it under ``heading``; temp file + rename."""
    old = path.read_text() if path.exists() else "# Orderings on real tables\n"
    if begin in old:
        old = old[: old.index(begin)] + text + old[old.index(end) + len(end) :]
    else:
        old = old.rstrip("\n") + f"\n\n{heading}\n\n" + text + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(old)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adrs", help=f"local copy of lynnliu030/ADRS (default: ${paper_ggr.ENV})")
    ap.add_argument("--tables", nargs="*", help="table labels (default: all)")
    ap.add_argument("--generated", action="store_true", help="also the generated data/ tables")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the paper's GGR")
    ap.add_argument("--big-repeats", type=int, default=1,
                    help=f"runs of the paper's GGR on tables over {BIG_ROWS} rows")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    adrs = None
    try:
        adrs = paper_ggr.resolve_source(args.adrs)
    except paper_ggr.SnapshotMissing as e:
        print(f"bench_orderings: {e}; going on without it", file=sys.stderr)
    t0 = time.perf_counter()
    results = [run_table(*row, adrs, args.repeats, args.big_repeats)
               for row in real_tables(adrs, args.tables, args.generated)]  # fmt: skip
    cmd = "python benchmarks/bench_orderings.py" + (" --adrs PATH" if adrs else "") + (
        f" --big-repeats {args.big_repeats}" if args.big_repeats != 1 else "") + (
        " --generated" if args.generated else "")  # fmt: skip
    text = render(results, cmd, time.perf_counter() - t0, adrs is not None)
    print(text)
    if not args.no_write:
        write_part(RESULTS, text, BEGIN, END, "## Every ordering on every real table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
