"""`run_cycle`: start, resume or continue a cycle in a folder (the entry point of `ccg cycle`):
train the initial flow when none is given, finish an interrupted initial training, build the
exploration proposal and run `Cycle` iterations."""

from __future__ import annotations

import logging
from pathlib import Path

from ccg.cycle.config import CycleConfig
from ccg.cycle.loop import Cycle
from ccg.io.model_file import load_model
from ccg.model import BackmappingModel
from ccg.training.build import build_proposal
from ccg.training.config import RunConfig
from ccg.training.run import train
from ccg.training.trainer import read_checkpoint

logger = logging.getLogger(__name__)


def run_cycle(out_dir: str | Path, config: CycleConfig | None = None, *,
              init: BackmappingModel | None = None, run_config: RunConfig | None = None,
              cg_frames: str | Path | None = None, resume: bool = False,
              progress: bool = True) -> Cycle:
    """Run the cycle into `out_dir` and return it (converged or out of budget).

    Args:
        out_dir: output folder: flow.pt, cg_model.pt, cycle_state.pt, metrics.json, cycle.png
            after every iteration (and `initial/` when a flow is first trained).
        config: the cycle's settings (default `CycleConfig()`).
        init: the flow to start from (for example `load_model("model.pt")`); without it a
            flow is first trained as `run_config` says (`train`).
        run_config: how the flow was (or is to be) trained; default: the one stored with
            `init`, else `RunConfig()`. It also gives the exploration proposal.
        cg_frames: bead maps: CG frames for the exploration proposal.
        resume: continue the run in `out_dir` after its last finished iteration.
        progress: show progress bars.
    """
    config = CycleConfig() if config is None else config
    out = Path(out_dir)
    if resume and (out / "flow.pt").is_file():
        model = load_model(out / "flow.pt")
    elif resume and (out / "initial" / "checkpoint.pt").is_file():
        # interrupted while training the initial flow: finish that first, as it was configured
        stored = read_checkpoint(out / "initial" / "checkpoint.pt")["metadata"]["run_config"]
        run_config = RunConfig.from_dict(stored).validate()
        logger.info("resuming the initial flow's training in %s/", out / "initial")
        model, summary = train(run_config, out / "initial", resume=True, progress=progress)
        model.run_config, model.metrics = run_config.to_dict(), summary
        resume = False  # no cycle iteration has finished yet
    elif resume:
        raise FileNotFoundError(f"Nothing to resume in {out} (no flow.pt, no "
                                "initial/checkpoint.pt). Run without --resume.")
    elif init is not None:
        model = init
    else:
        run_config = (run_config or RunConfig()).validate()
        logger.info("no initial flow: training one for %s -> %s/", _budget(run_config),
                    out / "initial")
        model, summary = train(run_config, out / "initial", progress=progress)
        model.run_config, model.metrics = run_config.to_dict(), summary
    if run_config is None:
        run_config = RunConfig.from_dict(model.run_config) if model.run_config else RunConfig()
    if cg_frames is not None:
        run_config.map.cg_frames = str(cg_frames)
    explore = build_proposal(run_config.validate(), model)
    if resume:
        cycle = Cycle.resume(out, explore, config, progress=progress)
        logger.info("resuming %s after iteration %d", out, cycle.iteration)
    else:
        cycle = Cycle(model, explore, config, out, progress=progress)
    cycle.run()
    return cycle


def _budget(config: RunConfig) -> str:
    t = config.train
    return f"{t.minutes} min" if t.minutes is not None else f"{t.steps} steps"
