"""Every code block of the README and of docs/ runs, as written, so that no example can rot.

* Every ``python`` block is run as a script, in a fresh process, in a fresh directory.
* Every line of a ``bash`` block that runs ``arendezvous`` (or ``python -m arendezvous``), or the
  demo script, is run; the other lines (installing packages, starting servers, ``torchrun``, the
  test script itself) are not: the test command installs, starts and runs those.
* A block naming one of the stores at its documented address (``redis://127.0.0.1:6379/0``,
  ``etcd://127.0.0.1:2379``, ``postgresql://postgres@127.0.0.1:5432/postgres``, the S3 endpoint
  ``http://127.0.0.1:8333``, ``file:///tmp/rdzv``) runs against a throwaway server (or directory)
  that the test starts: the address is replaced by the real one. So are Redis's documented
  keyword arguments ``host="127.0.0.1", port=6379``. The S3 store is started with the identity
  docs/s3.md gives its SeaweedFS (access key ``me``, secret ``change-me``).
* docs/testing.md and the README's "Testing your own backend" are test files and guides with
  outputs; ``tests/testing/test_docs.py`` runs those, with their markers. docs/operating.md is a
  session whose commands build on each other; ``tests/docs/test_operating.py`` runs it in order.
* A block whose marker line (``<!-- ... -->`` just before it) says ``output`` shows output, and
  one saying ``fails`` must fail (exit status not 0).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").rglob("*.md"))]
RUN_ELSEWHERE = {
    "docs/testing.md",  # tests/testing/test_docs.py runs it, markers and all
    "docs/operating.md",  # tests/docs/test_operating.py runs it, in order, outputs compared
}
README_TEST_KIT = "## Testing your own backend"

_BLOCK = re.compile(
    r"(?:<!-- (?P<marker>[^>]*?) -->\n)?^```(?P<language>[\w-]*)\n(?P<body>.*?)^```", re.S | re.M
)
_HEADING = re.compile(r"^#{1,6} .*$", re.M)

# The documented addresses of the stores, and the servers the test starts in their place.
STORES = {
    "redis": "redis://127.0.0.1:6379/0",
    "etcd": "etcd://127.0.0.1:2379",
    "postgres": "postgresql://postgres@127.0.0.1:5432/postgres",
    "s3": "http://127.0.0.1:8333",
}
FILE_URL = "file:///tmp/rdzv"
# Redis's address as documented keyword arguments (RedisBackend(host=..., port=...)).
REDIS_KEYWORDS = 'host="127.0.0.1", port=6379'
# The identity of the SeaweedFS that docs/s3.md starts (its s3.json).
S3_ACCESS_KEY, S3_SECRET_KEY = "me", "change-me"  # the identity docs/s3.md sets up


@dataclass(frozen=True)
class Snippet:
    """One code block to run: where it is, what language, what it says."""

    path: str
    line: int
    language: str
    marker: str
    body: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


def _in_test_kit_section(text: str, offset: int) -> bool:
    headings = [match for match in _HEADING.finditer(text) if match.start() < offset]
    return bool(headings) and headings[-1].group().startswith(README_TEST_KIT)


def snippets() -> Iterator[Snippet]:
    """Every block of the documents that this module runs."""
    for document in DOCUMENTS:
        relative = str(document.relative_to(REPOSITORY))
        if relative in RUN_ELSEWHERE:
            continue
        text = document.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            language, marker = match["language"], (match["marker"] or "").strip()
            if language not in ("python", "bash") or marker == "output":
                continue
            if relative == "README.md" and _in_test_kit_section(text, match.start()):
                continue
            line = text.count("\n", 0, match.start()) + 1
            yield Snippet(relative, line, language, marker, match["body"])


def _commands(body: str) -> list[str]:
    """The ``arendezvous`` command lines of a bash block, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", body)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith(("arendezvous ", "python -m arendezvous ", "scripts/demo")):
            commands.append(line)
    return commands


ALL = list(snippets())
# Blocks that only install or launch (a shell block without a command run here): the test
# command itself does those, so they are not collected (rather than collected and skipped).
RUNNABLE = [s for s in ALL if s.language == "python" or _commands(s.body)]


class Stores:
    """The servers the blocks need, started on first use and stopped at the end."""

    def __init__(self, stack: ExitStack, directory: Path) -> None:
        self._stack = stack
        self._directory = directory
        self._urls: dict[str, str] = {}
        self.environ: dict[str, str] = {}

    def _start(self, name: str) -> str:
        from servers.etcd import EtcdServer
        from servers.postgres import PostgresServer
        from servers.redis import RedisServer
        from servers.seaweedfs import SeaweedFSServer

        if name == "s3":
            s3 = self._stack.enter_context(SeaweedFSServer(
                bucket="rdzv", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY
            ))
            self.environ.update(s3.environ)
            return s3.endpoint_url
        if name == "redis":
            return self._stack.enter_context(RedisServer()).url
        if name == "etcd":
            return self._stack.enter_context(EtcdServer()).url
        return self._stack.enter_context(PostgresServer()).url

    def substitute(self, body: str) -> str:
        """*body* with every documented address replaced by a running server's."""
        for name, documented in STORES.items():
            keywords = REDIS_KEYWORDS if name == "redis" else None
            if documented in body or (keywords is not None and keywords in body):
                if name not in self._urls:
                    self._urls[name] = self._start(name)
                body = body.replace(documented, self._urls[name])
                if keywords is not None:
                    server = urlsplit(self._urls[name])
                    body = body.replace(keywords, f'host="{server.hostname}", port={server.port}')
        return body.replace(FILE_URL, f"file://{self._directory}/rdzv")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    with ExitStack() as stack:
        yield Stores(stack, tmp_path_factory.mktemp("snippets"))


def _run(
    command: list[str], cwd: Path, environ: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env={**os.environ, **environ}, capture_output=True, text=True,
        timeout=180,
    )


@pytest.mark.parametrize("snippet", RUNNABLE, ids=str)
def test_every_code_block_runs(snippet: Snippet, stores: Stores, tmp_path: Path) -> None:
    body = stores.substitute(snippet.body)
    if snippet.language == "python":
        results = [_run([sys.executable, "-c", body], tmp_path, stores.environ)]
    else:
        results = []
        for command in _commands(body):
            words = shlex.split(command)
            if words[0] == "scripts/demo":
                # The demo script, from the repository (it installs into its .venv, then plays).
                results.append(_run(["bash", str(REPOSITORY / words[0]), *words[1:]],
                                    REPOSITORY, stores.environ))
                continue
            if words[0] == "arendezvous":
                words = [sys.executable, "-m", "arendezvous", *words[1:]]
            else:
                words = [sys.executable, *words[1:]]
            results.append(_run(words, tmp_path, stores.environ))
    for result in results:
        if snippet.marker == "fails":
            assert result.returncode != 0, f"{snippet} was documented to fail:\n{result.stdout}"
        else:
            assert result.returncode == 0, (
                f"{snippet} does not run as written:\n{result.stdout}\n{result.stderr}"
            )


def test_the_documents_have_examples() -> None:
    assert len(RUNNABLE) >= 10
    assert len(ALL) - len(RUNNABLE) <= 5  # the install-only blocks stay few
    assert any(snippet.path == "README.md" for snippet in ALL)
