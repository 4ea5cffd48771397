"""The documented ways of using the torch integration leave no thread or descriptor behind.

``_torch_leaks.py`` runs, in a fresh process with real torch, the handler example of
``docs/torch.md`` as written (its Redis URL replaced by a throwaway store's) and the torchrun
handler from code on both engines, after one run of torch's own handler over torch's own stores
(whatever torch allocates once per process is then already there). For each, the threads
(``/proc/self/task`` and ``threading.enumerate()``) and the open descriptors (``/proc/self/fd``,
with what each points at) after closing must be exactly those before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from integrations._torch_support import require_torch, store_url

require_torch()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc"),
]

_SCRIPT = Path(__file__).with_name("_torch_leaks.py")
_DOCS = Path(__file__).resolve().parents[2] / "docs" / "torch.md"
_CASES = ("handler", "plugin-arendezvous", "plugin-torch")


def _run(url: str, output: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(_SCRIPT), str(_DOCS), url, str(output)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    # The documented example prints its rank.
    assert "rank 0 of 1" in result.stdout
    counts: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return counts


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_documented_patterns_leave_nothing_behind(kind: str, tmp_path: Path) -> None:
    with store_url(kind, str(tmp_path / "store")) as url:
        counts = _run(url, tmp_path / "counts.json")
    assert sorted(counts) == sorted(_CASES)
    for case in _CASES:
        before, during, after = (counts[case][when] for when in ("before", "during", "after"))
        # The count sees what it should: while the round is held, the adapters' loop threads run
        # (and whatever else the case opened).
        assert "arendezvous-sync-loop" in during["threads"], case
        assert during["tasks"] > before["tasks"], case
        assert len(during["descriptors"]) > len(before["descriptors"]), case
        # After closing, exactly what was there before: no thread, no descriptor more or less.
        assert after["threads"] == before["threads"], case
        assert after["tasks"] == before["tasks"], case
        assert after["descriptors"] == before["descriptors"], case
