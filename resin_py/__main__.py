"""`python -m resin_py` runs the resin port program."""

from resin_py.cli import main

raise SystemExit(main())
