"""Locust users for the workbook's Serve applications (a typical load test, reusable).

User classes; name the one to run after the options (Locust runs all of them otherwise):

* ``JsonUser`` - POSTs a JSON body (``--payload``) to ``--path``: the example apps, e.g. the
  classifier (``{"text": ...}``) or the timed-work app of lesson 05 (``{}``). Locust's
  standard ``HttpUser`` (python-requests).
* ``FastJsonUser`` - the same on ``FastHttpUser`` (geventhttpclient), Locust's cheaper client.
* ``ChatUser`` - OpenAI chat completions for ``--model`` at ``/v1/chat/completions`` (an
  application built with ``ray.serve.llm.build_openai_app``), ``--max-tokens`` each.

Users send their next request as soon as the previous one is answered (no wait time): a closed
loop of ``-u`` users, like ``python -m helpers.load -c``. Nothing is hard-coded: host, model,
path and body are options, so one file serves every lesson. Examples::

    locust -f configs/locust/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 20 -r 5 --run-time 5m ChatUser --model tiny-llama
    locust -f configs/locust/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 32 -r 32 --run-time 20s JsonUser --path /classify --payload '{"text": "great"}'

Without ``--headless`` Locust serves its web UI (on all interfaces by default: add
``--web-host 127.0.0.1`` to keep it on this machine) where users and spawn rate are set by hand.
From Python, :mod:`helpers.locust_run` runs this file headless and reads its statistics.
"""

from __future__ import annotations

import json

from locust import FastHttpUser, HttpUser, constant, events, task


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--path", default="/", help="JsonUser: path under the host to POST to")
    parser.add_argument(
        "--payload",
        default='{"text": "great service"}',
        help="JsonUser: the JSON body of every request",
    )
    parser.add_argument("--model", default="tiny-llama", help="ChatUser: the model id to ask")
    parser.add_argument("--prompt", default="Return the", help="ChatUser: the user message")
    parser.add_argument("--max-tokens", type=int, default=32, help="ChatUser: tokens per answer")


class JsonUser(HttpUser):
    """POST the same JSON body to one path, back to back."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.path = options.path
        self.body = json.dumps(json.loads(options.payload)).encode()  # fails early on bad JSON

    @task
    def post(self) -> None:
        self.client.post(
            self.path, data=self.body, headers={"Content-Type": "application/json"}, name=self.path
        )


class FastJsonUser(FastHttpUser):
    """``JsonUser`` on Locust's faster HTTP client."""

    wait_time = constant(0)
    on_start = JsonUser.on_start
    post = JsonUser.post


class ChatUser(HttpUser):
    """OpenAI chat completions, back to back; a 200 without choices counts as a failure."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.body = json.dumps(
            {
                "model": options.model,
                "messages": [{"role": "user", "content": options.prompt}],
                "max_tokens": options.max_tokens,
                "temperature": 0.0,
            }
        ).encode()

    @task
    def chat(self) -> None:
        with self.client.post(
            "/v1/chat/completions",
            data=self.body,
            catch_response=True,
            headers={"Content-Type": "application/json"},
            name="/v1/chat/completions",
        ) as response:
            if response.status_code == 200 and not (response.json() or {}).get("choices"):
                response.failure("no choices in the answer")
