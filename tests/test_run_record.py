"""Run folders and their record: reserved when a run starts, complete only with run.json,
never overwritten, failures kept with error.txt, run.json read back as the same record
(old files too)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table
from ggr_kv.run.rundir import (
    ERROR_FILE,
    INCOMPLETE_FILE,
    RECORD_FORMAT,
    RUN_FILES,
    CounterCheck,
    EngineUse,
    RepeatRecord,
    RepeatSummary,
    RunRecord,
    Timings,
    check_run_dir_free,
    fail_run_dir,
    read_record,
    release_run_dir,
    reserve_run_dir,
    run_dir_state,
    write_run_files,
)
from ggr_kv.run.runs import load_run, load_runs

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "results" / "h200" / "orderings-800rows"  # the 800-row runs (record format 1)


def a_record(run_id: str) -> RunRecord:
    reps = [RepeatRecord(k, k - 1, 1.0 + k / 10, True, 100, 400, 0.25, 100, 400, 0, 5, 0.1, 8)
            for k in (1, 2, 3)]
    return RunRecord(
        run_id=run_id, created="2026-11-30T03:00:00+00:00", dataset="movies", method="ggr",
        query_type="filter", query="Kids?", instruction="You are", rows=2, columns=["a", "b"],
        model="tiny-llama", timings=Timings(0.01, 12.5, 1.2, 20.0), prompt_tokens=400,
        summary={"prefix_cache_hits": 100, "prefix_cache_hit_rate": 0.25, "nan": float("nan")},
        engine_args={"max_num_seqs": 4}, sampling={"temperature": 0.0, "max_tokens": 2},
        repeats=RepeatSummary(3, 3, 2, [1.1, 1.2, 1.3], 1.2, 1.1, 1.3, 0.2 / 1.2, "interleaved"),
        repeat_runs=reps,
        counters=CounterCheck(100, 400, 100, 400, 100, 400, 0, 0.01, 0.005, 0, False),
        engine=EngineUse("abc123", True, 12.5, 0, 3, 1),
    )


def tables():
    steps = pd.DataFrame({"t_s": [0.1, 0.2], "repeat": [1, 1]})
    requests = pd.DataFrame({"row": [0, 1], "repeat": [1, 1]})
    outputs = pd.DataFrame({"row": [0, 1], "output": ["Yes", "No"]})
    table = Table.from_frame(pd.DataFrame({"a": ["x", "y"], "b": ["1", "2"]}))
    return steps, requests, outputs, ReorderPlan.identity(table)


def test_a_record_reads_back_from_run_json_as_the_same_record(tmp_path):
    rec = a_record("r1").normalized()
    folder = reserve_run_dir(tmp_path, "r1")
    steps, requests, outputs, plan = tables()
    write_run_files(folder, rec, steps=steps, requests=requests, outputs=outputs, plan=plan)
    back = read_record(folder)
    assert back == rec
    assert back.repeats.median_repeat == 2 and back.repeat_runs[2].job_s == pytest.approx(1.3)
    assert back.counters.mismatch is False and back.engine.engine_id == "abc123"
    assert back.summary["nan"] is None  # strict JSON: NaN became null
    assert back.record_format == RECORD_FORMAT
    # complete: every file, the incomplete marker gone, run.json strict JSON
    assert sorted(p.name for p in folder.iterdir()) == sorted(RUN_FILES)
    json.loads((folder / "run.json").read_text())
    assert run_dir_state(folder) == "complete"


def test_unknown_keys_survive_a_rewrite(tmp_path):
    d = a_record("r2").to_dict()
    d["from_the_future"] = {"x": 1}
    rec = RunRecord.from_dict(d)
    assert rec.extra == {"from_the_future": {"x": 1}}
    assert rec.to_dict()["from_the_future"] == {"x": 1}


@pytest.mark.skipif(not (H200 / "movies-ggr" / "run.json").is_file(), reason="no H200 runs")
def test_run_json_of_the_h200_runs_reads_as_a_one_repeat_record():
    rec = read_record(H200 / "movies-ggr")
    assert rec.record_format == 1 and rec.repeats is None and rec.counters is None
    assert rec.method == "ggr" and rec.timings.job_s > 0 and rec.block_size == 16
    runs, steps = load_runs([H200 / "movies-ggr", H200 / "movies-original"])
    assert set(runs["repeats"]) == {1}
    assert (runs["job_s_min"] == runs["job_s"]).all() and set(steps["repeat"]) == {1}
    assert load_run(H200 / "movies-ggr").record.rows == rec.rows


def test_a_reserved_folder_is_taken_at_once_and_marked_incomplete(tmp_path):
    folder = reserve_run_dir(tmp_path / "out", "r")
    marker = json.loads((folder / INCOMPLETE_FILE).read_text())
    assert marker["pid"] == os.getpid() and marker["host"] == socket.gethostname()
    assert run_dir_state(folder) == "incomplete"
    with pytest.raises(FileExistsError, match="running or was killed"):
        reserve_run_dir(tmp_path / "out", "r")  # a second run with the same id
    with pytest.raises(FileExistsError, match=str(folder)):
        check_run_dir_free(tmp_path / "out", "r")


def test_a_failed_run_keeps_its_folder_and_says_why(tmp_path):
    folder = reserve_run_dir(tmp_path, "bad")
    (folder / "steps.csv").write_text("t_s\n0.1\n")  # something the run wrote
    try:
        raise ValueError("temperature must be non-negative, got -1.0")
    except ValueError as e:
        fail_run_dir(folder, e, "repeat 1 of 2")
    text = (folder / ERROR_FILE).read_text()
    assert "ValueError: temperature must be non-negative" in text and "repeat 1 of 2" in text
    assert "Traceback" in text
    assert run_dir_state(folder) == "failed"
    assert not release_run_dir(folder)  # it holds work: never removed
    assert (folder / "steps.csv").is_file()
    with pytest.raises(FileExistsError, match="failed run"):
        reserve_run_dir(tmp_path, "bad")
    steps, requests, outputs, plan = tables()
    with pytest.raises(FileExistsError, match="not empty"):
        write_run_files(folder, a_record("bad"), steps=steps, requests=requests,
                        outputs=outputs, plan=plan)
    assert not (folder / "run.json").exists()


def test_only_an_untouched_reservation_is_released(tmp_path):
    folder = reserve_run_dir(tmp_path, "never-started")
    assert release_run_dir(folder) and not folder.exists()
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / "data.csv").write_text("x\n")
    assert not release_run_dir(other) and (other / "data.csv").is_file()


def test_run_json_is_never_replaced(tmp_path):
    folder = reserve_run_dir(tmp_path, "r3")
    steps, requests, outputs, plan = tables()
    write_run_files(folder, a_record("r3"), steps=steps, requests=requests, outputs=outputs,
                    plan=plan)
    before = (folder / "run.json").read_bytes()
    with pytest.raises(FileExistsError):
        write_run_files(folder, a_record("r3"), steps=steps, requests=requests,
                        outputs=outputs, plan=plan)
    assert (folder / "run.json").read_bytes() == before
    assert np.array_equal(pd.read_csv(folder / "outputs.csv")["row"], [0, 1])


def test_run_ids_and_sweep_point_ids_are_safe_file_names(tmp_path):
    import datetime as dt

    from ggr_kv.analysis.sweep import _axis_name
    from ggr_kv.run.rundir import new_run_id

    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    assert new_run_id("movies@300, seed=1", "../ggr", tmp_path, now) == (
        "movies_300_seed=1-ggr-20260102-030405")
    assert new_run_id("", "", tmp_path, now) == "run-run-20260102-030405"
    assert _axis_name("data/my table.csv") == "my-table"
    assert _axis_name("movies@300") == "movies-300"
