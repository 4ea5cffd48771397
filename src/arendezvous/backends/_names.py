"""One name per run id, safe as a file name and as an S3 object name (file and S3 backends).

A run id may hold any character but NUL (``/``, ``..``, a leading dot, thousands of characters);
a store that keeps runs side by side under names needs one that reaches outside nothing, hides
nothing, fits every file system, and differs for different run ids.
"""

from __future__ import annotations

import hashlib
import urllib.parse

__all__ = ("MAX_NAME", "run_name")

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
