"""``python -m cope.serve``: the same as ``cope serve``."""

import sys

from .cli import main

sys.exit(main())
