"""`python -m vprlab ...` is the `vprlab` command."""

import sys

from vprlab.commands.cli import main

sys.exit(main())
