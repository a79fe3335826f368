"""The engine settings the simulator replays: `SchedulerConfig`.

One frozen dataclass holds every vLLM setting that changes the schedule, checked once
(`__post_init__`), so `ggr_kv.simulate.simulate`, `simulate_totals` and the step loop
(`ggr_kv.simulate.schedule`) share one set of names and one set of error messages.
`SchedulerConfig.from_engine` is the one way from an engine's facts (a live engine, a
server, a run.json) to these settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ENGINE_FACT_NAMES", "SchedulerConfig"]

#: engine-fact name (``ggr_kv.engine.config.engine_facts``, run.json) -> setting name;
#: the KV pool is ``num_kv_blocks`` in facts, vLLM's ``num_gpu_blocks`` here ``num_blocks``
ENGINE_FACT_NAMES: dict[str, str] = {
    "block_size": "block_size",
    "num_kv_blocks": "num_blocks",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "enable_prefix_caching": "enable_prefix_caching",
    "long_prefill_token_threshold": "long_prefill_token_threshold",
    "enable_chunked_prefill": "enable_chunked_prefill",
}


@dataclass(frozen=True)
class SchedulerConfig:
    """vLLM V1 scheduler and KV-pool settings, with vLLM's names and defaults.

    Attributes
    ----------
    block_size : tokens per KV block (16 on GPU, 128 on the CPU backend).
    num_blocks : KV blocks in the pool as vLLM counts them (``num_gpu_blocks``); one is
        vLLM's null block, so ``num_blocks - 1`` hold tokens.
    max_num_seqs : most requests running at once.
    max_num_batched_tokens : per-step token budget (tokens).
    enable_prefix_caching : False replays the engine with the prefix cache off.
    long_prefill_token_threshold : per-step cap of one request's prefill (tokens), 0 = off.
    enable_chunked_prefill : False: a prompt that does not fit the step's budget waits.
    scheduler_reserve_full_isl : admit a request only if its whole prompt fits the pool.
    watermark : fraction (0-1) of the pool kept free when admitting next to running ones.
    """

    block_size: int
    num_blocks: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    long_prefill_token_threshold: int = 0
    enable_chunked_prefill: bool = True
    scheduler_reserve_full_isl: bool = True
    watermark: float = 0.0

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1 token, got {self.block_size}")
        if self.num_blocks < 2:
            raise ValueError(
                f"num_blocks must be >= 2 (one is vLLM's null block), got {self.num_blocks}"
            )
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        if self.long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be >= 0 tokens")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"watermark must be a fraction in [0, 1), got {self.watermark}")

    @classmethod
    def of(cls, **settings: Any) -> SchedulerConfig:
        """Build from keyword arguments, converted to the field types (numpy ints too)."""
        ints = ("block_size", "num_blocks", "max_num_seqs", "max_num_batched_tokens",
                "long_prefill_token_threshold")
        bools = ("enable_prefix_caching", "enable_chunked_prefill", "scheduler_reserve_full_isl")
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"unknown scheduler setting(s) {unknown}; known: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        conv = {
            k: int(v) if k in ints else bool(v) if k in bools else float(v)
            for k, v in settings.items()
        }
        return cls(**conv)

    @classmethod
    def from_engine(cls, facts: Mapping[str, Any], **overrides: Any) -> SchedulerConfig:
        """The settings an engine ran with, from its facts: `engine_facts(llm)`,
        `server_facts(url)` or a run.json (its top-level keys; ``engine_args`` fills the
        ones missing there). Facts it does not report keep vLLM's defaults; ``overrides``
        (setting names) win over the facts.

        Raises
        ------
        ValueError
            the facts lack ``block_size`` or ``num_kv_blocks`` (named in the message).
        """
        merged = {**(facts.get("engine_args") or {}), **facts}
        settings = {name: merged[fact] for fact, name in ENGINE_FACT_NAMES.items()
                    if merged.get(fact) is not None}
        settings.update(overrides)
        missing = [f for f, n in ENGINE_FACT_NAMES.items()
                   if n in ("block_size", "num_blocks") and settings.get(n) is None]
        if missing:
            raise ValueError(f"the engine does not report {missing}")
        return cls.of(**settings)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (JSON-ready)."""
        return asdict(self)

    @property
    def usable_blocks(self) -> int:
        """Blocks that hold tokens: ``num_blocks - 1`` (block 0 is the null block)."""
        return self.num_blocks - 1
