"""The tiny LLM as a token stream: batched greedy decoding that hands out text step by step.

Both implementations of lesson 12 run the same engine: the plain-actor ``ModelActor`` and the
Serve ``TokenGenerator`` deployment. A batch of prompts is padded on the left, run through the
model once (the prefill), then advanced one token per step for every sequence at once, reusing
the attention keys and values (the KV cache). After each step :meth:`TokenEngine.steps` yields
the new text of every sequence and whether it was that sequence's last token; a finished
sequence is dropped from the batch (and its KV cache freed), so a short answer stops costing
compute.

Each sequence gets exactly its ``max_tokens`` new tokens (end-of-text is not a stop, like
vLLM's ``ignore_eos``), so runs with the same requests do the same work. Text is decoded
incrementally: a piece is the difference between the decoded text after and before the step,
held back while it ends in an incomplete UTF-8 character.

Usage::

    from helpers.streaming.model import TokenEngine
    engine = TokenEngine("tiny")                      # transformers, on CPU, ~1 s to load
    for entries in engine.steps(["Return the", "Create a new"], [8, 4]):
        print(entries)                  # [(' the', False), (' file', False)] ... [(' x', True), None]

Introduced in notebooks/12_streaming_sessions.ipynb.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from helpers.errors import WorkbookError

__all__ = ["TokenEngine", "kv_bytes"]


def kv_bytes(cache: Any) -> int:
    """Bytes held by a transformers KV cache (keys and values of every layer)."""
    if cache is None:
        return 0
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, "element_size"):
                total += tensor.element_size() * tensor.nelement()
    return total


class TokenEngine:
    """A causal LM loaded with transformers, decoding batches greedily, step by step.

    ``model_source`` is a notebook's parameter (``"tiny"``, a folder, a hub id), resolved with
    :func:`helpers.tiny_llm.resolve_model_source`. ``threads`` caps torch's threads: on a small
    machine with several engines, one each keeps them from fighting over the cores.
    """

    def __init__(
        self, model_source: str = "tiny", *, threads: int | None = 1, max_prompt_tokens: int = 256
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from helpers.tiny_llm import resolve_model_source

        if threads:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        self.path = resolve_model_source(model_source)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        self.model.eval()
        self.max_prompt_tokens = max_prompt_tokens
        self.load_seconds = time.perf_counter() - started
        self.kv_bytes_now = 0  # KV cache held by the batch being decoded (0 between batches)

    def count_tokens(self, prompt: str) -> int:
        """How many tokens ``prompt`` is."""
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def steps(
        self,
        prompts: Sequence[str],
        max_tokens: Sequence[int],
        *,
        cancelled: Callable[[int], bool] | None = None,
    ) -> Iterator[list[tuple[str, bool] | None]]:
        """Decode ``prompts`` together; after every step yield one entry per prompt.

        An entry is ``(piece, last)``: the text that sequence gained in this step (``""``
        while a multi-byte character is incomplete) and whether this was its last token; or
        ``None`` for a sequence that is no longer in the batch. ``cancelled(i)`` is asked
        before every step: a true answer drops prompt ``i`` from the batch at once. The
        iteration ends when no sequence is left.
        """
        import torch

        if len(prompts) != len(max_tokens) or not prompts:
            raise WorkbookError(
                "steps() needs one max_tokens per prompt, and at least one prompt.",
                "pass lists of the same, non-zero length.",
            )
        if min(max_tokens) < 1:
            raise WorkbookError(
                "max_tokens must be at least 1 for every prompt.", "ask for one token or more."
            )
        bos = self.tokenizer.bos_token or ""
        enc = self.tokenizer(
            [bos + p for p in prompts],
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=self.max_prompt_tokens,
            return_tensors="pt",
        )
        state: dict[str, Any] = {
            "input_ids": enc["input_ids"],
            "attention": enc["attention_mask"],
            "positions": (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0),
            "cache": None,
            "rows": list(range(len(prompts))),  # row of the batch -> index of its prompt
        }

        def keep_only(keep: list[int]) -> None:
            index = torch.tensor(keep, dtype=torch.long)
            for key in ("input_ids", "attention", "positions"):
                state[key] = state[key][index]
            if state["cache"] is not None:
                for layer in state["cache"].layers:
                    layer.batch_select_indices(index)
            state["rows"] = [state["rows"][r] for r in keep]

        produced: list[list[int]] = [[] for _ in prompts]
        shown = [""] * len(prompts)
        try:
            with torch.inference_mode():
                while state["rows"]:
                    if cancelled is not None:
                        keep = [r for r, i in enumerate(state["rows"]) if not cancelled(i)]
                        if not keep:
                            return
                        if len(keep) < len(state["rows"]):
                            keep_only(keep)
                    out = self.model(
                        input_ids=state["input_ids"],
                        attention_mask=state["attention"],
                        position_ids=state["positions"],
                        past_key_values=state["cache"],
                        use_cache=True,
                    )
                    state["cache"] = out.past_key_values
                    self.kv_bytes_now = kv_bytes(state["cache"])
                    next_ids = out.logits[:, -1, :].argmax(dim=-1)
                    entries: list[tuple[str, bool] | None] = [None] * len(prompts)
                    keep = []  # rows that go on
                    for row, index in enumerate(state["rows"]):
                        produced[index].append(int(next_ids[row]))
                        last = len(produced[index]) >= max_tokens[index]
                        text = self.tokenizer.decode(produced[index], skip_special_tokens=True)
                        if text.endswith("\ufffd") and not last:
                            entries[index] = ("", False)  # an incomplete character: wait
                        else:
                            entries[index] = (text[len(shown[index]) :], last)
                            shown[index] = text
                        if not last:
                            keep.append(row)
                    yield entries
                    if not keep:
                        return
                    attention = state["attention"]
                    state["input_ids"] = next_ids[:, None]
                    state["attention"] = torch.cat(
                        [attention, attention.new_ones((len(attention), 1))], 1
                    )
                    state["positions"] = state["positions"][:, -1:] + 1
                    if len(keep) < len(state["rows"]):  # finished rows leave the batch
                        keep_only(keep)
        finally:
            self.kv_bytes_now = 0
