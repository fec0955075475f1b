"""`python -m mailbot` runs the command line."""

from __future__ import annotations

import sys

from mailbot.cli import main

sys.exit(main())
