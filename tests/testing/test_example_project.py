"""The example third-party project (``examples/sqlite_backend``) under every async pytest set-up.

Each test copies the example as a fresh clone would have it, installs it (with its
``arendezvous.backends`` entry point) into a directory of its own, adds planted broken backends
and a probe of the event loop, and runs pytest on it in a subprocess:

* with anyio's plugin alone (pytest-asyncio disabled);
* with pytest-asyncio in strict mode, every conformance subclass marked ``@pytest.mark.asyncio``;
* with pytest-asyncio in auto mode.

In each, the SQLite backend must pass the whole kit on asyncio and trio; every test must run on
the loop it names; and the planted non-atomic and repeated-token backends must fail with the
contract's words -- never with an error from the wrong event loop.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLE = REPOSITORY / "examples" / "sqlite_backend"

PLANTED = '''\
"""Planted: the kit must fail these backends with readable messages, on the loop each names."""

import sniffio
import pytest
from hypothesis import Phase, settings

from arendezvous import MemoryBackend, MemoryStore
from arendezvous.testing import BackendConformance, backend_state_machine
from _broken_backends import ContentTokenBackend, NonAtomicBackend

STATES = {}
STORE = MemoryStore()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


class TestNonAtomic(BackendConformance):
    async def make_backend(self, run_id):
        return NonAtomicBackend(STATES, run_id)


class TestContentToken(BackendConformance):
    async def make_backend(self, run_id):
        return ContentTokenBackend(STATES, run_id)


class TestRunsOnTheLoopItNames(BackendConformance):
    @pytest.fixture(autouse=True)
    def _loop(self, anyio_backend):
        self.loop = anyio_backend

    async def make_backend(self, run_id):
        running = sniffio.current_async_library()
        if running != self.loop:
            raise RuntimeError(f"a {self.loop} test runs on {running}")
        return MemoryBackend(run_id, STORE)


HUNT = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    phases=[Phase.generate],
)
TestNonAtomicRaces = backend_state_machine(lambda run_id: NonAtomicBackend(STATES, run_id)).TestCase
TestNonAtomicRaces.settings = HUNT
TestContentTokenRacesOnTrio = backend_state_machine(
    lambda run_id: ContentTokenBackend(STATES, run_id), anyio_backend="trio"
).TestCase
TestContentTokenRacesOnTrio.settings = HUNT
'''

_ASYNCIO_OPTIONS = ("-o", "asyncio_default_fixture_loop_scope=function")
SETUPS = {
    "anyio-alone": ("-p", "no:asyncio"),
    "pytest-asyncio-strict-marked": ("-o", "asyncio_mode=strict", *_ASYNCIO_OPTIONS),
    "pytest-asyncio-auto": ("-o", "asyncio_mode=auto", *_ASYNCIO_OPTIONS),
}


@dataclass(frozen=True)
class Case:
    """One test's outcome in the subprocess's JUnit report."""

    file: str  # the test module, e.g. "test_planted"
    cls: str  # the test class, or "" for a module-level test
    name: str  # e.g. "test_runs_are_isolated[trio]", or "runTest" for a state machine
    outcome: str  # passed, failed, error or skipped
    message: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed as a user would install it (offline, with this venv's hatchling)."""
    for needed in ("hatchling", "pytest_asyncio"):
        if importlib.util.find_spec(needed) is None:
            pytest.fail(f"{needed} is missing: the dev extra brings it (pip install -e '.[dev]')")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
    )
    return target


def _clone(destination: Path, *, mark_asyncio: bool) -> Path:
    project = destination / "sqlite_backend"
    shutil.copytree(
        EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc")
    )
    tests = project / "tests"
    shutil.copy(REPOSITORY / "tests" / "_broken_backends.py", tests / "_broken_backends.py")
    (tests / "test_planted.py").write_text(PLANTED, encoding="utf-8")
    if mark_asyncio:
        for test_file in tests.glob("test_*.py"):
            source = test_file.read_text(encoding="utf-8")
            marked, count = re.subn(
                r"^class (Test\w+\(\w*Conformance\)):",
                r"@pytest.mark.asyncio\nclass \1:",
                source,
                flags=re.MULTILINE,
            )
            assert count, f"no conformance class to mark in {test_file.name}"
            test_file.write_text(marked, encoding="utf-8")
    return project


