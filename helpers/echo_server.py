"""A bare HTTP server that answers every request at once: the fastest endpoint there is.

A load generator is the bottleneck of a test when the server could answer faster than the
client can ask. Against a Serve application on a 2-core laptop every client meets Serve's own
ceiling first (about a hundred requests per second here), so it cannot tell clients apart.
Against this server, which answers any ``GET`` or ``POST`` on any path with ``{"ok": true}``
in well under a millisecond of CPU (asyncio and ``aiohttp``, one process), the client's own
cost per request decides the throughput. tests/test_load.py and
``benchmarks/load_vs_locust.py`` measure ``helpers.load`` against Locust on it.

    with EchoServer() as echo:           # its own process, stopped (by id) on exit
        load_test(echo.url, json_request({}), concurrency=32, duration_s=5)

    python -m helpers.echo_server --port 8123     # the same server, in a terminal
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from helpers.errors import WorkbookError
from helpers.ports import ensure_port_free, free_port
from helpers.processes import ManagedProcess

__all__ = ["EchoServer", "serve_forever"]


def serve_forever(host: str, port: int) -> None:
    """Run the echo server in this process until it is stopped."""
    from aiohttp import web

    body = b'{"ok": true}'

    async def answer(request: web.Request) -> web.Response:
        await request.read()  # read the body as a real server would
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


class EchoServer(ManagedProcess):
    """:func:`serve_forever` in a process of its own session, on ``port`` (a free one if 0)."""

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", start_timeout_s: float = 30.0
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        super().__init__(
            [
                sys.executable,
                "-m",
                "helpers.echo_server",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            kind="echo-server",
            name=f"echo-{uuid.uuid4().hex[:8]}",
            ports=[self.port],
            stop_timeout_s=5.0,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EchoServer:
        """Start the server and wait until it answers (stopped again if it does not)."""
        import requests

        if self.pid is not None:
            raise WorkbookError("This echo server was already started.", "create a new EchoServer.")
        ensure_port_free(self.port, purpose="the echo server", host=self.host)
        super().start()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                code = self.stop()
                raise WorkbookError(
                    f"The echo server exited with code {code} at start.",
                    f"read its log: {self.log_path}",
                    details=self.tail(),
                )
            try:
                if requests.get(self.url + "/", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise WorkbookError(
            f"The echo server did not answer on {self.url} within {self.start_timeout_s:.0f} s.",
            f"read its log: {self.log_path}",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Answer every HTTP request with {"ok": true}.')
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args(argv)
    serve_forever(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
