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
