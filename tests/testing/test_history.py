"""The history recorder: outcomes, threads, JSON lines, merging the files of several processes."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from arendezvous import (
    AsyncRendezvousBackend,
    FileBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousConnectionError,
    RendezvousStateError,
    Token,
)
from arendezvous.testing.history import (
    History,
    JsonTokenCodec,
    OpaqueToken,
    Operation,
    Recorder,
    RecordingBackend,
    load,
    merge,
)
from arendezvous.testing.linearizability import check


class ScriptedBackend(AsyncRendezvousBackend):
    """Raises what it is told to, or blocks until cancelled once ``entered`` is set."""

    def __init__(
        self,
        error: BaseException | None = None,
        *,
        block: bool = False,
        run_id: str | None = "scripted",
    ) -> None:
        self.error = error
        self.block = block
        self.entered = anyio.Event()
        self.run_id = run_id

    @property
    def name(self) -> str:
        return "scripted"

    async def _act(self) -> None:
        self.entered.set()
        if self.block:
            await anyio.Event().wait()  # until cancelled
        if self.error is not None:
            raise self.error
        await anyio.lowlevel.checkpoint()

    async def get_state(self) -> tuple[bytes, Token] | None:
        await self._act()
        return None

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        await self._act()
        return state, 1, True

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        await self._act()
        return None

    async def aclose(self) -> None:
        pass


pytestmark = pytest.mark.anyio


# -- recording ---------------------------------------------------------------------------------


async def test_records_every_call_with_its_result() -> None:
    recorder = Recorder()
    backend = RecordingBackend(MemoryBackend("run", MemoryStore()), recorder, client="alice")
    assert backend.name == "memory"
    assert backend.run_id == "run"
    assert backend.client == "alice"
    assert await backend.get_state() is None
    _, token, _ = await backend.set_state(b"x")
    assert await backend.set_state(b"y", "stale") == (b"x", token, False)
    assert await backend.wait_for_change(token, timeout=0) is None
    assert await backend.wait_for_change(None) == (b"x", token)
    await backend.aclose()

    history = recorder.history()
    assert [(op.kind, op.outcome) for op in history] == [
        ("read", "ok"),
        ("write", "ok"),
        ("write", "ok"),
        ("wait", "ok"),
        ("wait", "ok"),
    ]
    assert [op.id for op in history] == [0, 1, 2, 3, 4]
    assert {op.client for op in history} == {"alice"}
    assert {op.key for op in history} == {"run"}
    read, create, lost, timed_out, changed = history
    assert read.result is None
    assert (create.state, create.token, create.result, create.written) == (
        b"x",
        None,
        (b"x", token),
        True,
    )
    assert (lost.token, lost.result, lost.written) == ("stale", (b"x", token), False)
    assert (timed_out.token, timed_out.result) == (token, None)
    assert changed.result == (b"x", token)
    for op in history:
        assert op.ret is not None
        assert op.call <= op.ret
    for earlier, later in itertools.pairwise(history):
        assert earlier.ret is not None
        assert earlier.ret <= later.call
    assert check(history).ok


async def test_connection_error_in_a_write_is_unknown_in_a_read_a_failure() -> None:
    recorder = Recorder()
    backend = RecordingBackend(ScriptedBackend(RendezvousConnectionError("gone")), recorder)
    with pytest.raises(RendezvousConnectionError):
        await backend.set_state(b"x")
    with pytest.raises(RendezvousConnectionError):
        await backend.get_state()
    with pytest.raises(RendezvousConnectionError):
        await backend.wait_for_change(None)
    write, read, wait = recorder.history()
    assert (write.kind, write.outcome) == ("write", "unknown")
    assert write.error == "RendezvousConnectionError: gone"
    assert write.ret is not None
    assert (read.outcome, wait.outcome) == ("fail", "fail")


@pytest.mark.parametrize(
    "error", [TypeError("state"), ValueError("size"), RendezvousStateError("corrupt")]
)
async def test_errors_raised_before_writing_are_failures(error: Exception) -> None:
    recorder = Recorder()
    backend = RecordingBackend(ScriptedBackend(error), recorder)
    with pytest.raises(type(error)):
        await backend.set_state(b"x")
    assert recorder.history()[0].outcome == "fail"


async def test_state_that_is_not_bytes_is_recorded_as_a_failed_call() -> None:
    recorder = Recorder()
    backend = RecordingBackend(MemoryBackend("run", MemoryStore()), recorder)
    with pytest.raises(TypeError):
        await backend.set_state("text")  # type: ignore[arg-type]
    (op,) = recorder.history()
    assert (op.outcome, op.state) == ("fail", None)


async def test_cancelled_write_is_unknown_cancelled_read_a_failure() -> None:
    recorder = Recorder()
    for method in ("set_state", "get_state"):
        scripted = ScriptedBackend(block=True)
        backend = RecordingBackend(scripted, recorder)
        async with anyio.create_task_group() as group:
            if method == "set_state":
                group.start_soon(backend.set_state, b"x")
            else:
                group.start_soon(backend.get_state)
            await scripted.entered.wait()
            group.cancel_scope.cancel()
    write, read = recorder.history()
    assert (write.kind, write.outcome) == ("write", "unknown")
    assert (read.kind, read.outcome) == ("read", "fail")


async def test_calls_still_running_count_as_unknown() -> None:
    recorder = Recorder()
    scripted = ScriptedBackend(block=True)
    backend = RecordingBackend(scripted, recorder)
    async with anyio.create_task_group() as group:
        group.start_soon(backend.set_state, b"x")
        await scripted.entered.wait()
        (op,) = recorder.history()
        assert (op.outcome, op.ret) == ("unknown", None)
        group.cancel_scope.cancel()


def test_backend_without_run_id_needs_a_key() -> None:
    with pytest.raises(TypeError, match="key="):
        RecordingBackend(ScriptedBackend(run_id=None), Recorder())
    keyed = RecordingBackend(ScriptedBackend(run_id=None), Recorder(), key="k")
    # The key names the register; run_id follows every wrapper's rule: the wrapped one's, or None.
    assert (keyed.key, keyed.run_id) == ("k", None)
    named = RecordingBackend(ScriptedBackend(run_id="run"), Recorder(), key="other")
    assert (named.key, named.run_id) == ("other", "run")


def test_default_client_names_are_distinct() -> None:
    recorder = Recorder(source="here")
    names = {RecordingBackend(MemoryBackend("r"), recorder).client for _ in range(3)}
    assert names == {"here-c1", "here-c2", "here-c3"}


def test_threads_share_one_recorder() -> None:
    store = MemoryStore()
    recorder = Recorder()
    errors: list[BaseException] = []

    async def client() -> None:
        backend = RecordingBackend(MemoryBackend("run", store), recorder)
        for _ in range(50):
            current = await backend.get_state()
            await backend.set_state(b"s", None if current is None else current[1])

    def thread_main(loop: str) -> None:
        try:
            anyio.run(client, backend=loop)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=thread_main, args=("asyncio" if i % 2 else "trio",))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    history = recorder.history()
    assert len(history) == 4 * 50 * 2
    assert len({op.client for op in history}) == 4
    assert history.select(outcome="ok") == list(history)
    assert check(history).ok


# -- histories ---------------------------------------------------------------------------------


def test_history_orders_by_invocation_and_numbers_operations() -> None:
    late = Operation.read("b", 10, 11, None)
    early = Operation.read("a", 0, 20, None)
    other = Operation.read("c", 5, 6, None, key="other")
    history = History([late, early, other])
    assert [op.client for op in history] == ["a", "c", "b"]
    assert [op.id for op in history] == [0, 1, 2]
    assert history.keys() == ["run", "other"]
    assert {key: len(ops) for key, ops in history.by_key().items()} == {"run": 2, "other": 1}
    assert history.select(key="other")[0].client == "c"
    assert len(history[1:]) == 2
    assert "3 operations" in repr(history)


def test_describe_says_what_happened() -> None:
    assert (
        Operation.write("a", 0, 1, b"x", 3, (b"x", 4, True)).describe()
        == "set_state(b'x', token=3) -> won (b'x', 4)"
    )
    assert Operation.write("a", 0, 1, b"x", 3, None).describe().endswith("unknown (never returned)")
    assert Operation.read("a", 0, 1, None).describe() == "get_state() -> None"
    assert (
        Operation.wait("a", 0, 1, 3, (b"y", 5)).describe()
        == "wait_for_change(token=3) -> (b'y', 5)"
    )


# -- files -------------------------------------------------------------------------------------


def test_json_token_codec_round_trips_plain_values() -> None:
    codec = JsonTokenCodec()
    for token in ["abc", 7, -(2**80), True, b"\x00\xff", ("inc", 3), ("a", (1, None), b"z"), ()]:
        encoded = codec.encode(token)
        assert encoded is not None
        decoded = codec.decode(encoded)
        assert decoded == token
        assert type(decoded) is type(token)
    for token in [1.5, object(), frozenset(), ("ok", 1.5)]:
        assert codec.encode(token) is None
    with pytest.raises(ValueError):
        codec.decode({"float": 1.5})


async def test_file_round_trip_keeps_results_and_token_equality(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with Recorder(path, source="p1") as recorder:
        backend = RecordingBackend(FileBackend(tmp_path / "rdzv", "run", durable=False), recorder)
        _, token, _ = await backend.set_state(b"\x00binary\xff")
        await backend.set_state(b"next", token)
        await backend.set_state(b"lost", token)
        await backend.get_state()
        await backend.aclose()
    recorded = recorder.history()
    loaded = load(path)
    assert len(loaded) == 4
    for before, after in zip(recorded, loaded, strict=True):
        assert after == before  # file tokens are str: they load back equal
    assert check(loaded).ok


async def test_opaque_tokens_keep_equality_within_a_file(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with Recorder(path) as recorder:
        backend = RecordingBackend(MemoryBackend("run", MemoryStore()), recorder)
        _, first, _ = await backend.set_state(b"a")
        _, second, _ = await backend.set_state(b"b", first)
        await backend.get_state()
        await backend.set_state(b"c", first)  # lost: sees second
    create, update, read, lost = load(path)
    assert isinstance(create.result, tuple)
    assert isinstance(update.result, tuple)
    assert isinstance(read.result, tuple)
    assert isinstance(lost.result, tuple)
    assert isinstance(create.result[1], OpaqueToken)
    assert update.token == create.result[1]
    assert read.result[1] == update.result[1]
    assert read.result[1] != create.result[1]
    assert lost.token == create.result[1]
    assert lost.result == read.result
    assert repr(read.result[1]) == repr(second)
    assert check(load(path)).ok


def test_tokens_with_one_repr_stay_distinct(tmp_path: Path) -> None:
    class Shy:
        def __repr__(self) -> str:
            return "Shy()"

    one, two = Shy(), Shy()
    history = History(
        [
            Operation.write("a", 0, 1, b"x", None, (b"x", one, True)),
            Operation.write("a", 2, 3, b"y", one, (b"y", two, True)),
            Operation.read("a", 4, 5, (b"y", two)),
        ]
    )
    out = io.StringIO()
    history.dump(out)
    assert '"Shy()"' in out.getvalue()
    assert '"Shy()#2"' in out.getvalue()
    loaded = load(io.StringIO(out.getvalue()))
    assert loaded[1].token == loaded[0].result[1]  # type: ignore[index]
    assert loaded[1].token != loaded[2].result[1]  # type: ignore[index]
    assert check(loaded).ok


def test_codec_hook_for_other_token_types(tmp_path: Path) -> None:
    class Version:
        def __init__(self, number: int) -> None:
            self.number = number

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Version) and other.number == self.number

        def __hash__(self) -> int:
            return hash(self.number)

    class VersionCodec:
        def encode(self, token: Token) -> object | None:
            return {"version": token.number} if isinstance(token, Version) else None

        def decode(self, data: Any) -> Token:
            return Version(int(data["version"]))

    path = tmp_path / "h.jsonl"
    History([Operation.write("a", 0, 1, b"x", None, (b"x", Version(3), True))]).dump(
        path, codec=VersionCodec()
    )
    (op,) = load(path, codec=VersionCodec())
    assert op.result == (b"x", Version(3))


def test_killed_writer_leaves_an_unknown_call_and_maybe_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    recorder = Recorder(path)
    recorder.complete(
        recorder.invoke(client="c", key="k", kind="write", state=b"a"),
        "ok",
        result=(b"a", "t1"),
        written=True,
    )
    recorder.invoke(client="c", key="k", kind="write", state=b"b", token="t1")
    recorder.close()
    with open(path, "a", encoding="utf-8") as file:
        file.write('{"type":"ok","op":1,"ti')  # the process died mid-line
    first, second = load(path)
    assert (first.outcome, first.written) == ("ok", True)
    assert (second.outcome, second.ret, second.token) == ("unknown", None, "t1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        '{"type":"invoke"}\n',
        '{"type":"header","format":"arendezvous-history","version":99}\n',
        '{"type":"header","format":"arendezvous-history","version":1}\nnot json\n',
        '{"type":"header","format":"arendezvous-history","version":1}\n{"type":"ok","op":0,"time":1}\n',
        '{"type":"header","format":"arendezvous-history","version":1}\n'
        '{"type":"invoke","op":0,"time":1,"client":"c","key":"k","kind":"delete"}\n',
        '{"type":"header","format":"arendezvous-history","version":1}\n'
        '{"type":"invoke","op":0,"time":1,"client":"c","key":"k","kind":"write","token":{"x":1}}\n',
    ],
)
def test_malformed_files_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        load(io.StringIO(text))


def test_merge_orders_the_calls_of_several_files(tmp_path: Path) -> None:
    ticks = iter(range(100))

    def clock() -> int:
        return next(ticks)

    first = Recorder(tmp_path / "a.jsonl", source="a", clock=clock)
    second = Recorder(tmp_path / "b.jsonl", source="b", clock=clock)
    op = first.invoke(client="a", key="k", kind="write", state=b"x")  # t=0
    first.complete(op, "ok", result=(b"x", "1"), written=True)  # t=1
    op = second.invoke(client="b", key="k", kind="read")  # t=2
    second.complete(op, "ok", result=(b"x", "1"))  # t=3
    op = first.invoke(client="a", key="k", kind="read")  # t=4
    first.close()
    second.close()
    extra = History([Operation.read("z", 10, 11, (b"x", "1"), key="k")])
    merged = merge(tmp_path / "a.jsonl", str(tmp_path / "b.jsonl"), extra)
    assert [(op.client, op.call) for op in merged] == [("a", 0), ("b", 2), ("a", 4), ("z", 10)]
    assert merged[2].outcome == "unknown"
    assert check(merged).ok


_WORKER = textwrap.dedent(
    """
    import sys
    import anyio
    from arendezvous import FileBackend, RendezvousConnectionError
    from arendezvous.testing.faults import FaultyBackend
    from arendezvous.testing.history import Recorder, RecordingBackend

    directory, history, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main() -> None:
        with Recorder(history, source=f"worker{seed}") as recorder:
            inner = FaultyBackend(
                FileBackend(directory, "counter", durable=False), seed=seed, drop_after=0.1
            )
            backend = RecordingBackend(inner, recorder)
            for _ in range(30):
                try:
                    current = await backend.get_state()
                    value = 0 if current is None else int(current[0])
                    token = None if current is None else current[1]
                    await backend.set_state(b"%d" % (value + 1), token)
                except RendezvousConnectionError:
                    pass

    anyio.run(main)
    """
)


def test_histories_of_processes_merge_and_check(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    files = [tmp_path / f"history-{n}.jsonl" for n in range(3)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "rdzv"), str(path), str(n)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, path in enumerate(files)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    history = merge(*files)
    assert len(history) == 3 * 30 * 2 - len(history.select(kind="read", outcome="fail"))
    assert history.select(kind="write", outcome="unknown")  # the faults were injected
    assert len({op.client for op in history}) == 3
    result = check(history)
    assert result.verdict == "ok", result
