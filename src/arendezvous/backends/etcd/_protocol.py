"""What the etcd backend stores and sends: the value's format, tokens, sizes, errors, the client."""

from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeGuard

from ..._compat import import_optional
from ..._errors import ErrorRule, ErrorTable, RendezvousStateError

__all__ = (
    "MAX_KEY_SIZE",
    "MAX_REQUEST_BYTES",
    "MAX_STATE_SIZE_LIMIT",
    "EtcdToken",
    "client_modules",
    "decode",
    "encode",
    "error_table",
    "sendable",
)

MAX_REQUEST_BYTES = 1536 * 1024
"""etcd's default ``--max-request-bytes`` (1.5 MiB): it refuses any request larger."""

MAX_KEY_SIZE = 16 * 1024
"""The longest key (``key_prefix + run_id``, UTF-8) accepted: a write names it three times."""

MAX_STATE_SIZE_LIMIT = MAX_REQUEST_BYTES - 64 * 1024
"""The largest ``max_state_size``: what a write request of the longest key and its framing leave
of etcd's request limit, so a state within it is never refused by etcd."""

_MAGIC = b"ARDE"
_FORMAT_VERSION = 1
_HEADER = _MAGIC + bytes([_FORMAT_VERSION])
_HEADER_SIZE = len(_HEADER) + 4
_HEADER_CRC = zlib.crc32(_HEADER)


def encode(state: bytes) -> bytes:
    """The stored value: ``b"ARDE" | format u8 | CRC-32 u32 | state``."""
    checksum = zlib.crc32(state, _HEADER_CRC)
    return b"".join((_HEADER, checksum.to_bytes(4, "big"), state))


def decode(value: bytes, key: bytes) -> bytes:
    """The state in a stored *value*.

    :raises RendezvousStateError: *value* is not what :func:`encode` makes.
    """
    if len(value) < _HEADER_SIZE or value[: len(_MAGIC)] != _MAGIC:
        raise RendezvousStateError(
            f"etcd key {key!r} holds {len(value)} bytes that are not arendezvous state"
        )
    if value[len(_MAGIC)] != _FORMAT_VERSION:
        raise RendezvousStateError(
            f"etcd key {key!r} holds state of unknown format version {value[len(_MAGIC)]}"
        )
    state = value[_HEADER_SIZE:]
    if zlib.crc32(state, _HEADER_CRC) != int.from_bytes(value[len(_HEADER) : _HEADER_SIZE], "big"):
        raise RendezvousStateError(f"etcd key {key!r}: state checksum mismatch (corrupt value)")
    return state


@dataclass(frozen=True, slots=True)
class EtcdToken:
    """An etcd backend's token: the run key's ``mod_revision`` in one cluster.

    Equal only to an :class:`EtcdToken` with the same cluster, key and revision. A revision is
    never reused by a key, so tokens never repeat within a run even across deletion and
    re-creation (as long as the cluster's data is not wiped or restored from an older backup).
    """

    cluster_id: int
    key: bytes
    mod_revision: int

    def __repr__(self) -> str:
        return f"<EtcdToken revision {self.mod_revision} of {self.key!r}>"


def sendable(token: object) -> TypeGuard[EtcdToken]:
    """An EtcdToken whose fields have the types and ranges etcd's have: only such a token is
    compared or sent; any other is merely stale."""
    return (
        type(token) is EtcdToken
        and type(token.cluster_id) is int
        and type(token.key) is bytes
        and type(token.mod_revision) is int
        and 0 < token.mod_revision < 2**63
    )


def client_modules() -> tuple[Any, Any]:
    """``(grpc, aetcd.rpc)``, imported on first use so that ``import arendezvous`` never does."""
    import_optional("aetcd", "etcd")
    grpc = import_optional("grpc", "etcd")
    try:
        rpc = importlib.import_module("aetcd.rpc")
    except ImportError:
        raise
    except Exception as exc:  # protobuf's VersionError: gencode newer than the runtime
        raise ImportError(
            f"aetcd cannot load its protocol buffers ({exc}); it needs protobuf>=5.27.2: "
            "pip install 'arendezvous[etcd]'"
        ) from exc
    return grpc, rpc


@cache
def error_table(grpc: Any) -> ErrorTable:
    """gRPC's exceptions (the module *grpc*) and ours."""
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED

    def status(exc: Any) -> str:
        return f"{exc.code().name}: {exc.details()}"

    return (
        ErrorRule(
            (grpc.aio.AioRpcError,),
            detail="no answer within {timeout:g} s (DEADLINE_EXCEEDED)",
            when=lambda exc: getattr(exc, "code", lambda: None)() == deadline,
        ),
        ErrorRule((grpc.aio.AioRpcError,), detail=status),
        ErrorRule((TimeoutError,), detail="no answer within {timeout:g} s"),
        ErrorRule((grpc.RpcError, OSError)),
    )
