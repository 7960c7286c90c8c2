"""The labs' checks: what a task must have achieved, verified on the real cluster.

Every check inspects the real state (Serve's status and recorded configs, the replicas, real
HTTP and handle calls, the files the student wrote), never a variable's value alone. It prints
a line when it passes; when it fails it raises :class:`LabCheckFailed` with feedback that
says *what is wrong* and *where to look* (the format all the workbook's checks share:
:mod:`helpers.check_feedback`). Each is registered with its lab, its task and
whether it is visible (in the student's notebook) or hidden (put back by the grader).

When the environment variable ``WORKBOOK_LAB_RESULTS`` names a file, every check appends its
result to it as one JSON line: that is how the grader and the tests collect results.

Usage (a check cell of a lab)::

    from helpers.labs import checks
    checks.lab01_deployment_as_specified(lab, replicas=2, num_cpus=0.25, memory_mib=128,
                                         max_ongoing=4)

    with checks.deferred_failures():       # several checks in one cell: each one runs and records
        checks.lab01_answers_over_http(lab, http_reply, text=sample_text)
        checks.lab01_answers_by_handle(lab, handle_reply, text=sample_text)

The hidden checks live in :mod:`helpers.labs.hidden_checks` (the instructor's part, left out
of the student kit) and are named here when that module is installed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import math
import numbers
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.check_feedback import CheckFailed, CheckProblem, feedback, report_pass
from helpers.errors import WorkbookError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from helpers.labs.session import LabSession

__all__ = [
    "RESULTS_ENV",
    "CheckInfo",
    "CheckResult",
    "CheckProblem",
    "LabCheckFailed",
    "CHECKS",
    "checks_for",
    "parse_result",
    "read_results",
    "deferred_failures",
]

RESULTS_ENV = "WORKBOOK_LAB_RESULTS"


@dataclass(frozen=True)
class CheckInfo:
    """A registered check: its lab, name, task, visibility and one-line summary."""

    lab: str
    name: str
    task: int
    hidden: bool
    summary: str


@dataclass
class CheckResult:
    """One run of one check."""

    lab: str
    check: str
    task: int
    hidden: bool
    passed: bool
    feedback: str
    student: str
    seconds: float


class LabCheckFailed(CheckFailed):
    """A lab's check failed; the message is the feedback."""


#: lab id -> its checks, in the order they are defined.
CHECKS: dict[str, list[CheckInfo]] = {}

_deferred: list[list[CheckResult]] = []


def checks_for(lab: str, *, hidden: bool | None = None) -> list[CheckInfo]:
    """The registered checks of ``lab`` (only hidden / only visible ones if asked)."""
    return [c for c in CHECKS.get(lab, []) if hidden is None or c.hidden == hidden]


def parse_result(line: str) -> CheckResult:
    """One line of a results file; ``ValueError`` or ``TypeError`` if it is not a result."""
    result = CheckResult(**json.loads(line))
    if not (isinstance(result.passed, bool) and isinstance(result.check, str)
            and isinstance(result.lab, str)):
        raise TypeError("a result's lab and check are strings and passed is true or false")
    return result


def read_results(path: str | Path) -> list[CheckResult]:
    """The results a run appended to ``path`` (an empty list if there is no file)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [parse_result(line) for line in lines if line.strip()]


def _record(result: CheckResult) -> None:
    target = os.environ.get(RESULTS_ENV)
    if target:
        with open(target, "a") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")


@contextlib.contextmanager
def deferred_failures() -> Iterator[None]:
    """Run several checks in one cell: each runs and is recorded; failures are raised together
    at the end (so the first failure does not keep the next checks from running)."""
    _deferred.append([])
    try:
        yield
    finally:
        failed = _deferred.pop()
    if failed:
        raise LabCheckFailed("\n\n".join(_message(r) for r in failed))


def _message(result: CheckResult) -> str:
    kind = "hidden check" if result.hidden else "check"
    return f"Task {result.task} {kind} {result.check!r} failed:\n{result.feedback}"


def lab_check(
    lab: str, task: int, *, hidden: bool = False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a check function of ``lab``'s task ``task``.

    The function takes the :class:`~helpers.labs.session.LabSession` first and raises
    :class:`CheckProblem` (or a workbook error) when the task is not done. The registered
    check records its result (see :data:`RESULTS_ENV`), prints a line when it passes and
    raises :class:`LabCheckFailed` when it does not.
    """

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        summary = (func.__doc__ or func.__name__).strip().splitlines()[0]
        info = CheckInfo(lab, func.__name__, task, hidden, summary)
        CHECKS.setdefault(lab, []).append(info)

        @functools.wraps(func)
        def run(session: "LabSession", *args: Any, **kwargs: Any) -> None:
            started = time.monotonic()
            try:
                func(session, *args, **kwargs)
                passed, text = True, summary
            except CheckProblem as problem:
                passed, text = False, str(problem)
            except WorkbookError as err:
                passed, text = False, feedback(err.problem, err.fix)
            except Exception as err:  # noqa: BLE001 - a check must report, never crash
                passed, text = False, feedback(
                    f"The check could not inspect your work ({type(err).__name__}: "
                    f"{str(err)[:300]}).",
                    f"the cells of Task {task} above; run the notebook's cells in order and "
                    "fix the first one that fails.")
            result = CheckResult(lab, func.__name__, task, hidden, passed, text,
                                 getattr(session, "student", "?"),
                                 round(time.monotonic() - started, 2))
            _record(result)
            if passed:
                report_pass(f"Task {task}{' (hidden check)' if hidden else ''}: {summary}")
                return None
            if _deferred:
                _deferred[-1].append(result)
                return None
            raise LabCheckFailed(_message(result)) from None

        run.info = info  # type: ignore[attr-defined]
        return run

    return decorate


# --- what the checks share ------------------------------------------------------------------


def _serve_apps(session: "LabSession") -> dict[str, Any]:
    from helpers.serve_status import serve_details

    return serve_details(session.cluster).get("applications") or {}


