"""Model folders for dummy-weight runs: the tokenizer vLLM loads and the architecture shapes.

Token counts, KV-cache footprints and prefix hits of a dummy-weight run are only those of
the real model if vLLM tokenizes exactly as Llama 3 does and the config has the real
shapes; these tests hold both to the published numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import shared_path

from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.engine.models import SHAPES, make_model_dir

ROOT = Path(__file__).resolve().parents[1]

CORPUS = [
    "",
    "a",
    "Hello, world!",
    "  leading and trailing spaces   ",
    "tabs\tand\t\tnew\nlines\n\n\nand\r\nCRLF",
    "runs of spaces:          end",
    "numbers 1 12 123 1234 12345 3.14159 -42 1e-9 0x1F 1,000,000",
    "ünïcödé — “quotes” ‘single’ … naïve café façade",
    "中文字符和日本語のテキスト、한국어",
    "emoji 😀👍🏽🇫🇷 and ZWJ 👨‍👩‍👧",
    "Ελληνικά и русский текст",
    '{"movietitle": "Up", "score": 8.5, "tags": ["a", "b"], "nested": {"k": null}}',
    '{"a":"b\\n\\"quoted\\"","u":"\\u00e9"}',
    "I'm sure they'll've done it; we'd won't",
    "code: def f(x):\n    return x ** 2  # comment",
    "URL https://example.org/path?q=1&r=2#frag",
    "repeated " * 50,
]


SPECIAL = "a cell quoting <|eot_id|> and <|begin_of_text|> from a chat log"


def _dataset_prompts(n: int = 20) -> list[str]:
    path = shared_path("movies_small.csv", required=False)
    if path is None:  # listed in the session summary
        return []
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import build_prompts
    from ggr_kv.core.table import Table, load_table

    t = load_table(path)
    t = Table.from_frame(t.to_frame().head(n), str(path))
    return build_prompts(t, ReorderPlan.identity(t), "Is the review positive?")


@pytest.mark.slow
def test_model_folder_tokenizer_matches_quicktok_llama3(tiny_dir):
    texts = CORPUS + _dataset_prompts()
    folder = load_tokenizer(tiny_dir)
    quick = load_tokenizer("llama3")
    for add in (True, False):
        ft, fo = folder.encode_batch(texts, add_special_tokens=add)
        qt, qo = quick.encode_batch(texts, add_special_tokens=add)
        for i, text in enumerate(texts):
            assert ft[fo[i] : fo[i + 1]].tolist() == qt[qo[i] : qo[i + 1]].tolist(), text
    assert folder.encode("Hi")[0] == 128000  # <|begin_of_text|>


@pytest.mark.slow
def test_quicktok_llama3_matches_vllm_on_special_token_text(tiny_dir):
    assert load_tokenizer("llama3").encode(SPECIAL) == load_tokenizer(tiny_dir).encode(SPECIAL)


@pytest.mark.slow
def test_model_folder_tokenizer_matches_vllm(tiny_dir):
    pytest.importorskip("vllm")
    from vllm.tokenizers import get_tokenizer

    vtok = get_tokenizer(str(tiny_dir))
    ours = load_tokenizer(tiny_dir)
    texts = CORPUS + _dataset_prompts()
    toks, offs = ours.encode_batch(texts + [SPECIAL])  # with BOS, as vLLM encodes prompts
    for i, text in enumerate(texts + [SPECIAL]):
        assert toks[offs[i] : offs[i + 1]].tolist() == vtok.encode(text), text
    assert vtok.decode(vtok.encode(CORPUS[7], add_special_tokens=False)) == CORPUS[7]


def _params(c: dict) -> int:
    """Parameter count of a Llama config (embeddings, attention, MLP, norms, head)."""
    h, v, i = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    hd = c.get("head_dim") or h // c["num_attention_heads"]
    q = h * c["num_attention_heads"] * hd
    kv = 2 * h * c["num_key_value_heads"] * hd
    o = c["num_attention_heads"] * hd * h
    layer = q + kv + o + 3 * h * i + 2 * h
    head = 0 if c["tie_word_embeddings"] else v * h
    return v * h + c["num_hidden_layers"] * layer + h + head


# published: Meta's model cards / config.json of meta-llama/Llama-3.2-1B and Llama-3.1-8B
PUBLISHED = {
    "llama-3.2-1b": {"layers": 16, "hidden": 2048, "heads": 32, "kv": 8, "inter": 8192,
                     "params": 1.236e9},
    "llama-3.1-8b": {"layers": 32, "hidden": 4096, "heads": 32, "kv": 8, "inter": 14336,
                     "params": 8.030e9},
}


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(PUBLISHED))
def test_config_shapes_match_published_llama(shape, tmp_path):
    pub = PUBLISHED[shape]
    folder = make_model_dir(shape, tmp_path / shape)
    c = json.loads((folder / "config.json").read_text())
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    assert hf.model_type == "llama"
    got = (
        hf.num_hidden_layers,
        hf.hidden_size,
        hf.num_attention_heads,
        hf.num_key_value_heads,
        hf.intermediate_size,
        hf.vocab_size,
    )
    assert got == (pub["layers"], pub["hidden"], pub["heads"], pub["kv"], pub["inter"], 128256)
    assert c["hidden_size"] // c["num_attention_heads"] == c["head_dim"]
    assert abs(_params(c) / pub["params"] - 1) < 0.005
    # the tokenizer in every folder is the same Llama-3 vocabulary
    assert load_tokenizer(folder).encode("Hello, world!") == load_tokenizer("llama3").encode(
        "Hello, world!"
    )


@pytest.mark.slow
def test_make_model_refuses_a_folder_of_another_shape(tmp_path):
    folder = make_model_dir("tiny-llama", tmp_path / "m")
    with pytest.raises(FileExistsError, match="tiny-llama"):
        make_model_dir("llama-3.1-8b", folder)
    assert set(SHAPES) >= {"tiny-llama", "llama-3.2-1b", "llama-3.1-8b"}


def _load_hf_tokenizer_logs(folder: Path) -> str:
    """transformers' log output while loading the folder's tokenizer, as vLLM does."""
    import io
    import logging

    from transformers import AutoTokenizer
    from transformers.utils import logging as tlog

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = tlog.get_logger("transformers")
    logger.addHandler(handler)
    old = tlog.get_verbosity()
    tlog.set_verbosity_warning()
    try:
        AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    finally:
        tlog.set_verbosity(old)
        logger.removeHandler(handler)
    return stream.getvalue()


@pytest.mark.slow
def test_loading_our_tokenizer_raises_no_mistral_regex_warning(tiny_dir, tmp_path):
    # transformers >= 5 took a local folder whose config.json lacks transformers_version
    # for an old Mistral one and warned "incorrect regex pattern ... incorrect
    # tokenization"; the ids equal vLLM's (tests above), so the warning was wrong
    assert "incorrect regex pattern" not in _load_hf_tokenizer_logs(tiny_dir)
    # a folder made before the fix: the warning comes back ...
    old = tmp_path / "old"
    shutil.copytree(tiny_dir, old)
    cfg = json.loads((old / "config.json").read_text())
    cfg.pop("transformers_version")
    (old / "config.json").write_text(json.dumps(cfg))
    assert "incorrect regex pattern" in _load_hf_tokenizer_logs(old)
    # ... and make_model_dir brings the folder up to date without rebuilding the tokenizer
    before = (old / "tokenizer.json").stat().st_mtime_ns
    make_model_dir("tiny-llama", old)
    assert "transformers_version" in json.loads((old / "config.json").read_text())
    assert (old / "tokenizer.json").stat().st_mtime_ns == before
    assert "incorrect regex pattern" not in _load_hf_tokenizer_logs(old)


def test_demo_shape_costs_more_prefill_than_tiny_but_stays_small():
    # the demo shape: ~25x the tiny shape's per-token compute, far below the 1B shape
    from ggr_kv.engine.models import model_config

    def layer_params(c: dict) -> int:
        return _params({**c, "vocab_size": 0, "tie_word_embeddings": True})

    tiny, demo, small = (layer_params(model_config(s)) for s in
                         ("tiny-llama", "demo-llama", "llama-3.2-1b"))
    assert 10 < demo / tiny < 50
    assert demo / small < 0.05


@pytest.mark.slow  # two loads of a 128k-token vocabulary
def test_a_tokenizer_file_is_loaded_once_and_again_when_it_changes(tiny_dir, tmp_path):
    # reports and simulations load the model's tokenizer per run: one load per file version
    path = tmp_path / "tokenizer.json"
    shutil.copy(tiny_dir / "tokenizer.json", path)
    first, again = load_tokenizer(path), load_tokenizer(tmp_path)
    assert again._encode_batch is first._encode_batch  # the same loaded tokenizer
    assert first.name == str(path) and again.name == str(path)
    spec = json.loads(path.read_text())
    spec["added_tokens"].append({**spec["added_tokens"][-1], "id": 128256,
                                 "content": "<|ggr-kv-test|>"})
    path.write_text(json.dumps(spec))
    changed = load_tokenizer(path)
    assert changed._encode_batch is not first._encode_batch
    assert changed.encode("<|ggr-kv-test|>", add_special_tokens=False) == [128256]
    assert first.encode("<|ggr-kv-test|>", add_special_tokens=False) != [128256]


@pytest.mark.slow
def test_our_folders_chat_template_is_the_one_vllm_would_pick(tiny_dir, tmp_path):
    """`make_llm` passes a dummy folder's chat template to vLLM so that vLLM does not load
    the tokenizer a second time looking for a processor's; that must not change which
    template renders: these folders have no processor, so vLLM falls back to the
    tokenizer's."""
    pytest.importorskip("vllm")
    from transformers import AutoTokenizer
    from vllm.renderers.hf import _try_get_processor_chat_template

    from ggr_kv.engine.models import folder_chat_template

    tok = AutoTokenizer.from_pretrained(str(tiny_dir), local_files_only=True)
    assert folder_chat_template(tiny_dir) == tok.chat_template
    assert _try_get_processor_chat_template(
        tok, revision=None, code_revision=None, trust_remote_code=False) is None
    # another folder (no `_ggr_kv_shape`: a user's model) is left to vLLM
    theirs = tmp_path / "theirs"
    shutil.copytree(tiny_dir, theirs)
    config = json.loads((theirs / "config.json").read_text())
    del config["_ggr_kv_shape"]
    (theirs / "config.json").write_text(json.dumps(config))
    assert folder_chat_template(theirs) is None
    assert folder_chat_template(tmp_path / "missing") is None


@pytest.mark.slow  # one build of the Llama-3 tokenizer (~10 s)
def test_model_folders_copy_one_built_tokenizer(tiny_dir, tmp_path, monkeypatch):
    from ggr_kv.engine import models

    monkeypatch.setattr(models, "cache_root", lambda: tmp_path / "cache")  # an empty cache
    a = make_model_dir("tiny-llama", tmp_path / "a")
    (cached,) = (tmp_path / "cache" / "tokenizers").iterdir()
    built = cached.stat().st_mtime_ns
    # the build is deterministic: a fresh one equals the file every other folder copied
    assert cached.read_bytes() == (a / "tokenizer.json").read_bytes()
    assert cached.read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    # another folder (another shape) copies it: no second build
    b = make_model_dir("llama-3.1-8b", tmp_path / "b")
    assert cached.stat().st_mtime_ns == built
    assert (b / "tokenizer.json").read_bytes() == cached.read_bytes()
