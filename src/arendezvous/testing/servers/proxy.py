"""A TCP proxy on 127.0.0.1 that can black-hole traffic: a network partition for tests.

``FaultProxy(host, port)`` listens on a free port of 127.0.0.1 and forwards every connection to
``host:port``. :meth:`FaultProxy.blackhole` stops forwarding in both directions without closing
anything -- connections stay open, bytes sent are neither delivered nor refused, new connections
are accepted and go nowhere -- as a partition or a dead router does, which a client notices only
by its own timeouts. :meth:`FaultProxy.restore` forwards again (what was held back is delivered
then); :meth:`FaultProxy.cut` resets every connection, as a crashed peer does.

Point a client at :attr:`FaultProxy.port` instead of the server's::

    with RedisServer() as server, FaultProxy(server.host, server.port) as proxy:
        backend = RedisBackend("run", host=proxy.host, port=proxy.port)
        proxy.blackhole()

It runs in threads of its own, so it works with any event loop, or none.
"""

from __future__ import annotations

import socket
import threading

from ._process import StartStop

__all__ = ("FaultProxy",)

_CHUNK = 65536
_POLL = 0.05  # seconds between checks of the stop flag by a blocked thread


class FaultProxy(StartStop):
    """A TCP forwarder from ``127.0.0.1:port`` to *target_host*:*target_port*; see the module."""

    host = "127.0.0.1"

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()  # set: forwarding; clear: black-holed
        self._open.set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor: threading.Thread | None = None

    @property
    def blackholed(self) -> bool:
        """Whether traffic is held back now."""
        return not self._open.is_set()

    def start(self) -> FaultProxy:
        """Start accepting and forwarding connections."""
        if self._acceptor is None:
            self._acceptor = self._spawn(self._accept)
        return self

    def blackhole(self) -> None:
        """Stop forwarding, in both directions and for new connections; close nothing."""
        self._open.clear()

    def restore(self) -> None:
        """Forward again after :meth:`blackhole`."""
        self._open.set()

    def cut(self) -> None:
        """Reset every connection open now (new ones are still accepted)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _reset(sock)

    def stop(self) -> None:
        """Close everything and join the threads. Idempotent."""
        self._stopping.set()
        self._open.set()  # release threads held by a black hole
        self._listener.close()
        self.cut()
        for thread in [*self._threads, *([self._acceptor] if self._acceptor else [])]:
            thread.join(5)

    def __repr__(self) -> str:
        state = "black-holed" if self.blackholed else "forwarding"
        return f"FaultProxy(127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}, {state})"

    # -- the threads ---------------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> threading.Thread:
        thread = threading.Thread(
            target=target,  # type: ignore[arg-type]
            args=args,
            daemon=True,
            name="fault-proxy",
        )
        thread.start()
        return thread

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            self._track(client)
            self._threads.append(self._spawn(self._connect, client))

    def _wait_open(self) -> bool:
        """Block while black-holed; ``False`` once the proxy stops."""
        while not self._open.wait(_POLL):
            if self._stopping.is_set():
                return False
        return not self._stopping.is_set()

    def _connect(self, client: socket.socket) -> None:
        if not self._wait_open():  # a new connection during a black hole goes nowhere, yet
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)  # the server is down: the client sees a reset, as with no proxy
            return
        self._track(upstream)
        back = self._spawn(self._pump, upstream, client)
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._sockets -= {client, upstream}
        client.close()
        upstream.close()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            source.settimeout(_POLL)
            while self._wait_open():
                try:
                    data = source.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                # Held back, not dropped, while black-holed: the stream stays intact.
                if not self._wait_open():
                    return
                sink.sendall(data)
        except OSError:
            _reset(sink)
        finally:
            if self._stopping.is_set():
                _reset(source)


def _reset(sock: socket.socket) -> None:
    """Close *sock* with a reset (no orderly shutdown), ignoring errors."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    except OSError:
        pass
