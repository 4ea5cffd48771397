"""``arendezvous.rendezvous`` exports exactly its ``__all__``, each name documented."""

from __future__ import annotations

import inspect

import arendezvous.rendezvous as rendezvous


def test_all_names_exist_and_are_documented() -> None:
    assert isinstance(rendezvous.__all__, tuple)
    assert rendezvous.__doc__
    public = {name for name in vars(rendezvous)
              if not name.startswith("_") and name != "annotations"}  # from __future__
    modules = {name for name in public if inspect.ismodule(getattr(rendezvous, name))}
    assert public - modules == set(rendezvous.__all__)
    for name in rendezvous.__all__:
        obj = getattr(rendezvous, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name
    assert rendezvous.SCHEMA_VERSION == 2