#: How long a check gives an application that shows DEPLOYING to be RUNNING again. On a shared
#: cluster every `serve deploy` (a classmate's too) re-applies each config-deployed application:
#: Serve's controller sets it DEPLOYING until its deployments have reconciled, although none of
#: them changes or restarts (ApplicationState._set_target_state; the classroom run caught lab
#: 02's check in that moment once, right after a classmate's deploy).
REBUILD_GRACE_S = 20.0


def _app(session: "LabSession", short: str, *, task: int, running: bool = True,
         look: str = "") -> dict[str, Any]:
    """The application's details; a problem if it is missing (or not RUNNING, once any
    rebuild in progress is over: :data:`REBUILD_GRACE_S`)."""
    name = session.app_name(short)
    apps = _serve_apps(session)
    where = look or f"Task {task}: the cell that deploys {name!r}; `serve status` lists apps"
    if name not in apps:
        mine = sorted(a for a in apps if a.startswith(session.prefix))
        raise CheckProblem(f"Serve has no application named {name!r} (this lab's apps on the "
                           f"cluster: {mine or 'none'}).", where)
    app = apps[name]
    deadline = time.monotonic() + REBUILD_GRACE_S
    while running and app.get("status") == "DEPLOYING" and time.monotonic() < deadline:
        time.sleep(0.5)
        app = _serve_apps(session).get(name, app)
    if running and app.get("status") != "RUNNING":
        message = (app.get("message") or "").strip().splitlines()
        raise CheckProblem(
            f"Application {name!r} is {app.get('status')}, not RUNNING"
            + (f": {message[0][:300]}" if message else "."),
            where + "; its replicas' error is in `serve status` and the replica logs")
    return app


def _deployment(app: Mapping[str, Any], name: str, *, look: str) -> dict[str, Any]:
    deployments = app.get("deployments") or {}
    if name not in deployments:
        raise CheckProblem(f"Application {app.get('name')!r} has no deployment {name!r} "
                           f"(it has: {sorted(deployments)}).",
                           look + " (the deployment's name is the class name, or name=...)")
    return deployments[name]


