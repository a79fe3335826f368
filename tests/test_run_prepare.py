"""What the runner checks and decides before any engine starts: queries, prompt lengths
against max_model_len (naming the rows), engine groups, run facts for reorder methods, and
the counter cross-check's tolerance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ggr_kv.datasets.queries import Query, get_query
from ggr_kv.engine.config import EngineConfig, engine_starts, model_max_len
from ggr_kv.run import DEFAULT_MAX_TOKENS, RunSpec, run_batch, run_table
from ggr_kv.run.batch import group_specs
from ggr_kv.collector.checks import COUNTER_TOLERANCE
from ggr_kv.run.counters import SimCounts, check_repeats
from ggr_kv.run.prepare import CONTEXT_KNOBS, as_query, context_knobs
from ggr_kv.run.rundir import RepeatRecord

ROOT = Path(__file__).resolve().parents[1]
LONG_ROWS = (3, 7, 8)


def long_table(tmp_path: Path, n: int = 10) -> Path:
    """A CSV whose rows LONG_ROWS hold ~3,000-token reviews; the others are short."""
    review = ["fine"] * n
    for r in LONG_ROWS:
        review[r] = " ".join(f"word{i}" for i in range(1500))
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"title": [f"Movie {i}" for i in range(n)], "review": review}).to_csv(
        path, index=False)
    return path


def test_one_default_for_max_tokens_and_overrides_reach_every_stage():
    q = as_query("Is it for kids?")
    assert q == Query.custom("Is it for kids?")
    assert q.max_tokens == DEFAULT_MAX_TOKENS == q.stages[0].max_tokens
    multi = get_query("movies", "multi_llm")
    cut = as_query(multi, 3)
    assert [s.max_tokens for s in cut.stages] == [3, 3] and cut.max_tokens == 3
    assert [s.text for s in cut.stages] == [s.text for s in multi.stages]
    assert as_query(multi) is multi
    with pytest.raises(ValueError, match="query is empty"):
        as_query("  ")
    with pytest.raises(TypeError, match="Query"):
        as_query(42)


@pytest.mark.slow
def test_too_long_prompts_are_refused_before_any_engine_naming_the_rows(tmp_path, tiny_dir):
    path = long_table(tmp_path)
    starts = engine_starts()
    with pytest.raises(ValueError) as err:
        run_table(path, None, "Is this review positive?", out_dir=tmp_path / "out", run_id="x",
                  engine=EngineConfig(max_model_len=1024), progress=False)
    msg = str(err.value)
    assert "3 of 10 rows" in msg and "max_model_len=1024" in msg
    for r in LONG_ROWS:
        assert f" {r} (" in msg
    assert "tokenizer" in msg and str(tiny_dir) in msg and "reviews.csv" in msg
    assert engine_starts() == starts  # no engine was started
    assert not (tmp_path / "out").exists()  # nothing reserved


@pytest.mark.slow
def test_max_model_len_comes_from_the_model_folder_when_not_set(tmp_path, tiny_dir):
    model = tmp_path / "short-llama"
    shutil.copytree(tiny_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_position_embeddings"] = 600
    (model / "config.json").write_text(json.dumps(cfg))
    assert model_max_len(model) == 600
    spec = RunSpec(long_table(tmp_path), "sorted", "Positive?", engine=EngineConfig(model=str(model)))
    with pytest.raises(ValueError, match=r"3 of 10 rows .* max_model_len=600"):
        run_batch([spec], out_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.subprocess
def test_the_cli_names_the_long_rows_in_one_line_without_starting_vllm(tmp_path):
    path = long_table(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "ggr_kv", "run", str(path), "--query", "Positive?",
         "--max-model-len", "1024", "--out-dir", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ggr-kv run: error: ")
    assert "3 of 10 rows" in lines[0] and "3 (" in lines[0] and "max_model_len=1024" in lines[0]
    assert not (tmp_path / "out").exists()


def test_runs_share_an_engine_unless_their_settings_differ():
    a = EngineConfig(max_num_seqs=4)
    specs = [RunSpec(None, "original", engine=a), RunSpec(None, "ggr", engine=a),
             RunSpec(None, "no_cache", engine=a), RunSpec(None, "sorted", engine=a),
             RunSpec(None, "ggr", engine=a.replace(num_gpu_blocks_override=64)),
             RunSpec(None, "no_cache", engine=a.replace(enable_prefix_caching=False))]
    groups = group_specs(specs)
    assert [g.members for g in groups] == [[0, 1, 3], [2, 5], [4]]
    assert [g.settings.enable_prefix_caching for g in groups] == [True, False, True]
    with pytest.raises(ValueError, match="no-enable-prefix-caching"):
        group_specs(specs, server_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        RunSpec(None, "ggr", repeats=0)


def test_methods_that_take_run_facts_get_them():
    got = context_knobs("blocks", tokenizer="/models/llama", block_size=16, query="Q?",
                        instruction="I")
    assert got == {"tokenizer": "/models/llama", "block_size": 16, "query": "Q?",
                   "instruction": "I"}
    assert tuple(got) == CONTEXT_KNOBS
    for method in ("original", "sorted", "ggr", "ophr"):
        assert context_knobs(method, tokenizer="t", block_size=16, query="q",
                             instruction="i") == {}


def rep(k: int, hits: int | None, cached: int | None, queries: int = 10_000) -> RepeatRecord:
    return RepeatRecord(k, k - 1, 1.0, True, hits, queries, None, cached, queries)


def test_counter_check_flags_gaps_above_the_tolerance_in_any_repeat():
    tol = int(COUNTER_TOLERANCE * 10_000)
    ok = check_repeats([rep(1, 5000, 5000), rep(2, 5000 + tol, 5000)], 1, SimCounts(5000, 10_000))
    assert ok.mismatch is False and ok.max_gap_tokens == 0 and ok.simulated_hits == 5000
    bad = check_repeats([rep(1, 5000, 5000), rep(2, 5000 + tol + 1, 5000)], 1,
                        SimCounts(5000, 10_000))
    assert bad.mismatch is True and bad.mismatched_repeats == [2]
    sim_off = check_repeats([rep(1, 5000, 5000)], 1, SimCounts(4000, 10_000))
    assert sim_off.mismatch is True and sim_off.max_gap_tokens == 1000
    alone = check_repeats([rep(1, 5000, None)], 1, SimCounts(note="not simulated: server"))
    assert alone.mismatch is None and alone.note == "not simulated: server"


def test_run_entry_points_take_one_options_object_or_its_fields_by_name(tmp_path):
    from ggr_kv.run import BatchOptions, run_batch, run_orderings, run_table
    from ggr_kv.run.options import split_settings

    opts = BatchOptions(out_dir=tmp_path, progress=False, server_url="http://h:1/")
    assert opts.server_url == "http://h:1"
    spec_kw, merged = split_settings({"repeats": 2, "predict": False}, opts)
    assert spec_kw == {"repeats": 2}
    assert (merged.out_dir, merged.predict, merged.progress) == (tmp_path, False, False)
    with pytest.raises(ValueError, match="on_error"):
        BatchOptions(on_error="ignore")
    with pytest.raises(ValueError, match="not both"):
        BatchOptions(llm=object(), server_url="http://h:1")
    # every entry point refuses an unknown keyword by name, before any engine
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['repeat'\]"):
        run_table("t.csv", repeat=2)
    with pytest.raises(TypeError, match="unknown setting"):
        run_orderings("t.csv", ("original",), outdir=tmp_path)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['outdir'\]"):
        run_batch([RunSpec("t.csv")], outdir=tmp_path)
    with pytest.raises(ValueError, match="max_concurrency"):
        run_batch([RunSpec("t.csv")], opts, max_concurrency=0)
    # a knob no ordering of the comparison takes
    with pytest.raises(TypeError, match=r"knob\(s\) \['depth'\] are taken by none"):
        run_orderings("t.csv", ("original", "ggr"), knobs={"depth": 2})
    # RunSpec: table, method and query by position, the rest by name
    with pytest.raises(TypeError):
        RunSpec("t.csv", "ggr", "q", None, 2)
    assert RunSpec("t.csv", "ggr", "q", repeats=2).repeats == 2
