"""``torchrun``, run as ``python _torchrun_launch.py ARGS``, with the arendezvous handler present.

torch finds the handler through the ``torchrun.handlers`` entry point when the package declares it
(then nothing extra happens here). While it does not, the handler is registered by hand before
torchrun parses its arguments, which is exactly what the entry point makes torch do.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

from torch.distributed.run import main

if __name__ == "__main__":
    if "arendezvous" not in {ep.name for ep in entry_points(group="torchrun.handlers")}:
        from arendezvous.integrations.torch import register

        register()
        print("arendezvous handler registered by hand (no entry point)", file=sys.stderr)
    main()
