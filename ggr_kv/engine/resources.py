"""Process CPU/RSS (psutil) and GPU (NVML) sampling in a background thread.

`ResourceSampler` records, every ``interval_s`` seconds, the CPU percent and resident
memory of a process and its children (vLLM's V1 engine core usually runs in a child
process) and, when an NVIDIA GPU is present, its utilization, memory in use, power draw
and SM clock through NVML (``nvidia-ml-py``). NVML is initialized when sampling starts,
never at import. Without a GPU the GPU columns are NaN and `ResourceSampler.gpu_reason`
says why; nothing is made up.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["RESOURCE_COLUMNS", "GpuProbe", "ResourceSampler", "probe_gpus"]

#: columns of `ResourceSampler.samples` besides ``t_s``
RESOURCE_COLUMNS: tuple[str, ...] = (
    "cpu_percent",  # summed over the process tree; 100 = one core busy
    "rss_bytes",  # resident memory summed over the process tree, bytes
    "gpu_util",  # GPU utilization, 0-100 %, mean over the visible GPUs
    "gpu_mem_bytes",  # device memory in use, bytes, summed over the visible GPUs
    "gpu_power_w",  # power draw, watts, summed over the visible GPUs
    "gpu_sm_clock_mhz",  # SM clock, MHz, mean over the visible GPUs
)


@dataclass
class GpuProbe:
    """NVML handles of the GPUs this process may use, or why there are none.

    Attributes
    ----------
    handles : NVML device handles (empty without a GPU).
    names : device names, e.g. ``["NVIDIA H200"]``.
    indices : NVML indices of those devices.
    reason : why no GPU is reported (``None`` when at least one was found).
    """

    handles: list[Any] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    reason: str | None = None
    _nvml: Any = field(default=None, repr=False)

    def shutdown(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # the library may be half gone at exit
                self._nvml.nvmlShutdown()
            self._nvml = None


def _visible(nvml: Any, count: int) -> list[tuple[int, Any]]:
    """Devices named by ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs), else all."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None or not spec.strip():
        return (
            [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)] if spec is None else []
        )
    out: list[tuple[int, Any]] = []
    for tok in (t.strip() for t in spec.split(",")):
        if tok.lstrip("-").isdigit():
            i = int(tok)
            if i < 0 or i >= count:
                break  # CUDA stops at the first invalid entry
            out.append((i, nvml.nvmlDeviceGetHandleByIndex(i)))
        else:
            h = nvml.nvmlDeviceGetHandleByUUID(tok)
            out.append((int(nvml.nvmlDeviceGetIndex(h)), h))
    return out


