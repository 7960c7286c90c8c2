"""The grader runs a lab's checks itself: scores that no code in a submission can write.

When a student runs a lab, its check cells run in the student's kernel and print feedback.
When the grader runs a submission (:mod:`helpers.labs.grading`), the check cells do not run in
that kernel: the grader executes the notebook cell by cell (nbclient) and, at each check cell
and hidden-check cell, runs the checks in its own process, connected to the same cluster,
and writes their feedback into the cell's outputs. So

* a score comes from the results the grader's own checks return (:func:`collected_results`),
  never from a file or a variable the kernel writes, and replacing a check function in the
  kernel (``checks.lab01_x = lambda *a, **k: None``) changes nothing;
* a threshold or a specification a check is given (``speedup``, ``replicas``,
  ``target_p90_s``, any name set in the lab's parameters cell) has the value the lab's
  definition gives it (the source notebook's parameters cell, with the instructor's ``-p``
  values and run profile), whatever a cell of the submission assigned to it;
* the hidden checks need not exist in the student's environment at all;
* what the student made (the deliverables: a reply, a handle, a config file's path, a load's
  frame, a query function) is read from the kernel, as data, by the grader's own code sent to
  the kernel (:data:`EXPORT_MIME`), and then checked against the real cluster like any answer:
  a handle becomes the grader's own handle to the application it names, a function stays in
  the kernel and is called there on the grader's inputs (:class:`KernelFunction`).

Which argument is which comes from the check cell's source as the lab's source notebook has
it (:func:`parse_check_cell`; the grader restores every check cell before it runs anything).

Usage (what :func:`helpers.labs.grading.grade_submission` does)::

    referee = Referee(lab_session, definition)        # the grader's own LabSession
    client = RefereeClient(nb, referee=referee, ...)  # an nbclient NotebookClient
    client.execute()
    referee.results                                   # every check's CheckResult
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbclient import NotebookClient

from helpers.check_feedback import feedback
from helpers.errors import WorkbookError
from helpers.labs import checks
from helpers.labs.checks.framework import (
    CheckResult,
    LabCheckFailed,
    collected_results,
    conclude,
    deferred_failures,
)
from helpers.labs.notebooks import CHECK_TAG, HIDDEN_TAG

if TYPE_CHECKING:  # pragma: no cover
    import nbformat

    from helpers.labs.session import LabSession

__all__ = [
    "EXPORT_MIME",
    "CheckCall",
    "CheckCell",
    "parse_check_cell",
    "lab_definition",
    "check_sources",
    "KernelFunction",
    "Unexported",
    "Referee",
    "RefereeClient",
    "is_check_cell",
]

#: The output type the grader's export code displays the kernel's values with.
EXPORT_MIME = "application/vnd.workbook.export+json"

#: The most a kernel may send back for one check cell (a load's frame is a few hundred kB).
MAX_EXPORT_BYTES = 64 * 2**20

_CHECK_TAGS = (CHECK_TAG, HIDDEN_TAG)


# --- what a check cell calls ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckCall:
    """``checks.NAME(lab, arg, ..., key=arg, ...)``: each argument a name or a literal."""

    name: str
    args: tuple[ast.expr, ...]
    kwargs: tuple[tuple[str, ast.expr], ...]

    def names(self) -> list[str]:
        """The variable names among the arguments (``lab`` included)."""
        every = [*self.args, *(value for _, value in self.kwargs)]
        return [a.id for a in every if isinstance(a, ast.Name)]


@dataclass(frozen=True)
class CheckCell:
    """The calls of one check cell, and whether they run under ``deferred_failures()``."""

    calls: tuple[CheckCall, ...]
    deferred: bool


def _not_a_check(source: str, why: str) -> WorkbookError:
    return WorkbookError(
        f"A check cell of the lab's source is not one the grader can run ({why}): "
        f"{source.strip()[:200]!r}",
        "write check cells as checks.NAME(lab, name_or_literal, ..., key=...), several "
        "inside `with checks.deferred_failures():` (helpers/labs/referee.py).",
    )


def _call(node: ast.stmt, source: str) -> CheckCall:
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        raise _not_a_check(source, "a statement that is not a call")
    call = node.value
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "checks"
    ):
        raise _not_a_check(source, "a call of something other than checks.NAME")
    if not callable(getattr(checks, func.attr, None)) or not hasattr(
        getattr(checks, func.attr), "info"
    ):
        raise _not_a_check(source, f"checks.{func.attr} is not a registered check")
    every = [*call.args, *(k.value for k in call.keywords)]
    for arg in every:
        if isinstance(arg, ast.Name):
            continue
        try:
            ast.literal_eval(arg)
        except ValueError:
            raise _not_a_check(source, "an argument that is neither a name nor a literal") from None
    if any(k.arg is None for k in call.keywords) or any(
        isinstance(a, ast.Starred) for a in call.args
    ):
        raise _not_a_check(source, "a * or ** argument")
    return CheckCall(
        func.attr, tuple(call.args), tuple((str(k.arg), k.value) for k in call.keywords)
    )


def parse_check_cell(source: str) -> CheckCell:
    """The checks a check cell (or hidden-check cell) calls, with their arguments.

    Two forms, as the labs write them: one or more ``checks.NAME(...)`` statements; or one
    ``with checks.deferred_failures():`` block of them. Anything else is a
    :class:`WorkbookError` (a lab source the grader cannot run; a test reads every lab's).
    """
    try:
        body = ast.parse(source).body
    except SyntaxError as err:
        raise _not_a_check(source, f"a syntax error: {err.msg}") from None
    if not body:
        raise _not_a_check(source, "no statement")
    if len(body) == 1 and isinstance(body[0], ast.With):
        block = body[0]
        items = block.items
        if not (
            len(items) == 1
            and isinstance(items[0].context_expr, ast.Call)
            and ast.unparse(items[0].context_expr.func) == "checks.deferred_failures"
            and items[0].optional_vars is None
        ):
            raise _not_a_check(source, "a `with` other than checks.deferred_failures()")
        return CheckCell(tuple(_call(node, source) for node in block.body), True)
    return CheckCell(tuple(_call(node, source) for node in body), False)


def is_check_cell(cell: Mapping[str, Any]) -> bool:
    """A code cell tagged as a (visible or hidden) check cell."""
    tags = (cell.get("metadata") or {}).get("tags") or []
    return cell.get("cell_type") == "code" and any(tag in tags for tag in _CHECK_TAGS)


def check_sources(source: nbformat.NotebookNode) -> frozenset[str]:
    """The sources of the lab's check and hidden-check cells, each parsed once
    (:func:`parse_check_cell`: a cell the grader could not run is an error here, before any
    submission runs)."""
    found = frozenset(c.source for c in source.cells if is_check_cell(c))
    for text in found:
        parse_check_cell(text)
    return found


def lab_definition(source: nbformat.NotebookNode, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The lab's parameters as its definition gives them: the source notebook's parameters
    cell (each ``name: type = literal``), overridden by ``parameters`` (the grader's ``-p``
    values, the run profile's, the student id). The checks' thresholds and specifications
    come from here, never from the submission."""
    cell = next((c for c in source.cells if "parameters" in (c.metadata.get("tags") or [])), None)
    if cell is None:
        raise WorkbookError(
            "The lab's source has no cell tagged `parameters`.",
            "tag the lab's parameters cell `parameters` (helpers/labs/notebooks.py).",
        )
    values: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and value is not None:
            values[target.id] = ast.literal_eval(value)
    values.update(parameters)
    return values


# --- reading the kernel's values ---------------------------------------------------------------

#: Sent to the kernel: displays the values named (``__workbook_names``) as JSON, each encoded
#: by type. Only data comes back; the grader never unpickles what a kernel sends.
_EXPORT_CODE = r"""
def __workbook_export(__values):
    import json, pathlib
    from IPython.display import display

    def enc(v, depth=0):
        if depth > 30:
            return {"$unsupported": "nested too deeply", "repr": ""}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if type(v).__module__ == "numpy" and hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
            return enc(v.item(), depth + 1)
        if isinstance(v, (list, tuple)):
            return [enc(x, depth + 1) for x in v]
        if isinstance(v, dict):
            return {"$dict": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if isinstance(v, pathlib.PurePath):
            return {"$path": str(v)}
        kind = type(v).__name__
        if kind == "DataFrame" and hasattr(v, "to_json"):
            return {"$frame": v.to_json(orient="split", date_format="iso", default_handler=str)}
        if kind == "DeploymentHandle":
            return {"$handle": [str(v.app_name), str(v.deployment_name)]}
        if kind == "LLMConfig" and hasattr(v, "model_dump"):
            return {"$llm_config": v.model_dump(mode="json", exclude_unset=True)}
        if callable(v):
            return {"$function": kind}
        return {"$unsupported": kind, "repr": repr(v)[:300]}

    display({%(mime)r: json.dumps({k: enc(v) for k, v in __values.items()})}, raw=True)


def __workbook_dec(v):
    import json, pandas
    if isinstance(v, dict) and "$frame" in v:
        d = json.loads(v["$frame"])
        return pandas.DataFrame(d["data"], columns=d["columns"], index=d["index"])
    return v
"""


class KernelCallError(RuntimeError):
    """The kernel could not give what the grader asked for (the student's code raised, or
    the kernel did not answer)."""


class Unexported:
    """A value of a type the grader does not read from a kernel (its name and ``repr``)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text


class _Missing:
    pass


_MISSING = _Missing()


def _unexported(kind: str, text: str) -> Unexported:
    name = re.sub(r"\W", "", str(kind))[:60] or "Unexported"
    if not name[0].isalpha():
        name = "Unexported"
    return type(name, (Unexported,), {})(str(text)[:300])


class KernelFunction:
    """A function the student defined, left in their kernel: calling it runs it there, on
    the arguments given (data frames and plain values), and returns what it returned."""

    def __init__(self, name: str, referee: Referee) -> None:
        self.__name__ = name
        self._referee = referee

    def __call__(self, *args: Any) -> Any:
        return self._referee.call_in_kernel(self.__name__, args)

    def __repr__(self) -> str:
        return f"<your function {self.__name__}>"


def _encode_argument(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return {"$frame": value.to_json(orient="split", date_format="iso", default_handler=str)}
    return json.loads(json.dumps(value, default=str))


# --- the referee -------------------------------------------------------------------------------


@dataclass
class Referee:
    """Runs one submission's check cells in the grader's process (see the module docstring).

    ``check_sources`` are the sources of the lab's check cells (:func:`check_sources`): a
    cell of the submission is run here only when it is one of them (restored by the grader),
    so a cell the student tagged ``check`` runs in the kernel like any other, scoring nothing.
    ``session`` is the grader's own :class:`~helpers.labs.session.LabSession` for the
    student (same lab, same student id, same cluster); ``definition`` the lab's parameters
    (:func:`lab_definition`); ``timeout_s`` bounds every read from the kernel.
    """

    session: LabSession | Any  # a LabSession, or the grader's lazy one (grading._GraderSession)
    definition: Mapping[str, Any]
    check_sources: frozenset[str] = frozenset()  # the lab source's check cells
    timeout_s: float = 300.0
    results: list[CheckResult] = field(default_factory=list)
    cells_run: int = 0
    _client: Any = None
    _loop: asyncio.AbstractEventLoop | None = None

    # -- values --------------------------------------------------------------------------------

    def _decode(self, value: Any, name: str) -> Any:
        import pandas as pd

        if isinstance(value, list):
            return [self._decode(v, name) for v in value]
        if not isinstance(value, dict):
            return value
        if "$dict" in value:
            out = {}
            for key, item in value["$dict"]:
                if isinstance(key, (str, int, float, bool, type(None))):  # a key JSON can carry
                    out[key] = self._decode(item, name)
            return out
        if "$path" in value:
            return Path(str(value["$path"]))
        if "$frame" in value:
            split = json.loads(str(value["$frame"]))  # no type guessing: the kernel's values
            return pd.DataFrame(split["data"], columns=split["columns"], index=split["index"])
        if "$handle" in value:
            from ray import serve

            app, deployment = (str(part) for part in value["$handle"])
            return serve.get_deployment_handle(deployment, app)
        if "$llm_config" in value:
            from ray.serve.llm import LLMConfig

            try:
                return LLMConfig.model_validate(value["$llm_config"])
            except Exception as err:  # noqa: BLE001 - the student's config is reported
                return _unexported("LLMConfig", f"an LLMConfig that does not validate: {err}")
        if "$function" in value:
            return KernelFunction(name, self)
        if "$missing" in value:
            return _MISSING
        return _unexported(str(value.get("$unsupported", "object")), str(value.get("repr", "")))

    async def _kernel_json(self, code: str) -> Any:
        received: dict[str, str] = {}

        def hook(msg: dict[str, Any]) -> None:
            if msg.get("msg_type") == "display_data":
                data = (msg.get("content") or {}).get("data") or {}
                if EXPORT_MIME in data:
                    received["json"] = str(data[EXPORT_MIME])

        try:
            reply = await self._client.kc.execute_interactive(
                code,
                store_history=False,
                allow_stdin=False,
                output_hook=hook,
                timeout=self.timeout_s,
            )
        except TimeoutError as err:
            raise KernelCallError(f"the kernel did not answer in {self.timeout_s:g} s") from err
        content = reply.get("content") or {}
        if content.get("status") != "ok":
            raise KernelCallError(
                f"{content.get('ename', 'error')}: {str(content.get('evalue', ''))[:300]}"
            )
        text = received.get("json")
        if text is None:
            raise KernelCallError("the kernel sent nothing back")
        if len(text) > MAX_EXPORT_BYTES:
            raise KernelCallError(f"the kernel sent {len(text)} bytes, more than the grader reads")
        return json.loads(text)

    async def _deliverables(self, names: Sequence[str]) -> dict[str, Any]:
        if not names:
            return {}
        code = (
            _EXPORT_CODE % {"mime": EXPORT_MIME}
            + "\n__workbook_ns = get_ipython().user_ns\n"
            + "__workbook_export({__n: __workbook_ns[__n] "
            + f"for __n in {list(names)!r} if __n in __workbook_ns}})\n"
            + "del __workbook_export, __workbook_dec, __workbook_ns\n"
        )
        raw = await self._kernel_json(code)
        raw = raw if isinstance(raw, dict) else {}
        # A name the kernel does not have (the cell that sets it raised first) is missing.
        return {n: self._decode(raw[n], n) if n in raw else _MISSING for n in names}

    def call_in_kernel(self, name: str, args: Sequence[Any]) -> Any:
        """Call the student's function ``name`` in their kernel on ``args``; its result (from
        a check running in a worker thread, while the kernel's event loop waits)."""
        payload = json.dumps([_encode_argument(a) for a in args])
        code = (
            _EXPORT_CODE % {"mime": EXPORT_MIME}
            + "\nimport json as __workbook_json\n"
            + f"__workbook_args = [__workbook_dec(a) for a in __workbook_json.loads({payload!r})]\n"
            + "try:\n"
            + f"    __workbook_export({{'result': get_ipython().user_ns[{name!r}](*__workbook_args)}})\n"
            + "finally:\n"
            + "    del __workbook_export, __workbook_dec, __workbook_args, __workbook_json\n"
        )
        if self._loop is None:
            raise KernelCallError("no kernel to call")
        future = asyncio.run_coroutine_threadsafe(self._kernel_json(code), self._loop)
        raw = future.result(self.timeout_s + 5)
        return self._decode(raw.get("result") if isinstance(raw, dict) else None, name)

    # -- running a cell ------------------------------------------------------------------------

    def _argument(self, node: ast.expr, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Name):
            if node.id == "lab":
                return self.session
            if node.id in self.definition:
                return self.definition[node.id]
            return values[node.id]
        return ast.literal_eval(node)

    def _run_calls(self, cell: CheckCell, values: Mapping[str, Any]) -> tuple[str, str]:
        """Run the cell's checks here (a worker thread); (what they printed, the failure
        message or "")."""
        printed = io.StringIO()
        failure = ""
        with collected_results() as results, contextlib.redirect_stdout(printed):
            try:
                with deferred_failures() if cell.deferred else contextlib.nullcontext():
                    for call in cell.calls:
                        check = getattr(checks, call.name)
                        missing = [n for n in call.names() if values.get(n) is _MISSING]
                        if missing:
                            self._not_defined(check.info, missing)
                            continue
                        check(
                            *(self._argument(a, values) for a in call.args),
                            **{k: self._argument(v, values) for k, v in call.kwargs},
                        )
            except LabCheckFailed as err:
                failure = str(err)
        self.results.extend(results)
        return printed.getvalue(), failure

    def _not_defined(self, info: Any, names: list[str]) -> None:
        conclude(
            info,
            False,
            feedback(
                f"{', '.join(names)} is not defined: the cell that sets it did not run, or "
                "raised before it did.",
                f"the cells of Task {info.task} above; run them in order and fix the first "
                "that fails.",
            ),
            self.session.student,
            0.0,
        )

    async def run_cell(self, client: Any, cell: nbformat.NotebookNode) -> None:
        """Run a check cell's checks here, with the kernel's deliverables; its outputs are
        what they printed and, if one failed, the failure (as the kernel would show it)."""
        import nbformat

        self._client, self._loop = client, asyncio.get_running_loop()
        self.cells_run += 1
        started = time.monotonic()
        parsed = parse_check_cell(cell.source)
        wanted = sorted(
            {
                name
                for call in parsed.calls
                for name in call.names()
                if name != "lab" and name not in self.definition
            }
        )
        try:
            values = await self._deliverables(wanted)
        except (KernelCallError, ValueError) as err:
            values = {
                name: _unexported("Unreadable", f"not read from the kernel: {err}")
                for name in wanted
            }
        printed, failure = await asyncio.to_thread(self._run_calls, parsed, values)
        outputs = []
        if printed:
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=printed))
        if failure:
            outputs.append(
                nbformat.v4.new_output(
                    "error",
                    ename="LabCheckFailed",
                    evalue=failure,
                    traceback=[f"LabCheckFailed: {failure}"],
                )
            )
        cell.outputs = outputs
        cell.execution_count = None
        cell.metadata.setdefault("workbook_grader", {})["ran_in_grader_s"] = round(
            time.monotonic() - started, 2
        )


class RefereeClient(NotebookClient):
    """nbclient's NotebookClient, except that check cells are run by the :class:`Referee`
    in the grader's process instead of in the kernel."""

    def __init__(self, nb: nbformat.NotebookNode, *, referee: Referee, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.referee = referee

    async def async_execute_cell(
        self,
        cell: nbformat.NotebookNode,
        cell_index: int,
        execution_count: int | None = None,
        store_history: bool = True,
    ) -> nbformat.NotebookNode:
        if is_check_cell(cell) and cell.source in self.referee.check_sources:
            await self.referee.run_cell(self, cell)
            return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
