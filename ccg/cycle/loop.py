"""The cycle (DESIGN.md, "The cycle"): CG model -> CG samples -> flow -> free energies -> CG model.

One iteration:

1. **propose** z at each estimation temperature: a fraction from the current F_theta (overdamped
   Langevin, `ccg.free_energy.langevin`, walkers started at earlier points drawn ∝
   exp(-beta F_theta)), the rest from the exploration proposal (uniform torus, box or CG
   frames); the first iteration, with no F_theta yet, explores only;
2. **fine-tune** the flow by reverse KL on those z (temperatures over the training range);
3. **estimate** beta F, grad_z F and <U>_z at the z by importance sampling through the flow;
4. **refit** F_theta on all estimates so far (warm start).

Before the refit, the current F_theta is scored on the new estimates, which it was not fitted
to (`ccg.free_energy.validation`): the reduced chi-square of values, mean forces and <U>_z
against their standard errors, per temperature. The cycle stops when F_theta predicts the new
points within their own statistical error (every chi-square <= `chi2_max`) at every
estimation temperature and their median ESS reaches `ess_target`, or when the budget ends
(`minutes`, or `iterations`). A change between two fits is reported too, but two fits can
agree and both be off: it is not a stopping rule. After every iteration `flow.pt`,
`cg_model.pt`, `cycle_state.pt` (for `--resume`), `metrics.json` and `cycle.png` are written
atomically into the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch

from ccg._signals import StopRequest, stop_requests
from ccg.cycle.config import CycleConfig
from ccg.cycle.plots import plot_cycle
from ccg.errors import Interrupted
from ccg.free_energy.cg_model import FreeEnergyModel
from ccg.free_energy.estimators import estimate_free_energy
from ccg.free_energy.fit import FitConfig, ObservableSet, fit_free_energy_model
from ccg.free_energy.langevin import simulate
from ccg.free_energy.validation import held_out_scores, predicts_within_noise
from ccg.io.atomic import atomic_torch_save, atomic_write_text, load_torch_state
from ccg.io.cg_model_file import load_cg_model, save_cg_model
from ccg.io.model_file import load_model, save_model
from ccg.model import BackmappingModel
from ccg.training.config import TrainConfig
from ccg.training.losses import DEFAULT_ENERGY_CUT, ReverseKL
from ccg.training.proposals import FrameProposal, ZProposal
from ccg.training.trainer import Trainer

logger = logging.getLogger(__name__)

_ESTIMATE_SAMPLES = 16384  # samples per estimation block (and per estimator chunk)


def _training_evaluations(model) -> int | None:
    """Energy evaluations spent training a flow (steps x batch), from its model file's
    metrics and run config; None when they are not recorded."""
    if "initial_flow_energy_evaluations" in model.metrics:  # a cycle's flow.pt (resume)
        return model.metrics["initial_flow_energy_evaluations"]
    steps = model.metrics.get("steps")
    settings = model.run_config.get("train", {})
    if steps is None or "n_z" not in settings or "samples_per_z" not in settings:
        return None
    return int(steps) * int(settings["n_z"]) * int(settings["samples_per_z"])


def _training_energy_cut(model) -> float:
    """The energy cut (k_BT) the flow was trained with: the one its training recorded (after
    any automatic raise), else its run config's `[train] energy_cut`, else the default. The
    cycle fine-tunes with the same cut; a lower one would soften physical energies of a
    molecule with many fast coordinates and bias the fine-tuning."""
    recorded = model.metrics.get("energy_cut_kt")
    if recorded is not None:
        return float(recorded)
    return float(model.run_config.get("train", {}).get("energy_cut", DEFAULT_ENERGY_CUT))


def _finite(obj):
    """A copy of obj with NaN / inf floats replaced by None (metrics.json stays strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class Cycle:
    """The state of one cycle run: the flow model, F_theta, the data, the metrics.

    Args:
        model: the `BackmappingModel` to refine (for example `load_model("model.pt")`).
        explore: the exploration `ZProposal`.
        config: a `CycleConfig`.
        out_dir: output folder (created).
    """

    def __init__(self, model: BackmappingModel, explore: ZProposal, config: CycleConfig,
                 out_dir: str | Path, *, progress: bool = True):

        self.model, self.explore, self.config = model, explore, config.validate()
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        t_lo, t_hi = model.t_range
        temps = [float(t) for t in config.temperatures]
        outside = [t for t in temps if not t_lo <= t <= t_hi]
        if outside:
            raise ValueError(f"Estimation temperatures {outside} K are outside the flow's range "
                             f"[{t_lo}, {t_hi}] K; choose temperatures inside it.")
        with torch.random.fork_rng():  # F_theta's initial weights from the cycle's seed
            torch.manual_seed(config.seed)
            self.cg_model = FreeEnergyModel(
                model.cg_map, t_ref=model.t_ref, t_range=(min(temps), max(temps)),
                hidden=config.hidden, n_layers=config.n_layers, n_members=config.n_members,
                system=model.system).double()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.data: ObservableSet | None = None
        self.iteration = 0
        self.elapsed_s = 0.0
        self.evaluations = 0
        self.metrics: list[dict] = []
        self.converged = False
        self.progress = progress
        self.initial_evaluations = _training_evaluations(model)
        self.energy_cut = _training_energy_cut(model)
        self._stop: StopRequest | None = None  # set by `run`

    # -- persistence -------------------------------------------------------------------------
    def save(self) -> None:

        summary = {"iterations": self.iteration, "energy_evaluations": self.evaluations,
                   "initial_flow_energy_evaluations": self.initial_evaluations,
                   "wall_time_s": self.elapsed_s, "converged": self.converged,
                   "energy_cut_kt": self.energy_cut}
        save_model(self.out / "flow.pt", self.model, metrics=summary,
                   run_config=self.model.run_config)
        save_cg_model(self.out / "cg_model.pt", self.cg_model, self.model.system, metrics=summary)
        state = {"iteration": self.iteration, "elapsed_s": self.elapsed_s,
                 "evaluations": self.evaluations, "metrics": self.metrics,
                 "converged": self.converged, "generator": self.generator.get_state(),
                 "data": None if self.data is None else self.data.as_dict(),
                 "config": dataclasses.asdict(self.config)}
        atomic_torch_save(state, self.out / "cycle_state.pt")
        payload = {"summary": summary, "iterations": self.metrics,
                   "config": dataclasses.asdict(self.config)}
        atomic_write_text(self.out / "metrics.json", json.dumps(_finite(payload), indent=1))
        if self.metrics:

            plot_cycle(self, self.out / "cycle.png")

    @classmethod
    def resume(cls, out_dir, explore, config: CycleConfig, *, progress: bool = True) -> Cycle:
        """Continue the run in `out_dir` from its last finished iteration."""

        out = Path(out_dir)
        path = out / "cycle_state.pt"
        if not path.is_file():
            raise FileNotFoundError(f"No cycle state to resume from at {path}. Run without "
                                    "--resume.")
        state = load_torch_state(path, "cycle state")
        config.check_resumable(state["config"])
        cycle = cls(load_model(out / "flow.pt"), explore, config, out, progress=progress)
        cycle.cg_model = load_cg_model(out / "cg_model.pt")
        cycle.iteration, cycle.elapsed_s = state["iteration"], state["elapsed_s"]
        cycle.evaluations, cycle.metrics = state["evaluations"], state["metrics"]
        cycle.converged = state["converged"]
        cycle.generator.set_state(state["generator"])
        if state["data"] is not None:
            cycle.data = ObservableSet(**state["data"])
        return cycle

    # -- the steps -----------------------------------------------------------------------------
    def propose(self, temperature_k: float, n: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """n points at T: (z [n, d], from_model mask [n], Langevin acceptance or nan)."""

        c = self.config
        n_model = 0 if self.data is None else round((1 - c.explore_fraction) * n)
        z_explore = self._explore(n - n_model, temperature_k)
        if n_model == 0:
            return z_explore, torch.zeros(n, dtype=torch.bool), math.nan
        walkers = min(c.langevin_walkers, n_model)
        per_walker = math.ceil(n_model / walkers)
        save_every = max(1, c.langevin_steps // (2 * per_walker))  # keep the second half
        start = self._walker_starts(walkers, temperature_k)
        run = simulate(self.cg_model, start, temperature_k, c.langevin_steps,
                       save_every=save_every, generator=self.generator)
        z_model = run.frames[-per_walker:].reshape(-1, run.frames.shape[-1])[:n_model]
        z = torch.cat([z_model.to(torch.float64), z_explore])
        from_model = torch.zeros(n, dtype=torch.bool)
        from_model[:n_model] = True
        return z, from_model, run.acceptance

    def _explore(self, n: int, temperature_k: float) -> torch.Tensor:
        """n exploration points [n, d]: a share `explore_uniform` straight from the exploration
        proposal, the rest resampled from 8x as many of its draws towards
        exp(-explore_sharpness beta F_theta) (once there is an F_theta), so that they cover the
        populated region evenly instead of wherever the proposal puts them."""
        c = self.config
        draw = lambda m: self.explore.sample(m, self.generator, torch.float64,  # noqa: E731
                                             torch.device("cpu"))
        if self.data is None or c.explore_sharpness == 0 or n == 0:
            return draw(n)
        n_plain = round(c.explore_uniform * n)
        candidates = draw(8 * (n - n_plain))
        with torch.no_grad():
            beta_f = self.cg_model.beta_free_energy(candidates, temperature_k)
        weights = torch.softmax(-c.explore_sharpness * beta_f, 0)
        idx = torch.multinomial(weights, n - n_plain, replacement=False,
                                generator=self.generator)
        return torch.cat([candidates[idx], draw(n_plain)])

    def _walker_starts(self, n: int, temperature_k: float) -> torch.Tensor:
        """Langevin starting points [n, d]: points estimated so far, drawn with probability
        ∝ exp(-beta F_theta) at T, so walkers start near equilibrium instead of relaxing into
        whichever basin a uniform start falls in (crossing barriers of many kT is the slow
        part of CG dynamics)."""
        with torch.no_grad():
            beta_f = self.cg_model.beta_free_energy(self.data.z, temperature_k)
        idx = torch.multinomial(torch.softmax(-beta_f, 0), n, replacement=True,
                                generator=self.generator)
        return self.data.z[idx]

    def finetune(self, z_pool: torch.Tensor) -> dict:

        c = self.config
        t_lo, t_hi = self.model.t_range
        tc = TrainConfig(t_min=t_lo, t_max=t_hi, t_ref=self.model.t_ref, n_z=c.n_z,
                         samples_per_z=c.samples_per_z, steps=c.finetune_steps,
                         lr=c.finetune_lr, lr_final=c.finetune_lr / 10,
                         t_values=(list(c.temperatures)
                                   if c.train_only_at_estimation_temperatures else None),
                         checkpoint_every=10**9, checkpoint_minutes=10.0**9,
                         seed=c.seed + 1000 * self.iteration + 1,
                         device=str(next(self.model.flow.parameters()).device))
        loss = ReverseKL(self.model, energy_cut=self.energy_cut)
        trainer = Trainer(self.model, loss, FrameProposal(z_pool.float()), tc,
                          self.out / "finetune", progress=self.progress)
        trainer.run()
        self.model.flow.eval()
        self.evaluations += trainer.step * c.n_z * c.samples_per_z
        return {"finetune_loss": trainer.metrics["loss"][-1],
                "finetune_ess": trainer.metrics["ess"][-1],
                "finetune_nonfinite": trainer.nonfinite_total}

    def _check_stop(self) -> None:
        """Raise `Interrupted` if a stop was requested while `run` runs."""
        if self._stop is not None and self._stop.requested:
            raise Interrupted(self._stop.signum)

    def estimate(self, z: torch.Tensor, temperature_k: float) -> ObservableSet:
        """Estimates at z [n, d] in blocks of `_ESTIMATE_SAMPLES` samples (the estimator's own
        chunks, so the same numbers as one call), checking for a stop request between blocks:
        estimation takes minutes on a peptide, and a stop should not wait for it."""
        k = self.config.samples_per_point
        block = max(1, _ESTIMATE_SAMPLES // k)
        parts = []
        for start in range(0, z.shape[0], block):
            self._check_stop()
            zb = z[start:start + block]
            est = estimate_free_energy(self.model, zb.float(), temperature_k, n_samples=k,
                                       mean_force=True, chunk_size=_ESTIMATE_SAMPLES,
                                       generator=self.generator)
            self.evaluations += zb.shape[0] * k
            parts.append(ObservableSet.from_estimates(zb, temperature_k, est))
        return ObservableSet.cat(parts)

    def refit(self) -> dict:

        c = self.config
        steps = c.fit_steps if self.iteration == 0 else max(1, c.fit_steps // 2)
        history = fit_free_energy_model(
            self.cg_model, self.data,
            FitConfig(steps=steps, lr=3e-3 if self.iteration == 0 else 1e-3,
                      seed=c.seed + self.iteration))
        return {f"fit_{k}": v[-1] for k, v in history.items()}

    def change_on(self, z: torch.Tensor, temps: torch.Tensor, before: torch.Tensor) -> float:
        """RMS change of beta F_theta at (z, T) against `before`, after the best shift per T."""
        with torch.no_grad():
            after = self.cg_model.beta_free_energy(z, temps)
        delta = after - before
        for t in torch.unique(temps):
            sel = temps == t
            delta[sel] -= delta[sel].mean()
        return float(delta.pow(2).mean().sqrt())

    def step(self) -> dict:
        """Run one iteration; returns its metrics row."""
        c = self.config
        start = time.perf_counter()
        n = c.points_per_temperature
        zs, masks, acceptance = [], [], {}
        for t in c.temperatures:
            self._check_stop()
            z, from_model, acc = self.propose(float(t), n)
            zs.append(z)
            masks.append(from_model)
            acceptance[str(t)] = acc
        row = {"iteration": self.iteration + 1, "langevin_acceptance": acceptance}
        row.update(self.finetune(torch.cat(zs)))
        new = ObservableSet.cat([self.estimate(z, float(t))
                                 for z, t in zip(zs, c.temperatures, strict=True)])
        visited = torch.cat(masks)
        if not bool(visited.any()):
            visited = torch.ones_like(visited)
        z_v, t_v = new.z[visited], new.temperature_k[visited]
        with torch.no_grad():
            before = self.cg_model.beta_free_energy(z_v, t_v)
        # the current F_theta against estimates it was not fitted to (none before the first fit)
        scores = held_out_scores(self.cg_model, new) if self.data is not None else []
        self.data = new if self.data is None else ObservableSet.cat([self.data, new])
        row.update(self.refit())
        change = self.change_on(z_v, t_v, before) if self.iteration > 0 else math.inf
        ess = new.ess[visited]
        row.update({
            "median_ess": float(ess.median()), "p10_ess": float(torch.quantile(ess, 0.1)),
            "median_ess_by_T": {str(t): float(new.ess[visited & (new.temperature_k == t)].median())
                                for t in c.temperatures},
            "delta_f_kt": change, "n_points": len(self.data),
            "held_out": {str(score.temperature_k): score.as_dict() for score in scores},
        })
        self.iteration += 1
        self.converged = (predicts_within_noise(scores, c.chi2_max)
                          and row["median_ess"] >= c.ess_target)
        self.elapsed_s += time.perf_counter() - start
        row.update({"energy_evaluations": self.evaluations, "wall_time_s": self.elapsed_s,
                    "converged": self.converged})
        self.metrics.append(row)
        self.save()
        return row

    def run(self) -> list[dict]:
        """Iterate until converged, `iterations` done, or the time budget would be exceeded.

        Raises:
            Interrupted: SIGINT / SIGTERM, honoured between the temperatures' Langevin runs,
                between fine-tuning steps and between estimation blocks (seconds, not the rest
                of the iteration). The state of the last finished iteration is on disk
                (saved after every iteration); this object is then mid-iteration: continue
                with `Cycle.resume`, which repeats the interrupted iteration.
        """
        c = self.config
        with stop_requests() as stop:
            self._stop = stop
            try:
                while self.iteration < c.max_iterations and not self.converged:
                    if c.minutes is not None and self.metrics:
                        last = self.metrics[-1]["wall_time_s"] / len(self.metrics)
                        if self.elapsed_s + last > 60 * c.minutes:
                            logger.info("cycle: stopping before iteration %d: the next one "
                                        "(~%.0f s) would exceed --minutes %s",
                                        self.iteration + 1, last, c.minutes)
                            break
                    try:
                        self._iterate()
                    except Interrupted as stopped:
                        raise self._interrupted(stopped.signum) from None
                    if stop.requested:
                        raise self._interrupted(stop.signum)
            finally:
                self._stop = None
        return self.metrics

    def _interrupted(self, signum: int) -> Interrupted:
        state = self.out / "cycle_state.pt"
        saved = (f"iteration {self.iteration} is saved in {state}" if self.iteration
                 else "no iteration had finished")
        return Interrupted(signum, state if self.iteration else None,
                           f"stopped by signal {signum}; {saved}")

    def _iterate(self) -> None:
        """One iteration and its log line."""
        row = self.step()
        held_out = "; ".join(
            f"{float(t):g} K chi2 {s['chi2_values']:.2f}/{s['chi2_forces']:.2f}/"
            f"{s['chi2_energies']:.2f}, RMS {s['rms_kt']:.3f} kT"
            for t, s in row["held_out"].items()) or "none yet"
        logger.info("iteration %d: median ESS %.2f (p10 %.2f), held-out error of F_theta "
                    "(values/forces/<U>): %s; %d points, %.2f M energy evaluations, %.0f s",
                    row["iteration"], row["median_ess"], row["p10_ess"], held_out,
                    row["n_points"], row["energy_evaluations"] / 1e6, row["wall_time_s"])
