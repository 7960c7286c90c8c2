"""A tiny, deterministic sentiment model in numpy: text -> embedding -> positive/negative.

It stands in for a real model in the Serve lessons: it is built in code in a few milliseconds,
needs no download and no GPU, and every replica builds *exactly* the same weights, so any
difference between two responses comes from Serve (which replica, which config), never from
the model.

* :func:`embed` - feature hashing of words and word pairs (stable ``crc32``, not Python's
  salted ``hash``) into ``dim`` buckets, L2-normalised: a small "embedding".
* :class:`SentimentModel` - logistic regression on those embeddings, trained with plain
  full-batch gradient descent from zeros on :data:`TRAINING_SET` (no randomness at all).

Usage::

    from helpers.apps.model import SentimentModel
    model = SentimentModel.train()
    model.score("a wonderful, friendly service")   # probability of "positive", about 0.8
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["TRAINING_SET", "tokens", "embed", "SentimentModel", "EMBEDDING_DIM"]

EMBEDDING_DIM = 256

_POSITIVE = [
    "i love this product",
    "what a wonderful day",
    "great service and friendly staff",
    "the food was delicious",
    "excellent quality, highly recommended",
    "this is the best purchase i made",
    "fast delivery and great price",
    "i am very happy with the result",
    "amazing performance, works perfectly",
    "the team was helpful and kind",
    "beautiful design and easy to use",
    "a pleasant and smooth experience",
    "fantastic support, solved my problem",
    "i enjoyed every minute",
    "superb, would buy again",
    "reliable and fast, very good",
]
_NEGATIVE = [
    "i hate this product",
    "what a terrible day",
    "awful service and rude staff",
    "the food was disgusting",
    "poor quality, do not recommend",
    "this is the worst purchase i made",
    "slow delivery and bad price",
    "i am very unhappy with the result",
    "horrible performance, broken on arrival",
    "the team was unhelpful and rude",
    "ugly design and hard to use",
    "an unpleasant and painful experience",
    "useless support, did not solve my problem",
    "i regretted every minute",
    "bad, would never buy again",
    "unreliable and slow, very bad",
]
#: (text, label) pairs the model is trained on; label 1 is positive.
TRAINING_SET: list[tuple[str, int]] = [(t, 1) for t in _POSITIVE] + [(t, 0) for t in _NEGATIVE]


def tokens(text: str) -> list[str]:
    """Lower-case words, plus adjacent word pairs (``"not_good"``) so negation is seen."""
    words = re.findall(r"[a-z']+", text.lower())
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def embed(text: str, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """A unit-length ``dim``-vector for ``text`` (all zeros for text without words)."""
    vec = np.zeros(dim, dtype=np.float64)
    for tok in tokens(text):
        vec[zlib.crc32(tok.encode()) % dim] += 1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm else vec


@dataclass(frozen=True)
class SentimentModel:
    """Logistic regression over :func:`embed`. Build one with :meth:`train`."""

    weights: np.ndarray
    bias: float
    dim: int = EMBEDDING_DIM
    version: str = "v1"

    @classmethod
    def train(
        cls,
        data: list[tuple[str, int]] | None = None,
        *,
        dim: int = EMBEDDING_DIM,
        epochs: int = 300,
        learning_rate: float = 2.0,
        version: str = "v1",
    ) -> SentimentModel:
        """Fit on ``data`` (default :data:`TRAINING_SET`); deterministic, a few ms."""
        data = TRAINING_SET if data is None else data
        x = np.stack([embed(text, dim) for text, _ in data])
        y = np.array([label for _, label in data], dtype=np.float64)
        w = np.zeros(dim)
        b = 0.0
        for _ in range(epochs):
            p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
            grad = p - y
            w -= learning_rate * (x.T @ grad) / len(y)
            b -= learning_rate * float(grad.mean())
        return cls(weights=w, bias=b, dim=dim, version=version)

    def score(self, text: str) -> float:
        """Probability that ``text`` is positive, in [0, 1]."""
        z = float(embed(text, self.dim) @ self.weights + self.bias)
        return 1.0 / (1.0 + float(np.exp(-z)))

    def accuracy(self, data: list[tuple[str, int]] | None = None) -> float:
        """Share of ``data`` (default the training set) classified right at threshold 0.5."""
        data = TRAINING_SET if data is None else data
        return float(np.mean([(self.score(t) >= 0.5) == bool(y) for t, y in data]))

    def top_words(self, text: str, k: int = 3) -> list[str]:
        """The ``k`` tokens of ``text`` that pushed the score furthest (either way)."""
        toks = sorted(set(tokens(text)))
        weight = {t: float(self.weights[zlib.crc32(t.encode()) % self.dim]) for t in toks}
        return sorted(toks, key=lambda t: -abs(weight[t]))[:k]
