"""``python -m deepinside ...``: the command line, also under ``torchrun ... -m deepinside``."""

import sys

from .cli import main

sys.exit(main())
