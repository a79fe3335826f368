"""One line saying why an engine did not start (or why vLLM refused a setting).

vLLM reports a bad setting as a pydantic ``ValidationError`` whose first line is only
"1 validation error for ModelConfig", and a failed engine start as ~100 log lines
ending in "Engine core initialization failed. See root cause above". `cause_line` keeps
the cause on one line: the validation message itself, or the root cause found in the
exception chain and in the engine's log text (saved in the run folder by the caller).
"""

from __future__ import annotations

import re

__all__ = ["MEMORY_WORDS", "cause_line"]

#: phrases that mark a failure for lack of memory (host or device)
MEMORY_WORDS = (
    "out of memory", "cannot allocate memory", "no available memory", "not enough memory",
    "insufficient memory", "memoryerror", "larger than the available kv cache",
    "kv cache is needed", "oom",
)
_VALIDATION = re.compile(r"^\d+ validation errors? for (\w+)")
_VAGUE = ("see root cause above", "engine core initialization failed",
          "engine core proc", "died unexpectedly")
_ERROR_LINE = re.compile(r"\b(\w*(Error|Exception)|error):\s*(.+)")


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


def _validation_line(exc: BaseException) -> str | None:
    m = _VALIDATION.match(str(exc).strip())
    if not m:
        return None
    errors = getattr(exc, "errors", None)
    msgs: list[str] = []
    if callable(errors):
        try:
            msgs = [_first_line(str(e.get("msg", ""))) for e in errors()]
        except Exception:  # noqa: BLE001 - not pydantic after all
            msgs = []
    if not msgs:  # the text form: the message is the line after the field name
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        msgs = [ln for ln in lines if not ln.startswith("For further information")][1:2]
    msg = " ".join(msgs[0].split()) if msgs else ""
    msg = re.sub(r"\s*\[type=.*$", "", msg)
    return f"{m.group(1)}: {msg}" if msg else None


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _from_log(log_text: str) -> str | None:
    """The root cause in an engine log: the last memory line, else the last error line."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if any(w in ln.lower() for w in MEMORY_WORDS) and not any(v in ln.lower() for v in _VAGUE):
            return ln
    for ln in reversed(lines):
        m = _ERROR_LINE.search(ln)
        if m and not any(v in ln.lower() for v in _VAGUE):
            return m.group(0)
    return None


def cause_line(exc: BaseException, log_text: str | None = None, log_path: str | None = None) -> str:
    """One line: what failed and why. ``log_text`` is the engine's log (the root cause of
    a vague "see root cause above" is looked up there); ``log_path`` is named in the line."""
    for e in _chain(exc):
        line = _validation_line(e)
        if line:
            return line
    first = _first_line(str(exc)) or type(exc).__name__
    vague = any(v in first.lower() for v in _VAGUE)
    cause = None
    for e in _chain(exc)[1:]:  # a concrete cause deeper in the chain
        text = _first_line(str(e))
        if text and not any(v in text.lower() for v in _VAGUE):
            cause = f"{type(e).__name__}: {text}"
            break
    if (vague or cause is None) and log_text:
        cause = _from_log(log_text) or cause
    parts = [first]
    if cause and cause not in first:
        parts.append(cause)
    text = " ".join(parts)
    if any(w in text.lower() for w in MEMORY_WORDS):
        text = f"engine start failed for lack of memory: {text}"
    if log_path:
        text += f" (vLLM log: {log_path})"
    return " ".join(text.split())
