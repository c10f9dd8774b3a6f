"""``python -m app``: the same as ``sgan-serve``."""

import sys

from app.cli import main

sys.exit(main())
