"""`python -m dpctl` runs the same CLI as the `dpctl` script."""

from dpctl.cli import main

raise SystemExit(main())