#: CPU flags (``/proc/cpuinfo``) of native bf16 matrix math: x86 AVX512-BF16 / AMX, Arm BF16
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (False where ``cpuinfo`` cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return bool(BF16_FLAGS & set(value.split()))
    except OSError:
        pass
    return False


def probe_gpus() -> GpuProbe:
    """Initialize NVML and find the visible NVIDIA GPUs.

    Returns a `GpuProbe`; on a machine without an NVIDIA driver its ``reason`` holds the
    NVML error (e.g. ``"NVML Shared Library Not Found"``). Call ``.shutdown()`` when done.
    """
    try:
        import pynvml
    except ImportError as e:  # nvidia-ml-py is a dependency, but be explicit
        return GpuProbe(reason=f"nvidia-ml-py is not installed ({e})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return GpuProbe(reason=f"NVML unavailable: {e}")
    probe = GpuProbe(_nvml=pynvml)
    try:
        devs = _visible(pynvml, pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError as e:
        probe.shutdown()
        return GpuProbe(reason=f"NVML could not list devices: {e}")
    if not devs:
        probe.shutdown()
        return GpuProbe(reason="NVML found no visible GPU (CUDA_VISIBLE_DEVICES hides them all)")
    for i, h in devs:
        name = pynvml.nvmlDeviceGetName(h)
        probe.names.append(name.decode() if isinstance(name, bytes) else str(name))
        probe.indices.append(i)
        probe.handles.append(h)
    return probe


def _gpu_reading(nvml: Any, handles: list[Any]) -> tuple[float, float, float, float]:
    """(util %, mem bytes, power W, SM MHz) over ``handles``; NaN where unsupported."""
    util, mem, power, clock = [], [], [], []
    for h in handles:
        for out, fn in (
            (util, lambda h=h: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
            (mem, lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h).used),
            (power, lambda h=h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),  # mW -> W
            (clock, lambda h=h: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
        ):
            try:
                out.append(float(fn()))
            except nvml.NVMLError:
                out.append(math.nan)

    def agg(xs: list[float], how: str) -> float:
        a = np.asarray(xs, dtype=float)
        if not len(a) or np.isnan(a).all():
            return math.nan
        return float(np.nanmean(a) if how == "mean" else np.nansum(a))

    return agg(util, "mean"), agg(mem, "sum"), agg(power, "sum"), agg(clock, "mean")


class ResourceSampler:
    """Sample CPU %, RSS and GPU counters every ``interval_s`` seconds in a thread.

    Parameters
    ----------
    interval_s : seconds between samples.
    pid : process to watch (default: this one); its children are included when
        ``include_children`` (vLLM's engine core is a child process by default).
    gpu : read NVIDIA GPUs through NVML when present.
    t0 : ``time.monotonic()`` value that ``t_s`` counts from (default: `start`).
    """

    _CHILD_REFRESH_S = 1.0  # how often the child-process list is rescanned

    def __init__(
        self,
        interval_s: float = 0.1,
        *,
        pid: int | None = None,
        include_children: bool = True,
        gpu: bool = True,
        t0: float | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self.pid = os.getpid() if pid is None else int(pid)
        self.include_children = include_children
        self.gpu = gpu
        self._t0 = t0
        self._rows: list[tuple[float, ...]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe: GpuProbe | None = None
        self._procs: dict[int, Any] = {}
        self._fresh: set[int] = set()
        self._last_child_scan = -math.inf
        self.gpu_names: list[str] = []
        self.gpu_reason: str | None = "GPU sampling off (gpu=False)" if not gpu else None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> ResourceSampler:
        """Initialize psutil/NVML, take a first sample and start the thread."""
        import psutil

        if self._thread is not None:
            raise RuntimeError("ResourceSampler already started")
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess as e:
            raise ValueError(f"no process with pid {self.pid} to sample") from e
        self._procs = {self.pid: root}
        if self.gpu:
            self._probe = probe_gpus()
            self.gpu_names = list(self._probe.names)
            self.gpu_reason = self._probe.reason
        if self._t0 is None:
            self._t0 = time.monotonic()
        self._scan_children(force=True)
        self._fresh.clear()  # everything found so far is primed now, one interval early
        try:
            root.cpu_percent(None)  # prime: the first call returns a meaningless 0.0
        except psutil.Error:
            pass
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ggr-kv-resources", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample, stop the thread and release NVML. Idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        # a last sample covers the tail of the run, unless one was just taken: CPU % over
        # a few milliseconds is dominated by clock-tick rounding
        if not self._rows or time.monotonic() - self._t0 - self._rows[-1][0] >= self.interval_s / 2:
            self._sample()
        if self._probe is not None:
            self._probe.shutdown()
            self._probe.handles = []

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- sampling ----------------------------------------------------------------------
    def _scan_children(self, force: bool = False) -> None:
        import psutil

        now = time.monotonic()
        if not self.include_children or (
            not force and now - self._last_child_scan < self._CHILD_REFRESH_S
        ):
            return
        self._last_child_scan = now
        root = self._procs.get(self.pid)
        if root is None:
            return
        try:
            kids = root.children(recursive=True)
        except psutil.Error:
            return
        alive = {self.pid} | {k.pid for k in kids}
        for k in kids:
            if k.pid not in self._procs:
                self._procs[k.pid] = k
                self._fresh.add(k.pid)  # primed now; read from the next sample on
                try:
                    k.cpu_percent(None)
                except psutil.Error:
                    pass
        for pid in list(self._procs):
            if pid not in alive:
                del self._procs[pid]

    def _sample(self) -> None:
        import psutil

        self._scan_children()
        cpu = 0.0
        rss = 0
        n_ok = 0
        for pid, p in list(self._procs.items()):
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    if pid in self._fresh:  # a CPU % over a few microseconds is noise
                        self._fresh.discard(pid)
                    else:
                        cpu += p.cpu_percent(None)
                n_ok += 1
            except psutil.Error:
                self._procs.pop(pid, None)
        t = time.monotonic() - (self._t0 or 0.0)
        if n_ok == 0:
            cpu_v, rss_v = math.nan, math.nan
        else:
            cpu_v, rss_v = cpu, float(rss)
        if self._probe is not None and self._probe.handles:
            g = _gpu_reading(self._probe._nvml, self._probe.handles)
        else:
            g = (math.nan, math.nan, math.nan, math.nan)
        self._rows.append((t, cpu_v, rss_v, *g))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    # -- results -----------------------------------------------------------------------
    def samples(self) -> pd.DataFrame:
        """One row per sample: ``t_s`` (seconds from t0) and `RESOURCE_COLUMNS`."""
        rows = list(self._rows)
        arr = np.asarray(rows, dtype=float).reshape(len(rows), 1 + len(RESOURCE_COLUMNS))
        return pd.DataFrame(arr, columns=["t_s", *RESOURCE_COLUMNS])

    def summary(self) -> dict[str, Any]:
        """Means and peaks of the samples, the GPU names or why there is no GPU."""
        df = self.samples()

        def stat(col: str, how: str) -> float | None:
            s = df[col].dropna()
            if s.empty:
                return None
            return float(getattr(s, how)())

        return {
            "interval_s": self.interval_s,
            "n_samples": len(df),
            "pid": self.pid,
            "include_children": self.include_children,
            "cpu_percent_mean": stat("cpu_percent", "mean"),
            "cpu_percent_max": stat("cpu_percent", "max"),
            "rss_bytes_max": stat("rss_bytes", "max"),
            "gpu": list(self.gpu_names) or None,
            "gpu_reason": self.gpu_reason,
            "gpu_util_mean": stat("gpu_util", "mean"),
            "gpu_util_max": stat("gpu_util", "max"),
            "gpu_mem_bytes_max": stat("gpu_mem_bytes", "max"),
            "gpu_power_w_mean": stat("gpu_power_w", "mean"),
            "gpu_sm_clock_mhz_mean": stat("gpu_sm_clock_mhz", "mean"),
        }
