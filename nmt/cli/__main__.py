"""``python -m nmt.cli``: the ``nmt`` command."""

import sys

from nmt.cli import main

sys.exit(main())
