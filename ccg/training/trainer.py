"""The trainer: data-free reverse-KL optimization of the backmapping flow.

Each step draws `n_z` pairs (z, T) from the proposals, repeats each `samples_per_z` times, and
minimizes the loss over the batch. Repeating z gives a per-(z, T) effective sample size at no
extra cost, which the progress bar and the metrics report. Non-finite samples are counted,
excluded from the loss and reported; a running non-finite fraction above the configured
threshold stops the run with an error.

A step does not wait for the device: its metrics, non-finite counts and the decision to skip
an outlier gradient stay on the device (the skip through the fused Adam's `found_inf`, as
PyTorch's gradient scaler does it), and the host reads them every `READ_EVERY` steps, before
each checkpoint and at the end (`flush`), where the abort rule and the recent-norm thresholds
are updated; so a GPU runs ahead of the Python loop. Checkpoints are written atomically every
`checkpoint_every` steps and every `checkpoint_minutes`, and read back without executing code
(`torch.load(weights_only=True)`); `resume=True` continues from the last one with the same step
count, optimizer and random state. SIGINT / SIGTERM end the current step, save a checkpoint
and raise `ccg.errors.Interrupted`.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from ccg._checks import check_compiler, check_device, trusted_values
from ccg._signals import stop_requests
from ccg.errors import Interrupted, TrainingError
from ccg.io.atomic import atomic_torch_save, atomic_write_text, load_torch_state
from ccg.training import distributed
from ccg.training.config import ConfigError, TrainConfig
from ccg.training.proposals import TemperatureSampler

READ_EVERY = 10
"""Steps between the host's reads of the device-side metrics (`Trainer.flush`)."""


