"""``python -m training`` is ``sgan-train`` (torchrun launches it this way)."""

import sys

from training.cli import main

sys.exit(main())
