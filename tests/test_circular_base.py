"""Which circular dims get a concentrated (wrapped-Cauchy) base in `build_model`."""

from __future__ import annotations

import math

import torch

from ccg import RunConfig, build_model
from ccg.training.run import report_modes


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
    config.flow.linear_stiff_torsions = False  # the stiff torsions on the circle
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


def test_linear_stiff_torsions_takes_omegas_and_chiral_torsions_off_the_circle():
    """[flow] linear_stiff_torsions: the two ω (by the map, unwrapped around the reference) and
    the chiral CB and HA torsions (by the flow) become real coordinates with a Gaussian base of
    their harmonic width; only the methyl rotors stay circular, with their uniform base."""
    config = RunConfig()
    config.train.steps = 1
    config.flow.linear_stiff_torsions = True
    model = build_model(config)
    rho = _circular_torsions(model)
    assert len(rho) == 3 and set(rho.values()) == {0.0}, rho
    atoms = [f"{a.residue.name}-{a.name}" for a in model.system.topology.atoms]
    omegas = {tuple(atoms[a] for a in q) for q in model.cg_map.stiff_torsions}
    assert omegas == {("ACE-CH3", "ACE-C", "ALA-N", "ALA-CA"),
                      ("NME-C", "NME-N", "ALA-C", "ALA-CA")}
    dims = [d for d, k in enumerate(model.cg_map.r_kinds) if k == "improper"]
    chiral = torch.nonzero(model.cg_map.r_chiral).flatten().tolist()
    assert len(dims) == 12 and len(chiral) == 2
    assert not bool(model.flow.circular[dims + chiral].any())
    widths = model.flow.standardize.scale[dims + chiral]
    assert bool(((widths > 0.05) & (widths < 0.8)).all()), widths
    # the chiral widths are the harmonic ones of the concentrated circular base
    config.flow.linear_stiff_torsions = False
    reference = build_model(config).flow.circular_concentration[chiral]
    torch.testing.assert_close(widths[-2:], -torch.log(reference.to(widths.dtype)))
    assert build_model(config).cg_map.stiff_torsions == []


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
        config.flow.linear_stiff_torsions = False  # the stiff torsions on the circle
        config.flow.concentrate_circular = concentrate
        model = build_model(config)
        with torch.no_grad():
            s = model.sample(z, 300.0, generator=torch.Generator().manual_seed(1))
            u = s.beta * s.energy_kjmol - s.log_jac + s.log_q
        bounds[concentrate] = float(torch.nanmedian(u))
    assert bounds[True] < bounds[False] - 2.0, bounds


def _phi_psi_restrained_minimum(system, x0, phi_psi_atoms, phi_psi):
    """OpenMM energy (kJ/mol) of the local minimum from x0 [n_atoms, 3] nm with phi and psi
    held (stiff harmonic torsion restraints) at `phi_psi` (rad): an independent minimizer."""
    import copy

    import openmm

    omm = copy.deepcopy(system.openmm_system)
    restraint = openmm.CustomTorsionForce(
        "0.5 * 1e6 * d^2; d = min(dt, 2 * 3.141592653589793 - dt); dt = abs(theta - theta0)")
    restraint.addPerTorsionParameter("theta0")
    for atoms, value in zip(phi_psi_atoms, phi_psi, strict=True):
        restraint.addTorsion(*atoms, [value])
    restraint.setForceGroup(31)
    omm.addForce(restraint)
    context = openmm.Context(omm, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x0.tolist())
    openmm.LocalEnergyMinimizer.minimize(context, 1e-4, 0)
    mask = sum(1 << g for g in range(31))
    state = context.getState(getEnergy=True, groups=mask)
    return state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)


def test_second_minima_are_the_cis_peptide_states_with_their_openmm_energies(caplog):
    """Of the four stiff torsions, only the two peptide ω have a second minimum (cis, ~π away);
    the chiral torsions have none. The relaxed energies over the reference minimum agree with
    OpenMM's own minimizer (Cartesian, phi/psi restrained) started from the same turned
    structures, to 0.05 kJ/mol; the cis state of the C-terminal ω lies 10-16 kJ/mol up."""
    from ccg import build_map
    from ccg.systems import alanine_dipeptide
    from ccg.training.base_init import circular_concentration
    from ccg.training.base_modes import second_minima

    config = RunConfig()
    config.train.steps = 1
    config.flow.linear_stiff_torsions = False  # the cis states live on the circle
    config.flow.circular_modes = True
    system = alanine_dipeptide()
    cg_map = build_map(config, system)
    circular = cg_map.r_circular | cg_map.r_chiral
    rho = circular_concentration(cg_map, system, 300.0, circular)
    modes = second_minima(cg_map, system, 300.0, rho > 0, circular)
    model = build_model(config)
    names = list(_circular_torsions(model))
    circ_dims = torch.nonzero(model.flow.circular).flatten().tolist()
    found = {names[circ_dims.index(m.dim)]: m for m in modes}
    assert set(found) == {"NME-C around NME-N-ALA-C", "ACE-CH3 around ACE-C-ALA-N"}
    assert model.flow.modes.rows == [[m.dim, m.offset, m.energy_kt, m.log_ratio] for m in modes]
    x_ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)[None]
    z0, r0, _ = cg_map.split(x_ref)
    atoms = [a for a in system.topology.atoms]
    index = {f"{a.residue.name}-{a.name}": a.index for a in atoms}
    phi_psi_atoms = [[index[n] for n in ("ACE-C", "ALA-N", "ALA-CA", "ALA-C")],
                     [index[n] for n in ("ALA-N", "ALA-CA", "ALA-C", "NME-N")]]
    u_ref = _phi_psi_restrained_minimum(system, x_ref[0], phi_psi_atoms, z0[0].tolist())
    for name, mode in found.items():
        assert abs(abs(mode.offset) - math.pi) < math.radians(15), (name, mode.offset)
        turned = r0.clone()
        turned[0, mode.dim] = torch.remainder(turned[0, mode.dim] + 2 * math.pi, 2 * math.pi) \
            - math.pi
        x, _ = cg_map.merge(z0, turned)
        u_cis = _phi_psi_restrained_minimum(system, x[0], phi_psi_atoms, z0[0].tolist())
        assert abs((u_cis - u_ref) - mode.energy_kjmol) < 0.05, (name, u_cis - u_ref, mode)
        assert abs(mode.log_ratio) < 2.0  # the harmonic entropy term is a correction
    assert 10.0 < found["NME-C around NME-N-ALA-C"].energy_kjmol < 16.0
    nme = found["NME-C around NME-N-ALA-C"]
    share_600 = 100 / (1 + math.exp(nme.energy_kt * 300.0 / 600.0 - nme.log_ratio))
    with caplog.at_level("INFO", logger="ccg"):
        report_modes(model)  # what `ccg train` prints: the base weight at t_min and t_max
    assert f"{share_600:.2g} % at 600 K" in caplog.text
    config.flow.circular_modes = False
    assert build_model(config).flow.modes.rows == []
