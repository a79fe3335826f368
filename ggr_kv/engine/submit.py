"""How prompts go to an offline engine: as token ids (the default) or as text.

Given text, ``LLM.generate`` tokenizes every prompt inside the call, one by one on the
host, while the engine waits for them: on an H200 with an 8B model that feed cost
~3.3 µs per prompt token + ~0.4 ms per request, and it, not the GPU, set the time of
highly cached jobs (``results/h200/jobtime-2/``). `encode_texts` tokenizes them once,
before the timed window, with the engine's own tokenizer and its own settings (special
tokens added, as vLLM adds them to a text prompt), so the engine receives the very
token ids it would have made itself; `engine_inputs` builds what ``generate`` takes,
and `submit_inputs` does both as a ``submit`` mode says.

- ``"ids"``: ``{"prompt_token_ids": [...]}`` per prompt; the tokenizing seconds are
  measured apart (``tokenize_s``), outside the job time.
- ``"text"``: the prompt strings, tokenized by vLLM inside the job time (as a user who
  hands vLLM text sees it).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["DEFAULT_SUBMIT", "SUBMIT_MODES", "check_submit", "encode_texts", "engine_inputs",
           "submit_inputs"]

#: ways of handing prompts to ``LLM.generate``
SUBMIT_MODES: tuple[str, ...] = ("ids", "text")
#: the package's default: token ids, tokenized before the job's timer starts
DEFAULT_SUBMIT = "ids"


def check_submit(submit: str) -> str:
    """``submit`` if it is one of `SUBMIT_MODES`, else ValueError."""
    if submit not in SUBMIT_MODES:
        raise ValueError(f"submit must be one of {SUBMIT_MODES}, got {submit!r}")
    return submit


def encode_texts(llm: Any, texts: list[str]) -> tuple[list[list[int]], float]:
    """Token ids of every text under ``llm``'s tokenizer, as vLLM tokenizes a text
    prompt (special tokens added), and the seconds it took (one batched call)."""
    tok = llm.get_tokenizer()
    t0 = time.perf_counter()
    if not texts:
        return [], time.perf_counter() - t0
    try:
        ids = tok(list(texts), add_special_tokens=True)["input_ids"]
    except TypeError:  # a tokenizer without batched calls: one text at a time
        ids = [tok.encode(t, add_special_tokens=True) for t in texts]
    ids = [x if isinstance(x, list) else list(x) for x in ids]
    return ids, time.perf_counter() - t0


def engine_inputs(texts: list[str], ids: list[list[int]] | None,
                  salt: str | None = None) -> list[Any]:
    """What ``LLM.generate`` takes: token-id prompts when ``ids`` is given, else the
    texts; with ``salt``, each request its own ``cache_salt`` (nothing shared)."""
    if ids is not None:
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} token-id prompts for {len(texts)} texts")
        if salt is None:
            return [{"prompt_token_ids": x} for x in ids]
        return [{"prompt_token_ids": x, "cache_salt": f"{salt}-{i}"} for i, x in enumerate(ids)]
    if salt is None:
        return list(texts)
    return [{"prompt": p, "cache_salt": f"{salt}-{i}"} for i, p in enumerate(texts)]


def submit_inputs(llm: Any, texts: list[str], submit: str = DEFAULT_SUBMIT,
                  salt: str | None = None) -> tuple[list[Any], float]:
    """What ``LLM.generate`` takes for ``texts`` as ``submit`` says (`engine_inputs`), and
    the seconds tokenizing took (`encode_texts`; 0 for ``"text"``)."""
    ids, secs = encode_texts(llm, texts) if check_submit(submit) == "ids" else (None, 0.0)
    return engine_inputs(texts, ids, salt), secs
