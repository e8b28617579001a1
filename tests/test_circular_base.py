"""Which circular dims get a concentrated (wrapped-Cauchy) base in `build_model`."""

from __future__ import annotations

import math

import torch

from ccg.train.config import RunConfig
from ccg.train.run import build_model


def _circular_torsions(model) -> dict[str, float]:
    """{'placed atom around bond atom-atom': rho} for every circular r dim of a phi-psi model."""
    cg_map, flow = model.cg_map, model.flow
    split = next(m for m in cg_map.modules() if type(m).__name__ == "ICSplit")
    zmatrix = next(m for m in cg_map.modules() if type(m).__name__ == "ZMatrix")
    atoms = [f"{a.residue.name}-{a.name}" for a in model.system.topology.atoms]
    first = split.n_bonds + split.n_angles
    out = {}
    for d in torch.nonzero(flow.circular).flatten().tolist():
        row = zmatrix.rows[int(split._r_index[d - first])]
        out[f"{atoms[row[0]]} around {atoms[row[1]]}-{atoms[row[2]]}"] = float(
            flow.circular_concentration[d])
    return out


def test_single_minimum_torsions_are_concentrated_and_rotors_uniform():
    config = RunConfig()
    config.train.steps = 1
    rho = _circular_torsions(build_model(config))
    stiff = {"NME-C around NME-N-ALA-C", "ACE-CH3 around ACE-C-ALA-N",  # peptide omegas
             "ALA-CB around ALA-CA-ALA-N", "ALA-HA around ALA-CA-ALA-N"}  # chiral torsions
    assert stiff <= set(rho)
    for name, value in rho.items():
        if name in stiff:
            # harmonic widths of 0.1-0.15 rad: rho = exp(-sigma) in (0.85, 0.92)
            assert 0.85 < value < 0.92, (name, value)
        else:  # the three methyl rotors: a 2 pi / 3 turn is a symmetry
            assert value == 0.0, (name, value)
    assert len(rho) == 7
    config.flow.concentrate_circular = False
    assert set(_circular_torsions(build_model(config)).values()) == {0.0}


def test_concentrated_base_starts_closer_to_the_target():
    """At initialization (identity splines) the reverse-KL bound is lower with the concentrated
    base: the omega and chiral torsions start at their harmonic width."""
    gen = torch.Generator().manual_seed(0)
    z = (torch.rand(64, 2, generator=gen) * 2 - 1) * math.pi
    z = z.repeat_interleave(16, 0)
    bounds = {}
    for concentrate in (True, False):
        config = RunConfig()
        config.train.steps = 1
        config.flow.concentrate_circular = concentrate
        model = build_model(config)
        with torch.no_grad():
            s = model.sample(z, 300.0, generator=torch.Generator().manual_seed(1))
            u = s.beta * s.energy_kjmol - s.log_jac + s.log_q
        bounds[concentrate] = float(torch.nanmedian(u))
    assert bounds[True] < bounds[False] - 2.0, bounds
