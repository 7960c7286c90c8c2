"""Lesson 12's case study: a real-time streaming service with sessions and dynamic batching.

A Ray service for live speech translation is typically built from a model actor per
device, a session actor per user, a global scheduler actor that batches work dynamically and
balances load, a JSON configuration with a command line, a FastAPI server with session
endpoints, a WebSocket stream, live statistics and reconfiguration, and an evaluation that
writes charts and a report. This package rebuilds it for text streamed from the workbook's
tiny LLM, twice: as plain Ray actors, and the Serve way. Modules, one job each:

* :mod:`~helpers.streaming.config` - the JSON configuration: a validated schema, the CLI
  (``python -m helpers.streaming.config create-default|show|validate PATH``);
* :mod:`~helpers.streaming.model` - the tiny model as batched, step-by-step token streams;
* :mod:`~helpers.streaming.scheduling` - dynamic batching (size, timeout) and load balancing
  (least loaded, round robin, by memory), without Ray;
* :mod:`~helpers.streaming.api` - the HTTP/WebSocket API and its web page, shared by both;
* :mod:`~helpers.streaming.actors` - implementation (a): model, session, scheduler and
  gateway actors;
* :mod:`~helpers.streaming.serve_app` - implementation (b), written in the lesson (this is its
  generated package copy): a FastAPI ingress with WebSockets over a ``@serve.batch``
  generator (``user_config`` for its settings) or over ``ray.serve.llm``'s ``LLMServer``;
* :mod:`~helpers.streaming.serve_deploy` - config entries and deploys for (b);
* :mod:`~helpers.streaming.client` - a browser-free client and simulated users;
* :mod:`~helpers.streaming.evaluation` - the batch sweep and the report files.

Import what you need from the modules themselves (``from helpers.streaming.config import
read_config``): the package imports nothing, so ``python -m helpers.streaming.config`` and
the lightweight modules stay quick to load.

Introduced in notebooks/12_streaming_sessions.ipynb.
"""
