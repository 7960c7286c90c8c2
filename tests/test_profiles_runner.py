"""helpers.profiles and helpers.runner on tiny notebooks made in tmp_path (real papermill)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from helpers.errors import EnvironmentProblem, ParameterError, ProfileError, WorkbookError
from helpers.paths import REPO_ROOT
from helpers.profiles import load_profile, notebook_parameters
from helpers.runner import FAILED, PASSED, TIMEOUT, run_notebooks, select_notebooks

PARAMS = "x: int = 1  # a number"


def _write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {path.stem}"))
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells.append(params)
    for source in sources:
        nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def nb_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_notebook(folder / "01_ok.ipynb", "assert x == 3, x\nprint('x is', x)")
    _write_notebook(
        folder / "02_fail.ipynb",
        "raise RuntimeError(f'failing on purpose with x={x}')",  # the 2nd code cell
        "print('never reached')",
    )
    _write_notebook(folder / "03_slow.ipynb", "import time\ntime.sleep(60)")
    return folder


def _profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test_profile.yaml"
    path.write_text(text)
    return path


GOOD_PROFILE = """\
description: tiny notebooks
defaults:
  timeout_s: 120
notebooks:
  01_ok:
    parameters:
      x: 3
  03_slow:
    timeout_s: 15
"""


def test_notebook_parameters_reads_the_tagged_cell(nb_dir: Path) -> None:
    params = notebook_parameters(nb_dir / "01_ok.ipynb")
    assert params == {"x": {"default": "1", "type": "int", "help": "a number"}}


def test_select_notebooks(nb_dir: Path) -> None:
    assert select_notebooks(["01"], nb_dir) == [nb_dir / "01_ok.ipynb"]
    assert select_notebooks(["02_fail", "01"], nb_dir) == [
        nb_dir / "02_fail.ipynb",
        nb_dir / "01_ok.ipynb",
    ]
    assert len(select_notebooks([], nb_dir)) == 3
    with pytest.raises(WorkbookError) as info:
        select_notebooks(["99"], nb_dir)
    assert "No notebook matches '99'" in str(info.value)
    assert "01_ok" in str(info.value)  # lists what is available


def test_load_good_profile(tmp_path: Path, nb_dir: Path) -> None:
    profile = load_profile(_profile(tmp_path, GOOD_PROFILE), notebooks_dir=nb_dir)
    assert profile.description == "tiny notebooks"
    assert profile.parameters_for("01_ok") == {"x": 3}
    assert profile.settings_for("03_slow").timeout_s == 15
    assert profile.settings_for("02_fail").timeout_s == 120  # from defaults


@pytest.mark.parametrize(
    ("text", "error", "expected"),
    [
        (
            "notebok:\n  01_ok: {}\n",
            ProfileError,
            ["unknown key 'notebok'", "Did you mean 'notebooks'?"],
        ),
        (
            "notebooks:\n  01_okk: {}\n",
            ProfileError,
            ["no notebook '01_okk'", "Did you mean '01_ok'?"],
        ),
        (
            "notebooks:\n  01_ok:\n    timeout: 5\n",
            ProfileError,
            ["unknown key 'timeout'", "Did you mean 'timeout_s'?"],
        ),
        (
            "notebooks:\n  01_ok:\n    parameters:\n      xx: 3\n",
            ParameterError,
            ["no parameter 'xx'", "Did you mean 'x'?"],
        ),
        (
            "notebooks:\n  01_ok:\n    parameters:\n      x: three\n",
            ParameterError,
            ["parameter 'x' must be int, got str 'three'"],
        ),
        (
            "notebooks:\n  01_ok:\n    parameters:\n      x: true\n",
            ParameterError,
            ["parameter 'x' must be int, got bool True"],
        ),
        (
            "notebooks:\n  01_ok:\n    shares_machine: yes please\n",
            ProfileError,
            ["shares_machine must be true or false"],
        ),
        (
            "notebooks:\n  01_ok:\n    timeout_s: ten\n",
            ProfileError,
            ["01_ok: timeout_s must be a number of seconds > 0, not 'ten'"],
        ),
        ("defaults:\n  timeout_s: 0\n", ProfileError, ["defaults: timeout_s must be a number"]),
        (
            "defaults:\n  timeot_s: 3\n",
            ProfileError,
            ["unknown default 'timeot_s'", "Did you mean 'timeout_s'?"],
        ),
        (
            "notebooks:\n  01_ok: 5\n",
            ProfileError,
            ["01_ok: the entry must be a mapping, not a int"],
        ),
        (
            "notebooks:\n  01_ok:\n    parameters: [1]\n",
            ProfileError,
            ["01_ok: parameters must be a mapping, not a list"],
        ),
        ("notebooks: [01_ok]\n", ProfileError, ["notebooks must be a mapping of notebook names"]),
        ("- just\n- a list\n", ProfileError, ["must be a mapping"]),
        ("notebooks: [unclosed\n", ProfileError, ["not valid YAML"]),
    ],
)
def test_load_profile_errors(
    tmp_path: Path, nb_dir: Path, text: str, error: type, expected: list[str]
) -> None:
    with pytest.raises(error) as info:
        load_profile(_profile(tmp_path, text), notebooks_dir=nb_dir)
    for fragment in expected:
        assert fragment in str(info.value)
    assert "Fix:" in str(info.value)


def test_an_entry_with_nothing_under_it_takes_the_defaults(tmp_path: Path, nb_dir: Path) -> None:
    profile = load_profile(
        _profile(tmp_path, "defaults:\n  timeout_s: 42\nnotebooks:\n  01_ok:\n"),
        notebooks_dir=nb_dir,
    )
    settings = profile.settings_for("01_ok")
    assert (settings.timeout_s, settings.parameters, settings.skip) == (42, {}, False)


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("nonexistent")
    assert "No run profile 'nonexistent'" in str(info.value)


def test_run_notebooks_passed_and_failed(tmp_path: Path, nb_dir: Path) -> None:
    profile = load_profile(_profile(tmp_path, GOOD_PROFILE), notebooks_dir=nb_dir)
    out = tmp_path / "out"
    results = run_notebooks(
        [nb_dir / "01_ok.ipynb", nb_dir / "02_fail.ipynb"], profile, out, progress=False
    )
    ok, bad = results
    assert (ok.notebook, ok.status, ok.failing_cell, ok.error) == ("01_ok", PASSED, None, "")
    assert "x is 3" in (out / "01_ok.ipynb").read_text()  # the profile's parameter was injected

    assert (bad.notebook, bad.status) == ("02_fail", FAILED)
    # 0-based among the notebook's own code cells: the parameters cell is 0, the raise is 1.
    assert bad.failing_cell == 1
    assert "RuntimeError: failing on purpose with x=1" in bad.error
    assert not bad.ok

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["profile"], summary["passed"], summary["failed"]) == ("test_profile", 1, 1)
    assert [r["status"] for r in summary["results"]] == [PASSED, FAILED]
    assert summary["results"][1]["failing_cell"] == 1
    table = (out / "summary.md").read_text()
    assert "| 02_fail | failed |" in table
    assert "failing on purpose" in table
    assert "1 passed, 1 failed" in table


def _notebook_processes(nb_dir: Path) -> dict[int, str]:
    """Processes running one of nb_dir's notebooks: papermill (by its command line) and
    the kernel (by its working directory, which papermill sets to the notebook's folder)."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(nb_dir) in cmd or proc.info["cwd"] == str(nb_dir):
            found[proc.info["pid"]] = cmd
    return found


def test_timeout_leaves_no_process(tmp_path: Path, nb_dir: Path) -> None:
    profile = load_profile(_profile(tmp_path, GOOD_PROFILE), notebooks_dir=nb_dir)
    out = tmp_path / "out"
    results: list = []
    runner = threading.Thread(
        target=lambda: results.extend(
            run_notebooks([nb_dir / "03_slow.ipynb"], profile, out, progress=False)
        )
    )
    seen: dict[int, str] = {}
    started = time.monotonic()
    runner.start()
    while runner.is_alive():
        seen.update(_notebook_processes(nb_dir))
        time.sleep(0.3)
    runner.join()
    elapsed = time.monotonic() - started

    (result,) = results
    assert result.status == TIMEOUT
    assert "did not finish within 15 s" in result.error
    assert elapsed < 45
    assert any("papermill" in cmd for cmd in seen.values()), seen
    assert any("ipykernel" in cmd for cmd in seen.values()), seen

    deadline = time.monotonic() + 5  # the kernel notices its parent is gone within ~1 s
    alive = dict(seen)
    while alive and time.monotonic() < deadline:
        alive = {pid: cmd for pid, cmd in alive.items() if _is_alive(pid)}
        time.sleep(0.2)
    assert alive == {}
    assert _notebook_processes(nb_dir) == {}


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_runner_ended_by_a_signal_stops_the_notebook(
    tmp_path: Path, nb_dir: Path, signame: str
) -> None:
    """A CI cancel or `timeout` sends SIGTERM (a closed terminal, SIGHUP): the runner ends the
    running notebook's session (papermill and its kernel) before it exits, as for Ctrl-C."""
    import signal
    import subprocess
    import sys

    profile = _profile(tmp_path, "description: x\ndefaults:\n  timeout_s: 300\nnotebooks: {}\n")
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "helpers.runner",
            "--profile",
            str(profile),
            "--build-dir",
            str(tmp_path / "out"),
            str(nb_dir / "03_slow.ipynb"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 60
        while not any("ipykernel" in cmd for cmd in seen.values()):
            assert time.monotonic() < deadline and runner.poll() is None, runner.poll()
            seen.update(_notebook_processes(nb_dir))
            time.sleep(0.3)
        runner.send_signal(getattr(signal, signame))
        output, _ = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 130, output
    assert (
        f"interrupted: {signame} received: stopping what was started while 03_slow.ipynb "
        "ran; what it started was ended" in output
    ), output
    deadline = time.monotonic() + 5
    while _notebook_processes(nb_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _notebook_processes(nb_dir) == {}
    assert not any(_is_alive(pid) for pid in seen), seen


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_runner_cli_unknown_profile_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "helpers.runner", "--profile", "nonexistent"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "error: No run profile 'nonexistent'" in result.stderr
    assert "configs/profiles" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_program_stops_the_run_before_anything_runs(
    tmp_path: Path, nb_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lesson that needs Chromium (notebook metadata ``workbook.needs``) on a machine
    without it: the runner says so at the start, naming the lesson and how to install it."""
    needy = nb_dir / "04_needs_browser.ipynb"
    _write_notebook(needy, "print('ran')")
    nb = nbformat.read(str(needy), as_version=4)
    nb.metadata["workbook"] = {"needs": [{"program": "chromium", "when": "x"}]}
    nbformat.write(nb, str(needy))
    monkeypatch.setenv("WORKBOOK_CHROMIUM", str(tmp_path / "no-such-chromium"))
    profile = load_profile(_profile(tmp_path, GOOD_PROFILE), notebooks_dir=nb_dir)
    out = tmp_path / "out"

    with pytest.raises(EnvironmentProblem) as caught:
        run_notebooks([nb_dir / "01_ok.ipynb", needy], profile, out, progress=False)
    text = str(caught.value)
    assert "nothing was run" in text
    assert "chromium (needed by 04_needs_browser)" in text
    assert "apt-get install -y chromium" in text and "ensure_browser.sh" in text
    assert not (out / "01_ok.ipynb").exists()  # checked before the first notebook ran

    # The same notebook with the parameter that asks for the browser turned off runs.
    (result,) = run_notebooks([needy], profile, out, overrides={"*": {"x": 0}}, progress=False)
    assert result.status == PASSED, result.error


def test_the_summary_says_what_a_failed_notebook_left_running_and_that_it_was_ended(
    tmp_path: Path, nb_dir: Path, isolated_workbook_scratch: Path
) -> None:
    """A notebook that fails before its clean-up cell: its kernel's exit stops the echo server
    (a ManagedProcess). One whose kernel dies (the OOM killer, a crash) runs no exit handler:
    the runner finds the server by its record, ends it and says so."""
    failing = {
        "05_fails": "raise RuntimeError('failing before the cleanup cell')",
        "06_dies": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    }
    for stem, cell in failing.items():
        _write_notebook(
            nb_dir / f"{stem}.ipynb",
            "from helpers.echo_server import EchoServer\n"
            f"echo = EchoServer().start()\nopen({str(tmp_path / stem)!r}, 'w').write(str(echo.pid))",
            cell,
            "echo.stop()",
        )
    profile = load_profile(_profile(tmp_path, GOOD_PROFILE), notebooks_dir=nb_dir)
    out = tmp_path / "out"
    fails, dies = run_notebooks(
        [nb_dir / f"{stem}.ipynb" for stem in failing], profile, out, progress=False
    )

    assert fails.status == FAILED and "failing before the cleanup cell" in fails.error
    assert fails.cleanup == "nothing left running"
    assert dies.status == FAILED and "DeadKernelError" in dies.error, dies.error
    assert "echo-" in dies.cleanup and dies.cleanup.endswith("the runner ended all of it")
    assert not any(_is_alive(int((tmp_path / stem).read_text())) for stem in failing)
    table = (out / "summary.md").read_text()
    assert "Nothing is left running: the runner ended what 06_dies left behind" in table


def test_the_parts_of_a_split_lesson_are_lessons_in_order(tmp_path: Path) -> None:
    """02a_ and 02b_ are lessons, between 01_ and 03_; a lab or an unnumbered file is not."""
    from helpers.profiles import list_labs, list_notebooks

    names = [
        "03_c.ipynb",
        "02b_b2.ipynb",
        "01_a.ipynb",
        "02a_b1.ipynb",
        "lab01_x.ipynb",
        "notes.ipynb",
        "2a_bad.ipynb",
    ]
    for name in names:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in list_notebooks(tmp_path)] == [
        "01_a.ipynb",
        "02a_b1.ipynb",
        "02b_b2.ipynb",
        "03_c.ipynb",
    ]
    assert [p.name for p in list_labs(tmp_path)] == ["lab01_x.ipynb"]
    assert select_notebooks(["02"], tmp_path) == [
        tmp_path / "02a_b1.ipynb",
        tmp_path / "02b_b2.ipynb",
    ]
    assert select_notebooks(["02b"], tmp_path) == [tmp_path / "02b_b2.ipynb"]


def test_make_test_runs_beside_each_other_only_lessons_that_claim_nothing_about_speed() -> None:
    """The CI profile's shares_machine lessons (scripts/test.sh runs them two at a time): none
    of the lessons whose claims are measured speeds (vLLM against transformers, batching,
    autoscaling, streaming), rates read from one-second metric samples (09), or a time (04a's
    deploy to first token under 120 s took 130 s beside another lesson's engines once)."""
    from helpers.profiles import load_profile

    ci = load_profile("ci")
    sharing = {stem for stem, s in ci.notebooks.items() if s.shares_machine}
    assert "08_resources_and_placement" in sharing
    assert not sharing & {
        "04a_llm_config_and_openai_api",
        "04b_batching_and_mistakes",
        "05_autoscaling",
        "06_batching",
        "09_observability",
        "12_streaming_sessions",
    }
    listed = subprocess.run(
        [sys.executable, "-m", "helpers.runner", "--profile", "ci", "--list-sharing"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(listed.stdout.split()) == sharing


def _root_conftest():
    """The repository's conftest.py as a module of its own (its hooks, called directly)."""
    import importlib.util

    from helpers.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("root_conftest", REPO_ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_two_worker_phases_start_the_longest_files_first(tmp_path: Path, monkeypatch) -> None:
    """conftest.py orders items by their file's seconds in tests/durations.json (what
    scripts/time_table.py --save wrote), longest first, each file's items together and in
    their order; a file it does not know runs last."""
    from types import SimpleNamespace

    root_conftest = _root_conftest()
    durations = tmp_path / "durations.json"
    durations.write_text(
        '{"test_short": 5.0, "08_resources_and_placement": 206.3, "test_long": 80}'
    )
    monkeypatch.setattr(root_conftest, "DURATIONS", durations)
    items = [
        SimpleNamespace(path=Path(f), n=n)
        for f, n in [
            ("tests/test_new.py", 1),
            ("tests/test_short.py", 1),
            ("tests/test_short.py", 2),
            ("tests/test_long.py", 1),
            ("build/nbval/08_resources_and_placement.ipynb", 1),
            ("tests/test_long.py", 2),
            ("build/nbval/08_resources_and_placement.ipynb", 2),
        ]
    ]
    root_conftest._longest_files_first(items)
    assert [(i.path.stem, i.n) for i in items] == [
        ("08_resources_and_placement", 1),
        ("08_resources_and_placement", 2),
        ("test_long", 1),
        ("test_long", 2),
        ("test_short", 1),
        ("test_short", 2),
        ("test_new", 1),
    ]


def test_a_sharing_lessons_cells_run_beside_the_unit_tests_and_the_others_alone(
    monkeypatch,
) -> None:
    """conftest.py marks each notebook cell under nbval `alone`, except the cells of the
    notebooks WORKBOOK_BESIDE names (scripts/test.sh: the CI profile's shares_machine lessons),
    which are `beside`: phase 1 runs them with the unit tests, phase 2 the `alone` ones. Every
    cell gets the 30-minute backstop; a unit test gets no mark."""
    root_conftest = _root_conftest()

    class Item:
        def __init__(self, path: str) -> None:
            self.path, self.marks = Path(path), []

        def add_marker(self, mark) -> None:
            self.marks.append(mark.mark if hasattr(mark, "mark") else mark)

    monkeypatch.setenv("WORKBOOK_BESIDE", "08_resources_and_placement 03a_five_ways_to_launch")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    items = [
        Item("build/nbval/08_resources_and_placement.ipynb"),
        Item("build/nbval/05_autoscaling.ipynb"),
        Item("tests/test_cluster.py"),
    ]
    root_conftest.pytest_collection_modifyitems(items)
    names = [[m.name for m in item.marks] for item in items]
    assert names == [["beside", "timeout"], ["alone", "timeout"], []]
    assert items[0].marks[1].args == (root_conftest.NOTEBOOK_CELL_BACKSTOP_S,)
