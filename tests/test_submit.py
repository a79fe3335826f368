"""Prompts submitted as token ids (the default) or as text: the same tokens, hits and
outputs on a real vLLM engine (CPU), only the tokenizing moves out of the job time.

Rows are real (``movies_small.csv``) in an order whose prompts share several 128-token
KV blocks, so the prefix cache hits and a difference in tokens would show in the hits.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_ENGINE

from ggr_kv.engine.submit import DEFAULT_SUBMIT, check_submit, engine_inputs
from ggr_kv.run.options import BatchOptions

QUERY = "Is the review positive? Answer yes or no."
N_ROWS = 24
MAX_TOKENS = 4
GROUPED = ["rotten_tomatoes_link", "movie_title", "movie_info", "review_content", "id"]


def test_token_ids_are_the_default_and_text_stays_available():
    assert DEFAULT_SUBMIT == "ids" and BatchOptions().submit == "ids"
    assert BatchOptions(submit="text").submit == "text"
    with pytest.raises(ValueError, match="submit must be one of"):
        BatchOptions(submit="tokens")
    with pytest.raises(ValueError, match="submit must be one of"):
        check_submit("TEXT")


def test_engine_inputs_carry_ids_or_texts_and_a_salt_per_request():
    texts = ["a b", "c"]
    assert engine_inputs(texts, None) == texts
    assert engine_inputs(texts, [[1, 2], [3]]) == [{"prompt_token_ids": [1, 2]},
                                                   {"prompt_token_ids": [3]}]
    salted = engine_inputs(texts, [[1, 2], [3]], salt="r1")
    assert [x["cache_salt"] for x in salted] == ["r1-0", "r1-1"]
    assert engine_inputs(texts, None, salt="r1")[1] == {"prompt": "c", "cache_salt": "r1-1"}
    with pytest.raises(ValueError, match="1 token-id prompts for 2 texts"):
        engine_inputs(texts, [[1]])


def test_the_run_command_takes_submit_with_ids_by_default():
    import argparse

    from ggr_kv.cli.commands.run import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["movies"]).submit == "ids"
    assert p.parse_args(["movies", "--submit", "text"]).submit == "text"
    with pytest.raises(SystemExit):
        p.parse_args(["movies", "--submit", "bytes"])


# ------------------------------------------------------------------ on the CPU engine


@pytest.fixture(scope="module")
def llm(engine_pool):
    from ggr_kv.engine.config import EngineConfig

    return engine_pool.get(EngineConfig(**TINY_ENGINE))


@pytest.fixture(scope="module")
def table(shared_dataset):
    from ggr_kv.core.table import Table, load_table

    movies = shared_dataset("movies_small.csv")
    t = load_table(movies)
    return Table.from_frame(t.to_frame().head(N_ROWS), str(movies))


@pytest.fixture(scope="module")
def plan(table):
    from ggr_kv.core.plan import ReorderPlan

    perm = np.array([table.col_index(c) for c in GROUPED])
    n = table.n_rows
    return ReorderPlan(table.columns, np.arange(n)[::-1].copy(), np.tile(perm, (n, 1)))


@pytest.mark.vllm
def test_encode_texts_gives_the_ids_vllm_makes_of_the_texts(llm, table, plan):
    from vllm import SamplingParams

    from ggr_kv.core.prompts import build_prompts
    from ggr_kv.engine.submit import encode_texts

    texts = build_prompts(table, plan, QUERY)
    ids, secs = encode_texts(llm, texts)
    outs = llm.generate(texts, SamplingParams(max_tokens=1), use_tqdm=False)
    assert [list(o.prompt_token_ids) for o in outs] == ids
    assert secs > 0 and max(len(x) for x in ids) > 128  # prompts span KV blocks


@pytest.mark.vllm
def test_ids_and_text_give_the_same_tokens_hits_and_outputs(llm, table, plan, tmp_path):
    from ggr_kv.run import read_record, run_table
    from ggr_kv.run.rundir import read_outputs

    res = {}
    for submit in ("text", "ids"):
        res[submit] = run_table(table, plan, QUERY, llm=llm, sampling={"max_tokens": MAX_TOKENS},
                                dataset="movies_small", method="reversed", out_dir=tmp_path,
                                run_id=f"sub-{submit}", repeats=2, submit=submit,
                                progress=False)
    text, ids = res["text"], res["ids"]
    # per request, in original row order: the same prompt tokens and cached tokens
    rq = {k: pd.read_parquet(r.path / "requests.parquet").sort_values(["repeat", "row"])
          for k, r in res.items()}
    for col in ("row", "prompt_tokens", "num_cached_tokens", "output_tokens"):
        assert rq["ids"][col].tolist() == rq["text"][col].tolist(), col
    assert rq["ids"]["num_cached_tokens"].sum() > 0  # the order shares blocks: hits to compare
    # the collector's totals, every repeat
    for a, b in zip(ids.record.repeat_runs, text.record.repeat_runs):
        assert (a.prefix_cache_hits, a.prefix_cache_queries, a.request_prompt_tokens) == (
            b.prefix_cache_hits, b.prefix_cache_queries, b.request_prompt_tokens)
    assert ids.record.prompt_tokens == text.record.prompt_tokens
    assert ids.record.counters.mismatch is False and text.record.counters.mismatch is False
    # the same outputs, row by row (greedy, one engine)
    assert read_outputs(ids.path)["output"].tolist() == read_outputs(text.path)["output"].tolist()
    # run.json says how the prompts went in and what tokenizing cost, outside job_s
    mi = json.loads((ids.path / "run.json").read_text())
    mt = json.loads((text.path / "run.json").read_text())
    assert (mi["submit"], mt["submit"]) == ("ids", "text")
    assert mi["timings"]["tokenize_s"] > 0 and mt["timings"]["tokenize_s"] == 0
    assert all(r["tokenize_s"] > 0 for r in mi["repeat_runs"])
    assert all(r["tokenize_s"] == 0 for r in mt["repeat_runs"])
    assert read_record(ids.path) == ids.record


@pytest.mark.vllm
def test_a_salted_no_cache_run_with_token_ids_shares_nothing(llm, table, tmp_path):
    from ggr_kv.core.table import Table
    from ggr_kv.run import RunSpec, run_batch

    doubled = Table.from_frame(pd.concat([table.to_frame()] * 2, ignore_index=True), "x2")
    cached, salted = run_batch(
        [RunSpec(doubled, "original", QUERY, sampling={"max_tokens": 2}),
         RunSpec(doubled, "no_cache", QUERY, sampling={"max_tokens": 2}, no_cache_by="salt")],
        llm=llm, out_dir=tmp_path, progress=False, submit="ids")
    assert cached.result.summary["prefix_cache_hits"] > 0
    assert salted.result.summary["prefix_cache_hits"] == 0
    assert salted.result.meta["submit"] == "ids"
