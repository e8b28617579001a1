"""`python -m ccg ...` runs the `ccg` command (also under `torchrun -m ccg ...`).

The command line is run as a module (ccg/cli.py's `__main__` block) rather than imported, so
the package's entry point does not import the command-line layer.
"""

import runpy

runpy.run_module("ccg.cli", run_name="__main__", alter_sys=True)
