"""Engine settings, and ``ggr-kv run`` / ``ggr-kv make-model`` run as a user runs them.

The CLI test starts vLLM in a subprocess with its default multiprocessing (the engine
core is a spawned process), which is how ``ggr-kv run`` is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_KV_GIB, shared_path

from ggr_kv.engine.config import EngineConfig, check_engine_args, make_llm, model_max_len
from ggr_kv.engine.models import SHAPES

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "VLLM_CPU_KVCACHE_SPACE": f"{TEST_KV_GIB:g}",  # a fraction: the spawned engine core too
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
ENV.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)


def ggr_kv(*args, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ggr_kv", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_llm_kwargs_for_a_dummy_shape_keep_stats_on_and_leave_defaults_to_vllm(tmp_path):
    cfg = EngineConfig(model="tiny-llama", models_dir=str(tmp_path / "models"), max_num_seqs=8,
                       extra={"distributed_executor_backend": "mp", "swap_space": 0})
    kw = cfg.to_llm_kwargs()
    assert Path(kw["model"]) == tmp_path / "models" / "tiny-llama"
    assert (Path(kw["model"]) / "config.json").is_file()
    assert kw["load_format"] == "dummy" and kw["disable_log_stats"] is False
    assert kw["enable_prefix_caching"] is True and kw["max_num_seqs"] == 8
    assert kw["distributed_executor_backend"] == "mp" and kw["swap_space"] == 0
    for unset in ("max_model_len", "block_size", "gpu_memory_utilization", "data_parallel_size",
                  "max_num_batched_tokens", "kv_cache_memory_bytes"):
        assert unset not in kw, unset
    no_cache = cfg.replace(enable_prefix_caching=False).to_llm_kwargs()
    assert no_cache["enable_prefix_caching"] is False
    assert {k: v for k, v in no_cache.items() if k != "enable_prefix_caching"} == {
        k: v for k, v in kw.items() if k != "enable_prefix_caching"}
    assert cfg.extra == {"distributed_executor_backend": "mp", "swap_space": 0}  # not shared


def test_eager_by_default_without_a_gpu_and_as_asked_otherwise(tiny_dir):
    from ggr_kv.engine.memory import has_gpu

    cfg = EngineConfig(model="tiny-llama", models_dir=str(tiny_dir.parent))
    assert cfg.enforce_eager is None  # not decided until the engine starts
    assert cfg.to_llm_kwargs()["enforce_eager"] is (not has_gpu())
    for asked in (True, False):
        assert cfg.replace(enforce_eager=asked).to_llm_kwargs()["enforce_eager"] is asked


def test_auto_dtype_is_float32_on_a_cpu_without_native_bf16(tmp_path, tiny_dir):
    from ggr_kv.engine.memory import has_gpu
    from ggr_kv.engine.resources import cpu_has_bf16

    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    spr = tmp_path / "spr"
    spr.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    arm = tmp_path / "arm"
    arm.write_text("Features\t: fp asimd bf16 i8mm\n")
    assert not cpu_has_bf16(str(avx2)) and not cpu_has_bf16(str(tmp_path / "missing"))
    assert cpu_has_bf16(str(spr)) and cpu_has_bf16(str(arm))
    cfg = EngineConfig(model="tiny-llama", models_dir=str(tiny_dir.parent))
    native = has_gpu() or cpu_has_bf16()
    assert cfg.to_llm_kwargs()["dtype"] == ("auto" if native else "float32")
    assert cfg.replace(dtype="bfloat16").to_llm_kwargs()["dtype"] == "bfloat16"  # as asked


def test_a_model_with_weights_is_passed_through_unchanged(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # vLLM may download it
    kw = EngineConfig(model="meta-llama/Llama-3.1-8B-Instruct", tensor_parallel_size=4,
                      pipeline_parallel_size=2).to_llm_kwargs()
    assert kw["model"] == "meta-llama/Llama-3.1-8B-Instruct" and "load_format" not in kw
    assert kw["tensor_parallel_size"] == 4 and kw["pipeline_parallel_size"] == 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline and not cached: fail before any engine
    with pytest.raises(ValueError, match=r"Llama-3.1-8B-Instruct.*HF_HUB_OFFLINE.*tiny-llama"):
        EngineConfig(model="meta-llama/Llama-3.1-8B-Instruct").to_llm_kwargs()


def test_engine_settings_from_a_flat_dict_split_known_fields_from_extra():
    cfg = EngineConfig.from_dict({"model": "llama-3.1-8b", "max_num_seqs": 64,
                                  "enable_chunked_prefill": False})
    assert cfg.model == "llama-3.1-8b" and cfg.max_num_seqs == 64
    assert cfg.extra == {"enable_chunked_prefill": False}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_num_seqs": -1}, "max_num_seqs"),
        ({"extra": {"max_num_seqs": 4}}, r"extra repeats .*max_num_seqs"),
        ({"extra": {"disable_log_stats": True}}, "disable_log_stats"),
    ],
)
def test_bad_engine_settings_are_refused_with_the_setting_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig(**kwargs)


@pytest.mark.slow
def test_max_model_len_default_is_read_from_the_model_folder(tmp_path):
    folder = EngineConfig(model="llama-3.1-8b", models_dir=str(tmp_path)).resolve_model()[0]
    assert model_max_len(folder) == SHAPES["llama-3.1-8b"]["max_position_embeddings"]
    assert model_max_len(tmp_path / "nothing-here") is None


@pytest.mark.subprocess
@pytest.mark.vllm
def test_an_unknown_engine_argument_is_named_before_any_engine(tmp_path):
    pytest.importorskip("vllm")
    with pytest.raises(ValueError, match=r"'max_num_seq'.*did you mean max_num_seqs"):
        check_engine_args(EngineConfig(extra={"max_num_seq": 4}))
    check_engine_args(EngineConfig(extra={"enable_chunked_prefill": False}))  # a real one
    proc = ggr_kv("run", "movies", "--rows", "2", "--query-type", "filter",
                  "--engine-arg", "max_num_seq=4", "--out-dir", tmp_path / "r")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ggr-kv run: error: engine argument 'max_num_seq'")
    assert "max_num_seqs" in last
    assert "Initializing a V1 LLM engine" not in proc.stderr + proc.stdout
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_offline_data_parallel_points_to_a_server_before_starting_anything():
    with pytest.raises(ValueError, match="--data-parallel-size 2"):
        make_llm(EngineConfig(data_parallel_size=2))


@pytest.mark.subprocess
def test_make_model_command_writes_a_loadable_folder(tmp_path):
    proc = ggr_kv("make-model", "llama-3.2-1b", "--out", tmp_path / "m", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["path"] == str(tmp_path / "m") and info["layers"] == 16
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == SHAPES["llama-3.2-1b"]["num_hidden_layers"]
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(info["files"])
    bad = ggr_kv("make-model", "llama-9000")
    assert bad.returncode == 2 and "tiny-llama" in bad.stderr  # lists the valid shapes


@pytest.mark.subprocess
@pytest.mark.vllm
def test_run_command_end_to_end_and_never_overwrites(tmp_path):
    pytest.importorskip("vllm")
    movies = shared_path("movies_small.csv")
    out = tmp_path / "results"
    args = ["run", movies, "--rows", "16", "--method", "sorted", "--query-type", "filter",
            "--max-tokens", "2", "--enforce-eager", "--max-model-len", "4096",
            "--engine-arg", "max_num_seqs=8", "--out-dir", out, "--run-id", "cli",
            "--repeats", "2", "--no-progress", "--json", "--verbose"]
    proc = ggr_kv(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[-2000:]  # vLLM's logs go to stderr
    # --verbose: vLLM's own log lines on the terminal (quiet runs: test_environment)
    assert "INFO" in proc.stderr and "Initializing a V1 LLM engine" in proc.stderr
    assert "incorrect regex pattern" not in proc.stderr  # tokenizer.json is no old Mistral one
    summary = json.loads(lines[0])
    assert summary["run_id"] == "cli" and summary["rows"] == 16
    assert summary["method"] == "sorted" and summary["query_type"] == "filter"
    assert summary["prefix_cache_queries"] == summary["prompt_tokens"] > 0
    assert summary["repeats"] == 2 and summary["job_s_min"] <= summary["job_s"] <= summary[
        "job_s_max"]
    assert summary["request_cached_tokens"] == summary["prefix_cache_hits"]
    assert summary["simulated_hits"] == summary["prefix_cache_hits"]
    assert summary["counter_mismatch"] is False
    meta = json.loads((out / "cli" / "run.json").read_text())
    assert len(meta["repeat_runs"]) == 2 and meta["repeats"]["count"] == 2
    assert meta["engine_args"]["max_num_seqs"] == 8 and meta["sampling"]["max_tokens"] == 2
    assert meta["timings"]["reorder_s"] is not None and meta["output_tokens"] == 16 * 2
    assert meta["dataset_info"] is None and meta["dataset"] == "movies_small"
    before = {p.name: p.read_bytes() for p in (out / "cli").iterdir()}
    again = ggr_kv(*args, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "Initializing a V1 LLM engine" not in again.stderr + again.stdout  # refused first
    assert {p.name: p.read_bytes() for p in (out / "cli").iterdir()} == before
