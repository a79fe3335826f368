"""``ggr-kv reorder | score | prompts`` run as a user runs them: in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import build_prompts
from ggr_kv.core.table import load_table
from ggr_kv.reorder.metrics import phc, score

pytestmark = pytest.mark.subprocess  # every test runs `python -m ggr_kv` as a user does
QUERY = "Is the review positive?"


def ggr_kv(*args: str | Path, cwd: Path, exe: list[str] | None = None):
    cmd = (exe or [sys.executable, "-m", "ggr_kv"]) + [str(a) for a in args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture()
def movies(tmp_path: Path) -> Path:
    path = tmp_path / "movies.csv"
    path.write_text(
        "title,genre,review,critic\n"
        'Up,Animation,"Great ""fun"", really",yes\n'
        "Heat,Crime,Tense throughout,no\n"
        "Up,Animation,Touching,no\n"
        "Heat,Crime,Too long,yes\n"
        "Up,Animation,Lovely — ünïcode,yes\n"
        "Alien,Horror,Scary,no\n"
    )
    return path


def test_reorder_json_out_then_score_and_prompts(movies, tmp_path):
    plan_path = tmp_path / "plan.json"
    out = json.loads(
        ok(
            ggr_kv(
                "reorder",
                movies,
                "--method",
                "ggr",
                "--out",
                plan_path,
                "--json",
                "--query",
                QUERY,
                cwd=tmp_path,
            )
        )
    )
    assert (out["rows"], out["columns"], out["method"]) == (6, 4, "ggr")
    assert out["seconds"] >= 0 and out["plan"] == str(plan_path)
    assert 0 <= out["char_hit_rate"] <= 1 and out["token_hit_rate"] is None

    table = load_table(movies)
    plan = ReorderPlan.from_json(plan_path, table)
    assert out["phc"] == phc(table, plan)
    assert out["char_hit_rate"] == pytest.approx(score(table, plan, query=QUERY).char_hit_rate)

    scored = json.loads(
        ok(ggr_kv("score", movies, "--plan", plan_path, "--json", "--query", QUERY, cwd=tmp_path))
    )
    assert scored["phc"] == out["phc"]
    assert scored["char_hit_rate"] == out["char_hit_rate"]

    lines = ok(ggr_kv("prompts", movies, "--plan", plan_path, "--query", QUERY, cwd=tmp_path))
    records = [json.loads(line) for line in lines.splitlines()]
    assert [r["row"] for r in records] == plan.row_order.tolist()
    assert [r["prompt"] for r in records] == build_prompts(table, plan, QUERY)


def test_reorder_with_a_tokenizer(movies, tmp_path):
    out = json.loads(
        ok(
            ggr_kv(
                "reorder",
                movies,
                "--method",
                "original",
                "--json",
                "--tokenizer",
                "llama3",
                "--block-size",
                "4",
                cwd=tmp_path,
            )
        )
    )
    table = load_table(movies)
    expected = score(table, ReorderPlan.identity(table), tokenizer="llama3", block_size=4)
    for key in ("prompt_tokens", "token_hit_rate", "block_hit_rate", "block_size", "phc"):
        assert out[key] == pytest.approx(getattr(expected, key)), key


def test_reorder_prints_a_readable_summary(movies, tmp_path):
    text = ok(ggr_kv("reorder", movies, "--method", "original", cwd=tmp_path))
    table = load_table(movies)
    labels = {line.split("  ")[0] for line in text.splitlines()}
    assert {"rows", "columns", "method", "PHC (chars^2)", "char hit rate"} <= labels
    assert f"{phc(table, ReorderPlan.identity(table)):,}" in text


def test_out_never_overwrites(movies, tmp_path):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text("earlier results")
    proc = ggr_kv("reorder", movies, "--method", "original", "--out", plan_path, cwd=tmp_path)
    assert proc.returncode == 2
    assert str(plan_path) in proc.stderr and "already exists" in proc.stderr
    assert plan_path.read_text() == "earlier results"

    ok(
        ggr_kv(
            "reorder", movies, "--method", "original", "--out", plan_path, "--force", cwd=tmp_path
        )
    )
    ReorderPlan.from_json(plan_path, load_table(movies))  # replaced by a real plan

    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("earlier prompts")
    proc = ggr_kv("prompts", movies, "--plan", plan_path, "--out", jsonl, cwd=tmp_path)
    assert proc.returncode == 2 and str(jsonl) in proc.stderr
    assert jsonl.read_text() == "earlier prompts"


def test_prompts_out_file(movies, tmp_path):
    plan_path = tmp_path / "plan.json"
    ok(ggr_kv("reorder", movies, "--method", "sorted", "--out", plan_path, cwd=tmp_path))
    jsonl = tmp_path / "prompts.jsonl"
    ok(
        ggr_kv(
            "prompts",
            movies,
            "--plan",
            plan_path,
            "--out",
            jsonl,
            "--instruction",
            "Hi.",
            cwd=tmp_path,
        )
    )
    table = load_table(movies)
    plan = ReorderPlan.from_json(plan_path, table)
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["row"] for r in records] == plan.row_order.tolist()
    assert [r["prompt"] for r in records] == build_prompts(table, plan, "", "Hi.")


def test_errors_exit_2_and_name_the_problem(movies, tmp_path):
    proc = ggr_kv("reorder", tmp_path / "nope.csv", "--method", "original", cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.csv" in proc.stderr and "not found" in proc.stderr

    other = tmp_path / "other.csv"
    other.write_text("title,genre,review,year\nUp,Animation,x,2009\n" * 3)
    plan_path = tmp_path / "other-plan.json"
    ok(ggr_kv("reorder", other, "--method", "original", "--out", plan_path, cwd=tmp_path))
    proc = ggr_kv("score", movies, "--plan", plan_path, cwd=tmp_path)
    assert proc.returncode == 2
    assert "other-plan.json" in proc.stderr and "'year'" in proc.stderr

    proc = ggr_kv("prompts", movies, "--plan", tmp_path / "missing.json", cwd=tmp_path)
    assert proc.returncode == 2 and "missing.json" in proc.stderr

    proc = ggr_kv("reorder", movies, "--method", "ggr", "--fd", "title,nosuchcol", cwd=tmp_path)
    assert proc.returncode == 2 and "nosuchcol" in proc.stderr

    proc = ggr_kv("reorder", movies, "--method", "sorted", "--knob", "depth=3", cwd=tmp_path)
    assert proc.returncode == 2 and "'depth'" in proc.stderr


def test_installed_console_script(movies, tmp_path):
    exe = shutil.which("ggr-kv", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the ggr-kv console script is not installed beside this Python")
    out = json.loads(
        ok(ggr_kv("reorder", movies, "--method", "original", "--json", cwd=tmp_path, exe=[exe]))
    )
    assert out["rows"] == 6 and out["method"] == "original"


# -- issue 11: errors are one line, exit 2, and lose nothing ---------------------------------
def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with status 2 and ONE stderr line (no traceback) naming needles."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ggr-kv")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_version(tmp_path):
    from ggr_kv import __version__

    assert ok(ggr_kv("--version", cwd=tmp_path)).strip() == f"ggr-kv {__version__}"


def test_bundled_dataset_names_work_in_every_table_command(tmp_path):
    plan = tmp_path / "plan.json"
    out = json.loads(ok(ggr_kv("reorder", "movies", "--method", "ggr", "--out", plan, "--json",
                               cwd=tmp_path)))
    assert out["rows"] == 1500 and out["fds"]  # the dataset's FD groups are used by default
    assert json.loads(ok(ggr_kv("score", "movies", "--plan", plan, "--json", cwd=tmp_path)))[
        "phc"] == out["phc"]
    first = ok(ggr_kv("prompts", "movies", "--plan", plan, cwd=tmp_path)).splitlines()[0]
    assert json.loads(first)["row"] == json.loads(plan.read_text())["row_order"][0]
    one_line_error(ggr_kv("reorder", "no-such-table", "--method", "ggr", cwd=tmp_path),
                   "no-such-table", "movies")


def test_out_never_replaces_an_input_even_with_force(movies, tmp_path):
    before = movies.read_bytes()
    proc = ggr_kv("reorder", movies, "--method", "sorted", "--out", movies, "--force",
                  cwd=tmp_path)
    one_line_error(proc, str(movies), "input")
    assert movies.read_bytes() == before
    plan = tmp_path / "plan.json"
    ok(ggr_kv("reorder", movies, "--method", "sorted", "--out", plan, cwd=tmp_path))
    saved = plan.read_bytes()
    one_line_error(ggr_kv("prompts", movies, "--plan", plan, "--out", plan, "--force",
                          cwd=tmp_path), "input")
    assert plan.read_bytes() == saved


def test_semicolon_separated_file_is_read_as_columns(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text('title;genre;review\nUp;Animation;"Fun; really"\nHeat;Crime;Tense\n')
    out = json.loads(ok(ggr_kv("reorder", path, "--method", "sorted", "--json", cwd=tmp_path)))
    assert out["columns"] == 3
    forced = json.loads(ok(ggr_kv("reorder", path, "--sep", ",", "--method", "sorted", "--json",
                                  cwd=tmp_path)))
    assert forced["columns"] == 1  # --sep overrides the sniffing


def test_broken_pipe_on_json_lines_is_quiet(tmp_path):
    plan = tmp_path / "plan.json"
    ok(ggr_kv("reorder", "movies", "--method", "sorted", "--out", plan, cwd=tmp_path))
    cmd = f"{sys.executable} -m ggr_kv prompts movies --plan {plan} | head -n 1"
    proc = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "BrokenPipe" not in proc.stderr


def test_server_url_with_nothing_listening_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = ggr_kv("run", "movies", "--rows", "3", "--server-url", f"http://127.0.0.1:{port}",
                  "--out-dir", tmp_path / "r", cwd=tmp_path)
    one_line_error(proc, f"127.0.0.1:{port}")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_wrong_model_fails_before_any_engine_names_the_shapes(tmp_path):
    proc = ggr_kv("run", "movies", "--rows", "3", "--model", "no-such-model",
                  "--out-dir", tmp_path / "r", cwd=tmp_path)
    one_line_error(proc, "no-such-model", "tiny-llama", "llama-3.1-8b")


def test_bad_knob_value_is_one_line(tmp_path):
    one_line_error(ggr_kv("reorder", "movies", "--method", "ophr", "--knob", "max_rows=abc",
                          cwd=tmp_path), "max_rows", "'abc'")


def test_simulate_predicts_job_time_and_speedup_from_engine_speeds(tmp_path):
    plans = {}
    for m in ("original", "ggr"):
        plans[m] = tmp_path / f"{m}.json"
        ok(ggr_kv("reorder", "movies", "--method", m, "--out", plans[m], cwd=tmp_path))
    args = ["simulate", "movies", "--plan", plans["ggr"], "--tokenizer", "llama3",
            "--num-blocks", "20000", "--output-len", "4", "--json"]
    speeds = ["--prefill-tok-s", "40000", "--decode-tok-s", "20000", "--step-overhead-ms", "10"]
    out = json.loads(ok(ggr_kv(*args, *speeds, "--baseline-plan", plans["original"],
                               cwd=tmp_path)))
    work = out["prediction"]["work"]
    expected = (work["prefill_tokens"] / 40000 + work["decode_tokens"] / 20000
                + work["num_steps"] * 0.010)
    assert out["predicted_job_s"] == pytest.approx(expected)
    assert out["predicted_speedup"] == pytest.approx(
        out["baseline_predicted_job_s"] / out["predicted_job_s"])
    assert 1 < out["predicted_speedup"] <= out["ideal_speedup"]  # prefill-bound, below ideal
    one_line_error(ggr_kv(*args, "--prefill-tok-s", "40000", cwd=tmp_path), "--decode-tok-s")


def test_reorder_blocks_scores_the_described_prompts_and_says_what_it_optimizes(tmp_path):
    args = ["reorder", "beer", "--method", "blocks", "--tokenizer", "llama3", "--block-size",
            "16", "--query", "Is it good?", "--json"]
    out = json.loads(ok(ggr_kv(*args, cwd=tmp_path)))
    assert out["method"] == "blocks" and "KV blocks" in out["optimizes"]
    others = {m: json.loads(ok(ggr_kv(*args[:3], m, *args[4:], cwd=tmp_path)))
              for m in ("original", "sorted", "ggr")}
    assert out["block_hit_rate"] >= max(o["block_hit_rate"] for o in others.values())
    assert others["ggr"]["optimizes"].startswith("PHC")
    one_line_error(ggr_kv("reorder", "beer", "--method", "ggr", "--kv-blocks", "100",
                          cwd=tmp_path), "--kv-blocks", "blocks")
