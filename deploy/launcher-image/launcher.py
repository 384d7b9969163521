"""Upstream's launcher command line (`python3 /app/launcher.py --port 8001 ...`) in dpctl's
launcher image: the same flags, served by `dpctl launcher`."""

import sys

from dpctl.cli import main

sys.exit(main(["launcher", *sys.argv[1:]]))
