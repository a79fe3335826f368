"""A sweep folder's bookkeeping: one lock, one state file, attempt folders per point.

- ``OUT/.sweep.lock``: ``flock``-ed by the sweep that works in ``OUT``; a second sweep
  there is refused while the first one's process lives (the kernel drops the lock of a
  dead process).
- ``OUT/sweep-state.json``: per point, its status (``todo``, ``running``, ``done``,
  ``failed``, ``interrupted``) and every attempt (run folder, status, error, times),
  rewritten atomically at each change. A point left ``running`` by a sweep that is gone
  reads as ``interrupted``.
- Attempt folders: a point's first attempt runs in ``OUT/<point_id>/``, later ones in
  ``OUT/<point_id>-try2/``, ``-try3/``...: a failed or interrupted attempt's folder is
  never reused, moved or deleted. A point is done when any attempt folder is complete.

Files are written whole with `ggr_kv.core.atomic.write_atomic` :
``summary.csv`` and the sweep log are never seen half-written.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Self

from ggr_kv.core.atomic import WriteError, write_atomic
from ggr_kv.core.jsonutil import dumps
from ggr_kv.run.rundir import run_dir_state

__all__ = ["POINT_STATUSES", "SweepLock", "SweepState", "attempt_dirs", "done_dir", "next_attempt"]

#: statuses a point can have in the state file
POINT_STATUSES = ("todo", "running", "done", "failed", "interrupted")
STATE_FILE = "sweep-state.json"
LOCK_FILE = ".sweep.lock"


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def attempt_dirs(out: Path, point_id: str) -> list[Path]:
    """The existing attempt folders of a point, in attempt order."""
    pat = re.compile(re.escape(point_id) + r"-try(\d+)$")
    found = [(1, out / point_id)] if (out / point_id).exists() else []
    if out.is_dir():
        for p in out.iterdir():
            m = pat.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def done_dir(out: Path, point_id: str) -> Path | None:
    """A complete attempt folder of the point (the latest), or None."""
    done = [p for p in attempt_dirs(out, point_id) if run_dir_state(p) == "complete"]
    return done[-1] if done else None


def next_attempt(out: Path, point_id: str) -> str:
    """The run id of the point's next attempt: ``point_id``, then ``point_id-try2``..."""
    if not (out / point_id).exists():
        return point_id
    k = 2
    while (out / f"{point_id}-try{k}").exists():
        k += 1
    return f"{point_id}-try{k}"


class SweepLock:
    """``OUT/.sweep.lock`` held for the life of one sweep (a context manager).

    The lock is an ``fcntl.flock`` on the file, taken atomically and released by the
    kernel when the process ends however it ends (no stale lock, no window between
    creating the file and writing who holds it); the file says who holds it.
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self.held = False
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse()
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # the holder removed it as we opened it
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()})
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, me.encode(), 0)
                os.fsync(fd)
            except OSError as e:  # a full disk: no empty lock left behind
                self.held = True
                self.__exit__()
                raise WriteError(self.path, e) from e
            self.held = True
            return self
        raise RuntimeError(f"{self.path}: could not take the sweep lock")

    def _refuse(self) -> None:
        try:
            other = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, json.JSONDecodeError):
            other = {}
        who = (f" (pid {other.get('pid')} on {other.get('host')}, since {other.get('started')})"
               if other.get("pid") else "")
        raise RuntimeError(
            f"{self.path.parent}: another sweep{who} is working in this folder; wait for it, "
            "or pass another --out"
        )

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            if self.held:
                self.path.unlink(missing_ok=True)  # before unlocking: a waiter re-checks
            os.close(self._fd)
            self._fd = None
        self.held = False


class SweepState:
    """``OUT/sweep-state.json``: each point's status and attempts (rewritten atomically)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / STATE_FILE
        self.points: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}: not valid JSON ({e}); move it away to "
                                 "rebuild the state from the run folders") from None
            self.points = dict(data.get("points") or {})

    def status(self, point_id: str) -> str:
        """The point's status: ``done`` when a complete attempt folder exists (whatever
        the file says), ``interrupted`` for a ``running`` left by a gone sweep or a point
        whose latest attempt folder was left by a process that is gone."""
        if done_dir(self.out, point_id) is not None:
            return "done"
        st = (self.points.get(point_id) or {}).get("status", "todo")
        tries = attempt_dirs(self.out, point_id)
        if tries and run_dir_state(tries[-1]) == "interrupted":  # killed, even before "running"
            return "interrupted"
        return "interrupted" if st == "running" else st

    def recover(self) -> list[str]:
        """Mark points a gone sweep left ``running`` as ``interrupted``; returns them."""
        gone = [p for p, d in self.points.items()
                if d.get("status") in ("running", "todo") and done_dir(self.out, p) is None
                and self.status(p) == "interrupted"]
        for p in gone:
            self.update(p, "interrupted", error="the sweep stopped while this point ran",
                        save=False)
        if gone:
            self.save()
        return gone

    def update(self, point_id: str, status: str, *, run_dir: Path | None = None,
               error: str | None = None, seconds: float | None = None,
               notebook: Path | None = None, save: bool = True) -> None:
        """Set a point's status; ``running`` opens an attempt, the others close the open one."""
        if status not in POINT_STATUSES:
            raise ValueError(f"unknown point status {status!r}; use one of {POINT_STATUSES}")
        d = self.points.setdefault(point_id, {"status": "todo", "attempts": []})
        attempts = d.setdefault("attempts", [])
        if status == "running":
            attempts.append({"run_dir": str(run_dir) if run_dir else None, "status": "running",
                             "started": _now()})
        elif attempts and attempts[-1].get("status") == "running":
            attempts[-1].update(status=status, finished=_now(), error=error, seconds=seconds)
        if notebook is not None and attempts:
            attempts[-1]["notebook"] = str(notebook)
        d["status"] = status
        d["error"] = error
        if run_dir is not None:
            d["run_dir"] = str(run_dir)
        if save:
            self.save()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, dumps({"updated": _now(), "points": self.points}, indent=2) + "\n")
