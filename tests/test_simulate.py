"""The simulator against hand-worked schedules, an independent recount, and real vLLM runs.

Hand-made cases use tiny blocks (4 or 16 tokens) so that every block, hit, eviction and
preemption can be followed by hand; the comments give the reasoning. The ``vllm`` tests
run the CPU engine (128-token blocks) on real prompts and compare prediction with
measurement, totals and step by step.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import plain_llm, shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_kv.core.blocks import block_hashes, to_csr, unbounded_prefix_hits
from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import build_prompts
from ggr_kv.core.schema import STEP_COLUMNS
from ggr_kv.core.table import Table, load_table
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.simulate import (
    SIM_REQUEST_COLUMNS,
    SIM_WORK_COLUMNS,
    SchedulerConfig,
    simulate,
    simulate_plan,
    simulate_totals,
)


def seqs(*prompts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return to_csr([list(p) for p in prompts])


# -- hand-worked schedules ----------------------------------------------------------------
def test_identical_prompts_hit_all_full_blocks_but_keep_the_last_token():
    # 40 tokens, 16-token blocks: 2 full blocks + 8 tokens. Later copies hit 2 blocks (32
    # tokens) in the same step: the first copy's blocks are cached when allocated.
    tokens, offsets = seqs([7] * 40, [7] * 40, [7] * 40)
    res = simulate(tokens, offsets, 1, block_size=16, num_blocks=11)
    assert res.requests["num_cached_tokens"].tolist() == [0, 32, 32]
    assert res.summary["prefix_cache_hits"] == 64
    assert res.summary["prefix_cache_queries"] == 120
    assert res.summary["hit_rate"] == pytest.approx(64 / 120)
    # all three finish in step 0 (1 output token); usage after the step is 0 (all free)
    assert len(res.steps) == 1
    assert res.steps["kv_cache_usage"].iloc[0] == 0.0


def test_kv_usage_is_vllm_formula_with_the_null_block():
    # copies 2 and 3 share blocks 0-1 of copy 1 and own one block each for their tail:
    # 3 + 1 + 1 = 5 blocks in use while they decode; vLLM: 1 - free / (num_blocks - 1)
    tokens, offsets = seqs([7] * 40, [7] * 40, [7] * 40)
    res = simulate(tokens, offsets, 2, block_size=16, num_blocks=11)
    assert res.steps["kv_cache_usage"].tolist() == [pytest.approx(5 / 10), 0.0]
    assert res.summary["peak_kv_usage"] == pytest.approx(0.5)


def test_block_aligned_prompt_recomputes_its_whole_last_block():
    # 32 tokens = exactly 2 blocks; the last token must be recomputed, so only 1 block hits
    tokens, offsets = seqs([3] * 32, [3] * 32)
    res = simulate(tokens, offsets, 1, block_size=16, num_blocks=9)
    assert res.requests["num_cached_tokens"].tolist() == [0, 16]


def test_lru_evicts_the_tail_of_a_freed_chain_first():
    # B = 4 tokens, 4 blocks = null + 3 usable (ids 1, 2, 3). One output token each.
    # A = 8 tokens (2 full blocks), B = 5 tokens, C = A, D = B.
    # step 0: A gets blocks 1, 2 (both cached). B needs 2, only 1 free: FCFS stops.
    #         A finishes; freed in reverse (tail first): queue = [3, A1=2, A0=1].
    # step 1: B pops 3 and 2 (evicting A's 2nd block, not its 1st). C would hit A0 but
    #         needs 1 new + 1 evictable > 1 free: waits. B finishes: its unhashed
    #         partial block goes to the FRONT, its hashed block to the back:
    #         queue = [B1, A0, B0].
    # step 2: C touches A0 (hit, 4 tokens) and pops B1 (no eviction). D would hit B0 but
    #         does not fit. C finishes; queue = [B0, C1, A0].
    # step 3: D hits B0 (4 tokens). Were chains freed head first, step 1 would evict A0
    #         and C would hit 0.
    a, b = list(range(1, 9)), list(range(11, 16))
    tokens, offsets = seqs(a, b, a, b)
    res = simulate(tokens, offsets, 1, block_size=4, num_blocks=4)
    assert res.requests["num_cached_tokens"].tolist() == [0, 0, 4, 4]
    assert res.requests["first_scheduled_step"].tolist() == [0, 1, 2, 3]
    assert res.summary["evicted_blocks"] == 2  # A1 in step 1, C1 in step 3
    assert res.summary["num_steps"] == 4


def test_freed_unhashed_blocks_are_reused_before_cached_ones():
    # B = 4 tokens, 3 usable blocks. X = 4 tokens (1 full block), Y = 6 tokens (a full
    # block and a partial one), Z = 3 tokens (1 block), W = X + 1 token (can hit X0).
    # step 0: X and Y take all 3 blocks, Z waits; X and Y finish. X0 (cached) goes to
    #         the back; Y's partial block Y1 has no hash and goes to the FRONT:
    #         queue = [Y1, X0, Y0].
    # step 1: Z pops Y1; W hits X0 (4 tokens) and pops Y0. Were Y1 put at the back,
    #         Z would pop and evict X0 and W would hit nothing.
    tokens, offsets = seqs([1, 2, 3, 4], range(11, 17), [21, 22, 23], [1, 2, 3, 4, 5])
    res = simulate(tokens, offsets, 1, block_size=4, num_blocks=4)
    assert res.requests["first_scheduled_step"].tolist() == [0, 0, 1, 1]
    assert res.requests["num_cached_tokens"].tolist() == [0, 0, 0, 4]


def test_preemption_takes_the_newest_running_request_and_requeues_it_first():
    # B = 4, 5 blocks = 4 usable. A, B, C: 4-token prompts (1 block), 3 output tokens.
    # step 0: all admitted (3 blocks, 1 free); each samples 1 token (5 tokens now).
    # step 1: A needs a 2nd block: takes the free one. B needs one: none free, so the
    #         NEWEST running request, C, is preempted (its cached block is freed and
    #         then evicted by B). No waiting request is admitted in a preempting step.
    # step 2: A and B finish. C (5 tokens: prompt + 1 output) finds nothing cached,
    #         needs 2 blocks, 0 free: waits. Frees leave 4 blocks.
    # step 3: C recomputes 5 tokens and samples its 2nd token; step 4: its 3rd.
    tokens, offsets = seqs([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12])
    res = simulate(tokens, offsets, 3, block_size=4, num_blocks=5)
    req = res.requests
    assert req["num_preemptions"].tolist() == [0, 0, 1]
    assert req["finished_step"].tolist() == [2, 2, 4]
    assert res.steps["num_preemptions"].tolist() == [0, 1, 0, 0, 0]
    assert res.steps["num_running"].tolist() == [3, 2, 0, 1, 0]
    assert res.steps["num_waiting"].tolist() == [0, 1, 1, 0, 0]
    assert res.summary["num_preemptions"] == 1
    # re-admissions are counted apart from the prefix-cache counters, as vLLM does
    assert res.summary["prefix_cache_queries"] == 12
    assert res.summary["preempted_queries"] == 5


def test_preempted_request_rehits_its_own_blocks_until_they_are_evicted():
    # B = 4, 4 blocks = 3 usable. A: 4 tokens, 6 outputs; B: 4 tokens, 2 outputs.
    # step 1: A takes the last free block; B gets none and preempts itself; its cached
    #         block B0 goes to the back of the queue.
    # steps 2-4: B (5 tokens) would hit B0 but needs 1 new + 1 evictable > 1 free.
    # step 5: A needs a 3rd block and pops B0, evicting it; A finishes and frees.
    # step 6: B finds nothing, recomputes and finishes. Only the admission that
    #         succeeds is counted: 5 preempted queries, 0 preempted hits.
    tokens, offsets = seqs([1, 2, 3, 4], [5, 6, 7, 8])
    res = simulate(tokens, offsets, [6, 2], block_size=4, num_blocks=4)
    assert res.requests["num_preemptions"].tolist() == [0, 1]
    assert res.requests["finished_step"].tolist() == [5, 6]
    assert res.summary["preempted_queries"] == 5
    assert res.summary["preempted_hits"] == 0
    assert res.summary["prefix_cache_queries"] == 8
    assert res.summary["evicted_blocks"] == 2  # B0 in step 5, A1 in step 6


def test_chunked_prefill_caches_each_chunk_and_later_requests_hit_it():
    # budget 8 tokens per step, 16-token prompts: A prefills in 2 chunks (steps 0-1) and
    # samples in step 1; C is admitted in step 2 (after A's decode token) and hits the
    # 3 blocks that the last-token rule allows.
    a = list(range(100, 116))
    tokens, offsets = seqs(a, a)
    res = simulate(
        tokens, offsets, 2, block_size=4, num_blocks=20, max_num_batched_tokens=8
    )
    req = res.requests
    assert req["first_token_step"].tolist() == [1, 2]
    assert req["num_cached_tokens"].tolist() == [0, 12]
    assert res.steps["prefix_queries"].tolist() == [16, 0, 16, 0]


def test_fcfs_does_not_let_a_small_request_overtake_one_that_does_not_fit():
    # 9 usable blocks of 4 tokens. A holds 6; B needs 4 (does not fit); C needs 1 (would
    # fit) but vLLM's FCFS scan stops at B, so C starts only with B.
    tokens, offsets = seqs(range(24), range(100, 116), [200, 201, 202])
    res = simulate(tokens, offsets, 1, block_size=4, num_blocks=10)
    assert res.requests["first_scheduled_step"].tolist() == [0, 1, 1]


def test_max_num_seqs_bounds_the_running_batch():
    tokens, offsets = seqs(*[[i] * 5 for i in range(5)])
    res = simulate(tokens, offsets, 3, block_size=4, num_blocks=50, max_num_seqs=2)
    assert res.steps["num_running"].max() == 2
    assert res.requests["first_scheduled_step"].tolist() == [0, 0, 3, 3, 6]


def test_prefix_caching_off_means_no_hits_and_no_counted_queries():
    tokens, offsets = seqs([7] * 40, [7] * 40)
    res = simulate(tokens, offsets, 2, block_size=16, num_blocks=11, enable_prefix_caching=False)
    assert res.summary["prefix_cache_hits"] == 0
    assert res.summary["prefix_cache_queries"] == 0  # vLLM records no lookup then
    assert res.steps["kv_cache_usage"].iloc[0] == pytest.approx(6 / 10)


def test_long_prefill_threshold_caps_a_prefill_chunk():
    tokens, offsets = seqs(range(20), range(50, 70))
    res = simulate(
        tokens, offsets, 1, block_size=4, num_blocks=20, long_prefill_token_threshold=8
    )
    # 20 tokens at most 8 per step: 3 prefill steps each (both run side by side)
    assert res.requests["first_token_step"].tolist() == [2, 2]


def test_result_frames_have_the_shared_schema_and_step_index_clock():
    tokens, offsets = seqs([7] * 40, [8] * 20)
    res = simulate(tokens, offsets, [3, 1], block_size=16, num_blocks=11)
    assert tuple(res.steps.columns) == STEP_COLUMNS
    assert tuple(res.requests.columns) == SIM_REQUEST_COLUMNS
    assert (res.steps["t_s"] == res.steps["step"]).all()
    assert res.steps["generation_tokens"].sum() == 4
    assert res.steps["prompt_tokens"].sum() == 60
    assert res.params["block_size"] == 16 and res.meta["seconds"] >= 0
    json.dumps(res.to_dict())


@pytest.mark.parametrize(
    ("tokens", "offsets", "out", "match"),
    [
        ([1, 2, 3], [0, 3, 3], 1, "prompt 1 is empty"),
        ([1, 2, 3], [0, 2], 1, "end at len"),
        ([1, 2, 3], [0, 3], [1, 2], "one per prompt"),
        ([1, 2, 3], [0, 3], 0, "output_lens\\[0\\]"),
        ([1.5, 2.0], [0, 2], 1, "integer token ids"),
        (list(range(100)), [0, 100], 1, "prompt 0 .* needs 7 KV blocks"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(tokens, offsets, out, match):
    with pytest.raises(ValueError, match=match):
        simulate(np.array(tokens), np.array(offsets), out, block_size=16, num_blocks=5)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"block_size": 0, "num_blocks": 5}, "block_size must be >= 1"),
        ({"block_size": 4, "num_blocks": 1}, "num_blocks must be >= 2"),
        ({"block_size": 4, "num_blocks": 5, "max_num_seqs": 0}, "max_num_seqs"),
        ({"block_size": 4, "num_blocks": 5, "watermark": 1.0}, "watermark"),
        ({"block_size": 4, "num_blocks": 5, "long_prefill_token_threshold": -1}, "threshold"),
    ],
)
def test_scheduler_settings_are_checked_once_with_a_clear_message(settings, match):
    with pytest.raises(ValueError, match=match):
        SchedulerConfig.of(**settings)
    tokens, offsets = seqs([1, 2, 3])
    with pytest.raises(ValueError, match=match):
        simulate(tokens, offsets, 1, **settings)
    with pytest.raises(TypeError, match="unknown scheduler setting"):
        SchedulerConfig.of(block_size=4, num_blocks=5, max_seqs=3)


# -- the totals-only replay -----------------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=30),
                     min_size=1, max_size=20),
    outs=st.lists(st.integers(1, 6), min_size=20, max_size=20),
    seed=st.integers(0, 100),
    spare=st.integers(0, 10),
    subset=st.booleans(),
)
def test_totals_of_any_order_equal_the_full_replay_of_that_order(prompts, outs, seed, spare,
                                                                 subset):
    # hash once in row order, judge a permuted (or partial) run order without re-hashing
    tokens, offsets = to_csr(prompts)
    n = len(prompts)
    out = np.array(outs[:n])
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)[: max(1, n // 2)] if subset else rng.permutation(n)
    lens = np.diff(offsets)
    cfg = SchedulerConfig(block_size=3, num_blocks=int((-(-(lens + out) // 3)).max()) + 2 + spare,
                          max_num_batched_tokens=16, max_num_seqs=4)
    tot = simulate_totals(block_hashes(tokens, offsets, 3), out, cfg, order=order)
    run_tokens, run_offsets = to_csr([prompts[i] for i in order])
    full = simulate(run_tokens, run_offsets, out[order], **cfg.to_dict())
    assert tot.to_dict() == full.summary
    assert tot.num_cached_tokens.tolist() == full.requests["num_cached_tokens"].tolist()
    assert full.params == cfg.to_dict()
    assert tuple(full.work.columns) == SIM_WORK_COLUMNS and len(full.work) == len(full.steps)


def test_totals_refuse_hashes_of_another_block_size_and_bad_orders():
    tokens, offsets = seqs([7] * 40, [7] * 40)
    cfg = SchedulerConfig(block_size=16, num_blocks=11)
    with pytest.raises(ValueError, match="block_size=8, the config has block_size=16"):
        simulate_totals(block_hashes(tokens, offsets, 8), 1, cfg)
    with pytest.raises(ValueError, match=r"prompt indices in \[0, 2\)"):
        simulate_totals(block_hashes(tokens, offsets, 16), 1, cfg, order=np.array([0, 2]))
    with pytest.raises(ValueError, match="one per prompt"):
        simulate_totals(block_hashes(tokens, offsets, 16), [1, 2, 3], cfg)


# -- property: no eviction means the unbounded recount, else never more ------------------
prompt_lists = st.lists(
    st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=30), min_size=1, max_size=25
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=prompt_lists,
    block=st.sampled_from([2, 3, 4]),
    budget=st.integers(4, 64),
    seqs_=st.integers(1, 8),
    outs=st.lists(st.integers(1, 9), min_size=25, max_size=25),
    tight=st.integers(0, 12),
)
def test_hits_match_an_unbounded_cache_unless_blocks_are_evicted(
    prompts, block, budget, seqs_, outs, tight
):
    tokens, offsets = to_csr(prompts)
    n = len(prompts)
    out = np.array(outs[:n])
    plen = np.diff(offsets)
    per_req = -(-(plen + out) // block)
    unbounded = unbounded_prefix_hits(block_hashes(tokens, offsets, block))
    big = int(per_req.sum()) + 2  # more blocks than the run ever allocates: no eviction
    res = simulate(
        tokens, offsets, out, block_size=block, num_blocks=big,
        max_num_batched_tokens=budget, max_num_seqs=seqs_,
    )
    assert res.requests["num_cached_tokens"].tolist() == unbounded.tolist()
    assert res.summary["evicted_blocks"] == 0 and res.summary["num_preemptions"] == 0
    small = int(per_req.max()) + 1 + tight
    res = simulate(
        tokens, offsets, out, block_size=block, num_blocks=small,
        max_num_batched_tokens=budget, max_num_seqs=seqs_,
    )
    assert (res.requests["num_cached_tokens"].to_numpy() <= unbounded).all()
    assert res.steps["generation_tokens"].sum() == out.sum()
    assert (res.requests["finished_step"] >= 0).all()
    assert res.steps["kv_cache_usage"].between(0, 1).all()
    assert res.steps["kv_cache_usage"].iloc[-1] == 0.0  # everything freed at the end


# -- simulate_plan and the command line ----------------------------------------------------
@pytest.fixture(scope="module")
def small_table() -> Table:
    df = pd.DataFrame(
        {
            "movie": ["Up", "Up", "Heat", "Up", "Heat", "Alien"],
            "review": ["great", "fun", "long", "sad", "tense", "scary"],
        }
    )
    return Table.from_frame(df)


def test_simulate_plan_builds_and_tokenizes_the_plans_prompts(small_table):
    perm = np.tile([0, 1], (6, 1))
    plan = ReorderPlan(small_table.columns, np.array([0, 1, 3, 2, 4, 5]), perm)
    tok = load_tokenizer("llama3")
    res = simulate_plan(small_table, plan, "Positive?", None, tok, 4, block_size=4, num_blocks=200)
    tokens, offsets = tok.encode_batch(build_prompts(small_table, plan, "Positive?"))
    direct = simulate(tokens, offsets, 4, block_size=4, num_blocks=200)
    assert res.requests["row"].tolist() == [0, 1, 3, 2, 4, 5]
    assert res.requests["prompt_tokens"].tolist() == np.diff(offsets).tolist()
    assert res.summary["prefix_cache_hits"] == direct.summary["prefix_cache_hits"]
    assert res.params["tokenizer"] == "llama3"


def test_cli_prints_json_and_writes_steps_without_overwriting(tmp_path, small_table, capsys):
    from ggr_kv.cli.main import main

    csv = tmp_path / "t.csv"
    small_table.to_frame().to_csv(csv, index=False)
    plan = ReorderPlan.identity(small_table)
    plan.to_json(tmp_path / "plan.json")
    steps = tmp_path / "steps.csv"
    argv = [
        "simulate", str(csv), "--plan", str(tmp_path / "plan.json"), "--tokenizer", "llama3",
        "--block-size", "4", "--num-blocks", "200", "--output-len", "3", "--query", "Q?",
        "--json", "--out", str(steps),
    ]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    expected = simulate_plan(
        small_table, plan, "Q?", None, "llama3", 3, block_size=4, num_blocks=200
    )
    assert got["prefix_cache_hits"] == expected.summary["prefix_cache_hits"]
    assert got["params"]["num_blocks"] == 200
    written = pd.read_csv(steps)
    assert tuple(written.columns) == STEP_COLUMNS
    assert written["prefix_hits"].sum() == expected.summary["prefix_cache_hits"]
    assert main(argv) == 2  # refuses to replace the earlier steps file
    assert "already exists" in capsys.readouterr().err


# -- against the real CPU engine -----------------------------------------------------------
INSTRUCTION = (
    "You are a careful film critic and data analyst. You receive one row of a table about "
    "movies and the reviews that critics wrote about them. Each row is a JSON object with "
    "the movie's title, a synopsis, the Rotten Tomatoes link, the text of one review and "
    "an identifier. Read the synopsis to understand what the movie is about, then read the "
    "review and decide what the critic thinks. Do not use any knowledge that is not in the "
    "row: if the review is empty, say that there is not enough information. Consider irony, "
    "faint praise and mixed opinions carefully; a review that praises the actors but "
    "criticises the plot is mixed. Answer with one word first (positive, negative, mixed or "
    "unknown) and then give a short reason of at most twenty words that quotes the review "
    "where possible. Keep the answer in English even if the movie title is in another "
    "language, and never repeat the synopsis. If several movies share a title, rely on the "
    "link to tell them apart. "
) * 2
QUERY = "Is the review positive?"
FIELD_ORDER = ["movie_title", "movie_info", "rotten_tomatoes_link", "review_content", "id"]
CPU_BLOCK = 128
ENGINE = {"max_num_seqs": 16, "max_num_batched_tokens": 1024, "max_model_len": 2048}
BIG_POOL, SMALL_POOL = 512, 20


@pytest.fixture(scope="module")
def movie_prompts(tmp_path_factory):
    """40 rows (2 of each of 20 movies): grouped by movie, and interleaved round robin."""
    movies = shared_path("movies_small.csv")
    from ggr_kv.engine.models import make_model_dir

    model = make_model_dir("tiny-llama", tmp_path_factory.mktemp("model") / "tiny-llama")
    frame = load_table(movies).to_frame()
    frame = frame.iloc[np.argsort(frame["movie_title"].to_numpy(), kind="stable")]
    frame = frame[frame.groupby("movie_title").cumcount() < 2].head(40)
    table = Table.from_frame(frame.reset_index(drop=True))
    perm = np.tile([table.col_index(c) for c in FIELD_ORDER], (table.n_rows, 1))
    grouped = np.arange(table.n_rows)  # already sorted by movie
    rank = table.to_frame().groupby("movie_title").cumcount().to_numpy()
    interleaved = np.lexsort((grouped, rank))  # 1st row of every movie, then 2nd, ...
    tok = load_tokenizer(model)
    rng = np.random.default_rng(0)
    out_lens = rng.integers(1, 31, size=table.n_rows)
    runs = {}
    for name, order in (("grouped", grouped), ("interleaved", interleaved)):
        plan = ReorderPlan(table.columns, order, perm)
        tokens, offsets = tok.encode_batch(build_prompts(table, plan, QUERY, INSTRUCTION))
        runs[name] = (tokens, offsets)
    lens = np.diff(runs["grouped"][1])
    assert 300 <= lens.min() and lens.max() <= 900
    return {"model": model, "runs": runs, "out_lens": out_lens}


def _measure(model: Path, num_blocks: int, workloads: list[tuple], out_lens: np.ndarray) -> list:
    """Run each workload on one fresh CPU engine; counters, per-request hits, step trace."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = plain_llm(
        model=str(model), load_format="dummy", disable_log_stats=False, enforce_eager=True,
        seed=0, num_gpu_blocks_override=num_blocks, kv_cache_memory_bytes=64 << 20, **ENGINE,
    )
    trace: list[tuple] = []
    manager = getattr(llm.llm_engine, "logger_manager", None)
    attached = manager is not None and hasattr(manager, "stat_loggers")
    if attached:
        from vllm.v1.metrics.loggers import AggregateStatLoggerBase

        class StepTrace(AggregateStatLoggerBase):  # internal interface, same in 0.26-0.33
            def __init__(self):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
                if scheduler_stats is not None:
                    p = scheduler_stats.prefix_cache_stats
                    gen = iteration_stats.num_generation_tokens if iteration_stats else 0
                    trace.append(
                        (scheduler_stats.kv_cache_usage, p.queries, p.hits,
                         scheduler_stats.num_running_reqs, scheduler_stats.num_waiting_reqs, gen)
                    )

            def log(self):
                pass

            def log_engine_initialized(self):
                pass

        manager.stat_loggers.append(StepTrace())

    def counters() -> dict[str, float]:
        names = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:num_preemptions")
        got = dict.fromkeys(names, 0.0)
        for m in llm.get_metrics():
            if m.name in got:
                got[m.name] += m.value
        return got

    params = [SamplingParams(max_tokens=int(k), ignore_eos=True, temperature=0) for k in out_lens]
    results = []
    try:
        for tokens, offsets in workloads:
            assert llm.reset_prefix_cache()
            prompts = [
                TokensPrompt(prompt_token_ids=tokens[offsets[i] : offsets[i + 1]].tolist())
                for i in range(len(offsets) - 1)
            ]
            before, start = counters(), len(trace)
            outs = llm.generate(prompts, params, use_tqdm=False)
            after = counters()
            delta = {k: after[k] - before[k] for k in after}
            assert [len(o.outputs[0].token_ids) for o in outs] == out_lens.tolist()
            results.append(
                {
                    "queries": delta["vllm:prefix_cache_queries"],
                    "hits": delta["vllm:prefix_cache_hits"],
                    "preemptions": delta["vllm:num_preemptions"],
                    "cached": np.array([o.num_cached_tokens for o in outs]),
                    "trace": pd.DataFrame(
                        trace[start:], columns=["kv", "q", "h", "running", "waiting", "gen"]
                    ) if attached else None,
                }
            )
    finally:
        core = getattr(llm.llm_engine, "engine_core", None)
        if hasattr(core, "shutdown"):
            core.shutdown()
    return results


