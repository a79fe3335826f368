"""The paper's own GGR (its published ``QuickGreedy``) as a baseline, scored at block level.

Run::

    python benchmarks/paper_ggr.py --adrs PATH [--tables beer movies_small] [--repeats 3]

``PATH`` (or the environment variable ``GGR_KV_ADRS``) is a local copy of the authors'
repository ``lynnliu030/ADRS``: a checkout, or a bare git directory (read with ``git
show HEAD:...``). Get one with ``git clone https://github.com/lynnliu030/ADRS``. Nothing
of it is kept in this repository: at run time the script copies ``quick_greedy.py``,
``solver.py`` and ``utils.py`` of ``openevolve/examples/ADRS/llm_sql/`` into a scratch
folder and imports them from there (``utils.py`` imports pyspark for code we do not call;
when pyspark is missing, an empty stand-in module goes into the scratch folder).

What it does, per table:

1. runs ``QuickGreedy().reorder`` with the parameters of the authors' evaluator
   (``early_stop=100000, distinct_value_threshold=0.7, row_stop=4, col_stop=2``,
   ``col_merge`` = the table's FD groups) on the table's cells as ggr-kv serializes them
   (strings, missing = ""), so a value's length is the length that reaches the prompt;
2. maps its output onto a ggr-kv `ReorderPlan` (`map_output`): the output keeps each row's
   values in its chosen order but drops the row ids and the column names, so every output
   row is matched to the input row holding the same values (equal rows: first unmatched
   input row first), each value to the row's first unused field holding it (in the
   table's column order), and a merged FD value is split back into its member fields in
   the order the paper merged them;
3. scores the plan beside ours: the paper's character metric
   (`ggr_kv.reorder.metrics.paper_char_hit_rate`) and the block hit rate of the
   project's prompts (llama3 tokenizer) at blocks of 16, 32, 64 and 128 tokens.

The paper's row order inside a group depends on thread completion order, so it is run
``--repeats`` times (default 3) and the spread is printed. `bench_orderings.py` imports
`paper_plans` for ``RESULTS-orderings.md``.

Exit status 2 when the snapshot is not found (the message says how to get one).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table

LLM_SQL = "openevolve/examples/ADRS/llm_sql"
FILES = ("quick_greedy.py", "solver.py", "utils.py")
ENV = "GGR_KV_ADRS"
CACHE = ROOT / ".cache" / "paper-ggr"
#: the authors' evaluator's parameters (``evaluator.py``, ``run_quick``)
PAPER_PARAMS = dict(early_stop=100000, distinct_value_threshold=0.7, row_stop=4, col_stop=2)
HOW = (
    "the paper's code is not here: get a copy of the authors' repository "
    "(git clone https://github.com/lynnliu030/ADRS) and pass --adrs PATH or set "
    f"{ENV}=PATH (a checkout or a bare git directory)"
)


class SnapshotMissing(RuntimeError):
    """The ADRS snapshot (or one of its files) is not where we looked."""


def _read(src: Path, rel: str) -> bytes:
    """A file of the snapshot: from a work tree, else ``git show HEAD:rel``."""
    if (src / rel).is_file():
        return (src / rel).read_bytes()
    for gd in (src, src / ".git"):
        if (gd / "HEAD").is_file() and (gd / "objects").is_dir():
            r = subprocess.run(
                ["git", f"--git-dir={gd}", "show", f"HEAD:{rel}"], capture_output=True
            )
            if r.returncode == 0:
                return r.stdout
    raise SnapshotMissing(f"{rel} not found in {src}")


def resolve_source(path: str | None) -> Path:
    """The snapshot folder from ``--adrs`` or ``GGR_KV_ADRS``; SnapshotMissing if absent."""
    p = path or os.environ.get(ENV)
    if not p or not Path(p).exists():
        raise SnapshotMissing(HOW + (f" ({p} does not exist)" if p else ""))
    return Path(p)


def stage(src: Path, scratch: Path) -> Path:
    """Copy the paper's three files into ``scratch`` (plus a pyspark stand-in if needed)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        (scratch / f).write_bytes(_read(src, f"{LLM_SQL}/{f}"))
    if importlib.util.find_spec("pyspark") is None:  # utils.py imports it, never uses it here
        (scratch / "pyspark").mkdir(exist_ok=True)
        (scratch / "pyspark" / "__init__.py").write_text("")
        (scratch / "pyspark" / "sql.py").write_text("SparkSession = None\n")
    return scratch


def load_paper(scratch: Path):
    """Import ``quick_greedy`` and ``solver`` from the scratch folder."""
    sys.path.insert(0, str(scratch))
    try:
        qg = importlib.import_module("quick_greedy")
        solver = importlib.import_module("solver")
    finally:
        sys.path.remove(str(scratch))
    return qg, solver


def _merge_orders(solver, frame, fds: list[tuple[str, ...]]) -> list[list[str]]:
    """Member order of each merged FD group, as ``QuickGreedy.reorder`` merges them."""
    stats_order = [c for c, *_ in solver.Algorithm.calculate_col_stats(frame.copy())[1]]
    return [[c for c in stats_order if c in g] for g in fds]


