"""One name per run id, safe as a file name and as an S3 object name (file and S3 backends).

A run id may hold any character but NUL (``/``, ``..``, a leading dot, thousands of characters);
a store that keeps runs side by side under names needs one that reaches outside nothing, hides
nothing, fits every file system, and differs for different run ids.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse

__all__ = ("MAX_NAME", "decode_run_name", "is_hashed_name", "run_name")

MAX_NAME = 120
"""The longest name, in characters: room for a suffix (``.rdzv``) within any file system's 255."""


def run_name(run_id: str) -> str:
    """The name of run *run_id*: percent-encoded (no ``/``), never starting with a dot, and
    shortened with a hash of the whole id when long; distinct for distinct run ids."""
    name = urllib.parse.quote(run_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()
        name = f"{name[:MAX_NAME - 65]}~{digest}"
    return name


# A shortened name: the first characters, "~" and the SHA-256 of the run id.
_HASHED = re.compile(rf".{{{MAX_NAME - 65}}}~[0-9a-f]{{64}}", re.S)


def is_hashed_name(name: str) -> bool:
    """Whether *name* is a shortened one (see :func:`run_name`), which does not decode back to
    its run id: a store that lists runs keeps the id elsewhere."""
    return _HASHED.fullmatch(name) is not None


def decode_run_name(name: str) -> str | None:
    """The run id that :func:`run_name` names *name*, or ``None`` if no run id does (a hashed
    name, a foreign file, an encoding that :func:`run_name` would not produce)."""
    try:
        run_id = urllib.parse.unquote(name, errors="strict")
    except UnicodeDecodeError:
        return None
    if not run_id or "\x00" in run_id or run_name(run_id) != name:
        return None
    return run_id