def _running_replicas(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING"]


def _post(url: str, body: Any, *, look: str, timeout_s: float = 30.0) -> Any:
    import requests

    try:
        return requests.post(url, json=body, timeout=timeout_s)
    except requests.RequestException as err:
        raise CheckProblem(f"No answer from {url} ({type(err).__name__}).", look) from err


def _get(url: str, *, look: str, timeout_s: float = 30.0) -> Any:
    import requests

    try:
        return requests.get(url, timeout=timeout_s)
    except requests.RequestException as err:
        raise CheckProblem(f"No answer from {url} ({type(err).__name__}).", look) from err


def _json(response: Any, *, look: str) -> Any:
    if response.status_code != 200:
        raise CheckProblem(f"{response.request.method} {response.url} answered HTTP "
                           f"{response.status_code}: {response.text[:200]}", look)
    try:
        return response.json()
    except ValueError as err:
        raise CheckProblem(f"{response.url} did not answer JSON: {response.text[:200]!r}",
                           look) from err


def _in_thread(func: Callable[[], Any]) -> Any:
    """Run blocking Serve calls (``.result()``) off the notebook's event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func).result()


def _call(session: "LabSession", short: str, method: str, *args: Any,
          timeout_s: float = 60.0) -> Any:
    from ray import serve

    name = session.app_name(short)
    return _in_thread(lambda: getattr(serve.get_app_handle(name), method)
                      .remote(*args).result(timeout_s=timeout_s))


def _sentence(rng: random.Random, words: int) -> str:
    vocabulary = ["ray", "serve", "replica", "proxy", "handle", "batch", "scale", "node",
                  "route", "model", "token", "queue", "config", "deploy"]
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def _expect(condition: bool, problem: str, look: str) -> None:
    if not condition:
        raise CheckProblem(problem, look)


# --- lab 01: a first deployment ----------------------------------------------------------------

_L01_CLASS = "Task 1: the @serve.deployment(...) line of WordCounter"


@lab_check("lab01", 1)
def lab01_deployment_as_specified(session: "LabSession", *, replicas: int, num_cpus: float,
                                  memory_mib: int, max_ongoing: int) -> None:
    """WordCounter runs with the replicas and resources the lab asks for."""
    app = _app(session, "counter", task=1)
    dep = _deployment(app, "WordCounter", look=_L01_CLASS)
    config = dep.get("deployment_config") or {}
    options = config.get("ray_actor_options") or {}
    asked = {"num_replicas": replicas, "num_cpus": num_cpus, "memory": memory_mib * 2**20,
             "max_ongoing_requests": max_ongoing}
    got = {"num_replicas": config.get("num_replicas"), "num_cpus": options.get("num_cpus"),
           "memory": options.get("memory"),
           "max_ongoing_requests": config.get("max_ongoing_requests")}
    wrong = {k: f"asked {asked[k]}, Serve recorded {got[k]}" for k in asked if got[k] != asked[k]}
    _expect(not wrong, f"WordCounter's options differ from the lab's: {wrong}.", _L01_CLASS
            + " (memory is in bytes: memory_mib * 2**20)")
    running = _running_replicas(dep)
    _expect(len(running) == replicas,
            f"{len(running)} of {replicas} replicas are RUNNING.", "status_table(cluster)")


def _l01_reply(name: str, reply: Any, text: str, look: str, what: str) -> None:
    """The student's ``reply`` is a dict with the right word count for ``text``."""
    _expect(isinstance(reply, dict), f"{name} is {type(reply).__name__}, not {what}: a dict.",
            look)
    _expect(reply.get("words") == len(text.split()),
            f"{name}['words'] is {reply.get('words')!r}; {text!r} has {len(text.split())} "
            "words.", look)


@lab_check("lab01", 2)
def lab01_answers_over_http(session: "LabSession", http_reply: Any, *, text: str) -> None:
    """POST {"text": ...} to the app's route answers the right word count."""
    look = "Task 2: WordCounter.__call__ and your requests.post(...) cell"
    _l01_reply("http_reply", http_reply, text, look, "the JSON answer (use response.json())")
    probe = _sentence(random.Random(), 7)
    body = _json(_post(session.url("counter"), {"text": probe}, look=look), look=look)
    _expect(body.get("words") == 7, f"For a 7-word text the app answered {body}.", look)
    _expect(bool(body.get("replica")), "The answer does not say which replica computed it.",
            "Task 1: return {**replica_identity(), 'words': ...}")


@lab_check("lab01", 3)
def lab01_answers_by_handle(session: "LabSession", handle_reply: Any, *, text: str) -> None:
    """handle.count.remote(text) answers the right word count."""
    look = "Task 3: the cell that awaits handle.count.remote(...)"
    _l01_reply("handle_reply", handle_reply, text, look,
               "count()'s answer (await the DeploymentResponse)")
    probe = _sentence(random.Random(), 5)
    answer = _call(session, "counter", "count", probe)
    _expect(isinstance(answer, dict) and answer.get("words") == 5,
            f"count() of a 5-word text returned {answer!r}.", "Task 1: WordCounter.count")


# --- lab 02: a Serve config, serve deploy, an update without downtime ---------------------------

_L02_DEP = "ConfigurableClassifier"
_L02_IMPORT = "helpers.apps.configurable:app"


def _l02_entry(session: "LabSession", path: Any, look: str) -> dict[str, Any]:
    import yaml

    from helpers.serve_cli import validate_serve_config

    path = Path(path) if path else None
    _expect(path is not None and path.exists(), f"The config file {path} does not exist.",
            look + " (write config_text to config_path)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CheckProblem(f"{path.name} is not valid YAML: {str(err)[:200]}", look) from err
    _expect(isinstance(config, dict), f"{path.name} holds no config (it is empty or not a "
            "mapping).", look)
    try:
        validate_serve_config(config)
    except WorkbookError as err:
        raise CheckProblem(f"{path.name}: {err.problem} {err.details[:400]}", look) from err
    entries = {a.get("name"): a for a in config.get("applications") or []}
    name = session.app_name("classifier")
    _expect(name in entries, f"{path.name} has no application named {name!r} "
            f"(it has {sorted(map(str, entries))}).", look)
    return entries[name]


def _l02_deployment(entry: Mapping[str, Any]) -> dict[str, Any]:
    for dep in entry.get("deployments") or []:
        if dep.get("name") == _L02_DEP:
            return dep
    return {}


@lab_check("lab02", 1)
def lab02_config_is_valid(session: "LabSession", config_path: Any, *, replicas: int) -> None:
    """The YAML file is a valid Serve config for the classifier, as specified."""
    look = "Task 1: config_text"
    entry = _l02_entry(session, config_path, look)
    _expect(entry.get("import_path") == _L02_IMPORT,
            f"import_path is {entry.get('import_path')!r}, not {_L02_IMPORT!r}.", look)
    _expect(entry.get("route_prefix") == session.route("classifier"),
            f"route_prefix is {entry.get('route_prefix')!r}, not "
            f"{session.route('classifier')!r}.", look)
    dep = _l02_deployment(entry)
    _expect(bool(dep), f"No deployment entry named {_L02_DEP!r} under the application.",
            look + " (deployments: - name: ConfigurableClassifier)")
    _expect(dep.get("num_replicas") == replicas,
            f"num_replicas is {dep.get('num_replicas')!r}, not {replicas}.", look)
    version = (dep.get("user_config") or {}).get("config_version")
    _expect(version == 1, f"user_config.config_version is {version!r}, not 1.", look)


@lab_check("lab02", 2)
def lab02_deployed_with_serve_deploy(session: "LabSession", *, replicas: int) -> None:
    """The classifier runs, deployed from the config file with `serve deploy`."""
    look = "Task 2: the cell that runs `serve deploy`"
    app = _app(session, "classifier", task=2, look=look)
    _expect(app.get("source") == "declarative",
            f"The application was deployed with {app.get('source')!r} API (serve.run), not "
            "from a config with `serve deploy`.", look)
    dep = _deployment(app, _L02_DEP, look=look)
    _expect(len(_running_replicas(dep)) == replicas,
            f"{len(_running_replicas(dep))} replicas are RUNNING, the file says {replicas}.",
            look + " (wait with wait_until_running)")
    body = _json(_post(session.url("classifier"), {"text": "great service"}, look=look),
                 look=look)
    _expect(body.get("config_version") == 1,
            f"The app answers config_version {body.get('config_version')!r}, not 1.", look)


@lab_check("lab02", 3)
def lab02_updated_without_downtime(session: "LabSession", update_traffic: Any, *,
                                   replicas: int) -> None:
    """The update to config_version 2 and more replicas failed no request."""
    look = "Task 3: the updated config and the `serve deploy` inside the RequestLoop"
    _expect(update_traffic is not None and len(update_traffic) > 0,
            "No requests were recorded during the update.", look)
    failed = update_traffic[~update_traffic["ok"].astype(bool)]
    _expect(len(failed) == 0, f"{len(failed)} of {len(update_traffic)} requests failed during "
            f"the update, e.g. {failed['error'].iloc[0] if len(failed) else ''}", look)
    versions = set(update_traffic["config_version"].dropna().astype(int))
    _expect(versions == {1, 2}, f"Requests during the update saw config versions {versions}; "
            "both 1 (before) and 2 (after) should appear.",
            look + " (deploy while the loop runs, then loop.wait_until_serving)")
    app = _app(session, "classifier", task=3, look=look)
    dep = _deployment(app, _L02_DEP, look=look)
    _expect(len(_running_replicas(dep)) == replicas,
            f"{len(_running_replicas(dep))} replicas run, the update asks for {replicas}.", look)
    answers = [_json(_post(session.url("classifier"), {"text": "okay"}, look=look), look=look)
               for _ in range(2 * replicas)]
    old = [a for a in answers if a.get("config_version") != 2]
    _expect(not old, f"{len(old)} answers still come from config_version 1.", look)


# --- lab 03: autoscaling to a latency target -----------------------------------------------------

_L03_LOOK = "Task 1: autoscaling_config"


def _l03_deployment(session: "LabSession", task: int) -> dict[str, Any]:
    app = _app(session, "scorer", task=task, look="Task 1: the cell that deploys the Scorer")
    return _deployment(app, "Scorer", look="Task 1")


def _l03_autoscaling(session: "LabSession", task: int) -> dict[str, Any]:
    config = _l03_deployment(session, task).get("deployment_config") or {}
    autoscaling: dict[str, Any] = config.get("autoscaling_config") or {}
    _expect(bool(autoscaling), "The Scorer has a fixed replica count: no autoscaling_config.",
            _L03_LOOK + " (pass it with Scorer.options(autoscaling_config=...))")
    return autoscaling


@lab_check("lab03", 1)
def lab03_autoscaling_enabled(session: "LabSession") -> None:
    """The Scorer runs with an autoscaling config that can add replicas."""
    auto = _l03_autoscaling(session, 1)
    low, high = auto.get("min_replicas"), auto.get("max_replicas")
    _expect(low is not None and high is not None and low <= 1 < high,
            f"min_replicas={low}, max_replicas={high}: start small (1) and allow more.",
            _L03_LOOK)


def _window(traffic: "pd.DataFrame", last_s: float) -> "pd.DataFrame":
    end = traffic["t_start"].max()
    return traffic[traffic["t_start"] >= end - last_s]


@lab_check("lab03", 2)
def lab03_latency_target_met(session: "LabSession", load_traffic: Any, p90_s: Any, *,
                             target_p90_s: float, last_s: float) -> None:
    """Under the lab's load the 90th-percentile latency meets the target."""
    look = "Task 2: p90_s; and Task 1: target_ongoing_requests, upscale_delay_s, max_replicas"
    _expect(load_traffic is not None and len(load_traffic) > 0,
            "There is no load_traffic: the load did not run.", "Task 2: the load cell")
    window = _window(load_traffic, last_s)
    failed = int((~window["ok"].astype(bool)).sum())
    _expect(failed == 0, f"{failed} requests failed in the last {last_s:g} s.", look)
    truth = float(window["latency_s"].quantile(0.9))
    _expect(isinstance(p90_s, (int, float)) and abs(float(p90_s) - truth) < 0.005,
            f"p90_s is {p90_s!r}; the 90th percentile of latency_s over the requests that "
            f"started in the last {last_s:g} s is {truth:.3f}.",
            "Task 2: filter load_traffic on t_start, then .quantile(0.9)")
    replicas = window["replica"].nunique()
    _expect(truth <= target_p90_s,
            f"p90 latency {truth:.3f} s > target {target_p90_s} s, with {replicas} replica(s) "
            "serving at the end: Serve did not add enough replicas in time.", look)


@lab_check("lab03", 3)
def lab03_scaled_back_down(session: "LabSession") -> None:
    """After the load, the Scorer is back at min_replicas."""
    auto = _l03_autoscaling(session, 3)
    dep = _l03_deployment(session, 3)
    running = len(_running_replicas(dep))
    _expect(running == auto.get("min_replicas") and dep.get("target_num_replicas") == running,
            f"{running} replicas still run (target {dep.get('target_num_replicas')}) after the "
            f"load; min_replicas is {auto.get('min_replicas')}.",
            _L03_LOOK + ": downscale_delay_s (the default waits 600 s)")


# --- lab 04: batching -----------------------------------------------------------------------------


def _l04_texts(count: int) -> list[str]:
    from helpers.labs.apps import lab_texts

    return lab_texts(count)


@lab_check("lab04", 1)
def lab04_batched_answers_match(session: "LabSession") -> None:
    """BatchedScorer answers each text with the same score as the unbatched model."""
    from ray import serve

    from helpers.labs.apps import measure_throughput

    look = "Task 1: BatchedScorer.score (return one result per input, in order)"
    _app(session, "batched", task=1, look="Task 1: the cell that deploys BatchedScorer")
    texts = _l04_texts(8)
    random.Random(4).shuffle(texts)
    batched = measure_throughput(serve.get_app_handle(session.app_name("batched")), "score",
                                 texts)["results"]
    unbatched = measure_throughput(serve.get_app_handle(session.app_name("unbatched")), "score",
                                   texts)["results"]
    wrong = [t for t, a, b in zip(texts, batched, unbatched) if a != b]
    _expect(not wrong, f"{len(wrong)} of {len(texts)} texts got another text's score, e.g. "
            f"{wrong[:1]}.", look)


@lab_check("lab04", 2)
def lab04_throughput_target(session: "LabSession", *, baseline_rps: float, speedup: float,
                            requests: int) -> None:
    """BatchedScorer reaches the throughput target."""
    from ray import serve

    from helpers.labs.apps import measure_throughput

    look = "Task 2: max_batch_size, batch_wait_timeout_s and max_ongoing_requests"
    _app(session, "batched", task=2, look="Task 1")
    _call(session, "batched", "reset_stats")
    burst = measure_throughput(serve.get_app_handle(session.app_name("batched")), "score",
                               _l04_texts(requests))
    stats = _call(session, "batched", "stats")
    _expect(burst["rps"] >= speedup * baseline_rps,
            f"{burst['rps']} requests/s is {burst['rps'] / baseline_rps:.1f}x the baseline "
            f"({baseline_rps} requests/s); the target is {speedup}x. The device ran batches of "
            f"{stats.get('mean_size')} on average (largest {stats.get('largest')}).", look)


# --- lab 05: the tiny LLM behind the OpenAI API ---------------------------------------------------

_L05_CONFIG = "Task 1: llm_config = LLMConfig(...)"


def _l05_config_dict(llm_config: Any) -> dict[str, Any]:
    from helpers.llm import llm_config_as_dict

    if llm_config is None or not hasattr(llm_config, "model_dump"):
        raise CheckProblem(f"llm_config is {type(llm_config).__name__}, not an LLMConfig.",
                           _L05_CONFIG)
    return llm_config_as_dict(llm_config)  # the fields that were set


@lab_check("lab05", 1)
def lab05_llm_config(session: "LabSession", llm_config: Any, *, model_id: str,
                     accelerator: str) -> None:
    """llm_config names the model and the accelerator of this cluster."""
    data = _l05_config_dict(llm_config)
    loading = data.get("model_loading_config") or {}
    _expect(loading.get("model_id") == model_id,
            f"model_id is {loading.get('model_id')!r}, not {model_id!r}.", _L05_CONFIG)
    kind = (data.get("accelerator_config") or {}).get("kind") or "gpu (LLMConfig's default)"
    _expect(kind == accelerator,
            f"accelerator_config kind is {kind!r} but this cluster serves on {accelerator!r}: "
            "a replica that asks for a GPU on a CPU cluster waits forever.",
            _L05_CONFIG + " (accelerator_config={'kind': ...})")
    auto = ((data.get("deployment_config") or {}).get("autoscaling_config") or {})
    _expect(auto.get("max_replicas", 1) == 1,
            f"max_replicas is {auto.get('max_replicas')}: one engine is all this lab has room for.",
            _L05_CONFIG + " deployment_config")


@lab_check("lab05", 2)
def lab05_openai_app_serves(session: "LabSession", *, model_id: str) -> None:
    """The OpenAI-compatible app runs and lists the model."""
    look = "Task 2: build_openai_app(...) and serve.run(app, name=..., route_prefix=...)"
    _app(session, "llm", task=2, look=look)
    models = _json(_get(session.url("llm", "/v1/models"), look=look), look=look)
    ids = [m.get("id") for m in models.get("data") or []]
    _expect(model_id in ids, f"/v1/models lists {ids}, not {model_id!r}.", look)


def _l05_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@lab_check("lab05", 3)
def lab05_streamed_reply(session: "LabSession", pieces: Any, *, model_id: str, question: str,
                         max_tokens: int) -> None:
    """The reply was streamed in several pieces, and they add up to the model's answer."""
    look = "Task 3: stream=True, and appending each chunk's choices[0].delta.content to pieces"
    _expect(isinstance(pieces, list) and len(pieces) > 1,
            f"pieces is {type(pieces).__name__} with {len(pieces) if isinstance(pieces, list) else 0}"
            " items; a streamed reply arrives in several chunks.", look)
    body = {"model": model_id, "max_tokens": max_tokens, "temperature": 0,
            "messages": _l05_messages(question)}
    reply = _json(_post(session.url("llm", "/v1/chat/completions"), body, look=look,
                        timeout_s=120), look=look)
    whole = reply["choices"][0]["message"]["content"]
    streamed = "".join(p for p in pieces if isinstance(p, str))
    _expect(streamed == whole,
            f"The pieces add up to {streamed[:80]!r}, but the model's greedy answer to the "
            f"same question is {whole[:80]!r}.",
            look + " (same question, max_tokens and temperature=0)")


# --- lab 06: two applications and a canary ------------------------------------------------------

_L06_APPS = "Task 1: the stable and canary applications"
_L06_ROUTER = "Task 2: CanaryRouter"


def _versions(session: "LabSession", short: str, count: int, look: str) -> list[Any]:
    out = []
    for i in range(count):
        body = _json(_post(session.url(short), {"text": f"a friendly service {i}"}, look=look),
                     look=look)
        result = body.get("result") if isinstance(body.get("result"), dict) else body
        out.append(result.get("code_version"))
    return out


@lab_check("lab06", 1)
def lab06_two_versions(session: "LabSession") -> None:
    """Two applications answer at their own routes: v1 (stable) and v2 (canary)."""
    for short, version in (("stable", "v1"), ("canary", "v2")):
        _app(session, short, task=1, look=_L06_APPS)
        seen = set(_versions(session, short, 3, _L06_APPS))
        _expect(seen == {version}, f"{session.url(short)} answers code versions {seen}, "
                f"not {version!r}.", _L06_APPS + " (ConfigurableClassifier / ...V2)")


@lab_check("lab06", 2)
def lab06_split_matches(session: "LabSession", *, canary_percent: int, requests: int,
                        tolerance: float) -> None:
    """The router sends about canary_percent % of requests to the canary."""
    _app(session, "router", task=2, look=_L06_ROUTER)
    seen = _versions(session, "router", requests, _L06_ROUTER + ".__call__ (return the result)")
    share = sum(v == "v2" for v in seen) / len(seen)
    unknown = {v for v in seen if v not in ("v1", "v2")}
    _expect(not unknown, f"The router's answers carry code versions {unknown}.", _L06_ROUTER)
    _expect(abs(share - canary_percent / 100) <= tolerance,
            f"{share:.0%} of {requests} requests went to the canary; the split is "
            f"{canary_percent}% (tolerance {tolerance:.0%}).",
            _L06_ROUTER + ": reconfigure() and the random draw in __call__")


@lab_check("lab06", 3)
def lab06_promoted(session: "LabSession", *, requests: int) -> None:
    """The canary was promoted: all traffic on v2, the stable app retired."""
    look = "Task 3: canary_percent 100, then delete the stable application"
    names = _serve_apps(session)
    _expect(session.app_name("stable") not in names,
            f"{session.app_name('stable')!r} still exists.", look + " (serve.delete)")
    seen = _versions(session, "router", requests, look)
    _expect(set(seen) == {"v2"}, f"The router's answers had code versions {set(seen)}.", look)


# --- lab 07: diagnose and fix a broken deployment ---------------------------------------------------

#: The causes a diagnosis may name.
CAUSES = {
    "unschedulable": "its replicas ask for resources no node has, so they never start",
    "crashes": "its replicas start and then raise (constructor or reconfigure)",
    "ignored-key": "it runs, but a misspelled key in the config was silently ignored",
    "healthy": "nothing is wrong with it",
}
_L07_APPS = ("alpha", "beta", "gamma")


def lab07_observed_causes(session: "LabSession", broken_config_path: Any) -> dict[str, str]:
    """What the live cluster shows for each of lab 07's applications (see :data:`CAUSES`)."""
    import yaml

    from helpers.serve_cli import check_config_fields
    from helpers.serve_status import pending_demands

    config = yaml.safe_load(Path(broken_config_path).read_text())
    entries = {a["name"]: a for a in config["applications"]}
    typos = {p.where for p in check_config_fields(config)}
    demands = " ".join(pending_demands(session.cluster))
    apps = _serve_apps(session)
    causes = {}
    for index, short in enumerate(_L07_APPS):
        name = session.app_name(short)
        app = apps.get(name) or {}
        entry = entries.get(name) or {}
        cpus = [(d.get("ray_actor_options") or {}).get("num_cpus") for d in
                entry.get("deployments") or []]
        status = app.get("status")
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            causes[short] = "crashes"
        elif status == "DEPLOYING" and any(c and f"'CPU': {float(c)}" in demands for c in cpus):
            causes[short] = "unschedulable"
        elif status == "RUNNING" and any(w.startswith(f"applications[{index}]") for w in typos):
            causes[short] = "ignored-key"
        elif status == "RUNNING":
            causes[short] = "healthy"
        else:
            causes[short] = f"unclear ({status})"
    return causes


@lab_check("lab07", 1)
def lab07_diagnosis(session: "LabSession", diagnosis: Any, *, broken_config_path: Any) -> None:
    """The diagnosis names the cause that the cluster shows for each application."""
    look = "Task 1: diagnosis, with serve status, pending_demands(cluster), check_config_fields"
    _expect(isinstance(diagnosis, dict) and set(diagnosis) == set(_L07_APPS),
            f"diagnosis must map each of {list(_L07_APPS)} to a cause; it is {diagnosis!r}.",
            look)
    bad = [c for c in diagnosis.values() if c not in CAUSES]
    _expect(not bad, f"{bad} are not causes; choose from {sorted(CAUSES)}.", look)
    observed = lab07_observed_causes(session, broken_config_path)
    wrong = sorted(app for app, said in diagnosis.items() if observed[app] != said)
    # The feedback names the applications, never the cause the cluster shows: that is the task.
    _expect(not wrong, f"Your diagnosis is not what the cluster shows for {', '.join(wrong)} "
            f"({len(wrong)} of {len(_L07_APPS)}).",
            look + "; for each of them ask: does it run, did its replicas start, does it run "
            "as its file says?")
    print(lab07_intent(broken_config_path))


def lab07_intent(broken_config_path: Any) -> str:
    """What lab 07's colleague meant each application to be: shown once the diagnosis is
    right (Task 2 fixes the config to it), never before."""
    import yaml

    config = yaml.safe_load(Path(broken_config_path).read_text())
    gamma = config["applications"][2]["deployments"][0]
    replicas = gamma.get("num_replicas", gamma.get("num_replica"))
    return ("Diagnosis right. What your colleague meant (Task 2): alpha's replicas reserve a "
            "quarter of a CPU each (num_cpus 0.25); beta classifies at threshold 0.5; gamma "
            f"runs {replicas} replicas.")


@lab_check("lab07", 2)
def lab07_all_fixed(session: "LabSession", *, gamma_replicas: int) -> None:
    """All three applications run as intended and answer."""
    look = "Task 2: the fixed config (fixed_path), deployed with `serve deploy`"
    for short in _L07_APPS:
        app = _app(session, short, task=2, look=look)
        body = _json(_post(session.url(short), {"text": "a wonderful day"}, look=look),
                     look=look)
        _expect(body.get("label") in ("positive", "negative"),
                f"{short} answered {str(body)[:200]}.", look)
        if short == "gamma":
            dep: dict[str, Any] = next(iter((app.get("deployments") or {}).values()), {})
            running = len(_running_replicas(dep))
            _expect(running == gamma_replicas,
                    f"gamma runs {running} replica(s); its config meant {gamma_replicas}.", look)


# --- lab 08: custom metrics, and queries over the scrape -------------------------------------

#: The histogram's bounds (ms) the lab gives; the p95 checks hold it to these.
LAB08_LATENCY_MS_BUCKETS = [50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 2000]
#: How close a p95 from the buckets must come to the client's own: the buckets' interpolation
#: and the time a request spends outside the replica (the proxy) make them differ a little.
LAB08_P95_TOLERANCE = 0.15
LAB08_P95_TOLERANCE_MS = 40.0
_L08_METRICS = "Task 1: _create_metrics and _record in TimedService"
_L08_P95 = "Task 2: p95_ms"
_L08_SHARE = "Task 3: error_share"


def timed_load(url: str, work_ms: "Sequence[float]", *, concurrency: int = 6,
               timeout_s: float = 30.0) -> list[float]:
    """POST ``{"text", "work_ms"}`` once per value of ``work_ms``, ``concurrency`` at a time;
    each request's time (ms) as the client saw it. A failed request is an error that says so."""
    import requests

    local = threading.local()

    def one(work: float) -> float:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        response = local.session.post(url, json={"text": "measure me", "work_ms": work},
                                      timeout=timeout_s)
        if response.status_code != 200:
            raise WorkbookError(f"POST {url} answered HTTP {response.status_code}: "
                                f"{response.text[:200]}",
                                "deploy TimedService as the lab's cell does, then run this again.")
        return (time.perf_counter() - started) * 1000

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, work_ms))


