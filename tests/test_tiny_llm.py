"""The tiny local model builder: deterministic, cached, safe for vLLM's CPU attention.

A shortened training configuration keeps these fast (seconds). That the built model loads and
generates in vLLM is tested against a real served engine in tests/test_llm_serving.py (one
engine for all tests).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from helpers.errors import WorkbookError
from helpers.tiny_llm import (
    CHAT_TEMPLATE,
    DEFAULT_SPEC,
    TinyModelSpec,
    build_tiny_model,
    collect_corpus,
    model_dir_for,
    read_manifest,
    resolve_model_source,
    weights_digest,
)

SHORT = TinyModelSpec(
    train_steps=6, batch_size=4, seq_len=64, warmup_steps=2, max_corpus_chars=150_000
)


@pytest.fixture(scope="module")
def short_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The short spec built twice, into two separate caches."""
    first = build_tiny_model(SHORT, cache_dir=tmp_path_factory.mktemp("cache-a"))
    second = build_tiny_model(SHORT, cache_dir=tmp_path_factory.mktemp("cache-b"))
    return first, second


def test_same_spec_builds_identical_weights(short_builds: tuple[Path, Path]) -> None:
    first, second = short_builds
    assert first != second and first.name == second.name == f"tiny-llama-{SHORT.key()}"
    # The tokenizer first: the weights' digest covers it too, and a failure should say which.
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert weights_digest(first) == weights_digest(second)
    assert read_manifest(first)["weights_sha256"] == weights_digest(first)


def test_another_seed_builds_other_weights(short_builds: tuple[Path, Path], tmp_path: Path) -> None:
    """The digest comparison above can fail: a different seed gives different weights."""
    other = build_tiny_model(dataclasses.replace(SHORT, seed=1), cache_dir=tmp_path)
    assert other.name != short_builds[0].name
    assert weights_digest(other) != weights_digest(short_builds[0])


def test_second_call_is_a_cache_hit(short_builds: tuple[Path, Path]) -> None:
    first = short_builds[0]
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    again = build_tiny_model(SHORT, cache_dir=first.parent)
    assert time.monotonic() - started < 1.0
    assert again == first and (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in first.parent.iterdir() if p.name.startswith(f".{first.name}-")]


def test_the_build_is_a_llama_with_a_chat_template(short_builds: tuple[Path, Path]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    path = short_builds[0]
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "llama" and config.architectures == ["LlamaForCausalLM"]
    assert config.head_dim == config.hidden_size // config.num_attention_heads >= 32
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) == SHORT.vocab_size == config.vocab_size
    assert tokenizer.chat_template == CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<s><|user|>\nHi</s>\n<|assistant|>\n"
    manifest = read_manifest(path)
    assert manifest["spec"] == dataclasses.asdict(SHORT)
    losses = [loss for _, loss in manifest["losses"]]
    assert losses[-1] < losses[0], "training lowered the loss"


def test_corpus_is_local_prose_in_a_fixed_order() -> None:
    corpus = collect_corpus(20_000)
    again = collect_corpus(20_000)
    assert corpus.digest() == again.digest() and corpus.chars >= 20_000
    assert all(doc[0].isupper() and ">>>" not in doc for doc in corpus.documents)
    assert all(q.startswith("What does ") for q, _ in corpus.chats)


def test_head_dim_below_32_is_refused() -> None:
    with pytest.raises(WorkbookError, match="head_dim"):
        TinyModelSpec(hidden_size=64, num_heads=4)


def test_spec_key_names_the_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOK_MODEL_CACHE", str(tmp_path))
    assert model_dir_for() == tmp_path / f"tiny-llama-{DEFAULT_SPEC.key()}"
    assert SHORT.key() != DEFAULT_SPEC.key()
    assert TinyModelSpec().key() == DEFAULT_SPEC.key()


def test_model_source_resolution(short_builds: tuple[Path, Path], tmp_path: Path) -> None:
    assert resolve_model_source(str(short_builds[0])) == str(short_builds[0].resolve())
    assert resolve_model_source("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"  # a hub id, as is
    with pytest.raises(WorkbookError, match="does not exist"):
        resolve_model_source("/no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbookError, match="config.json"):
        resolve_model_source(str(tmp_path / "empty"))


def test_cli_path_names_the_default_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers.tiny_llm import main

    monkeypatch.setenv("WORKBOOK_MODEL_CACHE", str(tmp_path))
    assert main(["path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / f"tiny-llama-{DEFAULT_SPEC.key()}")
    assert not list(tmp_path.iterdir()), "`path` does not build"
