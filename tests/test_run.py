"""The inference runner on a real vLLM engine (CPU), offline and through the server.

One in-process engine serves the whole module; the server test uses the session's
``vllm.entrypoints.openai.api_server`` subprocess (``conftest.tiny_server_launch``),
requested at module start so it boots while the offline tests run. Rows are real
(``movies_small.csv``) so prompts span several 128-token KV blocks and the prefix cache
actually hits.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

vllm = pytest.importorskip("vllm")

from conftest import TINY_ENGINE, shared_path

from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits
from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import build_prompts
from ggr_kv.core.schema import REQUEST_COLUMNS, STEP_COLUMNS
from ggr_kv.core.table import Table, load_table
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.engine.config import EngineConfig, engine_starts, started_engine
from ggr_kv.run import RunSpec, read_record, restrict_plan, run_batch, run_orderings, run_table
from ggr_kv.run.rundir import (
    ERROR_FILE,
    INCOMPLETE_FILE,
    RUN_FILES,
    read_outputs,
    reserve_run_dir,
    run_dir_state,
)
from ggr_kv.run.runs import load_runs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.vllm
QUERY = "Is the review positive? Answer yes or no."
N_ROWS = 24
MAX_TOKENS = 3
BLOCK = 128  # the CPU backend's KV block size (checked against run.json below)
# movie fields first: rows of one movie share link, title and synopsis (> 1 block)
GROUPED = ["rotten_tomatoes_link", "movie_title", "movie_info", "review_content", "id"]


@pytest.fixture(scope="module")
def server(tiny_server_launch):
    """The session's vLLM server (conftest), booting while the offline tests run."""
    return tiny_server_launch


def wait_ready(server) -> str:
    return server.wait(timeout_s=400)


@pytest.fixture(scope="module")
def table(server) -> Table:  # requesting `server` starts it booting first
    movies = shared_path("movies_small.csv")
    t = load_table(movies)
    return Table.from_frame(t.to_frame().head(N_ROWS), str(movies))


@pytest.fixture(scope="module")
def plan(table) -> ReorderPlan:
    """Rows reversed, movie fields first: a plan whose order differs from the input's."""
    perm = np.array([table.col_index(c) for c in GROUPED])
    n = table.n_rows
    return ReorderPlan(table.columns, np.arange(n)[::-1].copy(), np.tile(perm, (n, 1)))


@pytest.fixture(scope="module")
def llm(engine_pool):
    return engine_pool.get(EngineConfig(**TINY_ENGINE))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_tokenizer(tiny_dir)


@pytest.fixture(scope="module")
def first(llm, table, plan, results):
    return run_table(table, plan, QUERY, llm=llm, sampling={"max_tokens": MAX_TOKENS},
                     dataset="movies_small", method="reversed", out_dir=results,
                     run_id="first", progress=False)


