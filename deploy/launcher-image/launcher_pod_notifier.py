"""Upstream's notifier sidecar command (`python3 /app/launcher_pod_notifier.py`, which both
controllers put in every launcher Pod) in dpctl's launcher image: `dpctl launcher-notifier`."""

import sys

from dpctl.cli import main

sys.exit(main(["launcher-notifier"]))
