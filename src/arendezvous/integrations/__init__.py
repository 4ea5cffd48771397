"""Integrations of arendezvous with other frameworks, each behind its own optional extra.

Nothing is imported here: ``import arendezvous.integrations.torch`` imports PyTorch (extra
``torch``), and ``import arendezvous`` never does.
"""

from __future__ import annotations

__all__ = ()
