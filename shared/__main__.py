"""``python -m shared``: the operator commands (see shared/cli)."""

import sys

from shared.cli import main

sys.exit(main())