def _predict(workload: tuple, out_lens: np.ndarray, num_blocks: int):
    return simulate(*workload, out_lens, block_size=CPU_BLOCK, num_blocks=num_blocks, **{
        k: v for k, v in ENGINE.items() if k != "max_model_len"
    })


@pytest.fixture(scope="module")
def big_pool(movie_prompts):
    w = movie_prompts["runs"]["grouped"]
    (measured,) = _measure(movie_prompts["model"], BIG_POOL, [w], movie_prompts["out_lens"])
    gc.collect()
    return _predict(w, movie_prompts["out_lens"], BIG_POOL), measured


@pytest.fixture(scope="module")
def small_pool(movie_prompts):
    runs, out = movie_prompts["runs"], movie_prompts["out_lens"]
    measured = _measure(
        movie_prompts["model"], SMALL_POOL, [runs["grouped"], runs["interleaved"]], out
    )
    gc.collect()
    predicted = [_predict(runs[k], out, SMALL_POOL) for k in ("grouped", "interleaved")]
    return list(zip(predicted, measured))


def _assert_same_trace(pred, meas):
    if meas["trace"] is None:
        pytest.skip("this vLLM has no logger_manager.stat_loggers to attach a step trace to")
    t, s = meas["trace"], pred.steps
    assert len(t) == len(s)
    np.testing.assert_allclose(t["kv"], s["kv_cache_usage"], atol=1e-9)
    assert t["q"].tolist() == s["prefix_queries"].tolist()
    assert t["h"].tolist() == s["prefix_hits"].tolist()
    assert t["running"].tolist() == s["num_running"].tolist()
    assert t["waiting"].tolist() == s["num_waiting"].tolist()
    assert t["gen"].tolist() == s["generation_tokens"].tolist()


