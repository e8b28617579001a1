"""The README's Python examples run as written (after the main command has made a model), in a
folder that looks like the repository: runs/demo/model.pt, data/ and experiments/."""

import re
from pathlib import Path

import torch

from ccg import RunConfig, build_model, save_model

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    for folder in ("data", "experiments"):    # the bundled trajectory, the reference surfaces
        (tmp_path / folder).symlink_to(ROOT / folder)
    # what `ccg train --minutes 3 --out runs/demo` leaves behind (a small, untrained flow)
    config = RunConfig()
    config.flow.n_layers, config.flow.hidden = 2, 16
    config.train.steps = 1
    torch.manual_seed(0)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    save_model(tmp_path / "runs" / "demo" / "model.pt", build_model(config))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    samples, model = namespace["samples"], namespace["model"]
    # the cycle-consistency the README promises: coarse-graining a backmapped frame returns z
    residual = model.cg_map.coarse_grain(samples.x) - samples.z
    assert residual.abs().max() < 1e-4


def test_readme_toml_example_is_a_valid_config():
    """Every key the README's config example shows exists and validates."""
    import tomllib

    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        RunConfig.from_dict(tomllib.loads(block)).validate()
