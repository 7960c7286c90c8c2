"""Reading the ``text`` of a plain HTTP request, shared by the example apps' ``__call__``.

Usage (inside a deployment)::

    from helpers.apps.text_input import read_text, missing_text_response

    async def __call__(self, request):
        text = await read_text(request)
        if text is None:
            return missing_text_response()
        return self.classify(text)
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["read_text", "missing_text_response"]


async def read_text(request: Request) -> str | None:
    """``text`` from a JSON body (``POST {"text": ...}``) or the query (``GET ?text=...``).

    ``None`` when it is missing, blank, not a string, or the body is not JSON.
    """
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            body = None
        text = body.get("text") if isinstance(body, dict) else None
    else:
        text = request.query_params.get("text")
    return text if isinstance(text, str) and text.strip() else None


def missing_text_response() -> JSONResponse:
    """400 with what to send instead."""
    return JSONResponse({"error": 'send {"text": "..."} as JSON, or ?text=...'}, status_code=400)
