"""The cycle (DESIGN.md, "The cycle"): CG model -> CG samples -> flow -> free energies -> CG
model. `run_cycle` runs it; `Cycle` is one run's state; `CycleConfig` its settings."""

from ccg.cycle.config import CYCLE_RESUMABLE_CHANGES, CycleConfig
from ccg.cycle.loop import Cycle
from ccg.cycle.run import run_cycle

__all__ = ["CYCLE_RESUMABLE_CHANGES", "Cycle", "CycleConfig", "run_cycle"]
