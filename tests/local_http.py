"""A local HTTP server for tests: a handler class served from a thread on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

from helpers.ports import free_port


@contextlib.contextmanager
def http_server_in_thread(handler: Callable[..., Any]) -> Iterator[str]:
    """Serve ``handler`` (a ``BaseHTTPRequestHandler`` class, or a partial of one) on a free
    port of 127.0.0.1 from a daemon thread; yield its base URL (no trailing slash); shut the
    server down and close its socket on the way out."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
