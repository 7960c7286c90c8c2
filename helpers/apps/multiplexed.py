# Generated from notebooks/07b_composition_and_canary.ipynb (cell 14); edit the lesson, then run `python -m helpers.lessons generate`.
"""Model multiplexing: many small models behind one deployment, loaded on demand per replica.

One customer, one model: ``customer-a`` ... ``customer-f`` (:data:`CATALOG`) are variants
of the tiny sentiment model. Rather than one deployment per customer, one deployment serves
them all. A request names its model in the ``serve_multiplexed_model_id`` HTTP header (or
``handle.options(multiplexed_model_id=...)``); the replica loads that model the first time
(``@serve.multiplexed``, ``load_s`` of simulated download) and keeps at most
``max_num_models_per_replica`` (here 2) in memory, dropping the least recently used one.
Serve's router knows which replica holds which model and sends a request to a replica that
already has it, so with enough replicas each model is loaded once and stays.

Every answer says which model served it, which replica, that replica's loaded models now,
and how many loads and unloads it did.

Run it::

    serve run helpers.apps.multiplexed:app
    curl -X POST localhost:PORT/ -H 'serve_multiplexed_model_id: customer-a' -d '{"text": "great"}'

Introduced in notebooks/07b_composition_and_canary.ipynb.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from helpers.apps.identity import replica_identity
from helpers.apps.model import SentimentModel
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["CATALOG", "MODEL_HEADER", "MAX_MODELS_PER_REPLICA", "LoadedModel",
           "MultiplexedClassifier", "app"]

#: The model ids this deployment can load, and how each is trained.
CATALOG: dict[str, dict[str, Any]] = {
    f"customer-{c}": {"dim": dim, "epochs": epochs}
    for c, dim, epochs in [("a", 256, 300), ("b", 128, 300), ("c", 64, 300),
                           ("d", 256, 100), ("e", 128, 100), ("f", 64, 100)]
}
MODEL_HEADER = "serve_multiplexed_model_id"  # the HTTP header Serve routes on
MAX_MODELS_PER_REPLICA = 2


class LoadedModel:
    """A model in a replica's cache; tells the replica when Serve unloads it."""

    def __init__(self, model_id: str, model: SentimentModel,
                 on_unload: Callable[[str], None]) -> None:
        self.model_id = model_id
        self.model = model
        self._on_unload = on_unload
        self._unloaded = False

    def __del__(self) -> None:  # Serve calls it when the model leaves the cache (LRU)
        if not self._unloaded:
            self._unloaded = True
            self._on_unload(self.model_id)


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class MultiplexedClassifier:
    """Serves every model of :data:`CATALOG`; at most two in memory per replica."""

    def __init__(self, load_s: float = 0.3) -> None:
        self.load_s = load_s
        self.loads: list[str] = []
        self.unloads: list[str] = []

    def _unloaded(self, model_id: str) -> None:
        self.unloads.append(model_id)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def load_model(self, model_id: str) -> LoadedModel:
        """Called by Serve only when ``model_id`` is not in this replica's cache."""
        await asyncio.sleep(self.load_s)  # stands in for fetching weights from storage
        spec = CATALOG[model_id]
        model = SentimentModel.train(dim=spec["dim"], epochs=spec["epochs"], version=model_id)
        self.loads.append(model_id)
        return LoadedModel(model_id, model, self._unloaded)

    def loaded_models(self) -> list[str]:
        """Models in this replica's cache: loaded and not unloaded since."""
        held: dict[str, int] = {}
        for model_id in self.loads:
            held[model_id] = held.get(model_id, 0) + 1
        for model_id in self.unloads:
            held[model_id] -= 1
        return sorted(m for m, count in held.items() if count > 0)

    async def __call__(self, request: Request) -> Any:
        """HTTP: ``POST {"text": ...}`` with the ``serve_multiplexed_model_id`` header."""
        model_id = serve.get_multiplexed_model_id()
        if model_id not in CATALOG:
            return JSONResponse({"error": f"unknown model {model_id!r}: send the header "
                                          f"{MODEL_HEADER} with one of {sorted(CATALOG)}"},
                                status_code=404)
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        loaded = await self.load_model(model_id)
        score = loaded.model.score(text)
        return {"model": model_id, "label": "positive" if score >= 0.5 else "negative",
                "score": round(score, 6), "loaded_models": self.loaded_models(),
                "loads": len(self.loads), "unloads": len(self.unloads),
                "model_crc": zlib.crc32(loaded.model.weights.tobytes()), **replica_identity()}


app = MultiplexedClassifier.bind()