def mixed_load(url: str, *, answered: int, refused: int) -> None:
    """``answered`` requests with a text (200) and ``refused`` without one (400), mixed."""
    import requests

    bodies = [{"text": "fine", "work_ms": 0}] * answered + [{"work_ms": 0}] * refused
    random.Random(answered * 1000 + refused).shuffle(bodies)
    with requests.Session() as http:
        for body in bodies:
            code = http.post(url, json=body, timeout=30).status_code
            if code != (200 if "text" in body else 400):
                raise WorkbookError(f"POST {url} with {body} answered HTTP {code}.",
                                    "deploy TimedService as the lab's cell does (400 without "
                                    "a text), then run this again.")


def _l08_total(samples: "pd.DataFrame", app: str, name: str, **tags: str) -> float:
    """``sum(NAME{application=APP, TAGS})`` in one scrape."""
    if samples.empty:
        return 0.0
    rows = samples[(samples["name"] == name) & samples["labels"].map(
        lambda labels: labels.get("application") == app
        and all(labels.get(k) == v for k, v in tags.items()))]
    return float(rows["value"].sum())


def scrape_until(session: "LabSession", before: "pd.DataFrame", name: str, increase: float, *,
                 timeout_s: float = 10.0) -> "pd.DataFrame":
    """Scrape the lab's metrics until ``sum(NAME)`` of this lab's "timed" application grew by
    ``increase`` since ``before`` (the replicas report every second; a cluster's agents may
    take longer); that scrape. A :class:`CheckProblem` after ``timeout_s`` says what it saw."""
    from helpers.metrics import scrape_cluster

    app = session.app_name("timed")
    start = _l08_total(before, app, name)
    deadline = time.monotonic() + timeout_s
    while True:
        after = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
        grew = _l08_total(after, app, name) - start
        if grew >= increase:
            return after
        if time.monotonic() > deadline:
            seen = sorted(set(after["name"])) if not after.empty else []
            raise CheckProblem(
                f"{name} of {app!r} grew by {grew:.0f} in {timeout_s:.0f} s after {increase:.0f} "
                f"requests (the scrape has {seen or 'no ray_lab08_ metric'}).",
                _L08_METRICS + ": each request recorded once, with the metric names the task gives")
        time.sleep(1.0)


