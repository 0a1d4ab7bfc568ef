"""``python -m loralab``: the command line (see :mod:`loralab.cli`)."""

import sys

from loralab.cli import main

sys.exit(main())
