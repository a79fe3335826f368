"""Fixtures every test module shares.

- The vLLM environment (CPU KV cache size, no usage reporting, offline hub, engine in this
  process) is set once per session by `vllm_env`, before any engine starts.
- `tiny_dir`: the dummy-weight 2-layer Llama folder with the real Llama-3 tokenizer.
- `shared_dataset(name)`: a real sample from the GGR paper's artifact. They live in
  ``../shared/datasets`` beside a checkout; point ``GGR_KV_SHARED_DATASETS`` at another
  folder to use them elsewhere. Tests that need a missing file skip, and the session's
  summary says how many did and why: no silent skips.
- `tiny_comparison`: one small comparison of orderings run on the CPU engine, shared by the
  plot and report tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: environment variable naming the folder of the paper's real samples
SHARED_ENV = "GGR_KV_SHARED_DATASETS"
#: what every vLLM-starting test needs (CPU engine; set once per session)
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
}
#: orderings of the shared tiny comparison
COMPARISON_ORDERINGS = ("no_cache", "original", "ggr")
_missing_shared: set[str] = set()


def shared_datasets_dir() -> Path:
    """The folder of the real samples: ``$GGR_KV_SHARED_DATASETS``, else ``../shared/datasets``."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else ROOT.parent / "shared" / "datasets"


def shared_path(name: str, required: bool = True) -> Path | None:
    """Path of a real sample; when it is missing, skip the calling test (or return None
    if not ``required``). Missing files are listed in the session summary."""
    path = shared_datasets_dir() / name
    if not path.is_file():
        _missing_shared.add(str(path))
        if not required:
            return None
        pytest.skip(f"real sample {path} not found; set {SHARED_ENV} to the folder holding it")
    return path


@pytest.fixture(scope="session", autouse=True)
def vllm_env():
    """Set `VLLM_ENV` for the whole session (values already in the environment win)."""
    mp = pytest.MonkeyPatch()
    for key, value in VLLM_ENV.items():
        if key == "VLLM_ENABLE_V1_MULTIPROCESSING" or key not in os.environ:
            mp.setenv(key, value)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def shared_dataset():
    """``shared_dataset("movies_small.csv")`` -> Path, or skip (see `shared_path`)."""
    return shared_path


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The dummy-weight tiny Llama's model folder (made under ``models/`` when missing)."""
    from ggr_kv.engine.models import resolve_model

    path, dummy = resolve_model("tiny-llama", ROOT / "models")
    assert dummy
    return Path(path)


@pytest.fixture(scope="session")
def tiny_comparison(tmp_path_factory, vllm_env) -> Path:
    """Run folders of `COMPARISON_ORDERINGS` on 12 movie rows (CPU engine), made once."""
    pytest.importorskip("vllm")
    from ggr_kv.datasets import load_dataset
    from ggr_kv.engine.config import EngineConfig
    from ggr_kv.run import run_orderings

    folder = tmp_path_factory.mktemp("tiny-comparison")
    ds = load_dataset("movies", n=12, sample="head")
    run_orderings(
        ds,
        methods=COMPARISON_ORDERINGS,
        query=ds.query("filter"),
        engine=EngineConfig(max_num_seqs=4),
        sampling={"max_tokens": 4},
        out_dir=folder,
        progress=False,
    )
    return folder


def pytest_terminal_summary(terminalreporter):
    if _missing_shared:
        terminalreporter.write_sep(
            "!", f"{len(_missing_shared)} real sample file(s) missing: tests that need them "
            f"were SKIPPED; set {SHARED_ENV} (see README)", yellow=True, bold=True,
        )
        for p in sorted(_missing_shared):
            terminalreporter.write_line(f"  missing: {p}")
