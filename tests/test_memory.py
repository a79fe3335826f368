"""The KV-cache size of every engine start (`ggr_kv.engine.memory`), and the commands
that take it: decided before any engine, the same for the same settings, printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ggr_kv.engine.memory import ENV_VAR, engine_memory

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    from ggr_kv.engine import memory

    monkeypatch.setattr(memory, "_STATE", {})


def test_the_cpu_default_is_2_gib_whatever_the_free_memory_above_it(no_env):
    a = engine_memory(gpu=False, free_gib=200.0, apply=False)
    b = engine_memory(gpu=False, free_gib=6.0, apply=False)
    assert a.kv_space_gib == b.kv_space_gib == 2 and a.source == "default"
    assert "2 GiB" in a.message and ENV_VAR not in os.environ


def test_short_memory_lowers_it_and_says_so(no_env):
    m = engine_memory(gpu=False, free_gib=4.2)
    assert m.source == "lowered" and m.kv_space_gib == 1.0
    assert "lowered from 2 GiB" in m.message and "4.2 GiB free" in m.message
    assert os.environ[ENV_VAR] == "1"
    # our own default is recomputed next time, not taken for the user's setting
    assert engine_memory(gpu=False, free_gib=50.0).kv_space_gib == 2


def test_too_little_memory_is_one_error_naming_it(no_env):
    with pytest.raises(ValueError, match=r"only 3.0 GiB of memory is free.*--kv-space"):
        engine_memory(gpu=False, free_gib=3.0)


def test_what_the_user_asks_for_wins(no_env, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "3")
    m = engine_memory(gpu=False, free_gib=20.0, apply=False)
    assert (m.kv_space_gib, m.source) == (3.0, "env")
    m = engine_memory(1.5, gpu=False, free_gib=20.0)
    assert (m.kv_space_gib, m.source) == (1.5, "asked") and os.environ[ENV_VAR] == "1.5"
    with pytest.raises(ValueError, match="--kv-space: expected a positive number"):
        engine_memory(0, gpu=False)


def test_the_engine_gets_the_size_in_bytes_fractions_included(no_env, monkeypatch):
    # vLLM reads VLLM_CPU_KVCACHE_SPACE as whole GiB ("1.25" fails its config check): the
    # engine gets bytes, and the variable is hidden from vLLM while it starts
    from ggr_kv.engine.memory import vllm_sees_bytes

    m = engine_memory(gpu=False, free_gib=4.3)  # lowered to 1.25 GiB
    assert m.kv_space_gib == 1.25 and os.environ[ENV_VAR] == "1.25"
    assert m.engine_kwargs == {"kv_cache_memory_bytes": 5 << 28}
    with vllm_sees_bytes():
        assert ENV_VAR not in os.environ
    assert os.environ[ENV_VAR] == "1.25"
    monkeypatch.delenv(ENV_VAR)
    with vllm_sees_bytes():
        pass
    assert ENV_VAR not in os.environ


def test_on_gpu_vllm_decides_unless_asked(no_env):
    m = engine_memory(gpu=True)
    assert m.kv_space_gib is None and m.engine_kwargs == {} and ENV_VAR not in os.environ
    assert engine_memory(2, gpu=True).engine_kwargs == {"kv_cache_memory_bytes": 2 << 30}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ggr_kv", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.subprocess
def test_compare_refuses_bad_input_in_one_line_before_any_engine(tmp_path):
    proc = _cli("compare", "movies", "--methods", "ggr,fastest", cwd=tmp_path)
    assert proc.returncode == 2 and "fastest" in proc.stderr
    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n")
    proc = _cli("compare", "t.csv", "--out-dir", "r", cwd=tmp_path)
    assert proc.returncode == 2 and "pass --query" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _cli("compare", "t.csv", "--query", "Q?", "--methods", "original,ggr",
                "--out-dir", "r", "--max-model-len", "8", cwd=tmp_path)
    assert proc.returncode == 2 and "max_model_len" in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
