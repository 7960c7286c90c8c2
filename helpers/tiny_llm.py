"""A tiny Llama-architecture model, built and trained on this machine: the lessons' default LLM.

Nothing is downloaded. The builder

1. collects English prose from the docstrings of Python's own standard library (read with
   :mod:`ast`, nothing is imported or fetched),
2. trains a byte-level BPE tokenizer (``tokenizers``, ~2k tokens) with a chat template,
3. trains a 2-layer Llama (hidden 128, 2 heads of 64: vLLM's CPU attention needs a head
   dimension of at least 32) for a fixed number of steps (about 100 s on one core),
4. saves model and tokenizer with ``save_pretrained`` into a cache folder named after a hash of
   its configuration: ``~/.cache/ray-serve-workbook/models/tiny-llama-<hash>`` (set
   ``WORKBOOK_MODEL_CACHE`` to use another folder).

The build is deterministic: the same :class:`TinyModelSpec` gives the same tokenizer and the
same weights (fixed seeds, deterministic algorithms, a fixed thread count), so
:func:`weights_digest` of two builds are equal on one machine (another CPU's vector units or
another torch may round differently; the manifest records the torch version). A second call
finds the cache and returns at once. The text it writes is not wise, but it reads like
docstrings, which is all a lesson on serving needs.

Usage::

    from helpers.tiny_llm import build_tiny_model, resolve_model_source
    path = build_tiny_model()                       # builds once, then cached
    source = resolve_model_source("tiny")           # the same path; or a hub id / a folder

or from a shell (``make model`` does the same)::

    python -m helpers.tiny_llm build                # prints the model folder
    python -m helpers.tiny_llm sample "Return the"  # a completion with transformers

Introduced in notebooks/04a_llm_config_and_openai_api.ipynb.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.errors import ParameterError, WorkbookError

__all__ = [
    "TinyModelSpec",
    "DEFAULT_SPEC",
    "TINY",
    "CHAT_TEMPLATE",
    "model_cache_root",
    "model_dir_for",
    "build_tiny_model",
    "resolve_model_source",
    "read_manifest",
    "weights_digest",
    "collect_corpus",
    "main",
]

TINY = "tiny"  # the model_source value that means "the locally built tiny model"
BUILDER_VERSION = 1  # bump when the build procedure changes what it writes
MANIFEST = "workbook_manifest.json"

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Everything that decides the built model; its hash names the cache folder."""

    vocab_size: int = 2048  # BPE vocabulary, special tokens included
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 2  # head_dim = hidden_size / num_heads = 64 (vLLM CPU needs >= 32)
    max_position_embeddings: int = 2048  # the model's context window, tokens
    seed: int = 0
    train_steps: int = 500  # about 100 s on one idle core
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    chat_fraction: float = 0.3  # share of training samples written as chats
    max_corpus_chars: int = 1_500_000  # cap on the docstring text used
    # Torch threads during training. One: the same sums in the same order whatever the load.
    # With two, a build in the test run's busy phase once gave other weights than the same
    # spec built just before (OpenMP and MKL may run fewer threads than asked when the machine
    # is busy, and a matrix product split another way rounds differently); one thread also
    # took less CPU (101 CPU-s against 176 for the default spec, measured).
    threads: int = 1

    def __post_init__(self) -> None:
        head_dim = self.hidden_size // self.num_heads
        if self.hidden_size % self.num_heads or head_dim < 32:
            raise WorkbookError(
                f"hidden_size {self.hidden_size} / num_heads {self.num_heads} gives head_dim "
                f"{self.hidden_size / self.num_heads:g}; vLLM's CPU attention needs an integer "
                "head_dim of at least 32 ('Unsupported CPU attention configuration').",
                "use fewer heads or a larger hidden_size (the default: 128 / 2 = 64).",
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def key(self) -> str:
        """12 hex digits identifying this spec, the builder version and the Python version.

        The Python version is part of the key because the training text comes from its
        standard library.
        """
        payload = {
            "spec": dataclasses.asdict(self),
            "builder": BUILDER_VERSION,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


DEFAULT_SPEC = TinyModelSpec()


# --- where models live ---------------------------------------------------------------------


def model_cache_root() -> Path:
    """``$WORKBOOK_MODEL_CACHE``, else ``~/.cache/ray-serve-workbook/models``."""
    env = os.environ.get("WORKBOOK_MODEL_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "ray-serve-workbook" / "models"
    return root.expanduser()


def model_dir_for(spec: TinyModelSpec = DEFAULT_SPEC, cache_dir: Path | None = None) -> Path:
    """The folder a spec is (or will be) built into."""
    return (cache_dir or model_cache_root()) / f"tiny-llama-{spec.key()}"


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The build record the builder writes beside the weights (spec, digests, losses, timing)."""
    return json.loads((Path(model_dir) / MANIFEST).read_text())


def resolve_model_source(model_source: str = TINY, *, spec: TinyModelSpec = DEFAULT_SPEC) -> str:
    """What vLLM should load for a notebook's ``model_source`` parameter.

    ``"tiny"`` (the default) builds or finds the local tiny model and returns its folder; an
    existing folder is returned as it is; anything else is taken as a Hugging Face model id
    (``"Qwen/Qwen3-0.6B"``), which the engine downloads, so it needs network access.
    """
    if model_source in ("", TINY):
        return str(build_tiny_model(spec))
    path = Path(model_source).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise WorkbookError(
                f"{path} exists but has no config.json, so it is not a model folder.",
                "point model_source at a folder written by save_pretrained, a hub id, or 'tiny'.",
            )
        return str(path.resolve())
    if model_source.startswith(("/", "./", "~")):
        raise WorkbookError(
            f"model_source {model_source!r} looks like a path but does not exist.",
            "check the path, or use 'tiny' for the local model or a hub id such as "
            "'Qwen/Qwen3-0.6B'.",
        )
    return model_source


# --- the training text ----------------------------------------------------------------------

_SKIP_PARTS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "turtledemo",
    "__phello__",
    "ensurepip",
    "pydoc_data",
}


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        p for p in root.rglob("*.py") if not _SKIP_PARTS.intersection(p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _prose(docstring: str) -> list[str]:
    """Paragraphs of a docstring that read as English sentences (no code, no tables)."""
    out = []
    for block in re.split(r"\n\s*\n", docstring):
        lines = block.splitlines()
        if not lines or lines[0].startswith((" ", "\t")):
            continue  # indented: code samples, argument tables
        text = " ".join(line.strip() for line in lines)
        if len(text) < 40 or ">>>" in text or "::" in text:
            continue
        plain = sum(ch.isalpha() or ch in " ,.;:'()-" for ch in text)
        if plain / len(text) < 0.9 or not text[0].isupper():
            continue
        out.append(text)
    return out


@dataclass
class Corpus:
    documents: list[str]  # prose paragraphs
    chats: list[tuple[str, str]]  # (question, answer) pairs from named docstrings
    files: int

    @property
    def chars(self) -> int:
        return sum(map(len, self.documents)) + sum(len(q) + len(a) for q, a in self.chats)

    def digest(self) -> str:
        h = hashlib.sha256()
        for doc in self.documents:
            h.update(doc.encode() + b"\0")
        for q, a in self.chats:
            h.update(q.encode() + b"\1" + a.encode() + b"\0")
        return h.hexdigest()


def collect_corpus(max_chars: int = DEFAULT_SPEC.max_corpus_chars) -> Corpus:
    """English prose from the standard library's docstrings, in a fixed order.

    Module, class and function docstrings are read with :func:`ast.get_docstring`, so no
    module is imported. Named docstrings also become question/answer pairs
    ("What does json.dumps do?" -> its first paragraph) for the chat format.
    """
    documents: list[str] = []
    chats: list[tuple[str, str]] = []
    total = 0
    files = _stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        nodes: list[tuple[str, ast.AST]] = [(module, tree)]
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if not node.name.startswith("_"):
                    nodes.append((f"{module}.{node.name}", node))
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    for method in node.body:
                        if isinstance(
                            method, (ast.FunctionDef, ast.AsyncFunctionDef)
                        ) and not method.name.startswith("_"):
                            nodes.append((f"{module}.{node.name}.{method.name}", method))
        for name, found in nodes:
            doc = ast.get_docstring(found)  # type: ignore[arg-type]
            if not doc:
                continue
            paragraphs = _prose(doc)
            if not paragraphs:
                continue
            documents.extend(paragraphs)
            total += sum(map(len, paragraphs))
            if found is not tree:
                chats.append((f"What does {name} do?", paragraphs[0]))
            if total >= max_chars:
                return Corpus(documents, chats, len(files))
    return Corpus(documents, chats, len(files))


# --- tokenizer -------------------------------------------------------------------------------


def _train_tokenizer(corpus: Corpus, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = corpus.documents + [f"{q} {a}" for q, a in corpus.chats]
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def _wrap_tokenizer(tokenizer: Any, spec: TinyModelSpec) -> Any:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# --- model and training ----------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    import torch

    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_det)
        torch.set_num_threads(previous_threads)


def _llama_config(spec: TinyModelSpec, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
    )


def _token_stream(corpus: Corpus, tokenizer: Any, spec: TinyModelSpec) -> Any:
    """All training samples, tokenized and concatenated into one 1-D tensor."""
    import torch

    samples = [f"<s>{doc}</s>" for doc in corpus.documents]
    every = max(1, round(1 / spec.chat_fraction)) if spec.chat_fraction > 0 else 0
    chat_samples = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            tokenize=False,
        )
        for q, a in corpus.chats
    ]
    # Interleave: every `every`-th sample is a chat, in a fixed order.
    mixed: list[str] = []
    chat_iter = iter(chat_samples)
    for i, sample in enumerate(samples):
        mixed.append(sample)
        if every and i % every == 0:
            chat = next(chat_iter, None)
            if chat is not None:
                mixed.append(chat)
    ids = tokenizer(mixed, add_special_tokens=False)["input_ids"]
    flat = [t for seq in ids for t in seq]
    return torch.tensor(flat, dtype=torch.long)


def _train(
    model: Any,
    stream: Any,
    spec: TinyModelSpec,
    progress: Callable[[int, float], None] | None,
) -> list[tuple[int, float]]:
    import torch

    n_windows = (len(stream) - 1) // spec.seq_len
    if n_windows < spec.batch_size:
        raise WorkbookError(
            "The training text is too short for one batch.",
            "lower batch_size/seq_len or raise max_corpus_chars.",
        )
    windows = stream[: n_windows * spec.seq_len + 1]
    generator = torch.Generator().manual_seed(spec.seed + 1)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.01
    )

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        done = (step - spec.warmup_steps) / max(1, spec.train_steps - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    offsets = torch.arange(spec.seq_len + 1)
    losses: list[tuple[int, float]] = []
    model.train()
    for step in range(spec.train_steps):
        starts = torch.randint(0, n_windows, (spec.batch_size,), generator=generator) * spec.seq_len
        batch = windows[starts[:, None] + offsets[None, :]]
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        if step % 10 == 0 or step == spec.train_steps - 1:
            losses.append((step, round(value, 4)))
        if progress is not None:
            progress(step, value)
    model.eval()
    return losses


def weights_digest(model_dir: str | Path) -> str:
    """sha256 over the saved tensors (name, dtype, shape, bytes) and the tokenizer file."""
    import torch
    from safetensors import safe_open

    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in sorted(f.keys()):
                tensor = f.get_tensor(name)
                h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
                h.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update((model_dir / "tokenizer.json").read_bytes())
    return h.hexdigest()


def _sample_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 24) -> str:
    import torch

    ids = tokenizer(f"<s>{prompt}", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_tiny_model(
    spec: TinyModelSpec = DEFAULT_SPEC,
    *,
    cache_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Build (once) and return the folder of the tiny model described by ``spec``.

    A folder that already holds a finished build is returned at once. Builds are written to a
    temporary folder and renamed into place, under a lock, so an interrupted or concurrent
    build never leaves a half-written model behind.
    """
    if spec.train_steps < 1 or spec.warmup_steps < 0:
        raise ParameterError(
            f"The tiny model needs at least one training step (train_steps={spec.train_steps}, "
            f"warmup_steps={spec.warmup_steps}).",
            f"give train_steps >= 1 (--steps N; the default, {DEFAULT_SPEC.train_steps}, "
            "takes about 100 s on one core) and warmup_steps >= 0.",
        )
    target = model_dir_for(spec, Path(cache_dir).expanduser() if cache_dir else None)
    if not force and (target / MANIFEST).exists():
        return target
    with _build_lock(target):
        if not force and (target / MANIFEST).exists():
            return target  # another process finished it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _build_into(tmp, spec, progress=progress)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_into(folder: Path, spec: TinyModelSpec, *, progress: bool) -> None:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    started = time.monotonic()
    corpus = collect_corpus(spec.max_corpus_chars)
    with _deterministic_torch(spec.seed, spec.threads):
        tokenizer = _wrap_tokenizer(_train_tokenizer(corpus, spec.vocab_size), spec)
        config = _llama_config(spec, tokenizer)
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
        stream = _token_stream(corpus, tokenizer, spec)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=spec.train_steps, desc="training the tiny model", unit="step")

        def report(step: int, loss: float) -> None:
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.3f}")

        train_started = time.monotonic()
        losses = _train(model, stream, spec, report if bar is not None else None)
        train_s = time.monotonic() - train_started
        if bar is not None:
            bar.close()
        sample = _sample_text(model, tokenizer, "Return the")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    manifest = {
        "name": f"tiny-llama-{spec.key()}",
        "spec": dataclasses.asdict(spec),
        "builder_version": BUILDER_VERSION,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus": {
            "files": corpus.files,
            "paragraphs": len(corpus.documents),
            "chats": len(corpus.chats),
            "chars": corpus.chars,
            "sha256": corpus.digest(),
        },
        "training_tokens_available": int(len(stream)),
        "tokens_seen": spec.train_steps * spec.batch_size * spec.seq_len,
        "losses": losses,
        "train_seconds": round(train_s, 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "sample": {"prompt": "Return the", "greedy_completion": sample},
    }
    manifest["weights_sha256"] = weights_digest(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.tiny_llm",
        description="Build and inspect the workbook's tiny local LLM.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find) the model; print its folder")
    build.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_SPEC.train_steps,
        help=f"training steps (default {DEFAULT_SPEC.train_steps})",
    )
    build.add_argument("--seed", type=int, default=DEFAULT_SPEC.seed)
    build.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: $WORKBOOK_MODEL_CACHE or ~/.cache/ray-serve-workbook/models",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("path", help="print the default model's folder (without building)")
    sample = sub.add_parser("sample", help="complete a prompt with the built model (transformers)")
    sample.add_argument("prompt", nargs="?", default="Return the")
    sample.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except WorkbookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "path":
        print(model_dir_for())
        return 0
    if args.command == "sample" and args.max_new_tokens < 1:
        raise ParameterError(
            f"--max-new-tokens must be >= 1, not {args.max_new_tokens}.",
            "give the number of tokens to generate, e.g. --max-new-tokens 40.",
        )
    if args.command == "build":
        spec = dataclasses.replace(DEFAULT_SPEC, train_steps=args.steps, seed=args.seed)
        started = time.monotonic()
        path = build_tiny_model(
            spec, cache_dir=args.cache_dir, force=args.force, progress=sys.stderr.isatty()
        )
        manifest = read_manifest(path)
        print(
            f"{path}\n  built in {manifest['build_seconds']} s "
            f"(this call {time.monotonic() - started:.1f} s), "
            f"{manifest['parameters']:,} parameters, final loss {manifest['losses'][-1][1]}, "
            f"weights sha256 {manifest['weights_sha256'][:16]}",
            file=sys.stderr,
        )
        print(path)
        return 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    print(args.prompt + _sample_text(model, tokenizer, args.prompt, args.max_new_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
