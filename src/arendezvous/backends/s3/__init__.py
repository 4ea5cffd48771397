"""The S3 backend: one object per run in an S3 bucket, written with conditional ``PutObject``.

A run's state is the object ``<prefix>/<run_id>`` (the run id percent-encoded into one name),
holding a checksummed header -- incarnation, write counter, writer -- and the state
(``_format``). ``set_state`` is one ``PutObject``: with ``If-None-Match: *`` to create the
object, or ``If-Match: <the ETag in the token>`` to replace exactly the version the caller read.
The store applies the condition and the write atomically, so two writers holding one token never
both win; a refused writer re-reads and returns the current state (S3 does not return it).
``get_state`` is one ``GetObject``.

Before its first write a process proves that the store enforces conditional writes: it asks the
store to re-create an existing probe object with ``If-None-Match: *`` and to replace it with
``If-Match`` of a wrong ETag, and refuses (:class:`UnsafeStoreError`) a store that accepts either,
because on such a store a compare-and-swap would silently not be one.

The run lifecycle: ``delete_run`` deletes the run's object (``DeleteObject`` with ``If-Match``
of the version it looked at; never an object without the header's magic), ``list_runs`` pages
through ``ListObjectsV2`` under the prefix (a long run id's hashed name is named by the object's
metadata), and ``expire_after`` -- which S3's lifecycle rules, in whole days, cannot give -- is
enforced by reads and listings, by the store's clock alone (a reply's ``Date`` less the object's
``Last-Modified``).

S3 has no change notification: the handle's one change feed polls, first every
``poll_interval`` seconds and then ever less often up to ``max_poll_interval``, with jitter;
writes by handles in the same process wake it at once and start it again from the shortest
pause. S3 offers no member table (it has no atomic counter), so a rendezvous
keeps its member records inside the one object (:func:`arendezvous.emulate_member_table`).

The client is aiobotocore. It runs only on asyncio; from trio, the backend runs it on
arendezvous's asyncio loop thread (see :mod:`arendezvous.backends._network`). Credentials come
from botocore's standard chain -- environment, AWS config files, a ``profile=`` -- never from the
URL.

The package: ``_format`` (the object's bytes), ``_token`` (tokens), ``_store`` (the requests, the
error tables, the probe, over an aiobotocore client), ``_client`` (the client per event loop),
``_feed`` (the polling change feed), ``_options`` (option checks), ``_backend`` (the handle),
``_url`` (``s3://`` URLs).
"""

from __future__ import annotations

from ._backend import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    EXPIRE_PER_LIST,
    MAX_RUN_ID_METADATA,
    MAX_STATE_SIZE_LIMIT,
    S3Backend,
    UnsafeStoreError,
)
from ._token import S3Token
from ._url import from_url

__all__ = (
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "EXPIRE_PER_LIST",
    "MAX_RUN_ID_METADATA",
    "MAX_STATE_SIZE_LIMIT",
    "S3Backend",
    "S3Token",
    "UnsafeStoreError",
    "from_url",
)
