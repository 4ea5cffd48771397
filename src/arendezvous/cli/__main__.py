"""``python -m arendezvous.cli``: the same command as ``python -m arendezvous``."""

import sys

from . import main

sys.exit(main())