def map_output(table: Table, out_rows: list[list[str]], merged: list[list[str]]) -> ReorderPlan:
    """The ggr-kv plan of the paper's output rows (values in run order, no ids, no names).

    Rows match the input row with the same values (first unmatched first); a value takes
    the row's first unused field (in table order) holding it; a merged value expands to
    its members. Raises ValueError when an output row matches no input row.
    """
    n, m = table.n_rows, table.n_cols
    col = {c: j for j, c in enumerate(table.columns)}
    in_group = {col[c]: gi for gi, g in enumerate(merged) for c in g}
    units: list[tuple[int, ...]] = []
    for j in range(m):
        if j not in in_group:
            units.append((j,))
        elif j == min(col[c] for c in merged[in_group[j]]):
            units.append(tuple(col[c] for c in merged[in_group[j]]))
    unit_order = sorted(units, key=min)
    cells = table.cells
    rows_by_key: dict[tuple, deque] = defaultdict(deque)
    row_units = []
    for i in range(n):
        vals = ["".join(cells[i, j] for j in u) for u in unit_order]
        row_units.append(vals)
        rows_by_key[tuple(sorted(vals))].append(i)
    row_order = np.empty(len(out_rows), dtype=np.int64)
    perm = np.empty((len(out_rows), m), dtype=np.int32)
    for r, out in enumerate(out_rows):
        key = tuple(sorted(out))
        if not rows_by_key.get(key):
            raise ValueError(f"paper output row {r} matches no input row: {out[:4]}...")
        i = rows_by_key[key].popleft()
        row_order[r] = i
        free = list(range(len(unit_order)))
        fields: list[int] = []
        for v in out:
            k = next(k for k in free if row_units[i][k] == v)
            free.remove(k)
            fields.extend(unit_order[k])
        perm[r] = fields
    if len(out_rows) != n:
        raise ValueError(f"paper output has {len(out_rows)} rows, the table {n}")
    return ReorderPlan(table.columns, row_order, perm)


def paper_plan(qg, solver, table: Table, fds) -> tuple[ReorderPlan, float]:
    """Run QuickGreedy once (its own parameters) on ``table``; the mapped plan and seconds."""
    frame = table.to_frame()
    groups = [list(g) for g in (fds or [])]
    merged = _merge_orders(solver, frame, groups) if groups else []
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        out, _ = qg.QuickGreedy().reorder(frame.copy(), col_merge=groups, **PAPER_PARAMS)
    seconds = time.perf_counter() - t0
    rows = [[str(v) for v in r] for r in out.itertuples(index=False, name=None)]
    return map_output(table, rows, merged), seconds


def _cache_file(table: Table, fds, i: int) -> Path:
    """Where run ``i`` of a table's paper plan is kept (``.cache/paper-ggr``, ignored by git)."""
    h = hashlib.sha256(repr((table.columns, fds)).encode())
    h.update(table.to_frame().to_csv(index=False).encode())
    return CACHE / f"{h.hexdigest()[:16]}-run{i}.json"


def paper_plans(src: Path, table: Table, fds, repeats: int = 3, cache: bool = True):
    """``repeats`` runs of the paper's GGR on ``table``: list of (plan, seconds).

    With ``cache``, run i's plan and seconds are kept in ``.cache/paper-ggr/`` and reused
    (the paper's solver takes minutes on the 15k-28k-row tables); delete it to rerun.
    """
    out, todo = [], []
    for i in range(repeats):
        f = _cache_file(table, fds, i)
        if cache and f.is_file():
            d = json.loads(f.read_text())
            out.append((ReorderPlan.from_dict(d["plan"], table), float(d["seconds"])))
        else:
            todo.append(i)
    if not todo:
        return out
    scratch = Path(tempfile.mkdtemp(prefix="ggr-kv-adrs-"))
    try:
        qg, solver = load_paper(stage(src, scratch))
        for i in todo:
            plan, secs = paper_plan(qg, solver, table, fds)
            out.append((plan, secs))
            if cache:
                CACHE.mkdir(parents=True, exist_ok=True)
                d = {"plan": plan.to_dict(), "seconds": secs}
                tmp = _cache_file(table, fds, i).with_suffix(".tmp")
                tmp.write_text(json.dumps(d))
                tmp.replace(_cache_file(table, fds, i))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adrs", help=f"local copy of lynnliu030/ADRS (default: ${ENV})")
    ap.add_argument("--tables", nargs="*", help="table labels (default: every real table)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        src = resolve_source(args.adrs)
        _read(src, f"{LLM_SQL}/quick_greedy.py")
    except SnapshotMissing as e:
        print(f"paper_ggr: {e}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_orderings import BLOCK_SIZES, real_tables, score_plan

    for label, ds, query, _ in real_tables(src, args.tables):
        table = ds.table()
        runs = paper_plans(src, table, list(ds.fds) or None, args.repeats)
        scores = [score_plan(table, p, query) for p, _ in runs]
        line = [f"{label}: paper GGR x{len(runs)}"]
        for k in ["char", *[f"b{b}" for b in BLOCK_SIZES]]:
            xs = [100 * s[k] for s in scores]
            line.append(f"{k} {np.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")
        line.append(f"s {np.median([s for _, s in runs]):.1f}")
        print("  ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
