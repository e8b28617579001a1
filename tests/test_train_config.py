"""Training configuration: every bad config is a clear error before any work starts."""

import math

import pytest
import torch

from ccg.training.config import ConfigError, RunConfig
from ccg.training.proposals import TemperatureSampler, UniformBox, UniformTorus


def _write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_default_config_is_valid():
    config = RunConfig()
    config.train.minutes = 1.0
    config.validate()
    assert config.map.cg == "phi-psi"
    assert (config.train.t_min, config.train.t_max) == (300.0, 600.0)


def test_toml_round_trip(tmp_path):
    path = _write(tmp_path, '[train]\nt_min = 350.0\nsteps = 10\n[flow]\nn_layers = 6\n')
    config = RunConfig.from_toml(path).validate()
    assert config.train.t_min == 350.0 and config.flow.n_layers == 6
    assert RunConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[train]\nstepz = 3\n", "Unknown key(s) ['stepz'] in [train]"),
        ("[trian]\nsteps = 3\n", "Unknown config table(s) ['trian']"),
        ("[train]\nsteps = 3\nt_min = 0.0\n", "t_min must be a temperature > 0 K"),
        ("[train]\nsteps = 3\nt_min = -5.0\n", "t_min must be a temperature > 0 K"),
        ("[train]\nsteps = 3\nt_min = 500.0\nt_max = 400.0\n", "is above t_max"),
        ("[train]\nsteps = 3\nt_sampling = 'cubic'\n", "t_sampling"),
        ("[map]\ncg = 'martini'\n[train]\nsteps = 3\n", 'Unknown CG map "martini"'),
        ("[system]\nname = 'water'\n[train]\nsteps = 3\n", 'Unknown system "water"'),
        ("[train]\nsteps = 3\ndtype = 'float16'\n", "dtype"),
        ("[train]\nsteps = 3\nz_sharpness = 0.0\n", "z_sharpness must be in (0, 1]"),
        ("[train]\nsteps = 3\ngrad_clip_relative = 0.5\n", "grad_clip_relative must be >= 1"),
        ("[train]\nsteps = 3\nrenyi_alpha = 2.0\n", "renyi_alpha must be in [0, 1]"),
        ("[train]\nsteps = 3\ngrad_skip_relative = 1.0\n", "grad_skip_relative must be > 1"),
        ("[train]\nsteps = 3\nrenyi_alpha = 0.5\nsamples_per_z = 1\n", "samples_per_z >= 2"),
        ("[system]\nname = 'double-well'\n[train]\nsteps = 3\n", 'takes [map] cg = "split"'),
    ],
)
def test_bad_config_is_clear_error(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_toml(_write(tmp_path, text)).validate()
    assert fragment in str(err.value)


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.from_toml(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RunConfig.from_toml(_write(tmp_path, "[train\n"))


def test_temperature_sampler_modes_and_annealing():
    gen = torch.Generator().manual_seed(0)
    for mode in ("beta", "log", "uniform"):
        t = TemperatureSampler(300.0, 600.0, mode).sample(20000, gen, torch.float64, "cpu")
        assert float(t.min()) >= 300.0 and float(t.max()) <= 600.0
    # uniform in beta: the mean of beta is the midpoint of [1/600, 1/300]
    t = TemperatureSampler(300.0, 600.0, "beta").sample(200000, gen, torch.float64, "cpu")
    assert math.isclose(float((1 / t).mean()), 0.5 * (1 / 300 + 1 / 600), rel_tol=2e-3)
    annealed = TemperatureSampler(300.0, 600.0, "uniform", anneal_fraction=0.5)
    assert annealed.lower_bound(0.0) == 600.0
    assert annealed.lower_bound(0.25) == pytest.approx(450.0)
    assert annealed.lower_bound(0.9) == 300.0
    with pytest.raises(ValueError, match="above t_max"):
        TemperatureSampler(600.0, 300.0)


def test_proposals_shapes_and_ranges():
    gen = torch.Generator().manual_seed(1)
    z = UniformTorus(2).sample(1000, gen, torch.float32, "cpu")
    assert z.shape == (1000, 2) and z.dtype == torch.float32
    assert float(z.min()) >= -math.pi and float(z.max()) < math.pi
    box = UniformBox([-1.0, 0.0], [1.0, 2.0]).sample(1000, gen, torch.float64, "cpu")
    assert float(box[:, 1].min()) >= 0.0 and float(box[:, 1].max()) <= 2.0
    with pytest.raises(ValueError, match="low < high"):
        UniformBox([1.0], [0.0])