def _l08_call(func: Any, before: "pd.DataFrame", after: "pd.DataFrame", look: str) -> float:
    """The student's query on two scrapes: a number, or a problem that says what came back."""
    if not callable(func):
        raise CheckProblem(f"Expected the function you wrote, got {type(func).__name__}.", look)
    value = func(before, after)
    _expect(isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)),
            f"It returned {value!r}, not a finite number.", look)
    return float(value)


def _l08_p95_against_the_client(session: "LabSession", p95_ms: Any, work_ms: "Sequence[float]",
                                look: str) -> None:
    import numpy as np

    from helpers.metrics import scrape_cluster

    _app(session, "timed", task=2, look=_L08_METRICS)
    before = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
    client_ms = timed_load(session.url("timed"), work_ms)
    after = scrape_until(session, before, "ray_lab08_latency_ms_count", len(work_ms))
    yours = _l08_call(p95_ms, before, after, look)
    client = float(np.percentile(client_ms, 95))
    allowed = max(LAB08_P95_TOLERANCE * client, LAB08_P95_TOLERANCE_MS)
    _expect(abs(yours - client) <= allowed,
            f"p95_ms gave {yours:.1f} ms for {len(work_ms)} requests whose p95 the client "
            f"measured at {client:.1f} ms (allowed: {allowed:.0f} ms either way).",
            look + ": the increase per bucket, the rank (0.95 of the +Inf bucket's increase) "
            "and the interpolation inside the bucket that reaches it")


