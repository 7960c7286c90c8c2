# Generated from notebooks/02a_deployments_and_http.ipynb (cell 12); edit the lesson, then run `python -m helpers.lessons generate`.
"""A text classifier deployment: the tiny sentiment model behind Ray Serve.

Every response names the replica, process id and node that computed it, so the lessons can
show which replica served which request.

Run it::

    serve run helpers.apps.classifier:app            # from any folder (an installed module)
    curl -X POST localhost:PORT/ -d '{"text": "great service"}'

or from Python::

    from ray import serve
    from helpers.apps.classifier import app
    handle = serve.run(app, name="classifier", route_prefix="/classify")
    handle.classify.remote("great service").result()["label"]   # 'positive'

Introduced in notebooks/02a_deployments_and_http.ipynb; deployed by the Serve CLI in
notebooks/03a_five_ways_to_launch.ipynb.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from starlette.requests import Request

from helpers.apps.identity import replica_identity
from helpers.apps.model import EMBEDDING_DIM, SentimentModel, embed
from helpers.apps.text_input import missing_text_response, read_text

__all__ = ["TextClassifier", "app", "MODEL_NAME_ENV"]

#: Environment variable a deployment's ``runtime_env`` can set to rename the model.
MODEL_NAME_ENV = "WORKBOOK_MODEL_NAME"


@serve.deployment(
    name="TextClassifier",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
)
class TextClassifier:
    """Classifies text as positive/negative and embeds it; one model per replica."""

    def __init__(self, model_name: str = "tiny-sentiment") -> None:
        self.model = SentimentModel.train()
        self.model_name = os.environ.get(MODEL_NAME_ENV, model_name)
        self.requests_served = 0

    def classify(self, text: str) -> dict[str, Any]:
        """Label, probability of positive, and who computed it."""
        score = self.model.score(text)
        self.requests_served += 1
        return {
            "text": text,
            "label": "positive" if score >= 0.5 else "negative",
            "score": round(score, 6),
            "model": self.model_name,
            "requests_served": self.requests_served,
            **replica_identity(),
        }

    def embed(self, text: str) -> dict[str, Any]:
        """The text's unit-length embedding (feature hashing) and who computed it."""
        self.requests_served += 1
        return {"dim": EMBEDDING_DIM, "embedding": embed(text).round(6).tolist(),
                **replica_identity()}

    def ready(self) -> bool:
        """A cheap call for health probes from other deployments."""
        return True

    async def __call__(self, request: Request) -> Any:
        """HTTP: ``POST {"text": ...}`` or ``GET ?text=...``."""
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        return self.classify(text)


app = TextClassifier.bind()
