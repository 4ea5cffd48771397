"""The PyTorch integration: ``TorchRendezvousBackend``, ``BackendStore`` and the torchrun handler.

torch's own ``RendezvousBackendTestMixin`` is not shipped in its wheel; :class:`TestTorchMixin`
checks the same behaviours, through torch's interface and exception types.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _missing import missing
from integrations._torch_support import require_torch, store_url

require_torch()

import torch.distributed as dist  # noqa: E402
from torch._C._distributed_c10d import HashStore, PrefixStore  # noqa: E402
from torch.distributed.elastic.rendezvous import api as torch_api  # noqa: E402
from torch.distributed.elastic.rendezvous import registry as torch_registry  # noqa: E402
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (  # noqa: E402
    DynamicRendezvousHandler,
    RendezvousBackend,
)

from arendezvous import (  # noqa: E402
    AsyncRendezvousBackend,
    BackendClosedError,
    FileBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousConnectionError,
    RendezvousStateError,
    SyncBackend,
)
from arendezvous.integrations.torch import (  # noqa: E402
    HANDLER_NAME,
    ArendezvousHandler,
    BackendStore,
    HandlerConfig,
    TorchRendezvousBackend,
    create_handler,
    default_engine,
    endpoint_url,
    register,
    torchrun_handler,
)

_WORKER = Path(__file__).with_name("_torch_rdzv_worker.py")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


# -- import hygiene -------------------------------------------------------------------------------


def test_import_arendezvous_never_imports_torch() -> None:
    result = _run_python(
        "import sys, arendezvous, arendezvous.integrations, arendezvous.sync\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert result.returncode == 0, result.stderr


def test_missing_torch_raises_import_error_naming_the_extra() -> None:
    result = _run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # what an uninstalled package looks like to import\n"
        "try:\n"
        "    import arendezvous.integrations.torch\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'arendezvous[torch]'" in result.stdout


# -- torch's RendezvousBackendTestMixin, re-expressed ---------------------------------------------


def _file_corrupter(directory: Path, run_id: str) -> Callable[[], None]:
    def corrupt() -> None:
        FileBackend(directory, run_id).path.write_bytes(b"not an arendezvous state file")

    return corrupt


class TestTorchMixin:
    """The eight behaviours of torch's ``RendezvousBackendTestMixin``, on memory and file."""

    @pytest.fixture(params=["memory", "file"])
    def kind(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def backend(self, kind: str, tmp_path: Path) -> Iterator[TorchRendezvousBackend]:
        async_backend: AsyncRendezvousBackend
        if kind == "memory":
            async_backend = MemoryBackend("mixin", MemoryStore())
        else:
            async_backend = FileBackend(tmp_path, "mixin", durable=False)
        with TorchRendezvousBackend(async_backend) as backend:
            yield backend

    def _set(
        self, backend: TorchRendezvousBackend, state: bytes, token: Any = None
    ) -> tuple[bytes, Any, bool]:
        result = backend.set_state(state, token)
        assert result is not None
        return result

    def test_is_torchs_backend_type(self, backend: TorchRendezvousBackend) -> None:
        assert isinstance(backend, RendezvousBackend)

    def test_get_state_returns_the_stored_state(self, backend: TorchRendezvousBackend) -> None:
        backend.set_state(b"x")
        result = backend.get_state()
        assert result is not None
        assert result[0] == b"x"
        assert result[1] is not None

    def test_get_state_returns_none_without_state(self, backend: TorchRendezvousBackend) -> None:
        assert backend.get_state() is None

    def test_get_state_raises_torchs_state_error_if_corrupt(self, tmp_path: Path) -> None:
        with TorchRendezvousBackend(FileBackend(tmp_path, "corrupt")) as backend:
            backend.set_state(b"x")
            _file_corrupter(tmp_path, "corrupt")()
            with pytest.raises(torch_api.RendezvousStateError) as caught:
                backend.get_state()
            assert isinstance(caught.value.__cause__, RendezvousStateError)
            with pytest.raises(torch_api.RendezvousStateError):
                backend.set_state(b"y")

    def test_set_state_creates_missing_state(self, backend: TorchRendezvousBackend) -> None:
        state, token, has_set = self._set(backend, b"x")
        assert (state, has_set) == (b"x", True)
        assert token is not None

    def test_set_state_writes_with_current_token(self, backend: TorchRendezvousBackend) -> None:
        _, first, first_set = self._set(backend, b"x")
        state, second, second_set = self._set(backend, b"y", first)
        assert (state, first_set, second_set) == (b"y", True, True)
        assert first != second

    def test_old_token_returns_current_state(self, backend: TorchRendezvousBackend) -> None:
        _, old, _ = self._set(backend, b"x")
        current = self._set(backend, b"y", old)
        state, token, has_set = self._set(backend, b"z", old)
        assert (state, token, has_set) == (current[0], current[1], False)

    def test_none_token_returns_current_state(self, backend: TorchRendezvousBackend) -> None:
        first = self._set(backend, b"x")
        state, token, has_set = self._set(backend, b"y")
        assert (state, token, has_set) == (first[0], first[1], False)

    def test_invalid_token_returns_current_state(self, backend: TorchRendezvousBackend) -> None:
        first = self._set(backend, b"x")
        state, token, has_set = self._set(backend, b"y", token="invalid")
        assert (state, token, has_set) == (first[0], first[1], False)


# -- the adapter's own promises -------------------------------------------------------------------


def test_name_defaults_to_the_wrapped_backends(tmp_path: Path) -> None:
    with TorchRendezvousBackend(FileBackend(tmp_path, "r")) as backend:
        assert backend.name == "file"
        assert "FileBackend" in repr(backend)
        assert isinstance(backend.sync_backend, SyncBackend)
    with TorchRendezvousBackend(MemoryBackend("r", MemoryStore()), name="custom") as named:
        assert named.name == "custom"


def test_accepts_a_sync_backend_and_rejects_other_objects() -> None:
    sync = SyncBackend(MemoryBackend("r", MemoryStore()))
    with TorchRendezvousBackend(sync) as backend:
        assert backend.sync_backend is sync
        assert backend.set_state(b"a") is not None
    with pytest.raises(TypeError, match="AsyncRendezvousBackend"):
        TorchRendezvousBackend(object())  # type: ignore[arg-type]


def test_unreachable_store_raises_torchs_connection_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with TorchRendezvousBackend(FileBackend(not_a_directory, "r")) as backend:
        with pytest.raises(torch_api.RendezvousConnectionError) as caught:
            backend.set_state(b"x")
        assert isinstance(caught.value.__cause__, RendezvousConnectionError)


def test_closed_backend_raises_torchs_connection_error() -> None:
    backend = TorchRendezvousBackend(MemoryBackend("r", MemoryStore()))
    backend.close()
    backend.close()
    with pytest.raises(torch_api.RendezvousConnectionError) as caught:
        backend.get_state()
    assert isinstance(caught.value.__cause__, BackendClosedError)


def test_token_for_a_deleted_state_makes_torch_start_afresh(tmp_path: Path) -> None:
    with TorchRendezvousBackend(FileBackend(tmp_path, "gone", durable=False)) as backend:
        result = backend.set_state(b"x")
        assert result is not None
        FileBackend(tmp_path, "gone").path.unlink()
        # torch's own backends answer None here; a b"" state would be unpickled and fail.
        assert backend.set_state(b"y", result[1]) is None
        assert backend.get_state() is None


def _memory_handler(store: MemoryStore, run_id: str, nodes: int) -> DynamicRendezvousHandler:
    handler: DynamicRendezvousHandler = DynamicRendezvousHandler.from_backend(
        run_id=run_id,
        store=BackendStore(MemoryBackend(f"{run_id}.c10d", store)),
        backend=TorchRendezvousBackend(MemoryBackend(run_id, store)),
        min_nodes=nodes,
        max_nodes=nodes,
        local_addr="127.0.0.1",
    )
    return handler


def test_torchs_handler_runs_on_the_adapter_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # No TCPStore server on every interface: the bootstrap keys still go through BackendStore.
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    store = MemoryStore()
    handlers = [_memory_handler(store, "threads", 3) for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        infos = list(pool.map(lambda h: h.next_rendezvous(), handlers, timeout=60))
    assert sorted(info.rank for info in infos) == [0, 1, 2]
    assert {info.world_size for info in infos} == {3}
    masters = {
        (info.bootstrap_store_info.master_addr, info.bootstrap_store_info.master_port)
        for info in infos
    }
    assert len(masters) == 1
    assert all(handler.get_backend() == "memory" for handler in handlers)
    assert all(handler.shutdown() for handler in handlers)


# -- BackendStore ---------------------------------------------------------------------------------


@pytest.fixture
def backend_store() -> Iterator[BackendStore]:
    store = BackendStore(MemoryBackend("c10d", MemoryStore()), timeout=timedelta(seconds=10))
    yield store
    store.close()


def test_store_basic_operations(backend_store: BackendStore) -> None:
    store = backend_store
    store.set("a", b"1")
    store.set("s", "text")
    assert store.get("a") == b"1"
    assert store.get("s") == b"text"
    assert store.add("n", 5) == 5
    assert store.add("n", -2) == 3
    store.append("log", b"x")
    store.append("log", "y")
    assert store.get("log") == b"xy"
    assert store.check(["a", "n"]) is True
    assert store.check(["a", "missing"]) is False
    assert store.num_keys() == 4
    assert store.delete_key("log") is True
    assert store.delete_key("log") is False
    store.multi_set(["m1", "m2"], [b"v1", "v2"])
    assert store.multi_get(["m1", "m2", "a"]) == [b"v1", b"v2", b"1"]
    store.wait(["m1"])
    with pytest.raises(ValueError, match="as many"):
        store.multi_set(["k"], [])
    assert "MemoryBackend" in repr(store)


_KEYS = st.sampled_from(["a", "b", "c"])
_VALUES = st.sampled_from([b"", b"0", b"1", b"-2", b"x"])
# HashStore's add parses a number prefix ("0x" counts as 0); ours refuses such values, so appends
# (which make them) and adds use different keys.
_OPS = st.one_of(
    st.tuples(st.just("set"), _KEYS, _VALUES),
    st.tuples(st.just("add"), st.sampled_from(["b", "c"]), st.integers(-3, 3)),
    st.tuples(st.just("append"), st.just("a"), _VALUES),
    st.tuples(st.just("compare_set"), _KEYS, _VALUES, _VALUES),
    st.tuples(st.just("delete_key"), _KEYS),
    st.tuples(st.just("check"), st.lists(_KEYS, max_size=2)),
    st.tuples(st.just("num_keys")),
)


def _apply(store: Any, op: tuple[Any, ...]) -> Any:
    try:
        return getattr(store, op[0])(*op[1:])
    except (RuntimeError, ValueError):
        return "error"  # add to a non-integer: both refuse, with different exception types


@settings(max_examples=60, deadline=None)
@given(st.lists(_OPS, max_size=15))
def test_store_matches_torchs_hash_store(ops: list[tuple[Any, ...]]) -> None:
    """Every operation answers as torch's in-process HashStore (TCPStore's semantics) does."""
    reference = HashStore()
    store = BackendStore(MemoryBackend("c10d", MemoryStore()))
    try:
        for op in ops:
            assert _apply(store, op) == _apply(reference, op), op
    finally:
        store.close()


def test_store_under_torchs_prefix_store(backend_store: BackendStore) -> None:
    prefixed = PrefixStore("round.7", backend_store)
    prefixed.set("MASTER_ADDR", "127.0.0.1")
    assert prefixed.get("MASTER_ADDR") == b"127.0.0.1"
    assert backend_store.get("round.7/MASTER_ADDR") == b"127.0.0.1"
    assert prefixed.add("count", 2) == 2
    assert prefixed.compare_set("cas", "", "v") == b"v"
    assert prefixed.multi_get(["MASTER_ADDR", "cas"]) == [b"127.0.0.1", b"v"]
    prefixed.wait(["count"], timedelta(seconds=1))


def test_get_waits_for_a_key_set_by_another_thread(backend_store: BackendStore) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(backend_store.get, "late")
        backend_store.set("late", b"here")
        assert waiting.result(timeout=10) == b"here"


def test_missing_key_times_out_with_torchs_store_error(backend_store: BackendStore) -> None:
    with pytest.raises(dist.DistStoreError, match="'missing'"):
        backend_store.wait(["missing"], timedelta(milliseconds=20))
    backend_store.set_timeout(timedelta(milliseconds=20))
    with pytest.raises(dist.DistStoreError, match="timeout"):
        backend_store.get("missing")
    with pytest.raises(dist.DistStoreError):
        backend_store.multi_get(["missing"])


def test_corrupt_or_foreign_document_raises_store_error(tmp_path: Path) -> None:
    for raw in (b"{not json", b'{"format": "other"}', b'{"format": "arendezvous.c10d"}'):
        backend = FileBackend(tmp_path, f"c10d-{len(raw)}", durable=False)
        sync = SyncBackend(backend)
        sync.set_state(raw)
        store = BackendStore(sync)
        with pytest.raises(dist.DistStoreError, match="corrupt"):
            store.get("x")
        with pytest.raises(dist.DistStoreError, match="corrupt"):
            store.set("x", b"y")
        assert sync.get_state() is not None
        store.close()


def test_closed_store_raises_network_error() -> None:
    store = BackendStore(MemoryBackend("c10d", MemoryStore()))
    store.close()
    with pytest.raises(dist.DistNetworkError):
        store.set("a", b"1")


def test_store_and_backend_close_as_context_managers() -> None:
    shared = MemoryStore()
    with BackendStore(MemoryBackend("c10d", shared)) as store, \
            TorchRendezvousBackend(MemoryBackend("rdzv", shared)) as backend:
        store.set("a", b"1")
        assert backend.set_state(b"s") is not None
    with pytest.raises(dist.DistNetworkError):
        store.get("a")
    with pytest.raises(BackendClosedError):
        backend.sync_backend.get_state()


# -- torch's handler in separate processes, on every store ----------------------------------------


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(process.stdout.readline).result(timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "redis", "etcd"])
def test_four_processes_get_distinct_ranks(kind: str, tmp_path: Path) -> None:
    nodes, run_id = 4, f"procs-{uuid.uuid4().hex[:8]}"
    with store_url(kind, str(tmp_path)) as url:
        workers = [
            subprocess.Popen(
                [sys.executable, str(_WORKER), url, run_id, str(nodes)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(nodes)
        ]
        try:
            lines = [_read_line(worker, timeout=90) for worker in workers]
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("done\n")
                worker.stdin.flush()
            for worker in workers:
                _, err = worker.communicate(timeout=60)
                assert worker.returncode == 0, err
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
    results = [json.loads(line) for line in lines]
    assert sorted(result["rank"] for result in results) == list(range(nodes))
    assert {result["world_size"] for result in results} == {nodes}
    assert len({tuple(result["master"]) for result in results}) == 1
    assert {result["backend"] for result in results} == {kind}


# -- the torchrun handler -------------------------------------------------------------------------


def _params(endpoint: str, run_id: str = "job", **conf: Any) -> torch_api.RendezvousParameters:
    return torch_api.RendezvousParameters(
        backend=HANDLER_NAME,
        endpoint=endpoint,
        run_id=run_id,
        min_nodes=conf.pop("min_nodes", 2),
        max_nodes=conf.pop("max_nodes", 2),
        local_addr="127.0.0.1",
        **conf,
    )


def test_endpoint_urls() -> None:
    assert endpoint_url("file:///tmp/x") == "file:///tmp/x"
    assert endpoint_url(" redis://h:1/0?x=1 ") == "redis://h:1/0?x=1"
    assert endpoint_url("10.0.0.1:6379") == "redis://10.0.0.1:6379"
    assert endpoint_url("h:2379", "etcd") == "etcd://h:2379"
    with pytest.raises(ValueError, match="needs --rdzv-endpoint"):
        endpoint_url("  ")


def test_config_from_torchrun_parameters() -> None:
    config = HandlerConfig.from_parameters(
        _params(
            "db:2379",
            scheme="etcd",
            engine="torch",
            timeout=900,
            join_timeout="60",
            last_call_timeout="0.5",
            keep_alive_interval="2",
            read_timeout="30",
        )
    )
    assert config.url == "etcd://db:2379"
    assert config.engine == "torch"
    assert config.name == HANDLER_NAME
    assert (config.min_nodes, config.max_nodes, config.local_addr) == (2, 2, "127.0.0.1")
    assert config.join_timeout == timedelta(seconds=60)
    assert config.last_call_timeout == timedelta(seconds=0.5)
    assert config.close_timeout is None
    assert config.keep_alive_interval == 2
    assert config.read_timeout == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"store_type": "tcp"}, "unknown --rdzv-conf option 'store_type'"),
        ({"join_timeout": "soon"}, "bad value for --rdzv-conf join_timeout"),
        ({"last_call_timeout": "-1"}, "bad value"),
        ({"keep_alive_max_attempt": "0"}, "bad value"),
        ({"engine": "etcd-v2"}, "unknown rendezvous engine 'etcd-v2'"),
    ],
)
def test_bad_config_raises_value_error(conf: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HandlerConfig.from_parameters(_params("file:///tmp/x", **conf))


def test_arendezvous_engine_needs_two_heartbeat_attempts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        create_handler(_params(f"file://{tmp_path}", keep_alive_max_attempt="1"))


def test_bad_endpoint_scheme_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unknown backend URL scheme 'nosuch'"):
        create_handler(_params("nosuch://x"))


def test_torchs_registry_builds_the_handler(tmp_path: Path) -> None:
    register()
    register()  # idempotent
    handler = torch_registry.get_rendezvous_handler(_params(f"file://{tmp_path}"))
    try:
        assert isinstance(handler, ArendezvousHandler)
        assert handler.get_backend() == HANDLER_NAME
        assert handler.get_run_id() == "job"
        assert handler.num_nodes_waiting() == 0
        assert handler.is_closed() is False
    finally:
        handler.shutdown()


def test_entry_point_is_declared_and_loads() -> None:
    """torch loads ``torchrun.handlers`` entry points; the package must declare ours."""
    declared = {ep.name: ep for ep in entry_points(group="torchrun.handlers")}
    if HANDLER_NAME not in declared:
        reason = (
            "the 'torchrun.handlers' entry point 'arendezvous' is not installed (pyproject.toml "
            "declares it; reinstall with pip install -e .)"
        )
        missing(reason)
    entry = declared[HANDLER_NAME]
    assert entry.value == "arendezvous.integrations.torch:torchrun_handler"
    assert entry.load() is torchrun_handler
    assert torchrun_handler() is create_handler
    # torch registered it when torch.distributed.elastic.rendezvous was first imported.
    assert torch_api.rendezvous_handler_registry._registry[HANDLER_NAME] is create_handler


@pytest.mark.parametrize(
    "first_import",
    ["arendezvous.integrations.torch", "torch.distributed.elastic.rendezvous"],
)
def test_either_import_order_registers_cleanly(first_import: str) -> None:
    """Importing our module first makes torch load its entry points mid-import: no cycle."""
    result = _run_python(
        f"import {first_import}\n"
        "import arendezvous.integrations.torch as ours\n"
        "from torch.distributed.elastic.rendezvous import api\n"
        "registered = api.rendezvous_handler_registry._registry.get('arendezvous')\n"
        "print(registered is ours.create_handler)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "out of tree plugin" not in result.stderr
    declared = any(ep.name == HANDLER_NAME for ep in entry_points(group="torchrun.handlers"))
    assert result.stdout.strip() == str(declared)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of listening TCP sockets on *port*, from /proc (IPv4 and IPv6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.fixture(params=["arendezvous", "torch"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_default_engine_is_arendezvous_own_rendezvous() -> None:
    assert default_engine() == "arendezvous"
    assert HandlerConfig.from_parameters(_params("file:///tmp/x")).engine == "arendezvous"


@pytest.mark.slow
def test_handlers_form_rounds_with_a_shared_agent_store(tmp_path: Path, engine: str) -> None:
    url = f"file://{tmp_path}?durable=false&poll_interval=0.02"
    run_id = f"handlers-{uuid.uuid4().hex[:8]}"
    handlers = [create_handler(_params(url, run_id, engine=engine)) for _ in range(2)]
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = list(pool.map(lambda h: h.next_rendezvous(), handlers, timeout=60))
            by_rank = {info.rank: info for info in first}
            assert sorted(by_rank) == [0, 1]
            assert {info.world_size for info in first} == {2}
            bootstrap = {(i.bootstrap_store_info.master_addr, i.bootstrap_store_info.master_port)
                         for i in first}
            assert len(bootstrap) == 1
            addr, port = bootstrap.pop()
            assert addr == "127.0.0.1"
            # Rank 0's TCPStore listens on the node's address only (torch's would on all).
            assert _listening_addresses(port) == {"0100007F"}
            by_rank[0].store.set("greeting", b"hello")
            assert by_rank[1].store.get("greeting") == b"hello"

            second = list(pool.map(lambda h: h.next_rendezvous(), handlers, timeout=60))
            assert sorted(info.rank for info in second) == [0, 1]
            # A new round's agent store does not see the last round's keys.
            assert not second[0].store.check(["greeting"])
    finally:
        assert all(handler.shutdown() for handler in handlers)
    late = create_handler(_params(url, run_id, engine=engine))
    try:
        assert late.is_closed() is True
        with pytest.raises(torch_api.RendezvousClosedError):
            late.next_rendezvous()
    finally:
        late.shutdown()


def test_backend_store_is_the_agent_store_when_sharing_is_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    handler = create_handler(
        _params(f"file://{tmp_path}?durable=false", min_nodes=1, max_nodes=1, engine=engine)
    )
    try:
        assert handler.use_agent_store is False
        info = handler.next_rendezvous()
        assert (info.rank, info.world_size) == (0, 1)
        assert isinstance(info.store, PrefixStore)
        info.store.set("k", "v")
        assert info.store.get("k") == b"v"
    finally:
        handler.shutdown()


def test_handler_shuts_down_as_a_context_manager(tmp_path: Path, engine: str) -> None:
    url = f"file://{tmp_path}?durable=false"
    with create_handler(_params(url, min_nodes=1, max_nodes=1, engine=engine)) as handler:
        info = handler.next_rendezvous()
        assert (info.rank, info.world_size) == (0, 1)
    # Leaving the block shut it down: the run is closed and the handler's c10d store released.
    with pytest.raises(dist.DistNetworkError):
        handler._store.get("anything")
    later = create_handler(_params(url, min_nodes=1, max_nodes=1, engine=engine))
    try:
        assert later.is_closed() is True
    finally:
        later.shutdown()


def test_free_port_helper_is_loopback_only() -> None:
    # Sanity check of _listening_addresses itself, so the binding assertion above means something.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert _listening_addresses(sock.getsockname()[1]) == {"0100007F"}


def test_threads_of_the_handler_do_not_block_exit() -> None:
    result = _run_python(
        "import tempfile\n"
        "from torch.distributed.elastic.rendezvous import api\n"
        "from arendezvous.integrations.torch import create_handler\n"
        "params = api.RendezvousParameters('arendezvous', 'file://' + tempfile.mkdtemp(), 'r', "
        "1, 1, '127.0.0.1', engine='torch')\n"
        "handler = create_handler(params)\n"
        "print(handler.next_rendezvous().rank)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