@lab_check("lab08", 1)
def lab08_metrics_count_requests(session: "LabSession") -> None:
    """TimedService's histogram and counter record every request, by outcome."""
    from helpers.metrics import scrape_cluster

    _app(session, "timed", task=1, look=_L08_METRICS)
    before = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
    mixed_load(session.url("timed"), answered=8, refused=4)
    after = scrape_until(session, before, "ray_lab08_requests_total", 12)
    app = session.app_name("timed")

    def grew(name: str, **tags: str) -> float:
        return _l08_total(after, app, name, **tags) - _l08_total(before, app, name, **tags)

    ok, refused = grew("ray_lab08_requests_total", outcome="ok"), \
        grew("ray_lab08_requests_total", outcome="bad_request")
    _expect((ok, refused) == (8, 4),
            f"The counter's increase by outcome: ok {ok:.0f}, bad_request {refused:.0f}, for 8 "
            "answered and 4 refused requests.",
            _L08_METRICS + ": requests.inc with tags={'outcome': outcome}")
    deadline = time.monotonic() + 15
    while grew("ray_lab08_latency_ms_count") < 8 and time.monotonic() < deadline:
        after = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
        time.sleep(1.0)
    observed = grew("ray_lab08_latency_ms_count")
    _expect(observed == 8, f"The histogram lab08_latency_ms observed {observed:.0f} requests "
            "of 8 answered (and 4 refused).",
            _L08_METRICS + ": latency_ms.observe(elapsed_ms) for an answered request only")


