"""Data-free training: convergence on the analytic systems, resume, non-finite energies, config
errors before any work, the loss against exact answers, per-(z, T) ESS, the joint loss, and the
`ccg train` command end to end."""

from __future__ import annotations

import itertools
import json
import math
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from ccg import RunConfig, build_model, build_proposal, load_model
from ccg.cli import main
from ccg.constants import KB_KJMOL_PER_K
from ccg.errors import ConfigError
from ccg.flows import build_flow
from ccg.free_energy.estimators import estimate_free_energy
from ccg.model import BackmappingModel
from ccg.systems.analytic import DoubleWell2D, HarmonicFastModes
from ccg.training.losses import (
    EnergyCut,
    JointReverseKL,
    LossOutput,
    ReverseKL,
    linlog_cut,
    raised_energy_cut,
)
from ccg.training.run import initial_energy_cut
from ccg.training.trainer import Trainer, TrainingError, ess_per_group


def _config(system: str, flow: dict | None = None, **train) -> RunConfig:
    """A validated float64 run on an analytic system over T in [300, 600] K."""
    return RunConfig.from_dict({
        "system": {"name": system},
        "map": {"cg": "split"},
        "flow": {"n_layers": 2, "hidden": 16, "n_blocks": 1, **(flow or {})},
        "train": {"t_min": 300.0, "t_max": 600.0, "dtype": "float64", "n_z": 8,
                  "samples_per_z": 4, "steps": 10, **train},
    }).validate()


def _trainer(config: RunConfig, out_dir, system=None, seed: int = 0) -> Trainer:
    """Model, proposal, ReverseKL and Trainer as `ccg train` builds them (optionally with
    another system of the same shape in place of the configured one)."""
    torch.manual_seed(seed)  # the conditioners' initial weights
    model = build_model(config)
    if system is not None:
        model = BackmappingModel(system, model.cg_map, model.flow, t_ref=model.t_ref,
                                 t_range=model.t_range)
    loss = ReverseKL(model, energy_cut=config.train.energy_cut)
    return Trainer(model, loss, build_proposal(config, model), config.train, out_dir,
                   progress=False)


def _beta_f_exact(system, z: torch.Tensor, temperature_k) -> torch.Tensor:
    t = torch.as_tensor(temperature_k, dtype=torch.float64)
    return system.free_energy(z, temperature_k) / (KB_KJMOL_PER_K * t)


# --- 1. convergence: ESS >= 0.9 and reverse-KL gap <= 0.02 -------------------------------------

# One small config for both systems. tail_bound = 12 (default 5) matters: the "coord" base width
# is 1.0 while the harmonic fast modes are ~0.3 wide, so the splines must compress the base by
# ~3x, and with the default interval the base samples beyond it (|u| > 5, ~4e-4 of them at
# 600 K where the base is sqrt(2) wider) leave through the identity tails at |y| ~ 5, u ~ 10^2:
# that alone gave a mean gap of 0.046 (0.11 at 600 K) after 800 steps at hidden 64. The double
# well (x2 ~1.6-2.2 wide) lost its ESS the same way at 450-600 K (mean 0.75).
# Measured (1 thread, 2 busy cores), gap = bound - exact beta F over 9 z in cg_bounds x
# {300, 450, 600} K x 2000 samples, seeds 0 / 1 / 2:
#   harmonic, 600 steps (~12 s): mean gap 0.0060 / 0.0079 / 0.0079, mean ESS 0.990 / 0.986 /
#     0.986 (worst point 0.90); 600 K alone: gap 0.009-0.013, ESS 0.976-0.986.
#   double well, 200 steps (~3 s): mean gap 0.0017 / 0.0020 / 0.0018, mean ESS 0.990-0.992.
CONVERGENCE_FLOW = {"n_layers": 4, "hidden": 32, "n_blocks": 2, "n_bins": 8, "tail_bound": 12.0}
CONVERGENCE_TRAIN = {"lr": 5e-3, "n_z": 64, "samples_per_z": 8, "seed": 0}
CONVERGENCE_STEPS = {"harmonic": 600, "double-well": 200}
EVAL_TEMPERATURES = (300.0, 450.0, 600.0)


@pytest.mark.parametrize("system", ["harmonic", "double-well"])
def test_trained_flow_reaches_high_ess_and_small_kl_gap(system, tmp_path):
    config = _config(system, CONVERGENCE_FLOW, steps=CONVERGENCE_STEPS[system],
                     **CONVERGENCE_TRAIN)
    trainer = _trainer(config, tmp_path)
    trainer.run()
    model = trainer.model
    model.flow.eval()
    low, high = model.system.cg_bounds
    z = torch.linspace(low[0], high[0], 9, dtype=torch.float64)[:, None]
    generator = torch.Generator().manual_seed(123)
    gaps, ess, is_error = [], [], []
    for temperature in EVAL_TEMPERATURES:
        est = estimate_free_energy(model, z, temperature, n_samples=2000, generator=generator)
        exact = _beta_f_exact(model.system, z, temperature)
        gaps.append(est.bound - exact)
        ess.append(est.ess)
        is_error.append((est.beta_f - exact).abs())
    gaps, ess, is_error = torch.stack(gaps), torch.stack(ess), torch.stack(is_error)
    report = (f"{system}: mean gap {float(gaps.mean()):.4f}, per T "
              f"{[round(float(g), 4) for g in gaps.mean(1)]}; mean ESS {float(ess.mean()):.3f}, "
              f"per T {[round(float(e), 3) for e in ess.mean(1)]}")
    assert float(gaps.mean()) <= 0.02, report
    assert float(ess.mean()) >= 0.9, report
    assert bool((ess.mean(1) >= 0.9).all()), report  # every temperature, not just on average
    # the bound is an upper bound on the exact beta F (up to its sampling noise)
    assert float(gaps.min()) > -0.01, report
    # and the importance-sampling estimate itself is right
    assert float(is_error.max()) < 0.05, report


