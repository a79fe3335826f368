"""Local model folders for dummy-weight runs of real architectures, built offline.

``make_model_dir("llama-3.1-8b", "models/llama-3.1-8b")`` writes a ``config.json`` with
that architecture's shapes and a ``tokenizer.json`` built from the real Llama-3
vocabulary that the ``quicktok-v1`` package ships. vLLM runs it with
``load_format="dummy"`` (random weights): outputs are gibberish, but token counts,
prefill work, KV-cache footprint and prefix-cache behaviour are those of the real model.

Users with real weights pass a local path or a Hugging Face id to the runner instead;
`resolve_model` leaves those untouched.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
from pathlib import Path

from ggr_kv.core.atomic import write_atomic
from ggr_kv.core.paths import cache_root

__all__ = [
    "SHAPES",
    "build_tokenizer_json",
    "cached_tokenizer_json",
    "folder_chat_template",
    "make_model_dir",
    "model_config",
    "resolve_model",
]

_LLAMA3_BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "vocab_size": 128256,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "pretraining_tp": 1,
}

#: architecture shapes (HF config fields) by name; all use the Llama-3 vocabulary
SHAPES: dict[str, dict] = {
    # 2 layers, tiny hidden size: starts in seconds on a CPU, for tests (prefill is nearly
    # free here: job times do not show the prefix cache's effect; see demo-llama)
    "tiny-llama": {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    # 8 layers, hidden 512 (~30M parameters outside the embeddings): prefill costs ~25x
    # the tiny shape per token, so on two CPU cores a job's time follows its uncached
    # prompt tokens, as on a GPU with a real model (benchmarks/bench_demo_shape.py);
    # the shape of `ggr-kv demo`. Engine start ~30-60 s (eager).
    "demo-llama": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    "llama-3.2-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    },
    "llama-3.1-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    },
}

_LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)


def build_tokenizer_json(path: str | Path, encoding: str = "llama3") -> Path:
    """Write a Hugging Face ``tokenizer.json`` from quicktok's bundled BPE ranks.

    The merges are derived from the ranks with transformers' ``TikTokenConverter`` (the
    converter HF uses for tiktoken vocabularies); Llama-3's BOS is prepended by the
    post-processor, as in Meta's own tokenizer.json.
    """
    if encoding != "llama3":
        raise ValueError(f"only the 'llama3' vocabulary is supported here, got {encoding!r}")
    import quicktok
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from ggr_kv.core.tokenizer import LLAMA3_PATTERN

    enc = quicktok.get_encoding(encoding)
    n_regular = enc.max_token_value + 1 - len(enc.special_tokens_set)
    ranks = {enc.decode_single_token_bytes(i): i for i in range(n_regular)}
    specials = [
        enc.decode_single_token_bytes(i).decode()
        for i in range(n_regular, enc.max_token_value + 1)
    ]

    class _Ranks(TikTokenConverter):
        def load_tiktoken_bpe(self, _url):  # ranks come from quicktok, not a file
            return ranks

    tk = _Ranks(vocab_file="quicktok", pattern=LLAMA3_PATTERN, extra_special_tokens=specials)
    tok = tk.converted()
    bos = "<|begin_of_text|>"
    bos_id = n_regular + specials.index(bos)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            ),
        ]
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out


def cached_tokenizer_json(encoding: str = "llama3") -> Path:
    """`build_tokenizer_json`'s file, built once into ``tokenizers/`` of the cache
    (`ggr_kv.core.paths.cache_root`) and reused: a build takes ~10 s, a copy well under one.

    The file name hashes what decides its bytes (the versions of quicktok, tokenizers and
    transformers, and the source of `build_tokenizer_json`), so an upgrade builds anew.
    """
    from ggr_kv.core.tokenizer import LLAMA3_PATTERN

    parts = [encoding, LLAMA3_PATTERN, inspect.getsource(build_tokenizer_json)]
    for dist in ("quicktok-v1", "tokenizers", "transformers"):
        try:
            parts.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            parts.append("-")
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    path = cache_root() / "tokenizers" / f"{encoding}-{key}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: build_tokenizer_json(tmp, encoding))
    return path


def folder_chat_template(folder: str | Path) -> str | None:
    """The chat template of a model folder `make_model_dir` wrote (its
    ``tokenizer_config.json``'s); None for any other folder.

    Passed to ``vllm.LLM(chat_template=...)`` it is the template vLLM would pick anyway
    (these folders have no processor), but vLLM then skips looking for a processor's
    template, which loads the 128k-token tokenizer a second time (~3-4 s of each engine
    start on a CPU).
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tok_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if "_ggr_kv_shape" not in config:
        return None
    template = tok_config.get("chat_template")
    return template if isinstance(template, str) else None


def make_model_dir(shape: str, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``config.json``, ``tokenizer.json``, ``tokenizer_config.json`` and
    ``generation_config.json`` for a dummy-weight run of ``shape`` (see `SHAPES`).

    An existing complete folder is reused (an outdated ``config.json`` is rewritten);
    ``overwrite=True`` writes it again. The tokenizer is copied from
    `cached_tokenizer_json` (built there once, ~10 s).
    """
    out = Path(out_dir)
    config = model_config(shape)
    files = ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]
    if not overwrite and all((out / f).exists() for f in files):
        existing = json.loads((out / "config.json").read_text())
        if existing.get("_ggr_kv_shape") != shape:
            raise FileExistsError(
                f"{out} holds model shape {existing.get('_ggr_kv_shape')!r}, not {shape!r}"
            )
        if existing != config:  # e.g. a folder made before transformers_version was written
            write_atomic(out / "config.json", json.dumps(config, indent=2))
        return out
    _check_ours(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "tokenizer.json", cached_tokenizer_json().read_bytes())
    write_atomic(
        out / "tokenizer_config.json",
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "add_bos_token": True,
                "model_max_length": config["max_position_embeddings"],
                "clean_up_tokenization_spaces": True,
                "chat_template": _LLAMA3_CHAT_TEMPLATE,
            },
            indent=2,
        ),
    )
    write_atomic(
        out / "generation_config.json",
        json.dumps({"bos_token_id": 128000, "eos_token_id": config["eos_token_id"]}, indent=2),
    )
    write_atomic(out / "config.json", json.dumps(config, indent=2))
    return out


def _check_ours(out: Path) -> None:
    """Refuse to write into an existing folder that this function did not make (one with
    files but no dummy-weight ``config.json`` of ours): nothing of a caller's is replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    try:
        ours = "_ggr_kv_shape" in json.loads((out / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours and any(out.iterdir()):
        raise FileExistsError(
            f"{out}: a folder with files that make-model did not write; pick an empty or new "
            "--out (nothing was changed)"
        )


def model_config(shape: str) -> dict:
    """The ``config.json`` of a dummy-weight folder of ``shape`` (see `SHAPES`).

    It records ``transformers_version`` as ``save_pretrained`` does. Without that key,
    transformers >= 5 takes any local tokenizer folder for an old Mistral one and warns
    "incorrect regex pattern ... This will lead to incorrect tokenization" on every
    load; our tokenizer.json carries Llama-3's own pattern (`build_tokenizer_json`, ids
    equal vLLM's: tests/test_models.py), so that warning was wrong for it.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; available: {sorted(SHAPES)}")
    try:  # the installed version without importing transformers (3 s here)
        tf_version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vLLM brings it
        tf_version = "5.0.0"
    return {**_LLAMA3_BASE, **SHAPES[shape], "transformers_version": tf_version,
            "_ggr_kv_shape": shape}


def resolve_model(model: str, models_dir: str | Path = "models") -> tuple[str, bool]:
    """Map a model argument to ``(path_or_id, dummy_weights)``.

    A name in `SHAPES` becomes a dummy-weight folder under ``models_dir`` (made if
    missing); anything else (a local folder with ``config.json``, or a Hugging Face
    ``org/name`` id) is returned unchanged with ``dummy_weights=False``.

    Raises
    ------
    ValueError
        naming ``model`` and the shape names, before any engine starts, when it is none of
        these: a local path without ``config.json``; a name that is not an ``org/name``
        id; or a Hugging Face id that is not in the local cache while ``HF_HUB_OFFLINE``
        forbids downloads.
    """
    if model in SHAPES:
        return str(make_model_dir(model, Path(models_dir) / model)), True
    problem = _model_problem(str(model))
    if problem:
        raise ValueError(
            f"--model {model}: {problem}. Use a shape name for dummy weights "
            f"({', '.join(SHAPES)}), a local model folder, or a Hugging Face org/name id"
        )
    return model, False


def _model_problem(model: str) -> str | None:
    """Why ``model`` cannot be loaded, found without starting anything; None if it can."""
    path = Path(model).expanduser()
    if path.exists():
        return None if (path / "config.json").is_file() else "the folder has no config.json"
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        return "no such folder, and not a Hugging Face org/name id"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline:
        return None  # vLLM downloads it
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - comes with vLLM and transformers
        return None
    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return None
    return "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloads"
