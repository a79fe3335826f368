"""Block hit rate of every reorder method on every table, and the speed of ``blocks``.

Run::

    .venv/bin/python benchmarks/bench_blocks.py                  # quality + speed (long)
    .venv/bin/python benchmarks/bench_blocks.py --skip-speed     # quality table only
    .venv/bin/python benchmarks/bench_blocks.py --sizes 100000 --repeats 3

What it measures

- Quality: for every bundled table (``data/*.csv``, `ggr_kv.datasets.load_dataset`) and
  every real sample in ``../shared/datasets`` (loaded the same way: declared FD groups,
  label columns dropped, ``field: value`` prefixes stripped), the block hit rate
  (`ggr_kv.reorder.metrics.block_hit_rate`: Llama-3 tokenizer, the project's prompts
  with the table's first query, an unbounded cache) of ``original``, ``sorted``,
  ``ggr`` and ``blocks`` for blocks of 16 (GPU) and 128 (CPU backend) tokens, and each
  method's solve time (`ReorderResult.seconds`; for ``blocks`` it includes tokenizing).
- Speed: synthetic 8-column tables (`ggr_kv.datasets.benchtables.synthetic_reviews`) of
  100k and 1M rows: ``blocks`` end to end from a `Table` (tokenizing included), wall and CPU
  seconds, repeats with min/median/max; the token and block metrics
  (`ggr_kv.reorder.metrics.plan_hits`) of the ``blocks`` plan's 1M prompts, and, for
  the ratio, the whole-prompt path (build every prompt, tokenize it, hash its blocks)
  on the same prompts.

The machine is shared (see the load averages printed with each run): compare times as
ratios within one run; CPU seconds are less disturbed by other jobs than wall seconds.

Output: the generated parts of ``benchmarks/RESULTS-blocks.md``: the quality table
between the ``bench:quality:begin``/``end`` markers, the speed table between the
``bench:speed:begin``/``end`` markers (a run with ``--skip-speed`` or ``--skip-quality``
replaces only its own part; the analysis outside them stays). ``--out PATH`` writes
elsewhere (never over an existing file).
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ggr_kv import __version__
from ggr_kv.core.table import Table
from ggr_kv.datasets.benchtables import SYNTHETIC_FDS, bench_tables, first_query
from ggr_kv.datasets.benchtables import synthetic_reviews as synthetic_table
from ggr_kv.reorder import reorder
from ggr_kv.reorder.metrics import plan_hits

RESULTS = ROOT / "benchmarks" / "RESULTS-blocks.md"


def markers(part: str) -> tuple[str, str]:
    """Begin/end markers of a generated part (``"quality"`` or ``"speed"``)."""
    return f"<!-- bench:{part}:begin -->", f"<!-- bench:{part}:end -->"


METHODS = ("original", "sorted", "ggr", "blocks")
BLOCK_SIZES = (16, 128)
TOKENIZER = "llama3"
SPEED_QUERY = "Is the review positive?"


def quality_rows() -> list[dict]:
    rows = []
    for label, ds in bench_tables():
        table, fds, query = ds.table(), list(ds.fds) or None, first_query(ds)
        for bs in BLOCK_SIZES:
            row = {"table": label, "rows": table.n_rows, "cols": table.n_cols, "block": bs}
            for m in METHODS:
                knobs = (
                    {"tokenizer": TOKENIZER, "block_size": bs, "query": query}
                    if m == "blocks"
                    else {}
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = reorder(table, m, fds=fds if m != "original" else None, **knobs)
                ph = plan_hits(table, res.plan, TOKENIZER, bs, query)
                row[m] = ph.block_hit_rate
                row[f"{m}_s"] = res.seconds
                if m == "blocks":
                    row["winner"] = res.info.get("winner")
                    row["fixed"] = (
                        res.info["candidates"].get("fixed order", {}).get("block_hit_rate", np.nan)
                    )
            others = max(row[m] for m in METHODS[:-1])
            row["gain"] = row["blocks"] - others
            rows.append(row)
            print(f"{label} B={bs}: " + " ".join(f"{m}={row[m]:.4f}" for m in METHODS), flush=True)
    return rows


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _spread(xs: list[float]) -> str:
    xs = sorted(xs)
    med = xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])
    return f"{med:.1f} ({xs[0]:.1f}-{xs[-1]:.1f})" if len(xs) > 1 else f"{xs[0]:.1f}"


def speed_rows(sizes: list[int], repeats: int) -> list[dict]:
    out = []
    for n in sizes:
        df = synthetic_table(n)
        table, tw, tc = _timed(lambda df=df: Table.from_frame(df))
        del df
        walls, cpus, res = [], [], None
        reps = repeats if n <= 200_000 else max(1, repeats // 2)
        for _ in range(reps):
            res, w, c = _timed(
                lambda table=table: reorder(
                    table,
                    "blocks",
                    fds=SYNTHETIC_FDS,
                    tokenizer=TOKENIZER,
                    block_size=16,
                    query=SPEED_QUERY,
                    progress=True,
                )
            )
            walls.append(w)
            cpus.append(c)
            print(f"blocks {n:,} rows: {w:.1f} s wall, {c:.1f} s CPU", flush=True)
        ggr, gw, _ = _timed(lambda table=table: reorder(table, "ggr", fds=SYNTHETIC_FDS))
        row = {
            "ggr_wall": gw,
            "ggr_rate": plan_hits(table, ggr.plan, TOKENIZER, 16, SPEED_QUERY).block_hit_rate,
            "rows": n,
            "table_wall": tw,
            "table_cpu": tc,
            "wall": walls,
            "cpu": cpus,
            "stages": res.info["timings"],
            "rate": res.info["candidates"][res.info["winner"]]["block_hit_rate"],
            "load": os.getloadavg(),
        }
        if n >= 1_000_000:
            from ggr_kv.reorder.metrics import score

            _, sw, sc = _timed(
                lambda table=table, res=res: score(
                    table, res.plan, query=SPEED_QUERY, tokenizer=TOKENIZER, block_size=16
                )
            )
            row.update(score_wall=sw, score_cpu=sc)
            ph, mw, mc = _timed(
                lambda table=table, res=res: plan_hits(table, res.plan, TOKENIZER, 16, SPEED_QUERY)
            )
            row.update(metric_wall=mw, metric_cpu=mc, metric_rate=ph.block_hit_rate)
            row.update(_whole_prompt_ratio(table, res.plan, mw, mc))
        out.append(row)
        del table
    return out


def _whole_prompt_ratio(table, plan, mw: float, mc: float, k: int = 100_000) -> dict:
    """Whole-prompt metrics (build, tokenize, hash) on the first k prompts, scaled to n."""
    from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import encode_prompts
    from ggr_kv.reorder.metrics import token_prefix_hits

    sub = Table.from_frame(table.to_frame().iloc[plan.row_order[:k]].reset_index(drop=True))
    sp = ReorderPlan(sub.columns, np.arange(k), plan.field_perm[:k])

    def whole():
        tokens, offsets = encode_prompts(sub, sp, TOKENIZER, SPEED_QUERY)
        token_prefix_hits(tokens, offsets)
        return unbounded_prefix_hits(block_hashes(tokens, offsets, 16))

    import quicktok

    from ggr_kv.core.prompts import build_prompts

    _, w, c = _timed(whole)
    _, fw, fc = _timed(lambda: plan_hits(sub, sp, TOKENIZER, 16, SPEED_QUERY))
    texts = build_prompts(sub, sp, SPEED_QUERY)
    enc = quicktok.get_encoding(TOKENIZER)
    _, _, scan = _timed(lambda: enc.encode_batch(texts, 0, True))  # before: always scanned
    _, _, plain = _timed(lambda: enc.encode_batch(texts, 0, False))
    return {
        "whole_k": k,
        "whole_wall": w,
        "whole_cpu": c,
        "frag_k_wall": fw,
        "frag_k_cpu": fc,
        "scan_cpu": scan,
        "plain_cpu": plain,
    }


def render(quality: list[dict], speed: list[dict], cmd: str, seconds: float, load0) -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        (
            f"Run {_dt.datetime.now().isoformat(timespec='seconds')} ({seconds:.0f} s); "
            f"{platform.machine()}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, load average "
            f"{load0[0]:.1f}, {load0[1]:.1f}, {load0[2]:.1f} at the start; Python "
            f"{platform.python_version()}, numpy {np.__version__}, ggr_kv {__version__}."
        ),
        f"Command: `{cmd}`",
        "",
    ]
    if quality:
        lines += [
            "### Block hit rate by method (unbounded cache, llama3 tokenizer)",
            "",
            (
                "`gain`: blocks minus the best of original, sorted and ggr, in points. `fixed "
                "order`: the issue's floor, one field order for all rows chosen greedily under "
                "the block metric (a `blocks` seed). Solve times in seconds (`blocks` includes "
                "tokenizing the table)."
            ),
            "",
            (
                "| table | rows x cols | block | original | sorted | ggr | fixed order | blocks | "
                "gain | blocks won with | s original / sorted / ggr / blocks |"
            ),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in quality:
            lines.append(
                f"| {r['table']} | {r['rows']}x{r['cols']} | {r['block']} | "
                + " | ".join(f"{100 * r[m]:.2f}%" for m in METHODS[:3])
                + f" | {100 * r['fixed']:.2f}% | {100 * r['blocks']:.2f}%"
                + f" | {100 * r['gain']:+.2f} | {r['winner']} | "
                + " / ".join(f"{r[m + '_s']:.2f}" for m in METHODS)
                + " |"
            )
        strict = sum(r["gain"] > 1e-12 for r in quality)
        ties = sum(abs(r["gain"]) <= 1e-12 for r in quality)
        lines += [
            "",
            (
                f"`blocks` strictly above the best other method on {strict} of "
                f"{len(quality)} rows, equal on {ties}, below on {len(quality) - strict - ties}."
            ),
            "",
        ]
    if speed:
        lines += [
            "### Speed of `blocks` (synthetic 8-column tables, block 16)",
            "",
            (
                "Seconds: median (min-max) over the repeats. `Table` = building the `Table` "
                "from the DataFrame (stringify + factorize), not part of `blocks`."
            ),
            "",
            (
                "| rows | blocks wall s | blocks CPU s | Table wall / CPU s | stages (wall s, "
                "last run) | block hit rate | ggr: rate, wall s | load avg after |"
            ),
            "|---:|---:|---:|---:|---|---:|---|---|",
        ]
        for r in speed:
            st = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
            lines.append(
                f"| {r['rows']:,} | {_spread(r['wall'])} | {_spread(r['cpu'])} | "
                f"{r['table_wall']:.1f} / {r['table_cpu']:.1f} | {st} | {100 * r['rate']:.2f}% | "
                f"{100 * r['ggr_rate']:.2f}%, {r['ggr_wall']:.1f} | "
                f"{', '.join(f'{x:.1f}' for x in r['load'])} |"
            )
        for r in speed:
            if "metric_wall" in r:
                k, n = r["whole_k"], r["rows"]
                lines += [
                    "",
                    (
                        f"Token + block metrics of the {n:,} prompts of the `blocks` plan "
                        f"(`plan_hits`, fragment tokens): {r['metric_wall']:.1f} s wall, "
                        f"{r['metric_cpu']:.1f} s CPU. On the first {k:,} of them: fragments "
                        f"{r['frag_k_cpu']:.1f} s CPU, whole prompts (build, tokenize, hash) "
                        f"{r['whole_cpu']:.1f} s CPU ({r['whole_cpu'] / max(r['frag_k_cpu'], 1e-9):.1f}x)."
                    ),
                    "",
                    (
                        f"`score()` of that plan (PHC, character, token and block rates: what "
                        f"`ggr-kv reorder --tokenizer` prints after the solver): "
                        f"{r['score_wall']:.1f} s wall, {r['score_cpu']:.1f} s CPU."
                    ),
                    "",
                    (
                        f"quicktok on the first {k:,} whole prompts: {r['scan_cpu']:.1f} s CPU with "
                        "its special-token scan (what `load_tokenizer('llama3')` always did "
                        f"before), {r['plain_cpu']:.1f} s without "
                        f"({r['scan_cpu'] / max(r['plain_cpu'], 1e-9):.0f}x); the tokenizer now "
                        "skips the scan for texts without `<`."
                    ),
                ]
    return "\n".join(lines) + "\n"


def write(text: str, part: str, out: Path | None) -> Path:
    if out is not None:
        path = Path(out)
        if path.exists():
            path = path.with_name(f"{path.stem}-{_dt.datetime.now():%Y%m%d-%H%M%S}{path.suffix}")
        path.write_text(text)
        return path
    begin, end = markers(part)
    doc = RESULTS.read_text() if RESULTS.exists() else "# blocks benchmark\n"
    if begin not in doc:
        doc += f"\n{begin}\n{end}\n"
    a, b = doc.index(begin) + len(begin), doc.index(end)
    RESULTS.write_text(doc[:a] + "\n" + text + doc[b:])
    return RESULTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cmd = "python benchmarks/bench_blocks.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    if not args.skip_quality:
        quality = quality_rows()
        text = render(quality, [], cmd.strip(), time.perf_counter() - t0, load0)
        print(text)
        print("written to", write(text, "quality", args.out))
    if not args.skip_speed:
        t1, load1 = time.perf_counter(), os.getloadavg()
        speed = speed_rows(args.sizes, args.repeats)
        text = render([], speed, cmd.strip(), time.perf_counter() - t1, load1)
        print(text)
        print("written to", write(text, "speed", args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