# --- 2. resume from the last checkpoint --------------------------------------------------------


class _SimulatedKill(Exception):
    """Stands in for SIGKILL: the trainer gets no chance to save anything."""


def _adam_state(trainer: Trainer) -> list[dict]:
    return [trainer.optimizer.state[p] for g in trainer.optimizer.param_groups
            for p in g["params"]]


def test_compiled_energy_trains_as_eager(tmp_path):
    """`[train] compile = "energy"` (`System.compile_energy`): the same losses and weights as
    the eager run, to rounding (float64); a system without compile_energy is a clear error."""
    eager = _trainer(_config("double-well", steps=5), tmp_path / "eager")
    eager.run()
    compiled = _trainer(_config("double-well", steps=5, compile="energy"), tmp_path / "compiled")
    assert "_energy" in vars(compiled.model.system) and "_energy" not in vars(eager.model.system)
    compiled.run()
    np.testing.assert_allclose(compiled.metrics["loss"], eager.metrics["loss"], rtol=1e-10)
    for a, b in zip(compiled.model.flow.parameters(), eager.model.flow.parameters(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)

    class Bare:  # the SystemProtocol without compile_energy
        def __init__(self, system):
            self.system = system
            self.event_shape, self.dim = system.event_shape, system.dim

        def energy(self, x, *, validate=True):
            return self.system.energy(x, validate=validate)

    config = _config("double-well", compile="energy")
    model = build_model(config)
    proposal = build_proposal(config, model)
    bare = BackmappingModel(Bare(model.system), model.cg_map, model.flow, t_ref=model.t_ref,
                            t_range=model.t_range)
    with pytest.raises(ConfigError, match='compile = "energy" needs a system with'):
        Trainer(bare, ReverseKL(bare), proposal, config.train, tmp_path / "bare", progress=False)


def test_killed_run_resumes_from_last_checkpoint_exactly(tmp_path):
    config = _config("double-well", steps=20, checkpoint_every=10, seed=3)

    uninterrupted = _trainer(config, tmp_path / "whole")
    uninterrupted.run()

    killed = _trainer(config, tmp_path / "killed")
    step_once = killed.train_step

    def train_step_until_killed():
        if killed.step == 14:  # four steps past the checkpoint at 10: those are lost
            raise _SimulatedKill
        return step_once()

    killed.train_step = train_step_until_killed
    with pytest.raises(_SimulatedKill):
        killed.run()

    # a fresh process: new model (other initial weights), new trainer, same folder
    probe = _trainer(config, tmp_path / "killed", seed=99)
    probe.load_checkpoint()
    assert probe.step == 10
    assert all(int(s["step"]) == 10 for s in _adam_state(probe))

    resumed = _trainer(config, tmp_path / "killed", seed=99)
    resumed.run(resume=True)
    assert resumed.step == uninterrupted.step == 20
    assert resumed.metrics["step"] == list(range(1, 21))
    assert resumed.metrics["loss"] == uninterrupted.metrics["loss"]
    for a, b in zip(_adam_state(resumed), _adam_state(uninterrupted), strict=True):
        assert int(a["step"]) == int(b["step"]) == 20
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    flow_a, flow_b = resumed.model.flow.state_dict(), uninterrupted.model.flow.state_dict()
    assert flow_a.keys() == flow_b.keys()
    for key in flow_a:
        assert torch.equal(flow_a[key], flow_b[key]), key
    # the weights did move, so the equality above is not that of two untouched flows
    torch.manual_seed(0)
    initial = build_model(config).flow.double().state_dict()
    assert any(not torch.equal(initial[k], flow_a[k]) for k in flow_a)


def test_resume_with_a_longer_run_continues_the_learning_rate(tmp_path):
    # extending a finished run (more --steps) continues the cosine from the rate it reached and
    # decays it to lr_final at the new end; re-reading the longer cosine would jump back up
    short = _trainer(_config("double-well", steps=10, checkpoint_every=5), tmp_path)
    short.run()
    longer = _trainer(_config("double-well", steps=20, checkpoint_every=5), tmp_path, seed=99)
    longer.run(resume=True)
    lr = longer.metrics["lr"]
    assert len(lr) == 20 and lr[:10] == short.metrics["lr"]
    c = longer.config
    assert all(b <= a for a, b in itertools.pairwise(lr)), lr
    assert lr[-1] == pytest.approx(c.lr_final, rel=0.1)  # the last step sits at progress 0.95
    jumped = c.lr_final + 0.5 * (c.lr - c.lr_final) * (1 + math.cos(math.pi * 10 / 20))
    assert lr[10] < 0.5 * jumped
    # and once more, stopped and resumed with the new length: the same continuation
    again = _trainer(_config("double-well", steps=20, checkpoint_every=5), tmp_path, seed=7)
    again.load_checkpoint()
    assert again._lr_restart == longer._lr_restart is not None


def test_resume_without_checkpoint_is_clear_error(tmp_path):
    trainer = _trainer(_config("double-well"), tmp_path / "empty")
    with pytest.raises(TrainingError, match="No checkpoint to resume from"):
        trainer.run(resume=True)
    assert trainer.step == 0


# --- 3. non-finite energies: counted and excluded, not zeroed ----------------------------------


class _DoubleWellWithHoles(DoubleWell2D):
    """The double well, but U = +inf where x2 > high and NaN where x2 < low."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        energy = super()._energy(x)
        energy = torch.where(x[:, 1] > self.high, torch.full_like(energy, torch.inf), energy)
        return torch.where(x[:, 1] < self.low, torch.full_like(energy, torch.nan), energy)


def test_nonfinite_energies_are_counted_and_excluded_from_the_loss():
    torch.manual_seed(0)
    config = _config("double-well")
    model = build_model(config)
    model.flow.double()
    holes = _DoubleWellWithHoles(low=-2.5, high=1.0)
    model = BackmappingModel(holes, model.cg_map, model.flow, t_ref=model.t_ref,
                             t_range=model.t_range)
    n = 512
    z = torch.linspace(-3.0, 3.0, n, dtype=torch.float64)[:, None]
    temperature = torch.linspace(300.0, 600.0, n, dtype=torch.float64)
    out = ReverseKL(model)(z, temperature, generator=torch.Generator().manual_seed(1))

    # the same draw again, with the energy of the intact double well
    with torch.no_grad():
        s = model.sample(z, temperature, generator=torch.Generator().manual_seed(1))
    good = (s.x[:, 1] <= holes.high) & (s.x[:, 1] >= holes.low)
    n_bad = int((~good).sum())
    assert 0.1 * n < n_bad < 0.5 * n  # the holes are hit, but not everywhere
    assert out.n_nonfinite == n_bad
    assert torch.equal(out.finite, good)
    assert bool(torch.isneginf(out.log_w[~good]).all())
    assert bool(torch.isfinite(out.log_w[good]).all())
    assert bool(torch.isnan(out.energy_kjmol[~good]).all())

    beta = 1.0 / (KB_KJMOL_PER_K * temperature)
    per_sample = beta * DoubleWell2D._energy(holes, s.x) - s.log_jac + s.log_q
    expected = per_sample[good].mean()
    zeroed = torch.where(good, per_sample, torch.zeros_like(per_sample)).mean()
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-12, abs=1e-12)
    assert abs(float(expected - zeroed)) > 0.1  # zero-filling would be detected

    out.loss.backward()
    grads = [p.grad for p in model.flow.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool((g != 0).any()) for g in grads)


def test_trainer_reports_nonfinite_samples(tmp_path):
    config = _config("double-well", steps=5, max_nonfinite_fraction=0.5)
    trainer = _trainer(config, tmp_path, system=_DoubleWellWithHoles(low=-3.0, high=2.0))
    trainer.run()
    assert trainer.nonfinite_total > 0
    assert trainer.nonfinite_total == sum(trainer.metrics["nonfinite"])
    assert all(math.isfinite(v) for v in trainer.metrics["loss"])
    summary = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    assert summary["nonfinite_samples"] == trainer.nonfinite_total


def test_trainer_stops_when_most_samples_are_nonfinite(tmp_path):
    config = _config("double-well", steps=5)  # max_nonfinite_fraction = 0.1
    trainer = _trainer(config, tmp_path, system=_DoubleWellWithHoles(low=-10.0, high=-1.0))
    with pytest.raises(TrainingError, match=r"max_nonfinite_fraction = 0\.1"):
        trainer.run()
    assert trainer.nonfinite_total > 0.5 * config.train.n_z * config.train.samples_per_z


# --- 4. bad configs: a clear error before any work starts --------------------------------------


def test_relative_gradient_clip_follows_the_recent_median(tmp_path):
    """grad_clip_relative: the threshold is that multiple of the median norm of the last 100
    steps (from step 20 on, capped by grad_clip); outlier gradients are scaled to it, so the
    applied norm never exceeds it. Without it the threshold is grad_clip."""
    trainer = _trainer(_config("harmonic", steps=40, grad_clip_relative=2.0), tmp_path)
    assert trainer.clip_threshold() == trainer.config.grad_clip
    # the last 100 finite norms: 30 ones and 69 threes, median 3
    trainer.metrics["grad_norm"] = [1.0] * 50 + [float("nan")] + [3.0] * 69
    assert trainer.clip_threshold() == pytest.approx(6.0)
    trainer.metrics["grad_norm"] = [500.0] * 100
    assert trainer.clip_threshold() == trainer.config.grad_clip  # the absolute cap
    trainer.metrics["grad_norm"] = []
    applied = []
    for _ in range(40):
        threshold = trainer.clip_threshold()
        row = trainer.train_step()
        trainer.step += 1
        trainer.metrics["grad_norm"].append(row["grad_norm"])
        params = [p for p in trainer.model.flow.parameters() if p.grad is not None]
        applied.append((float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))), threshold))
    assert all(norm <= threshold * (1 + 1e-6) for norm, threshold in applied)
    assert any(t < trainer.config.grad_clip for _, t in applied[20:])
    plain = _trainer(_config("harmonic", steps=40), tmp_path / "plain")
    plain.config.grad_clip_relative = None
    plain.metrics["grad_norm"] = [1.0] * 100
    assert plain.clip_threshold() == plain.config.grad_clip


def test_relative_gradient_skip_leaves_the_parameters_alone(tmp_path):
    """grad_skip_relative: a step whose gradient norm exceeds that multiple of the recent
    median is not applied (the parameters stay as they were) and is counted in
    skipped_steps; a typical step is applied."""
    trainer = _trainer(_config("harmonic", steps=40, grad_skip_relative=5.0), tmp_path)
    assert trainer.skip_threshold() == math.inf  # before 20 recorded steps
    for norms, skipped in (([1e-6] * 30, True), ([1e6] * 30, False)):
        trainer.metrics["grad_norm"] = norms
        assert trainer.skip_threshold() == pytest.approx(5.0 * norms[0])
        before = [p.detach().clone() for p in trainer.model.flow.parameters()]
        n_skipped = trainer.skipped_steps
        trainer.train_step()
        after = list(trainer.model.flow.parameters())
        unchanged = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert unchanged == skipped
        assert trainer.skipped_steps == n_skipped + int(skipped)
    trainer.config.grad_skip_relative = None
    assert trainer.skip_threshold() == math.inf


def test_parameter_average_is_the_ema_of_the_iterates_and_survives_resume(tmp_path):
    """ema_decay: the averaged parameters are a_1 = p_1, a_k = d a_(k-1) + (1 - d) p_k over
    the iterates p_k after each applied step (computed here by hand); the checkpoint keeps the
    average, so a killed-and-resumed run ends with the same one; apply_average puts it into
    the flow that is saved."""
    decay = 0.9
    config = _config("harmonic", steps=12, checkpoint_every=6, ema_decay=decay)
    trainer = _trainer(config, tmp_path / "whole")
    expected = None
    for _ in range(config.train.steps):
        trainer.train_step()
        trainer.step += 1
        iterate = [p.detach().clone() for p in trainer.model.flow.parameters()]
        expected = iterate if expected is None else [
            decay * a + (1 - decay) * p for a, p in zip(expected, iterate, strict=True)]
        if trainer.step == 6:
            trainer.save_checkpoint()
    averaged = list(trainer.averages["flow"].module.parameters())
    for a, e in zip(averaged, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)
    assert any(not torch.equal(a, p) for a, p in zip(averaged, iterate, strict=True))

    resumed = _trainer(config, tmp_path / "whole", seed=99)
    resumed.run(resume=True)
    for a, e in zip(resumed.averages["flow"].module.parameters(), averaged, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-14)
    resumed.apply_average()
    for p, e in zip(resumed.model.flow.parameters(), averaged, strict=True):
        torch.testing.assert_close(p, e, rtol=1e-12, atol=1e-14)


def test_loss_rise_measures_a_lasting_jump_above_the_best_stretch(tmp_path):
    """loss_rise: final 200-step mean minus the lowest 200-step mean, and where that stretch
    ended; 0 for a run that ends at its best, or that is shorter than the window."""
    trainer = _trainer(_config("harmonic"), tmp_path)
    trainer.metrics["loss"] = [10.0] * 300 + [5.0] * 300 + [8.0] * 300
    rise, step = trainer.loss_rise()
    assert rise == pytest.approx(3.0) and step == 500  # the first all-5 window: 300..499
    trainer.metrics["loss"] = [float(v) for v in torch.linspace(10.0, 1.0, 500)] + [math.nan]
    assert trainer.loss_rise()[0] == pytest.approx(0.0, abs=1e-12)
    trainer.metrics["loss"] = [3.0] * 50
    assert trainer.loss_rise()[0] == 0.0


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[train]\nsteps = 3\nlr_max = 0.1\n", "Unknown key(s) ['lr_max'] in [train]"),
        ("[train]\nsteps = 3\nt_min = 0.0\n", "t_min must be a temperature > 0 K"),
        ("[train]\nsteps = 3\nt_max = -300.0\n", "t_max must be a temperature > 0 K"),
        ("[train]\nsteps = 3\nt_min = 600.0\nt_max = 300.0\n", "is above t_max"),
        ("[train]\nsteps = 3\nema_decay = 1.0\n", "ema_decay must be in (0, 1)"),
        ("[flow]\ncircular_modes = true\nlinear_stiff_torsions = true\n[train]\nsteps = 3\n",
         "set linear_stiff_torsions = false"),
    ],
)
def test_cli_rejects_bad_config_before_any_work(tmp_path, capsys, toml, fragment):
    path = tmp_path / "run.toml"
    path.write_text('[system]\nname = "double-well"\n[map]\ncg = "split"\n' + toml)
    out = tmp_path / "out"
    assert main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "ccg train: error:" in captured.err and fragment in captured.err
    assert "training" not in captured.out  # nothing announced, nothing started
    assert not out.exists()


def test_cli_rejects_zero_temperature_flag(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["train", "--system", "double-well", "--steps", "3", "--t-min", "0", "--out", str(out)]
    assert main(argv) == 2
    assert "t_min must be a temperature > 0 K; got 0.0" in capsys.readouterr().err
    assert not out.exists()


# --- 5. the loss against exact answers ---------------------------------------------------------


class _ScaledExactConditional(torch.nn.Module):
    """q(y | z, T) = N(0, (a sigma)^2 I), sigma^2 = k_B T / k_perp(z): with a = 1 the exact
    conditional of the harmonic fast modes; context = [z, log(T / T_ref)] as the model builds it.
    """

    def __init__(self, system: HarmonicFastModes, t_ref: float, width_factor: float) -> None:
        super().__init__()
        self.system, self.t_ref = system, t_ref
        self.dim, self.context_dim = system.n_fast, 2
        self.width_factor = torch.nn.Parameter(torch.tensor(width_factor, dtype=torch.float64))

    def _std(self, context: torch.Tensor) -> torch.Tensor:
        temperature = self.t_ref * torch.exp(context[:, 1])
        sigma = torch.sqrt(KB_KJMOL_PER_K * temperature / self.system.k_perp(context[:, 0]))
        return (self.width_factor * sigma)[:, None]

    def log_prob(self, r: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        std = self._std(context)
        return (-0.5 * (r / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)

    def sample(self, context: torch.Tensor, *, generator=None):
        eps = torch.randn(context.shape[0], self.dim, dtype=context.dtype, generator=generator)
        r = self._std(context) * eps
        return r, self.log_prob(r, context)


def _harmonic_with_flow(width_factor: float) -> BackmappingModel:
    cg_map = build_model(_config("harmonic")).cg_map
    system = HarmonicFastModes()
    flow = _ScaledExactConditional(system, 300.0, width_factor)
    return BackmappingModel(system, cg_map, flow, t_ref=300.0, t_range=(300.0, 600.0))


def _grid(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, T) pairs: 3 z x 3 T, each repeated k times (group-major), float64."""
    z = torch.tensor([-2.0, 0.3, 1.5], dtype=torch.float64).repeat(3)
    t = torch.tensor([300.0, 450.0, 600.0], dtype=torch.float64).repeat_interleave(3)
    return z.repeat_interleave(k)[:, None], t.repeat_interleave(k)


def test_reverse_kl_with_exact_conditional_equals_beta_f():
    model = _harmonic_with_flow(1.0)
    z, t = _grid(50)
    out = ReverseKL(model)(z, t, generator=torch.Generator().manual_seed(0))
    exact = _beta_f_exact(model.system, z, t)
    # u + log q = beta F for every sample of the exact conditional: zero gap, zero variance
    torch.testing.assert_close(-out.log_w, exact, rtol=0, atol=1e-10)
    assert float(out.loss.detach()) == pytest.approx(float(exact.mean()), abs=1e-10)
    assert out.n_nonfinite == 0


def test_reverse_kl_gap_is_the_gaussian_kl_for_a_too_wide_conditional():
    a, d, k = 1.5, 2, 4000
    model = _harmonic_with_flow(a)
    z, t = _grid(k)
    out = ReverseKL(model)(z, t, generator=torch.Generator().manual_seed(0))
    gap = (-out.log_w - _beta_f_exact(model.system, z, t)).reshape(9, k).mean(1)
    kl = d * (0.5 * (a**2 - 1.0) - math.log(a))  # KL(N(0, a^2 s^2) || N(0, s^2)) per (z, T)
    # per-sample gap (a^2 - 1) chi2_d / 2 - d log a has std (a^2 - 1) sqrt(2 d) / 2 = 1.25
    stderr = 1.25 / math.sqrt(k)
    assert bool(((gap - kl).abs() < 5 * stderr).all()), (gap, kl)
    assert abs(float(gap.mean()) - kl) < 5 * stderr / 3


def test_forward_term_is_the_importance_weighted_forward_kl_gradient():
    """forward_weight adds -Σ_i w̄_i log q_theta(r_i) per (z, T) group with samples and weights
    fixed: for q = N(0, a² σ²) against p = N(0, σ²) (harmonic fast modes, d = 2) its gradient
    in a is the forward-KL gradient E_p[d/a - r²/(a³ σ²)] = d (1/a - 1/a³), estimated by
    self-normalized importance sampling; the reverse-KL part is unchanged."""
    a, d, k = 1.5, 2, 4000
    grads, outs = {}, {}
    for weight in (0.0, 1.0):
        model = _harmonic_with_flow(a)
        loss = ReverseKL(model, forward_weight=weight, group_size=k)
        z, t = _grid(k)
        out = loss(z, t, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        grads[weight], outs[weight] = float(model.flow.width_factor.grad), out
    torch.testing.assert_close(outs[1.0].log_w, outs[0.0].log_w)
    expected = d * (1 / a - 1 / a**3)  # 0.741, the mean over the 9 groups of the same value
    assert grads[1.0] - grads[0.0] == pytest.approx(expected, rel=0.03)
    with pytest.raises(ValueError, match="group_size"):
        ReverseKL(_harmonic_with_flow(a), forward_weight=1.0, group_size=1)
    with pytest.raises(ValueError, match="forward_weight"):
        ReverseKL(_harmonic_with_flow(a), forward_weight=-1.0, group_size=4)


def test_renyi_weighting_is_the_renyi_bound_gradient():
    """renyi_alpha weights each group's samples by w^(1 - alpha), normalized: for q = N(0, a² σ²)
    against p = N(0, σ²) (d = 2) the gradient in a is that of -log E_q[w^b] / b, b = 1 - alpha,
    -d (1/a - a / (1 - b + b a²)) in closed form; alpha = 1 is the reverse KL, d (a - 1/a)."""
    a, d, k = 1.5, 2, 4000
    for alpha in (1.0, 0.5, 0.25):
        model = _harmonic_with_flow(a)
        out = ReverseKL(model, renyi_alpha=alpha, group_size=k)(
            *_grid(k), generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        b = 1.0 - alpha
        expected = -d * (1 / a - a / (1 - b + b * a**2))
        assert float(model.flow.width_factor.grad) == pytest.approx(expected, rel=0.03), alpha
    assert expected == pytest.approx(0.215, abs=1e-3)  # alpha 0.25; the reverse KL has 1.67
    with pytest.raises(ValueError, match="group_size"):
        ReverseKL(_harmonic_with_flow(a), renyi_alpha=0.5, group_size=1)
    with pytest.raises(ValueError, match="renyi_alpha"):
        ReverseKL(_harmonic_with_flow(a), renyi_alpha=1.5, group_size=4)


def test_linlog_cut_identity_below_continuous_at_and_finite_above_cut():
    cut = 1.0e3
    below = torch.tensor([-50.0, 0.0, 3.5, 999.0], dtype=torch.float64)
    assert torch.equal(linlog_cut(below, cut), below)
    eps = 1e-9
    at = linlog_cut(torch.tensor([cut - eps, cut, cut + eps], dtype=torch.float64), cut)
    assert float((at - cut).abs().max()) < 1e-8
    huge = torch.tensor([1.0e4, 1.0e30], dtype=torch.float64, requires_grad=True)
    soft = linlog_cut(huge, cut)
    torch.testing.assert_close(soft.detach(), cut + torch.log1p(huge.detach() - cut))
    assert float(soft[1].detach()) < cut + 70.0
    soft.sum().backward()
    assert bool(torch.isfinite(huge.grad).all()) and bool((huge.grad > 0).all())
    torch.testing.assert_close(huge.grad, 1.0 / (1.0 + huge.detach() - cut))


def test_energy_cut_is_measured_from_the_reference_structure():
    """The threshold is beta (U - U_ref) > cut at every T: the same physical energy is kept
    at 300 and 600 K, and a clash above U_ref + cut k_BT is softened."""
    from ccg.systems.alanine import alanine_dipeptide

    system = alanine_dipeptide()
    cut = EnergyCut(system, 100.0)
    x = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    u_ref = float(system.energy(x.reshape(1, *system.event_shape))[0])
    assert cut.u_ref_kjmol == pytest.approx(u_ref)
    for temperature in (300.0, 600.0):
        beta = torch.full((3,), 1.0 / (KB_KJMOL_PER_K * temperature), dtype=torch.float64)
        energy = u_ref + torch.tensor([0.0, 99.0, 150.0], dtype=torch.float64) / beta
        soft = cut(beta * energy, beta)
        torch.testing.assert_close(soft[:2], beta[:2] * energy[:2])  # physical: untouched
        expected = beta[2] * u_ref + 100.0 + math.log1p(50.0)
        assert float(soft[2]) == pytest.approx(float(expected))


def test_energy_cut_warns_inside_the_physical_range_and_rejects_nonpositive():
    system = HarmonicFastModes()
    with pytest.warns(UserWarning, match="physical range"):
        EnergyCut(system, 40.0, n_fast=58)
    with pytest.raises(ValueError, match="energy_cut > 0"):
        EnergyCut(system, 0.0)
    with pytest.raises(Exception, match="energy_cut must be > 0"):
        _config("harmonic", energy_cut=-1.0).validate()


def _first_batch(config: RunConfig, n: int = 256):
    torch.manual_seed(0)
    model = build_model(config)
    g = torch.Generator().manual_seed(3)
    temps = 300.0 + 300.0 * torch.rand(n, generator=g, dtype=torch.float64)
    z = build_proposal(config, model).sample(n, g, torch.float64, "cpu", temperature_k=temps)
    return model, z, temps


def test_energy_cut_is_raised_when_most_first_samples_are_above_it():
    """share and median are those of the untrained flow's samples; the cut becomes 10x the
    median excess exactly when more than half the samples are above it, else stays."""
    model, z, temps = _first_batch(_config("harmonic"))

    def run(cut: float):
        return raised_energy_cut(model, z, temps, cut, generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        samples = model.sample(z, temps, generator=torch.Generator().manual_seed(1))
    excess = samples.beta * samples.energy_kjmol  # analytic system: U_ref = 0
    median = float(excess.median())
    low, high = median / 4, float(excess.quantile(0.7))
    cut, share, got_median = run(low)
    assert got_median == pytest.approx(median)
    assert share == pytest.approx(float((excess > low).double().mean())) and share > 0.5
    assert cut == pytest.approx(10 * median)
    cut, share, _ = run(high)
    assert cut == high and share == pytest.approx(float((excess > high).double().mean()))


def test_the_run_raises_the_cut_unless_told_not_to(caplog):
    config = _config("harmonic", energy_cut=1e-3)
    model, _, _ = _first_batch(config)
    proposal = build_proposal(config, model)
    with caplog.at_level("WARNING", logger="ccg"):
        raised = initial_energy_cut(model, proposal, config)
    assert raised > 1e-3 and "energy_cut raised from 0.001" in caplog.text
    assert initial_energy_cut(model, proposal, config) == raised  # its own generator
    kept = _config("harmonic", energy_cut=1e-3, energy_cut_auto=False)
    assert initial_energy_cut(model, proposal, kept) == 1e-3


# --- 6. per-(z, T) ESS and the batch layout ----------------------------------------------------


def test_ess_per_group_matches_hand_computation():
    w = torch.tensor([
        [1.0, 1.0, 1.0, 1.0],  # uniform: 1
        [1.0, 0.0, 0.0, 0.0],  # one sample carries everything: 1/4
        [1.0, 2.0, 3.0, 4.0],  # 10^2 / (4 * 30)
        [0.0, 0.0, 0.0, 0.0],  # nothing finite: 0
    ], dtype=torch.float64)
    ess = ess_per_group(torch.log(w).reshape(-1) + 7.0, 4)  # a common offset cancels
    torch.testing.assert_close(ess, torch.tensor([1.0, 0.25, 100.0 / 120.0, 0.0],
                                                 dtype=torch.float64))


class _RecordingLoss:
    """A stand-in loss whose log-weights give each (z, T) group the ESS `_ess_of(T)`."""

    def __init__(self, model: BackmappingModel, samples_per_z: int) -> None:
        self.model, self.k = model, samples_per_z
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, z, temperature_k, generator=None) -> LossOutput:
        self.calls.append((z.clone(), temperature_k.clone()))
        j = torch.arange(len(z), dtype=z.dtype) % self.k  # position within the group
        log_w = -j * temperature_k / 300.0  # w_j = q^j with q = exp(-T / 300)
        anchor = sum(p.sum() for p in self.model.flow.parameters())
        return LossOutput(loss=0.0 * anchor, log_w=log_w, energy_kjmol=torch.zeros_like(log_w),
                          temperature_k=temperature_k, finite=torch.ones_like(log_w, dtype=bool))


def _ess_of(temperature: float, k: int) -> float:
    w = [math.exp(-j * temperature / 300.0) for j in range(k)]
    return sum(w) ** 2 / (k * sum(v * v for v in w))


def test_trainer_groups_rows_by_z_and_temperature(tmp_path):
    config = _config("double-well", steps=1, n_z=5, samples_per_z=6)
    trainer = _trainer(config, tmp_path)
    recorder = _RecordingLoss(trainer.model, 6)
    trainer.loss = recorder
    trainer.run()
    (z, t), = recorder.calls
    assert z.shape == (30, 1) and t.shape == (30,)
    groups_z, groups_t = z.reshape(5, 6), t.reshape(5, 6)
    assert bool((groups_z == groups_z[:, :1]).all()) and bool((groups_t == groups_t[:, :1]).all())
    assert len(set(groups_z[:, 0].tolist())) == 5  # distinct z per group
    rows = trainer.band_ess  # [step, T, ESS] per group at step 0
    assert [r[1] for r in rows] == groups_t[:, 0].tolist()
    for _, temperature, ess in rows:
        assert ess == pytest.approx(_ess_of(temperature, 6), rel=1e-9)
    assert trainer.metrics["ess"][0] == pytest.approx(
        sum(_ess_of(r[1], 6) for r in rows) / 5, rel=1e-9)


# --- 7. the joint loss -------------------------------------------------------------------------


def test_joint_reverse_kl_trains_cg_density_and_flow_together():
    torch.manual_seed(0)
    config = _config("double-well", {"tail_bound": 12.0})
    model = build_model(config)
    model.flow.double()
    cg_flow = build_flow(dim=1, context_dim=1, circular=[False], loc=[0.0], scale=[2.0],
                         n_layers=2, hidden=16, tail_bound=12.0).double()
    loss = JointReverseKL(model, cg_flow)
    eval_t = torch.full((4096,), 450.0, dtype=torch.float64)

    def evaluate() -> float:
        with torch.no_grad():
            return float(loss(eval_t, generator=torch.Generator().manual_seed(9)).loss)

    before = evaluate()
    params = [*model.flow.parameters(), *cg_flow.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        temperature = 300.0 + 300.0 * torch.rand(256, generator=generator, dtype=torch.float64)
        optimizer.zero_grad()
        out = loss(temperature, generator=generator)
        assert out.n_nonfinite == 0
        out.loss.backward()
        optimizer.step()
    after = evaluate()
    # E[u + log q + log p_phi] >= -log Z(T), the partition function of exp(-beta F(z)) over z
    z = torch.linspace(-8.0, 8.0, 16001, dtype=torch.float64)[:, None]
    beta_f = _beta_f_exact(model.system, z, 450.0)
    minus_log_z = float(-torch.logsumexp(-beta_f, 0) - math.log(16.0 / 16000))
    assert after < before - 2.0, (before, after)
    assert after > minus_log_z - 0.05, (after, minus_log_z)
    with pytest.raises(ValueError, match="Expected a CG flow with dim 1 and context_dim 1"):
        JointReverseKL(model, build_flow(2, 1, [False, False], [0.0, 0.0], [1.0, 1.0],
                                         n_layers=2, hidden=8))


# --- 8. `ccg train` end to end ----------------------------------------------------------------


def test_cli_train_writes_outputs_that_load(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--system", "double-well", "--steps", "30", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "done: 30 steps" in printed and str(out / "model.pt") in printed
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["steps"] == 30
    assert len(metrics["history"]["loss"]) == 30
    assert all(math.isfinite(v) for v in metrics["history"]["loss"])

    model = load_model(out / "model.pt")
    assert isinstance(model.system, DoubleWell2D)
    assert model.t_range == (300.0, 600.0) and model.metrics["steps"] == 30
    assert model.run_config["train"]["steps"] == 30
    trained = torch.load(out / "checkpoint.pt", weights_only=True)["modules"]["flow"]
    for key, value in model.flow.state_dict().items():
        assert torch.equal(value, trained[key]), key
    z = torch.linspace(-3.0, 3.0, 64)[:, None]
    samples = model.sample(z, 450.0, generator=torch.Generator().manual_seed(0))
    assert bool(samples.finite.all())
    torch.testing.assert_close(samples.x[:, :1], z)  # backmapped frames keep their z


# --- 7. a step that does not wait for the device ------------------------------------------------

_SYNCS = ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__", "__index__")


def test_a_training_step_does_not_read_the_device(tmp_path, monkeypatch):
    """After warm-up (relative clip and skip thresholds active, an EMA), a training step of
    alanine dipeptide (torch energies, chirality, adaptive proposal) never reads a tensor on
    the host: no .item() / bool() / float() / .tolist() / nonzero / boolean-mask indexing,
    each of which would wait for a GPU. `flush` reads the queued metrics afterwards."""
    config = RunConfig.from_dict({
        "flow": {"n_layers": 2, "hidden": 16},
        "train": {"n_z": 8, "samples_per_z": 4, "steps": 40, "grad_clip_relative": 3.0,
                  "grad_skip_relative": 10.0, "ema_decay": 0.99},
    }).validate()
    torch.manual_seed(0)
    model = build_model(config)
    trainer = Trainer(model, ReverseKL(model, energy_cut=config.train.energy_cut),
                      build_proposal(config, model), config.train, tmp_path, progress=False)
    for _ in range(25):
        trainer.train_step()
        trainer.step += 1
    trainer.flush()
    reads: list[str] = []

    def spy(name, original):
        def wrapped(self, *args, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            reads.append(f"{name} at {Path(caller.filename).name}:{caller.lineno}")
            return original(self, *args, **kwargs)
        return wrapped

    for name in _SYNCS:
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    getitem = torch.Tensor.__getitem__

    def indexed(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            caller = traceback.extract_stack(limit=2)[0]
            reads.append(f"boolean mask at {Path(caller.filename).name}:{caller.lineno}")
        return getitem(self, index)

    monkeypatch.setattr(torch.Tensor, "__getitem__", indexed)
    monkeypatch.setattr(torch, "nonzero", spy("torch.nonzero", torch.nonzero))
    for _ in range(3):
        trainer.train_step()
        trainer.step += 1
    monkeypatch.undo()
    assert reads == []
    trainer.flush()
    assert len(trainer.metrics["loss"]) == 28 and trainer.metrics["step"][-1] == 28
    assert all(math.isfinite(v) for v in trainer.metrics["loss"])


def test_a_skipped_step_leaves_parameters_and_their_average_alone(tmp_path):
    """The skip is decided on the device (fused Adam's found_inf): parameters, Adam's state
    and step count, and the EMA stay as they were; the next applied step moves them."""
    trainer = _trainer(_config("harmonic", steps=40, grad_skip_relative=5.0, ema_decay=0.9),
                       tmp_path)
    trainer.train_step()
    trainer.step += 1
    trainer.metrics["grad_norm"] = [1e-9] * 30  # every real gradient is an outlier now
    state = {k: v.clone() for k, v in trainer.averages["flow"].module.state_dict().items()}
    params = [p.detach().clone() for p in trainer.model.flow.parameters()]
    adam = [{k: v.clone() for k, v in s.items()} for s in trainer.optimizer.state.values()]
    trainer.train_step()
    assert trainer.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params, trainer.model.flow.parameters(),
                                                  strict=True))
    for k, v in trainer.averages["flow"].module.state_dict().items():
        assert torch.equal(v, state[k]), k
    for before, after in zip(adam, trainer.optimizer.state.values(), strict=True):
        assert all(torch.equal(before[k], after[k]) for k in before)
    trainer.metrics["grad_norm"] = [1e9] * 30
    trainer.train_step()
    assert trainer.skipped_steps == 1
    assert not all(torch.equal(a, b) for a, b in zip(params, trainer.model.flow.parameters(),
                                                      strict=True))
