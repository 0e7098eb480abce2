"""``python -m medmm`` (and ``torchrun -m medmm``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
