"""PyTorch integration: torch's rendezvous over any arendezvous backend, and a torchrun plugin.

Install with ``pip install 'arendezvous[torch]'``. Three pieces:

* :class:`TorchRendezvousBackend`: torch's ``RendezvousBackend`` over an arendezvous backend, so
  ``DynamicRendezvousHandler.from_backend(...)`` runs on Redis, etcd, PostgreSQL or a file::

      with BackendStore(open_backend(url, run_id="job-42.c10d")) as store, \\
              TorchRendezvousBackend(open_backend(url, run_id="job-42")) as backend:
          handler = DynamicRendezvousHandler.from_backend(
              run_id="job-42", store=store, backend=backend, min_nodes=2, max_nodes=4
          )
          try:
              info = handler.next_rendezvous()
          finally:
              handler.shutdown()  # then leaving the block closes both adapters

* :class:`BackendStore`: a ``torch.distributed.Store`` kept in a backend run, the shared c10d
  store torch's handler needs before any node knows its rank.
* the torchrun plugin: ``torchrun --rdzv-backend=arendezvous --rdzv-endpoint=URL ...``, through
  the ``torchrun.handlers`` entry point :func:`torchrun_handler` (or :func:`register` without
  one). See ``docs/torch.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._compat import import_optional

if TYPE_CHECKING:
    from torch.distributed.elastic.rendezvous.api import RendezvousParameters

    from ._torchrun import ArendezvousHandler


def torchrun_handler() -> Callable[[RendezvousParameters], ArendezvousHandler]:
    """The ``torchrun.handlers`` entry point's object: torch calls it and registers the result.

    Defined before anything here imports torch's rendezvous package: that import runs torch's
    entry-point registration, which looks this function up on a module still being imported.
    """
    from ._torchrun import create_handler

    return create_handler


import_optional("torch", "torch")
# Import torch's rendezvous package (and so its plugin registration) now, while only
# torchrun_handler above is defined, rather than in the middle of importing our own modules.
import_optional("torch.distributed.elastic.rendezvous", "torch")

from ._torch_backend import TorchRendezvousBackend as TorchRendezvousBackend  # noqa: E402
from ._torch_store import BackendStore as BackendStore  # noqa: E402
from ._torchrun import DEFAULT_SCHEME as DEFAULT_SCHEME  # noqa: E402
from ._torchrun import ENGINES as ENGINES  # noqa: E402
from ._torchrun import HANDLER_NAME as HANDLER_NAME  # noqa: E402
from ._torchrun import ArendezvousHandler as ArendezvousHandler  # noqa: E402
from ._torchrun import HandlerConfig as HandlerConfig  # noqa: E402
from ._torchrun import create_handler as create_handler  # noqa: E402
from ._torchrun import default_engine as default_engine  # noqa: E402
from ._torchrun import endpoint_url as endpoint_url  # noqa: E402
from ._torchrun import register as register  # noqa: E402

__all__ = (
    "DEFAULT_SCHEME",
    "ENGINES",
    "HANDLER_NAME",
    "ArendezvousHandler",
    "BackendStore",
    "HandlerConfig",
    "TorchRendezvousBackend",
    "create_handler",
    "default_engine",
    "endpoint_url",
    "register",
    "torchrun_handler",
)
