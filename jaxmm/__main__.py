"""`python -m jaxmm ...`: the `jaxmm` command line (see jaxmm/cli.py)."""

import sys

from .cli import main

sys.exit(main())