@pytest.mark.vllm
def test_big_pool_predicts_total_hits_exactly(big_pool):
    pred, meas = big_pool
    assert meas["preemptions"] == 0 and pred.summary["evicted_blocks"] == 0
    assert meas["hits"] > 0.5 * meas["queries"]  # grouped by movie: many hits
    assert pred.summary["prefix_cache_queries"] == meas["queries"]
    assert pred.summary["prefix_cache_hits"] == meas["hits"]
    assert pred.requests["num_cached_tokens"].tolist() == meas["cached"].tolist()


@pytest.mark.vllm
def test_big_pool_step_trace_matches(big_pool):
    _assert_same_trace(*big_pool)


@pytest.mark.vllm
def test_small_pool_with_preemption_within_two_percent(small_pool):
    pred, meas = small_pool[0]  # grouped order, 19 usable blocks: decode growth preempts
    assert meas["preemptions"] > 0
    assert pred.summary["num_preemptions"] == meas["preemptions"]
    assert abs(pred.summary["prefix_cache_hits"] - meas["hits"]) <= 0.02 * meas["queries"]
    _assert_same_trace(pred, meas)


@pytest.mark.vllm
def test_small_pool_eviction_loses_hits_and_is_predicted(small_pool, movie_prompts):
    pred, meas = small_pool[1]  # movies interleaved: their blocks are evicted before reuse
    tokens, offsets = movie_prompts["runs"]["interleaved"]
    unbounded = int(unbounded_prefix_hits(block_hashes(tokens, offsets, CPU_BLOCK)).sum())
    assert meas["hits"] < unbounded  # eviction really cost hits on the engine
    assert abs(pred.summary["prefix_cache_hits"] - meas["hits"]) <= 0.02 * meas["queries"]
    assert pred.requests["num_cached_tokens"].tolist() == meas["cached"].tolist()
    _assert_same_trace(pred, meas)


