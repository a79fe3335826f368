"""The environment of an in-process vLLM engine, set in one place.

Notebooks, the demo and scripts call `setup_vllm_env` before they start an engine,
instead of repeating ``os.environ`` lines:

- the engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: notebooks and
  papermill kernels cannot spawn vLLM's engine process safely);
- the CPU backend gets ``VLLM_CPU_KVCACHE_SPACE`` GiB of KV cache, as
  `ggr_kv.engine.memory.engine_memory` decides (the same rule as every engine start);
- no usage reporting, no Hugging Face downloads (``HF_HUB_OFFLINE``: dummy-weight model
  folders are made locally), no tokenizer thread pools fighting the engine for cores;
- ``quiet=True`` (the default) keeps vLLM's and transformers' INFO logs and their
  known-harmless warnings out of the output, so the results are what a reader sees;
  errors still show. ``quiet=False`` shows everything (a notebook's ``verbose``
  parameter).

Variables the user already set are kept (except the in-process switch, which a notebook
needs). Quieting works both before and after vLLM is imported.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass, field

__all__ = ["QUIET_ENV", "VLLM_ENV", "VllmEnv", "quiet_logs", "setup_vllm_env"]

#: what every in-process engine here needs (values the user set win)
VLLM_ENV: dict[str, str] = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

#: read at import by vLLM, transformers and torch's C++ logger: only errors
QUIET_ENV: dict[str, str] = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # e.g. "Warning: NUMA binding: Using MEMBIND policy"
}

#: library loggers quieted after import (their level, not their handlers)
_LOGGERS = ("vllm", "transformers", "torch", "huggingface_hub")


@dataclass(frozen=True)
class VllmEnv:
    """What `setup_vllm_env` did.

    Attributes
    ----------
    set : variables it set, name -> value.
    kept : variables already set, left as they were, name -> value.
    quiet : whether library logs were quieted.
    """

    set: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    quiet: bool = True


def quiet_logs(quiet: bool = True) -> None:
    """Show only errors from vLLM, transformers and torch (``quiet=False``: everything).

    Sets the library loggers' levels (works after their import) and ignores the Python
    warnings vLLM's CPU build raises on every start (``FutureWarning`` /
    ``DeprecationWarning`` from its own modules).
    """
    level = logging.ERROR if quiet else logging.NOTSET
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(level)
    if "vllm.logger" in sys.modules or "vllm" in sys.modules:
        # vLLM's own handler filters by its configured level too
        for h in logging.getLogger("vllm").handlers:
            h.setLevel(logging.ERROR if quiet else logging.INFO)
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error() if quiet else tlog.set_verbosity_warning()
    action = "ignore" if quiet else "default"
    for cat in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings(action, category=cat, module=r"(vllm|torch|transformers)(\.|$)")


def setup_vllm_env(
    *,
    in_process: bool = True,
    kv_cache_gib: float | None = None,
    quiet: bool = True,
) -> VllmEnv:
    """Set the environment for a vLLM engine in this process; call before starting one.

    Parameters
    ----------
    in_process : run the engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``;
        always set, overriding the environment, when True).
    kv_cache_gib : GiB of KV cache (``VLLM_CPU_KVCACHE_SPACE`` on the CPU backend,
        ``kv_cache_memory_bytes`` on GPU); None: the environment's value, else
        `ggr_kv.engine.memory.engine_memory`'s default (2 GiB, less if memory is short).
    quiet : show only errors from vLLM, transformers and torch (`quiet_logs`);
        False shows their full logs.

    Returns
    -------
    VllmEnv: the variables set and those kept.
    """
    wanted = dict(VLLM_ENV)
    forced: dict[str, str] = {}
    if in_process:
        forced["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if quiet:
        wanted.update(QUIET_ENV)
    else:
        forced.update({"VLLM_LOGGING_LEVEL": "INFO", "TRANSFORMERS_VERBOSITY": "info"})
    from ggr_kv.engine.memory import ENV_VAR, engine_memory

    done, kept = {}, {}
    if kv_cache_gib is not None and kv_cache_gib <= 0:
        raise ValueError(f"kv_cache_gib must be positive, got {kv_cache_gib}")
    memory = engine_memory(kv_cache_gib)
    if memory.device == "cpu":
        (kept if memory.source == "env" else done)[ENV_VAR] = os.environ[ENV_VAR]
    for key, value in wanted.items():
        if key in forced:
            continue
        if key in os.environ:
            kept[key] = os.environ[key]
        else:
            os.environ[key] = done[key] = value
    for key, value in forced.items():
        os.environ[key] = done[key] = value
    quiet_logs(quiet)
    return VllmEnv(done, kept, quiet)
