"""``python -m diffst`` runs the command line."""

import sys

from diffst.cli import main

sys.exit(main())
