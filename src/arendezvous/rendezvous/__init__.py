"""The async rendezvous: rounds, ranks and world sizes agreed through any rendezvous backend.

:class:`AsyncRendezvous` is the async-native counterpart of PyTorch's
``DynamicRendezvousHandler`` (same join, last-call, heartbeat and closing rules; no polling, no
pickle); :class:`SyncRendezvous` is its blocking face for threads and torchrun. The shared state
is versioned JSON (see :data:`SCHEMA_VERSION`).
"""

from __future__ import annotations

from ._handler import AsyncRendezvous as AsyncRendezvous
from ._handler import RendezvousInfo as RendezvousInfo
from ._handler import RoundEnd as RoundEnd
from ._handler import default_node_id as default_node_id
from ._state import SCHEMA_VERSION as SCHEMA_VERSION
from .sync import SyncRendezvous as SyncRendezvous

__all__ = (
    "SCHEMA_VERSION",
    "AsyncRendezvous",
    "RendezvousInfo",
    "RoundEnd",
    "SyncRendezvous",
    "default_node_id",
)