@lab_check("lab08", 2)
def lab08_p95_matches_the_client(session: "LabSession", p95_ms: Any) -> None:
    """p95_ms, on two scrapes around a load, is within 15 % (or 40 ms) of the client's p95."""
    work = [100 + 500 * i / 59 for i in range(60)]
    random.Random(80).shuffle(work)
    _l08_p95_against_the_client(session, p95_ms, work, _L08_P95)


def _l08_share_of(session: "LabSession", error_share: Any, *, answered: int,
                  refused: int) -> float:
    """error_share on two scrapes around ``answered`` and ``refused`` requests."""
    from helpers.metrics import scrape_cluster

    _app(session, "timed", task=3, look=_L08_METRICS)
    before = scrape_cluster(session.cluster, prefixes=("ray_lab08_",))
    mixed_load(session.url("timed"), answered=answered, refused=refused)
    after = scrape_until(session, before, "ray_lab08_requests_total", answered + refused)
    return _l08_call(error_share, before, after, _L08_SHARE)


@lab_check("lab08", 3)
def lab08_error_share_matches(session: "LabSession", error_share: Any) -> None:
    """error_share, on two scrapes around 30 answered and 10 refused requests, is 0.25."""
    share = _l08_share_of(session, error_share, answered=30, refused=10)
    _expect(abs(share - 0.25) < 1e-6, f"error_share gave {share:.4f} for 10 refused of 40 "
            "requests (0.25).",
            _L08_SHARE + ": the increase of outcome bad_request over the increase of all outcomes")


# --- lab 09: models on logical GPUs -----------------------------------------------------------

#: What each of lab 09's models must reserve per replica, and how many replicas it runs.
LAB09_GPUS = {"embed": 0.5, "rerank": 0.5, "generate": 1.0}
LAB09_REPLICAS = 2
_L09_LOOK = {short: f"Task {task}: {short}_deployment (num_replicas, max_replicas_per_node, "
                    "ray_actor_options)"
             for task, short in enumerate(LAB09_GPUS, start=1)}