def test_engine_facts_become_scheduler_settings_in_one_place():
    facts = {"block_size": 16, "num_kv_blocks": 11, "max_num_seqs": 2, "dtype": "bfloat16",
             "engine_args": {"max_num_batched_tokens": 64, "max_num_seqs": 999}}
    cfg = SchedulerConfig.from_engine(facts)  # a run.json: top-level keys win over engine_args
    assert (cfg.block_size, cfg.num_blocks, cfg.max_num_seqs, cfg.max_num_batched_tokens) == (
        16, 11, 2, 64)
    assert SchedulerConfig.from_engine(facts, enable_prefix_caching=False).enable_prefix_caching \
        is False
    with pytest.raises(ValueError, match="num_kv_blocks"):
        SchedulerConfig.from_engine({"block_size": 16})
    tokens, offsets = seqs(list(range(40)), list(range(40)), list(range(8)))
    by_config = simulate(tokens, offsets, 2, cfg)
    by_keywords = simulate(tokens, offsets, 2, block_size=16, num_blocks=11, max_num_seqs=2,
                           max_num_batched_tokens=64)
    pd.testing.assert_frame_equal(by_config.steps, by_keywords.steps)
    assert by_config.summary == by_keywords.summary
    # keywords override a config's fields
    assert simulate(tokens, offsets, 2, cfg, num_blocks=4).params["num_blocks"] == 4
