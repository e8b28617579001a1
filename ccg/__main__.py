"""`python -m ccg ...` runs the `ccg` command (also under `torchrun -m ccg ...`)."""

from ccg.cli import main

raise SystemExit(main())