def lab09_gpu_nodes(session: "LabSession", *, gpus: float = 2.0) -> dict[str, float]:
    """The alive nodes with at least ``gpus`` GPUs (node id -> its GPUs): at least two, or an
    error that says what the cluster lacks."""
    import ray

    session.cluster.connect()
    found = {node["NodeID"]: node.get("Resources", {}).get("GPU", 0.0) for node in ray.nodes()
             if node.get("Alive") and node.get("Resources", {}).get("GPU", 0.0) >= gpus}
    if len(found) < 2:
        raise WorkbookError(
            f"This lab needs two nodes with {gpus:g} GPUs each; the cluster has {len(found)}.",
            "on a laptop leave ray_address empty (the lab starts two such nodes); on a shared "
            "cluster, ask for nodes started with `ray start --num-gpus=N` (logical GPUs are "
            "fine), two per student.")
    return found


def lab09_where(session: "LabSession", short: str, replicas: int | None = None, *,
                timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """What each of a model's replicas says of its placement (node, GPU ids, the resources it
    was given), asked through a handle: Serve's proxy prefers replicas on its own node, a
    handle in this process picks among all of them. ``replicas``: how many must answer (a
    :class:`CheckProblem` otherwise); None: those RUNNING now, after waiting for the
    application as a check does, and none if it never came."""
    from ray import serve

    name = session.app_name(short)
    if replicas is None:
        try:
            replicas = len(_l09_replicas(session, short))
        except CheckProblem:
            return []
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < replicas and time.monotonic() < deadline:
        answer = _in_thread(lambda: serve.get_app_handle(name).remote().result(timeout_s=30))
        seen.setdefault(answer["replica"], answer)
    if len(seen) < replicas:
        raise CheckProblem(f"Only {len(seen)} of {replicas} replicas of {name!r} answered "
                           f"within {timeout_s:.0f} s.", _L09_LOOK[short])
    return list(seen.values())


def _l09_replicas(session: "LabSession", short: str) -> list[dict[str, Any]]:
    """The model's RUNNING replicas, after waiting for them; a problem naming what is pending."""
    from helpers.serve_status import pending_demands

    look = _L09_LOOK[short]
    started = time.monotonic()
    while True:
        apps = _serve_apps(session)
        app = apps.get(session.app_name(short), {})
        dep = (app.get("deployments") or {}).get("ResourceProbe", {})
        running = _running_replicas(dep)
        wanted = (dep.get("deployment_config") or {}).get("num_replicas")
        if app.get("status") == "RUNNING" and running and len(running) == wanted:
            return running
        waited = time.monotonic() - started
        # `serve deploy` returns once Serve holds the config: an app still missing after 2 s
        # was never deployed; a pending replica may still be placed, so it gets a minute.
        if (not app and waited > 2) or app.get("status") == "DEPLOY_FAILED" or waited > 60:
            break
        time.sleep(1.0)
    if not app:
        raise CheckProblem(f"Serve has no application {session.app_name(short)!r}.",
                           look + "; the cell's `serve deploy` (its output says why it failed)")
    if app.get("status") == "DEPLOY_FAILED":
        raise CheckProblem(f"{session.app_name(short)!r} failed to deploy: "
                           f"{(app.get('message') or '').strip()[:300]}", look)
    pending = pending_demands(session.cluster)
    raise CheckProblem(
        f"{session.app_name(short)!r} is {app.get('status')} with {len(running)} replica(s) "
        f"running of {wanted}" + (f"; pending on the cluster: {pending}" if pending else "") + ".",
        look + ": a share no node can give stays pending (`ray status` lists it)")


def _l09_placed(session: "LabSession", short: str) -> None:
    look = _L09_LOOK[short]
    running = _l09_replicas(session, short)
    _expect(len(running) == LAB09_REPLICAS,
            f"{short} runs {len(running)} replica(s); the lab asks for {LAB09_REPLICAS}.", look)
    nodes = [r.get("node_id") for r in running]
    _expect(len(set(nodes)) == len(nodes),
            f"{short}'s replicas share a node ({sorted(n[:8] for n in nodes if n)}): one node's "
            "failure would take them all.", look + ": max_replicas_per_node")
    found = lab09_where(session, short, len(running))
    shares = sorted(float(r["assigned"].get("GPU", 0)) for r in found)
    _expect(shares == [LAB09_GPUS[short]] * len(running),
            f"{short}'s replicas were given GPU shares {shares}; the lab asks for "
            f"{LAB09_GPUS[short]:g} each.", look + ": ray_actor_options num_gpus")
    cpus = sorted(float(r["assigned"].get("CPU", 0)) for r in found)
    _expect(cpus == [0.0] * len(running), f"{short}'s replicas reserve CPUs {cpus}; the lab "
            "asks for none (they wait on their GPU).", look + ": ray_actor_options num_cpus")


@lab_check("lab09", 1)
def lab09_embed_placed(session: "LabSession") -> None:
    """embed runs two replicas on two nodes, half a GPU and no CPU each."""
    _l09_placed(session, "embed")


@lab_check("lab09", 2)
def lab09_rerank_placed(session: "LabSession") -> None:
    """rerank runs two replicas on two nodes, half a GPU and no CPU each, beside embed."""
    _l09_placed(session, "rerank")
    _l09_replicas(session, "embed")  # still there: the config kept it


@lab_check("lab09", 3)
def lab09_generate_fits(session: "LabSession") -> None:
    """generate runs two replicas on two nodes, a whole GPU each, and nothing is pending."""
    _l09_placed(session, "generate")
    for short in ("embed", "rerank"):
        _l09_replicas(session, short)


def expected_checks_text(lab: str) -> str:
    """A short listing of a lab's checks (for the instructor's README and reports)."""
    return "\n".join(f"task {c.task} {'hidden ' if c.hidden else ''}{c.name}: {c.summary}"
                     for c in checks_for(lab))


# The hidden checks are the instructor's (helpers/labs/hidden_checks.py): the grader puts their
# cells back into each submission. A student kit (python -m helpers.labs kit) leaves the module
# out, and then only the visible checks exist here.
try:
    from helpers.labs.hidden_checks import *  # noqa: F403 - registers them, and names them here
except ModuleNotFoundError as _err:  # pragma: no cover - the student kit
    if _err.name != "helpers.labs.hidden_checks":
        raise
    HIDDEN_CHECKS_INSTALLED = False
else:
    HIDDEN_CHECKS_INSTALLED = True