class Run:
    """pytest running on one clone of the project, in a subprocess."""

    def __init__(self, project: Path, site: Path, options: tuple[str, ...]) -> None:
        self.report = project / "report.xml"
        env = {**os.environ, "PYTHONPATH": str(site)}
        env.pop("PYTEST_ADDOPTS", None)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--tb=short"]
        self.process = subprocess.Popen(
            [*command, f"--junitxml={self.report}", *options],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self) -> tuple[str, list[Case]]:
        """Wait for pytest; return its output and every test's outcome."""
        output, _ = self.process.communicate(timeout=900)
        assert self.report.exists(), output
        cases = []
        for element in ElementTree.parse(self.report).iter("testcase"):
            outcome, message = "passed", ""
            for kind, word in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
                found = element.find(kind)
                if found is not None:
                    outcome = word
                    message = f"{found.get('message', '')}\n{found.text or ''}"
                    break
            path = element.get("classname", "").split(".")
            module = next(index for index, part in enumerate(path) if part.startswith("test_"))
            cls = path[module + 1] if module + 1 < len(path) else ""
            cases.append(Case(path[module], cls, element.get("name", ""), outcome, message))
        return output, cases

    def stop(self) -> None:
        """Kill pytest if it is still running (a test before it failed)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture(scope="module")
def runs(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """The three set-ups, started together: they take a while, and wait mostly on each other's
    processes rather than on one core."""
    started = {
        setup: Run(
            _clone(tmp_path_factory.mktemp(setup), mark_asyncio=setup.endswith("marked")),
            site,
            options,
        )
        for setup, options in SETUPS.items()
    }
    yield started
    for run in started.values():
        run.stop()


def _outcomes(cases: list[Case], cls: str, name: str = "") -> dict[str, Case]:
    """The cases of class *cls* whose name starts with *name*, by name."""
    return {case.name: case for case in cases if case.cls == cls and case.name.startswith(name)}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_the_kit_under_every_async_pytest_setup(setup: str, runs: dict[str, Run]) -> None:
    output, cases = runs[setup].finish()
    summary = output.strip().splitlines()[-1]
    print(f"{setup}: {summary}")

    # Nothing errors or is skipped: no set-up failure, no error from the wrong event loop.
    assert [case for case in cases if case.outcome in ("error", "skipped")] == [], output

    # The SQLite backend passes the whole kit, on both loops.
    sqlite = [case for case in cases if case.file == "test_sqlite_backend"]
    assert [case for case in sqlite if case.outcome != "passed"] == [], output
    conformance = _outcomes(cases, "TestSQLiteBackend")
    assert len(conformance) >= 80, summary
    assert any(name.endswith("[trio]") for name in conformance), summary
    assert any(name.endswith("[asyncio]") for name in conformance), summary
    assert _outcomes(cases, "TestSQLiteRacesOnTrio"), summary

    # Every test runs on the loop it names, whatever the plugin.
    probe = _outcomes(cases, "TestRunsOnTheLoopItNames")
    assert len(probe) >= 80, summary
    assert {case.outcome for case in probe.values()} == {"passed"}, output

    # The planted backends fail, each failure a broken promise said in words.
    failed = [case for case in cases if case.outcome == "failed"]
    for case in failed:
        assert "ContractViolation" in case.message, case
        assert "broken:" in case.message, case
    races = _outcomes(cases, "TestNonAtomic", "test_exactly_one_of_racing_writers_wins[")
    assert set(races) == {
        "test_exactly_one_of_racing_writers_wins[asyncio]",
        "test_exactly_one_of_racing_writers_wins[trio]",
    }
    for case in races.values():
        assert case.outcome == "failed", case
        assert "racing writers won with the same current token" in case.message, case
    aba = _outcomes(cases, "TestContentToken", "test_tokens_never_repeat_even_for_the_same_bytes")
    assert len(aba) == 2, summary
    for case in aba.values():
        assert case.outcome == "failed", case
        assert "was issued twice: ABA" in case.message, case
    (machine,) = _outcomes(cases, "TestNonAtomicRaces").values()
    assert machine.outcome == "failed", output
    assert "racing writers won with the same current token" in machine.message, machine
    (machine,) = _outcomes(cases, "TestContentTokenRacesOnTrio").values()
    assert machine.outcome == "failed", output
    assert "ABA" in machine.message or "must change nothing" in machine.message, machine
