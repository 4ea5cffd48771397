"""``python -m arendezvous``: see :mod:`arendezvous.cli`."""

import sys

from .cli import main

sys.exit(main())