def expected_hits(prompts: list[str], tok) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens, cached tokens) per prompt in run order, from the block model."""
    toks, offs = tok.encode_batch(prompts)
    return np.diff(offs), unbounded_prefix_hits(block_hashes(toks, offs, BLOCK))


def test_a_fractional_kv_space_starts_an_engine_of_that_size(llm):
    # the session's VLLM_CPU_KVCACHE_SPACE (conftest: 0.25, which vLLM alone refuses)
    from ggr_kv.engine.memory import ENV_VAR

    gib = float(os.environ[ENV_VAR])
    assert llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes == int(gib * 2**30)


def test_outputs_come_back_in_original_row_order(first, table, plan, tok):
    out = read_outputs(first.path)
    inv = plan.inverse_order()
    assert out["row"].tolist() == list(range(table.n_rows))
    assert out["slot"].tolist() == inv.tolist()
    # each row's output carries the token count of THAT row's prompt (prompts differ)
    prompts_by_row = np.array(build_prompts(table, plan, QUERY), dtype=object)[inv]
    want = tok.count(list(prompts_by_row))
    assert len(set(want.tolist())) > N_ROWS // 2
    assert out["prompt_tokens"].tolist() == want.tolist()
    assert (out["output_tokens"] == MAX_TOKENS).all()
    assert out["output"].str.len().gt(0).all()
    req = pd.read_csv(first.path / "requests.csv").sort_values("row")
    assert req["prompt_tokens"].tolist() == want.tolist()
    assert req["slot"].tolist() == inv.tolist()


def test_run_folder_holds_every_file_and_the_run_metadata(first, table, plan, tok):
    folder = first.path
    assert folder.name == "first" and sorted(p.name for p in folder.iterdir()) == sorted(RUN_FILES)
    meta = json.loads((folder / "run.json").read_text())
    for key in ("run_id", "created", "dataset", "method", "query_type", "query", "instruction",
                "rows", "model", "engine_args", "vllm_version", "dtype", "block_size",
                "num_kv_blocks", "enable_prefix_caching", "device", "hardware", "versions",
                "timings", "prompt_tokens", "summary"):
        assert meta.get(key) is not None, key
    assert (meta["dataset"], meta["method"], meta["rows"]) == ("movies_small", "reversed", N_ROWS)
    assert meta["query"] == QUERY and meta["model"] == "tiny-llama"
    assert meta["vllm_version"] == vllm.__version__
    assert meta["block_size"] == BLOCK and meta["num_kv_blocks"] > 0
    assert meta["enable_prefix_caching"] is True and meta["engine_args"]["load_format"] == "dummy"
    # the dtype the engine ran: the model's bf16, or float32 on a CPU without native bf16
    asked = EngineConfig(model="tiny-llama").engine_dtype()
    assert meta["dtype"] == ("bfloat16" if asked == "auto" else asked) and meta["device"]
    assert meta["hardware"]["cpu_count"] >= 1 and meta["hardware"]["memory_bytes"] > 0
    assert meta["versions"]["vllm"] == vllm.__version__ and meta["versions"]["python"]
    assert set(meta["timings"]) == {"reorder_s", "engine_start_s", "job_s", "total_s",
                                    "tokenize_s"}
    assert 0 < meta["timings"]["job_s"] <= meta["timings"]["total_s"]
    assert meta["timings"]["engine_start_s"] > 0
    prompts = build_prompts(table, plan, QUERY)
    assert meta["prompt_tokens"] == int(tok.count(prompts).sum())
    assert meta["sampling"]["temperature"] == 0.0 and meta["sampling"]["max_tokens"] == MAX_TOKENS
    # tables: schema columns, Parquet and CSV the same
    for stem, cols in (("steps", STEP_COLUMNS), ("requests", REQUEST_COLUMNS)):
        pq = pd.read_parquet(folder / f"{stem}.parquet")
        csv = pd.read_csv(folder / f"{stem}.csv", dtype={"request_id": str})
        assert list(pq.columns[: len(cols)]) == list(cols)
        pd.testing.assert_frame_equal(pq, csv, check_dtype=False)
    assert len(pd.read_parquet(folder / "requests.parquet")) == N_ROWS
    assert ReorderPlan.from_json(folder / "plan.json", table).row_order.tolist() == (
        plan.row_order.tolist()
    )
    from ggr_kv.run.runs import load_run

    assert load_run(folder).ordering == "reversed"


def test_measured_hits_equal_the_block_model_of_the_run_order(first, table, plan, tok):
    prompt_tokens, hits = expected_hits(build_prompts(table, plan, QUERY), tok)
    req = first.requests.sort_values("slot")
    assert req["num_cached_tokens"].tolist() == hits.tolist()
    assert first.summary["prefix_cache_hits"] == int(hits.sum()) > 0
    assert first.summary["prefix_cache_queries"] == int(prompt_tokens.sum())
    assert first.summary["collection_method"] == "stat_logger"


def test_same_run_id_twice_raises_and_keeps_the_first_run(first, llm, table, results):
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}
    with pytest.raises(FileExistsError, match=str(first.path)):
        run_table(table, None, QUERY, llm=llm, out_dir=results, run_id="first", progress=False)
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before


def test_a_second_run_on_the_same_engine_reports_its_own_hits(
    first, llm, table, plan, results, tok
):
    again = run_table(table, plan, QUERY, llm=llm, sampling={"max_tokens": MAX_TOKENS},
                      out_dir=results, progress=False)
    # prefix cache reset: the same prompts hit exactly as the first run did, not 2x
    for key in ("prefix_cache_hits", "prefix_cache_queries"):
        assert again.summary[key] == first.summary[key]
    assert again.run_id != first.run_id and again.meta["prefix_cache_reset"] is True
    warm = run_table(table, plan, QUERY, llm=llm, sampling={"max_tokens": MAX_TOKENS},
                     out_dir=results, reset_prefix_cache=False, progress=False)
    # without a reset every full block but each prompt's last token is already cached
    prompt_tokens, _ = expected_hits(build_prompts(table, plan, QUERY), tok)
    assert warm.summary["prefix_cache_hits"] == int(((prompt_tokens - 1) // BLOCK * BLOCK).sum())
    assert warm.summary["prefix_cache_queries"] == first.summary["prefix_cache_queries"]
    assert warm.meta["prefix_cache_reset"] is False


def test_run_orderings_shares_one_engine_and_labels_each_run(llm, table, results, tok):
    res = run_orderings(table, ("original", "sorted"), QUERY, llm=llm, dataset="movies_small",
                        sampling={"max_tokens": 2}, out_dir=results, run_id="cmp",
                        progress=False)
    assert [r.run_id for r in res] == ["cmp-original", "cmp-sorted"]
    assert [r.meta["method"] for r in res] == ["original", "sorted"]
    assert res[0].meta["engine_args"] == res[1].meta["engine_args"]
    for r in res:
        assert r.timings["reorder_s"] is not None
        order = ReorderPlan.from_json(r.path / "plan.json", table)
        _, hits = expected_hits(build_prompts(table, order, QUERY), tok)
        assert r.summary["prefix_cache_hits"] == int(hits.sum())
    assert res[1].summary["prefix_cache_hits"] >= res[0].summary["prefix_cache_hits"]


def test_restrict_plan_keeps_run_order_and_field_orders(table, plan):
    rows = np.array([3, 0, 7, 20])
    sub, sub_plan, original = restrict_plan(table, plan, rows, ("review_content", "movie_title"))
    assert original.tolist() == [0, 3, 7, 20] and sub.columns == ("review_content", "movie_title")
    # run order: the plan's order of those rows (reversed); field order: movie_title first
    assert original[sub_plan.row_order].tolist() == [20, 7, 3, 0]
    got = build_prompts(sub, sub_plan, QUERY)
    full = dict(zip(plan.row_order.tolist(), build_prompts(table, plan, QUERY)))
    for prompt, r in zip(got, original[sub_plan.row_order]):
        title, review = table.cells[r, table.col_index("movie_title")], table.cells[
            r, table.col_index("review_content")]
        assert prompt.index(json.dumps(title)) < prompt.index(json.dumps(review))
        assert prompt.startswith(full[r][: full[r].index("Data: {")])


def test_two_stage_query_runs_stage_two_on_the_rows_stage_one_kept(llm, table, plan, results, tok):
    from ggr_kv.datasets.queries import Query, Stage

    s1 = Stage("Summarize the review in one word.", 2, "text", fields=("review_content",))
    s2 = Stage("Summarize the movie.", 2, "text")
    q = Query("movies_small", "multi_llm", s1.text, 2, (s1, s2))
    r = run_table(table, plan, q, llm=llm, out_dir=results, run_id="two-stage", progress=False)
    out = read_outputs(r.path)
    assert (out["stage_reached"] == 2).all()  # text stages keep every row
    assert out["stage1_output"].str.len().gt(0).all() and out["output"].equals(out["stage2_output"])
    req = pd.read_parquet(r.path / "requests.parquet")
    assert req.groupby("stage").size().to_dict() == {1: N_ROWS, 2: N_ROWS}
    sub, sub_plan, _ = restrict_plan(table, plan, None, s1.fields)
    p1 = tok.count(build_prompts(sub, sub_plan, s1.text))
    p2 = tok.count(build_prompts(table, plan, s2.text))
    assert r.meta["prompt_tokens"] == int(p1.sum() + p2.sum())
    assert [s["rows"] for s in r.meta["stages"]] == [N_ROWS, N_ROWS]
    steps = pd.read_parquet(r.path / "steps.parquet")
    assert set(steps["stage"]) == {1, 2} and steps["step"].is_monotonic_increasing
    queries = steps["prefix_queries"].sum()
    assert queries == r.summary["prefix_cache_queries"] == r.meta["prompt_tokens"]


def test_server_path_gives_the_offline_prefix_cache_totals(server, first, table, plan, results):
    url = wait_ready(server)
    r = run_table(table, plan, QUERY, server_url=url, sampling={"max_tokens": MAX_TOKENS},
                  dataset="movies_small", method="reversed", out_dir=results,
                  run_id="server", max_concurrency=8, progress=False)
    assert r.meta["mode"] == "server" and r.meta["prefix_cache_reset"] is True
    assert r.meta["block_size"] == BLOCK and r.meta["num_kv_blocks"] > 0
    for key in ("prefix_cache_hits", "prefix_cache_queries"):
        assert r.summary[key] == first.summary[key], key
    assert r.summary["collection_method"] == "prometheus_url"
    off = first.requests.sort_values("row").reset_index(drop=True)
    srv = r.requests.sort_values("row").reset_index(drop=True)
    assert srv["prompt_tokens"].tolist() == off["prompt_tokens"].tolist()
    assert int(srv["num_cached_tokens"].sum()) == int(off["num_cached_tokens"].sum())
    out = read_outputs(r.path)
    assert out["row"].tolist() == list(range(N_ROWS))
    assert out["prompt_tokens"].tolist() == read_outputs(first.path)["prompt_tokens"].tolist()
    assert (srv["e2e_s"] > 0).all() and r.timings["job_s"] > 0


def test_repeats_interleave_on_the_warm_engine_and_every_repeat_is_recorded(
    llm, table, results, tok
):
    res = run_orderings(table, ("original", "sorted"), QUERY, llm=llm, dataset="movies_small",
                        sampling={"max_tokens": 2}, out_dir=results, run_id="rep", repeats=2,
                        progress=False)
    # A B A B on one engine: repeat 1 of both orderings before repeat 2 of either
    assert [x.position for x in res[0].record.repeat_runs] == [0, 2]
    assert [x.position for x in res[1].record.repeat_runs] == [1, 3]
    for r in res:
        rec = read_record(r.path)
        assert rec == r.record
        assert rec.repeats.count == rec.repeats.requested == 2
        assert rec.repeats.schedule.startswith("interleaved")
        jobs = [x.job_s for x in rec.repeat_runs]
        assert rec.repeats.job_s == jobs and rec.timings.job_s == pytest.approx(
            statistics.median(jobs))
        assert (rec.repeats.job_s_min, rec.repeats.job_s_max) == (min(jobs), max(jobs))
        # each repeat on an emptied cache hits exactly what the block model says
        order = ReorderPlan.from_json(r.path / "plan.json", table)
        _, hits = expected_hits(build_prompts(table, order, QUERY), tok)
        assert [x.prefix_cache_hits for x in rec.repeat_runs] == [int(hits.sum())] * 2
        assert all(x.prefix_cache_reset for x in rec.repeat_runs)
        # honest counters: collector, requests and simulator agree on this engine
        c = rec.counters
        assert c.collector_hits == c.request_cached_tokens == c.simulated_hits == int(hits.sum())
        assert c.simulated_queries == c.collector_queries and c.mismatch is False
        steps = pd.read_parquet(r.path / "steps.parquet")
        req = pd.read_parquet(r.path / "requests.parquet")
        assert set(steps["repeat"]) == {1, 2}
        assert req.groupby("repeat").size().to_dict() == {1: N_ROWS, 2: N_ROWS}
        assert rec.engine.engine_id == started_engine(llm).engine_id
        assert rec.engine.started_by_runner is False and rec.engine.runs == 2
    runs, steps = load_runs([r.path for r in res])
    for row in runs.itertuples():
        assert row.repeats == 2 and row.job_s_min <= row.job_s <= row.job_s_max
        assert row.counter_mismatch is False
    for r in res:  # the steps of a run's median repeat stand for it
        mine = steps[steps["run_id"] == r.run_id]
        assert set(mine["repeat"]) == {r.record.repeats.median_repeat}
        assert len(mine) == r.record.summary["num_steps"]


def test_the_folder_is_reserved_when_the_run_starts_and_kept_when_it_fails(
    llm, table, plan, results
):
    seen: dict = {}

    def on_update(o):
        if o.status == "running":
            seen["files"] = sorted(p.name for p in o.run_dir.iterdir())
            try:  # another process asking for the same id meanwhile
                reserve_run_dir(results, "reserved")
            except FileExistsError as e:
                seen["second"] = str(e)

    spec = RunSpec(table, "custom", QUERY, plan=plan, run_id="reserved",
                   sampling={"max_tokens": 2})
    (out,) = run_batch([spec], llm=llm, out_dir=results, on_update=on_update, progress=False)
    assert seen["files"] == [INCOMPLETE_FILE] and "running or was killed" in seen["second"]
    assert out.status == "done"
    assert sorted(p.name for p in out.run_dir.iterdir()) == sorted(RUN_FILES)

    # a sampling setting vLLM refuses up front fails before any work: no folder
    refused = RunSpec(table, "custom", QUERY, plan=plan, run_id="refused",
                      sampling={"max_tokens": 2, "temperature": -1.0})
    with pytest.raises(ValueError, match="temperature must be non-negative"):
        run_batch([refused], llm=llm, out_dir=results, progress=False)
    assert not (results / "refused").exists()
    # one the engine refuses only when the requests reach it fails mid-run: folder kept
    from vllm.exceptions import VLLMValidationError

    bad = RunSpec(table, "custom", QUERY, plan=plan, run_id="broken",
                  sampling={"max_tokens": 2, "logprobs": 1000})
    with pytest.raises(VLLMValidationError, match="sample logprobs of 1000"):
        run_batch([bad], llm=llm, out_dir=results, progress=False)
    folder = results / "broken"
    assert run_dir_state(folder) == "failed" and not (folder / "run.json").exists()
    assert (folder / INCOMPLETE_FILE).is_file()
    assert "sample logprobs of 1000" in (folder / ERROR_FILE).read_text()
    with pytest.raises(FileExistsError, match="failed run"):
        run_table(table, plan, QUERY, llm=llm, out_dir=results, run_id="broken", progress=False)
    # on_error="continue": the failure is recorded and the next run still completes
    bad.run_id = "broken-2"
    good = RunSpec(table, "custom", QUERY, plan=plan, run_id="after-broken",
                   sampling={"max_tokens": 2})
    outs = run_batch([bad, good], llm=llm, out_dir=results, on_error="continue", progress=False)
    assert [o.status for o in outs] == ["failed", "done"]
    assert "logprobs" in outs[0].error and (results / "broken-2" / ERROR_FILE).is_file()
    # the log line a batch's on_update prints: why a run failed, what a done run measured
    assert outs[0].line() == f"failed: broken-2: {outs[0].error}"
    assert "custom" in outs[1].line() and "mismatch False" in outs[1].line()


def test_a_salted_no_cache_run_shares_nothing_on_the_caching_engine(llm, table, results):
    # the input order twice in one generate: a caching run hits on the second copy, the
    # salted no_cache run (every request its own cache_salt) hits nothing, on the same
    # engine, with no second engine start
    doubled = Table.from_frame(pd.concat([table.to_frame()] * 2, ignore_index=True), "x2")
    starts = engine_starts()
    cached, salted = run_batch(
        [RunSpec(doubled, "original", QUERY, sampling={"max_tokens": MAX_TOKENS}),
         RunSpec(doubled, "no_cache", QUERY, sampling={"max_tokens": MAX_TOKENS},
                 no_cache_by="salt")],
        llm=llm, out_dir=results, progress=False)
    assert engine_starts() == starts
    assert cached.result.summary["prefix_cache_hits"] > 0
    assert salted.result.summary["prefix_cache_hits"] == 0
    assert salted.result.requests["num_cached_tokens"].sum() == 0
    meta = salted.result.meta
    assert meta["method"] == "no_cache" and meta["enable_prefix_caching"] is True
    assert meta["reorder"]["no_cache_by"] == "salt"
