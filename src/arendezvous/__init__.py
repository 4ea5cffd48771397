"""arendezvous: async-native rendezvous backends for distributed jobs.

One opaque state blob per run, read with ``get_state()`` and written with a compare-and-swap
``set_state(state, token)``, from asyncio or trio, over an in-memory, file, Redis, etcd or
PostgreSQL store; a blocking adapter for PyTorch; and a test kit that proves a backend under
racing writers.
"""

from ._backend import DEFAULT_MAX_STATE_SIZE as DEFAULT_MAX_STATE_SIZE
from ._backend import AsyncRendezvousBackend as AsyncRendezvousBackend
from ._backend import RunInfo as RunInfo
from ._backend import Token as Token
from ._emulated import emulate_member_table as emulate_member_table
from ._errors import BackendClosedError as BackendClosedError
from ._errors import DuplicateNodeError as DuplicateNodeError
from ._errors import RendezvousClosedError as RendezvousClosedError
from ._errors import RendezvousConnectionError as RendezvousConnectionError
from ._errors import RendezvousError as RendezvousError
from ._errors import RendezvousStateError as RendezvousStateError
from ._errors import RendezvousTimeoutError as RendezvousTimeoutError
from ._members import Member as Member
from ._members import MemberPut as MemberPut
from ._members import MemberTable as MemberTable
from ._version import __version__ as __version__
from .backends._url import open_backend as open_backend
from .backends._url import registered_schemes as registered_schemes
from .backends.etcd import EtcdBackend as EtcdBackend
from .backends.file import FileBackend as FileBackend
from .backends.memory import MemoryBackend as MemoryBackend
from .backends.memory import MemoryStore as MemoryStore
from .backends.postgres import PostgresBackend as PostgresBackend
from .backends.redis import RedisBackend as RedisBackend
from .rendezvous import AsyncRendezvous as AsyncRendezvous
from .rendezvous import RendezvousInfo as RendezvousInfo
from .rendezvous import RoundEnd as RoundEnd
from .rendezvous import SyncRendezvous as SyncRendezvous
from .sync import SyncBackend as SyncBackend

__all__ = (
    "DEFAULT_MAX_STATE_SIZE",
    "AsyncRendezvous",
    "AsyncRendezvousBackend",
    "BackendClosedError",
    "DuplicateNodeError",
    "EtcdBackend",
    "FileBackend",
    "Member",
    "MemberPut",
    "MemberTable",
    "MemoryBackend",
    "MemoryStore",
    "PostgresBackend",
    "RedisBackend",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousInfo",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "RoundEnd",
    "RunInfo",
    "SyncBackend",
    "SyncRendezvous",
    "Token",
    "emulate_member_table",
    "open_backend",
    "registered_schemes",
)