def ess_per_group(log_w: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Normalized ESS (sum w)^2 / (K sum w^2) in (0, 1] of each of `n_groups` rows.

    Args:
        log_w: [n_groups * K] log-weights, group-major (rows of one group are contiguous);
            -inf entries count as zero weight.
    Returns:
        [n_groups]; 0 for a group with no finite weight.
    """
    lw = log_w.detach().reshape(n_groups, -1).double()
    k = lw.shape[1]
    ess = torch.exp(2 * torch.logsumexp(lw, 1) - torch.logsumexp(2 * lw, 1)) / k
    return torch.nan_to_num(ess, nan=0.0)


class Trainer:
    """Optimizes `loss` over z ~ z_proposal and T ~ pi(T).

    Args:
        model: the `BackmappingModel` (its flow's parameters are trained).
        loss: a loss object called as loss(z, T, generator=...) (`ReverseKL`).
        z_proposal: an object with `sample(n, generator, dtype, device, temperature_k=T)`
            -> [n, cg_dim] (T: the [n] training temperatures in K, for proposals of z | T).
        config: the `TrainConfig` (validated here).
        out_dir: folder for checkpoint.pt and metrics.json (created).
        extra_modules: further modules whose parameters are optimized and checkpointed.
        metadata: JSON-like data saved with every checkpoint (for example the run's
            configuration, which `ccg.train` compares on resume); `read_checkpoint` returns it.
        device: where to train (default: `config.device`).

    Under torchrun (an initialized process group, `ccg.training.distributed`) every rank
    draws its own (z, T) from its own random stream, the adaptive proposal's map is summed
    over ranks, the stop, abort and checkpoint decisions use all-reduced values, and only rank
    0 writes files; the gradients are averaged by the `DistributedDataParallel` wrapper that
    the loss samples through (`ccg.train` sets it up).
    """

    def __init__(self, model, loss, z_proposal, config: TrainConfig, out_dir, *,
                 extra_modules: dict[str, torch.nn.Module] | None = None, progress: bool = True,
                 metadata: dict | None = None, device: torch.device | None = None):
        config.validate()
        self.model, self.loss, self.z_proposal, self.config = model, loss, z_proposal, config
        self.ranks = distributed.current()
        self.out_dir = Path(out_dir)
        if self.ranks.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.modules = {"flow": model.flow, **(extra_modules or {})}
        self.device = device if device is not None else check_device(config.device,
                                                                      "[train] device")
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        for module in self.modules.values():
            module.to(device=self.device, dtype=self.dtype)
        check_compiler(config.compile, self.device)
        if config.compile in ("flow", "all"):
            model.flow.compile_transforms(dynamic=False)
        if config.compile in ("energy", "all"):
            if not hasattr(model.system, "compile_energy"):
                raise ConfigError(
                    f'[train] compile = "{config.compile}" needs a system with '
                    f"compile_energy() (every ccg.systems.System has it); got "
                    f'{type(model.system).__name__}. Use compile = "flow" or "none".')
            model.system.compile_energy()
        self.cg_map_to_device()
        params = [p for m in self.modules.values() for p in m.parameters()]
        # fused: one kernel per step, and a skipped step is decided on the device (found_inf)
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                          fused=True)
        # the EMA of the parameters (not buffers), kept in PyTorch's AveragedModel and updated
        # on the device (`_update_averages`); its n_averaged is written at each checkpoint
        self.averages: dict[str, AveragedModel] = {}
        if config.ema_decay is not None:
            self.averages = {k: AveragedModel(m, use_buffers=False)
                             for k, m in self.modules.items()}
        self._ema_count = torch.zeros((), dtype=torch.long, device=self.device)
        self.t_sampler = TemperatureSampler(
            config.t_min, config.t_max, config.t_sampling, config.anneal_fraction,
            values=config.t_values,
        )
        self.generator = torch.Generator(device=self.device).manual_seed(
            distributed.rank_seed(config.seed, self.ranks.rank))
        if self.ranks.distributed:
            z_proposal.reduce = distributed.all_reduce_sum
        self.step = 0
        self.elapsed_s = 0.0
        self.metrics: dict[str, list] = {
            k: [] for k in ("step", "loss", "ess", "nonfinite", "lr", "time_s", "grad_norm")
        }
        self.band_ess: list[list[float]] = []  # rows of (step, T, ess) subsampled
        self._skipped_steps = 0
        self._nonfinite_total = 0
        self._lr_restart: tuple[float, float] | None = None
        """(progress, lr) where a resume with another length continued the schedule."""
        self.progress = progress and self.ranks.main
        self.metadata = dict(metadata or {})
        self._recent_nonfinite: list[float] = []
        self._pending: list[dict] = []  # device-side rows of steps not yet read (`flush`)

    def cg_map_to_device(self) -> None:
        self.model.cg_map.to(device=self.device)
        if hasattr(self.model.system, "to") and isinstance(self.model.system, torch.nn.Module):
            self.model.system.to(device=self.device)

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def skipped_steps(self) -> int:
        """Steps whose update was not applied (see `train_step`), after reading the queue."""
        self.flush()
        return self._skipped_steps

    @property
    def nonfinite_total(self) -> int:
        """Samples excluded for a non-finite energy or density, after reading the queue."""
        self.flush()
        return self._nonfinite_total

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt atomically (rank 0; every rank's random state is in it)."""
        self.flush()
        for average in self.averages.values():
            average.n_averaged.fill_(int(self._ema_count))
        generators = distributed.gather_objects(self.generator.get_state())
        if not self.ranks.main:
            return
        state = {
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "averages": {k: a.state_dict() for k, a in self.averages.items()},
            "generator": self.generator.get_state(),
            "generators": generators,
            "generator_device": self.device.type,
            "metrics": self.metrics,
            "band_ess": self.band_ess,
            "schedule": {"steps": self.config.steps, "minutes": self.config.minutes,
                         "restart": self._lr_restart},
            "skipped_steps": self.skipped_steps,
            "nonfinite_total": self.nonfinite_total,
            "proposal": self.z_proposal.state_dict(),
            "metadata": self.metadata,
        }
        atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> None:
        path = self.checkpoint_path
        state = read_checkpoint(path)  # on the CPU: load_state_dict moves it to the devices
        try:
            for name, module in self.modules.items():
                module.load_state_dict(state["modules"][name])
            self.optimizer.load_state_dict(state["optimizer"])
            for name, average in self.averages.items():
                average.load_state_dict(state["averages"][name])
                self._ema_count = average.n_averaged.to(self.device).clone()
        except (KeyError, RuntimeError, EOFError) as err:
            raise TrainingError(
                f"Checkpoint {path} does not match this run ({err}). Use the same config as the "
                "interrupted run, or start afresh in a new --out folder."
            ) from None
        generators = state.get("generators", [state["generator"]])
        same_device = state.get("generator_device", "cpu") == self.device.type
        if same_device and len(generators) == self.ranks.world:  # each rank its own stream
            self.generator.set_state(generators[self.ranks.rank])
        elif same_device and self.ranks.main:  # another number of ranks: rank 0 continues
            self.generator.set_state(state["generator"])
        else:  # other ranks, or another kind of device (its generator state differs): reseed
            self.generator.manual_seed(distributed.rank_seed(self.config.seed, self.ranks.rank)
                                       + state["step"])
        if state.get("proposal"):
            self.z_proposal.load_state_dict(state["proposal"])
        self.step, self.elapsed_s = state["step"], state["elapsed_s"]
        self.metrics, self.band_ess = state["metrics"], state["band_ess"]
        self._pending = []
        self._skipped_steps = state["skipped_steps"]
        self._nonfinite_total = state["nonfinite_total"]
        self._continue_schedule(state.get("schedule"))

    def _continue_schedule(self, schedule: dict | None) -> None:
        """After a resume with another length (`--steps` / `--minutes`): continue the learning
        rate from where the run stopped and decay it to `lr_final` at the new end, instead of
        re-reading the cosine of the new length (which jumps back up when the run is
        extended). Checkpoints from before the schedule was saved keep the old behaviour."""
        if schedule is None:
            return
        restart = schedule.get("restart")
        self._lr_restart = None if restart is None else (float(restart[0]), float(restart[1]))
        lengths = (self.config.steps, self.config.minutes)
        if lengths != (schedule["steps"], schedule["minutes"]) and self.metrics["lr"]:
            self._lr_restart = (self._progress(), float(self.metrics["lr"][-1]))

    # -- the loop ----------------------------------------------------------------------------
    def _progress(self) -> float:
        c = self.config
        fractions = []
        if c.steps is not None:
            fractions.append(self.step / c.steps)
        if c.minutes is not None:
            fractions.append(self.elapsed_s / (60.0 * c.minutes))
        return min(1.0, max(fractions))

    def _set_lr(self, progress: float) -> float:
        """The cosine schedule from `lr` at progress 0 to `lr_final` at 1, or after a resume
        with another length from the rate reached then (`_continue_schedule`)."""
        c = self.config
        start, peak = 0.0, c.lr
        if self._lr_restart is not None:
            start, peak = self._lr_restart
        fraction = min(1.0, max(0.0, (progress - start) / (1.0 - start))) if start < 1.0 else 1.0
        lr = c.lr_final + 0.5 * (peak - c.lr_final) * (1.0 + math.cos(math.pi * fraction))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _recent_median_norm(self) -> float | None:
        """Median gradient norm of the last 100 steps (None before step 20; non-finite
        norms ignored)."""
        recent = [g for g in self.metrics["grad_norm"][-100:] if math.isfinite(g)]
        return float(statistics.median_low(recent)) if len(recent) >= 20 else None

    def clip_threshold(self) -> float:
        """`grad_clip`, or `grad_clip_relative` x the median norm of the last 100 steps if
        lower (from step 20 on; non-finite norms ignored)."""
        c = self.config
        median = self._recent_median_norm()
        if c.grad_clip_relative is None or median is None:
            return c.grad_clip
        return min(c.grad_clip, c.grad_clip_relative * median)

    def skip_threshold(self) -> float:
        """Gradient norm above which the step is skipped: `grad_skip_relative` x the median
        norm of the last 100 steps (inf when unset or before step 20)."""
        factor, median = self.config.grad_skip_relative, self._recent_median_norm()
        return math.inf if factor is None or median is None else factor * median

    def train_step(self) -> dict[str, torch.Tensor | float]:
        """One optimization step, without waiting for the device.

        Returns the step's metrics as 0-dim device tensors ("loss", "ess", "grad_norm",
        "nonfinite", "n_samples", "applied") and "lr" (a float), and queues them for `flush`.
        """
        c = self.config
        progress = self._progress()
        lr = self._set_lr(progress)
        temps = self.t_sampler.sample(c.n_z, self.generator, self.dtype, self.device, progress)
        z = self.z_proposal.sample(c.n_z, self.generator, self.dtype, self.device,
                                   temperature_k=temps)
        z_rep = z.repeat_interleave(c.samples_per_z, dim=0)
        temps_rep = temps.repeat_interleave(c.samples_per_z)
        self.optimizer.zero_grad(set_to_none=True)
        with trusted_values():  # inputs from the proposals: no value checks (host syncs)
            out = self.loss(z_rep, temps_rep, generator=self.generator)
        # adaptive proposals learn where F is low (a no-op for the others)
        self.z_proposal.observe(z.detach(), temps.detach(), out.log_w.reshape(c.n_z, -1))
        out.loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_threshold())
        n_bad = (~out.finite).sum()
        # a non-finite gradient, a batch without one finite sample, or one batch far outside
        # the recent norms: not applied (decided on the device, counted in skipped_steps)
        applied = (torch.isfinite(grad_norm) & (grad_norm <= self.skip_threshold())
                   & (n_bad < out.finite.numel()))
        self._applied = applied.to(torch.float32)
        self.optimizer.found_inf = 1.0 - self._applied
        self.optimizer.grad_scale = None
        self.optimizer.step()
        self._update_averages(applied)
        ess = ess_per_group(out.log_w, c.n_z)
        row = {"loss": out.loss.detach(), "ess": ess.mean(), "grad_norm": grad_norm.detach(),
               "nonfinite": n_bad,
               "n_samples": torch.full((), out.finite.numel(), device=n_bad.device),
               "applied": applied, "lr": lr}
        if self.step % 10 == 0:
            row["band"] = torch.stack([temps.detach().to(ess), ess])
        self._pending.append({**row, "step": self.step + 1, "time_s": self.elapsed_s})
        return row

    @torch.no_grad()
    def _update_averages(self, applied: torch.Tensor) -> None:
        """a <- p after the first applied step, a <- d a + (1 - d) p after later ones, a
        unchanged after a skipped one (`applied`: a 0-dim bool on the device)."""
        if not self.averages:
            return
        later = torch.full((), 1.0 - self.config.ema_decay, dtype=torch.float64,
                           device=self.device)
        weight = torch.where(self._ema_count == 0, torch.ones_like(later), later) * applied
        self._ema_count += applied.long()
        for name, average in self.averages.items():
            for a, p in zip(average.module.parameters(), self.modules[name].parameters(),
                            strict=True):
                a.lerp_(p.detach(), weight.to(a.dtype))

    def flush(self) -> None:
        """Read the queued steps' metrics from the device (one transfer), append them to
        `metrics`, count non-finite samples and skipped steps, and apply the abort rule (a
        running non-finite fraction over 20 steps above `max_nonfinite_fraction`, or a step
        without a finite sample). Every rank reads at the same steps."""
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        keys = ("loss", "ess", "grad_norm", "nonfinite", "n_samples", "applied")
        table = torch.stack([torch.stack([r[k].double() for k in keys]) for r in rows])
        counts = table[:, 3:5].round().long()
        if self.ranks.distributed:  # every rank takes the same abort decision
            counts = distributed.all_reduce_sum(counts.cpu())
        values, counts = table.cpu().tolist(), counts.cpu().tolist()
        for row, (loss, ess, grad_norm, _, _, applied), (n_bad, n_all) in zip(
                rows, values, counts, strict=True):
            step = row["step"]
            self._skipped_steps += int(applied == 0.0)
            self._nonfinite_total += n_bad
            for key, value in (("step", step), ("loss", loss), ("ess", ess),
                               ("nonfinite", n_bad), ("lr", row["lr"]),
                               ("time_s", row["time_s"]), ("grad_norm", grad_norm)):
                self.metrics[key].append(value)
            if "band" in row:
                temps, ess_t = row["band"].cpu().tolist()
                self.band_ess.extend([[step - 1, t, e] for t, e in zip(temps, ess_t,
                                                                       strict=True)])
            frac = n_bad / n_all
            self._recent_nonfinite = [*self._recent_nonfinite, frac][-20:]
            if (sum(self._recent_nonfinite) / len(self._recent_nonfinite)
                    > self.config.max_nonfinite_fraction):
                raise TrainingError(
                    f"{100 * frac:.1f}% of the samples at step {step - 1} had non-finite "
                    f"energies or densities (running mean over 20 steps above "
                    f"max_nonfinite_fraction = {self.config.max_nonfinite_fraction}). Lower lr, "
                    "train in float64 (--dtype float64), or raise the threshold if the system "
                    "is known to have such regions."
                )
            if n_bad == n_all:
                raise TrainingError(
                    f"Every sample of the batch at step {step - 1} had a non-finite energy, "
                    "log-density or Jacobian. Lower lr, train in float64 (--dtype float64), or "
                    "check the system's energy at its reference structure."
                )

    def run(self, *, resume: bool = False) -> dict[str, list]:
        """Train until `steps` or `minutes` (whichever first); returns the metrics.

        Raises:
            Interrupted: on SIGINT / SIGTERM, after the current step and a checkpoint.
        """
        c = self.config
        if resume:
            self.load_checkpoint()
        torch.manual_seed(c.seed + self.step)
        total = c.steps if c.steps is not None else None
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, unit="step",
                   desc="train", dynamic_ncols=True)
        self.model.flow.train()
        saved_at = self.elapsed_s
        with stop_requests() as stop:
            try:
                while self._progress() < 1.0 and not stop.requested:
                    start = time.perf_counter()
                    self.train_step()
                    self.step += 1
                    self.elapsed_s += self._agree(time.perf_counter() - start, stop)
                    self._pending[-1]["time_s"] = self.elapsed_s
                    bar.update(1)
                    due = self.elapsed_s - saved_at >= 60.0 * c.checkpoint_minutes
                    checkpoint = self.step % c.checkpoint_every == 0 or due
                    if self.step % READ_EVERY == 0 or checkpoint:
                        self.flush()
                        bar.set_postfix(loss=f"{self.metrics['loss'][-1]:.3f}",
                                        ess=f"{self.metrics['ess'][-1]:.2f}",
                                        bad=self.nonfinite_total, refresh=False)
                    if checkpoint:
                        self.save_checkpoint()
                        saved_at = self.elapsed_s
                self.flush()
            finally:
                bar.close()
            self.save_checkpoint()
            self.write_metrics()
            if stop.requested:
                raise Interrupted(stop.signum, self.checkpoint_path,
                                  f"stopped at step {self.step} by signal {stop.signum}; the "
                                  f"checkpoint {self.checkpoint_path} holds this step")
        return self.metrics

    def _agree(self, seconds: float, stop) -> float:
        """The step's duration and a pending stop request, made the same on every rank (the
        longest duration; a signal anywhere stops all), so all ranks end at the same step."""
        if not self.ranks.distributed:
            return seconds
        values = distributed.all_reduce_max(torch.tensor([seconds, float(stop.signum or 0)],
                                                         dtype=torch.float64))
        if values[1] > 0:
            stop.signum = int(values[1])
        return float(values[0])

    def apply_average(self) -> None:
        """Copy the moving averages of the parameters (`ema_decay`) into the live modules, for
        saving the averaged model; a no-op without `ema_decay`. The checkpoint keeps the last
        iterate: call this after the final `save_checkpoint`."""
        with torch.no_grad():
            for name, average in self.averages.items():
                live = list(self.modules[name].parameters())
                for param, averaged in zip(live, average.module.parameters(), strict=True):
                    param.copy_(averaged)

    def loss_rise(self, window: int = 200) -> tuple[float, int]:
        """How far the mean loss of the last `window` steps lies above the lowest mean of any
        `window` consecutive steps of the run (nats; 0 when the run ends at its best), and the
        step where that lowest stretch ended. A rise of several nats that lasts to the end is
        the signature of a flow that jumped into a wrong state and stayed (a collapse), which
        the per-(z, T) ESS cannot show. (0.0, step) for runs shorter than `window`."""
        losses = torch.tensor(self.metrics["loss"], dtype=torch.float64)
        losses = losses[torch.isfinite(losses)]
        if len(losses) < window:
            return 0.0, self.step
        means = losses.unfold(0, window, 1).mean(1)
        best = int(torch.argmin(means))
        return float(means[-1] - means[best]), best + window

    def write_metrics(self) -> Path | None:
        """Write metrics.json (rank 0; None elsewhere)."""
        self.flush()
        if not self.ranks.main:
            return None
        path = self.out_dir / "metrics.json"
        summary = {
            "steps": self.step,
            "wall_time_s": self.elapsed_s,
            "nonfinite_samples": self.nonfinite_total,
            "skipped_steps": self.skipped_steps,
            "batch_size": self.config.n_z * self.config.samples_per_z,
            "loss_rise_from_best": self.loss_rise()[0],
        }
        energy_cut = getattr(self.loss, "energy_cut", None)  # the reverse-KL losses' EnergyCut
        if energy_cut is not None:
            summary["energy_cut_kt"] = energy_cut.cut
        payload = {"summary": summary, "history": self.metrics, "band_ess": self.band_ess}
        atomic_write_text(path, json.dumps(payload))
        return path


def read_checkpoint(path: str | Path) -> dict:
    """A trainer checkpoint's state (on the CPU), read without executing code from the file.

    Raises:
        TrainingError: the file is missing, corrupt, not a trainer checkpoint, or holds
            anything but plain data and tensors (a pickle that would run code is refused).
    """
    state = load_torch_state(path, "checkpoint")
    if not isinstance(state, dict) or "step" not in state or "modules" not in state:
        raise TrainingError(f"{path} is not a ccg training checkpoint; start afresh in a new "
                            "--out folder.")
    return state
