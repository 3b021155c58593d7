"""``python -m agent`` is ``signalbeam-agent``."""

import sys

from agent.cli import main

sys.exit(main())
