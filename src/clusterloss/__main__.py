"""``python -m clusterloss ...`` is the ``clusterloss`` command."""

import sys

from clusterloss.cli import main

sys.exit(main())
