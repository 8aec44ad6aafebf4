"""`python -m metro.loader`: the `loader` command."""

import sys

from .cli import main

sys.exit(main())
