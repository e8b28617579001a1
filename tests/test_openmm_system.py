"""OpenMMSystem: the torch path against OpenMM's Reference platform, the fallback path, errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from ccg.systems import OpenMMSystem, alanine_dipeptide
from ccg.systems._torch_terms import ONE_4PI_EPS0
from ccg.systems.benchmark import benchmark_energy, format_energy_table

PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide.pdb"
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


# --- reference values from OpenMM -------------------------------------------------------------


def reference_context(system: openmm.System) -> tuple[openmm.Context, list[str]]:
    """A Reference-platform Context on a copy of `system`, force i in force group i."""
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for group, force in enumerate(copy.getForces()):
        force.setForceGroup(group)
    context = openmm.Context(
        copy, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    return context, [type(f).__name__ for f in copy.getForces()]


def openmm_reference(context: openmm.Context, xs: np.ndarray, groups: int = -1):
    """Energies [B] (kJ/mol) and forces [B, n, 3] (kJ/mol/nm) from an OpenMM Context."""
    energies, forces = [], []
    for conf in xs:
        context.setPositions(conf)
        state = context.getState(getEnergy=True, getForces=True, groups=groups)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
    return np.array(energies), np.array(forces)


def assert_forces_close(got: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Per configuration: max |difference| <= rtol * max |force|."""
    err = np.abs(got - expected).reshape(len(got), -1).max(1)
    scale = np.abs(expected).reshape(len(got), -1).max(1)
    worst = (err / scale).max()
    if worst > rtol:
        raise AssertionError(f"force relative error {worst:.3e} > {rtol:.1e}")


def assert_energies_close(got: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """|difference| <= rtol * max(|E|, 1 kJ/mol) per configuration."""
    worst = (np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)).max()
    if worst > rtol:
        raise AssertionError(f"energy relative error {worst:.3e} > {rtol:.1e}")


def energy_and_forces(system: OpenMMSystem, xs: np.ndarray, dtype=torch.float64, device="cpu"):
    x = torch.tensor(xs, dtype=dtype, device=device, requires_grad=True)
    energy = system.energy(x)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach().cpu().double().numpy(), -grad.cpu().double().numpy()


@pytest.fixture(scope="module")
def ala() -> OpenMMSystem:
    return alanine_dipeptide()


@pytest.fixture(scope="module")
def ref(ala):
    return reference_context(ala.openmm_system)


@pytest.fixture(scope="module")
def perturbed(ala) -> np.ndarray:
    """500 configurations, reference + 0.015 nm Gaussian noise (well off the minimum)."""
    rng = np.random.default_rng(1)
    return ala.reference_positions + rng.normal(0.0, 0.015, (500, ala.n_atoms, 3))


@pytest.fixture(scope="module")
def low_energy(ala) -> np.ndarray:
    """Minimized structure, a 300 K Langevin run from it (40 frames) and tiny perturbations."""
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.0005)
    integrator.setRandomNumberSeed(7)
    context = openmm.Context(
        ala.openmm_system, integrator, openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(ala.reference_positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 200)
    minimum = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    frames = []
    for _ in range(40):
        integrator.step(20)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    rng = np.random.default_rng(2)
    tiny = minimum + rng.normal(0.0, 1e-4, (20, ala.n_atoms, 3))
    return np.concatenate([minimum[None], np.array(frames), tiny])


# --- the torch path against OpenMM Reference --------------------------------------------------


def test_coulomb_constant_is_openmms():
    assert ONE_4PI_EPS0 == pytest.approx(138.93545764438198, rel=1e-15)


@pytest.mark.parametrize("which", ["perturbed", "low_energy"])
def test_energy_and_forces_match_openmm_reference(ala, ref, which, request):
    xs = request.getfixturevalue(which)
    assert all(p == "torch" for p in ala.term_paths.values())
    expected_e, expected_f = openmm_reference(ref[0], xs)
    got_e, got_f = energy_and_forces(ala, xs)
    assert_energies_close(got_e, expected_e, 1e-8)
    assert_forces_close(got_f, expected_f, 1e-8)
    if which == "low_energy":
        assert expected_e.max() < 0.0  # really near the minimum (alanine's U there < 0)


def test_energy_terms_match_force_groups(ala, ref, perturbed):
    context, classes = ref
    xs = perturbed[:100]
    terms = ala.energy_terms(torch.tensor(xs))
    assert list(terms) == ala.term_names
    assert sorted(ala.term_names) == sorted(c for c in classes if c != "CMMotionRemover")
    for name, energy in terms.items():
        expected, _ = openmm_reference(context, xs, groups=1 << classes.index(name))
        assert energy.shape == (len(xs),)
        np.testing.assert_allclose(energy.numpy(), expected, rtol=1e-8, atol=1e-8)


def test_float32_matches_float64(ala, perturbed, low_energy):
    # Same (float32-representable) positions in both dtypes, so only the arithmetic differs.
    # The scale is the sum of |term energies|: U itself can cross zero while its terms are large.
    x32 = torch.tensor(np.concatenate([perturbed[:200], low_energy]), dtype=torch.float32)
    e32 = ala.energy(x32)
    assert e32.dtype == torch.float32
    e64 = ala.energy(x32.double())
    scale = sum(t.abs() for t in ala.energy_terms(x32.double()).values())
    assert ((e32.double() - e64).abs() / scale).max() < 1e-5
    # Forces: error per configuration relative to the largest per-term force (at the minimum the
    # total force is ~0 while the terms' forces are large and cancel).
    x64 = x32.double().requires_grad_(True)
    term_forces = [
        torch.autograd.grad(t.sum(), x64)[0].abs() for t in ala.energy_terms(x64).values()
    ]
    force_scale = torch.stack(term_forces).amax(dim=(0, 2, 3))
    err = (ala.forces(x32).double() - ala.forces(x32.double())).abs().amax(dim=(1, 2))
    assert (err / force_scale).max() < 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_devices_agree(ala, perturbed, device):
    xs = perturbed[:32]
    e_cpu, f_cpu = energy_and_forces(ala, xs)
    e_dev, f_dev = energy_and_forces(ala, xs, device=device)
    assert_energies_close(e_dev, e_cpu, 1e-10)
    assert_forces_close(f_dev, f_cpu, 1e-10)


# --- known answers --------------------------------------------------------------------------


def single_atom_topology(n: int) -> app.Topology:
    top = app.Topology()
    residue = top.addResidue("UNK", top.addChain())
    for i in range(n):
        top.addAtom(f"C{i}", app.element.carbon, residue)
    return top


@pytest.mark.parametrize("device", DEVICES)
def test_one_particle_custom_external_force_known_answer(device):
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce("x")
    force.addParticle(0, [])
    system.addForce(force)
    with pytest.warns(UserWarning, match="CustomExternalForce"):
        toy = OpenMMSystem(system, single_atom_topology(1))
    assert toy.term_paths == {"CustomExternalForce": "openmm"}
    x = torch.tensor([[[0.3, -1.0, 2.0]], [[-1.25, 0.5, 0.0]]], dtype=torch.float64, device=device)
    energy = toy.energy(x)
    assert energy.device == x.device
    assert torch.equal(energy.cpu(), torch.tensor([0.3, -1.25], dtype=torch.float64))
    expected = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64).expand(2, 1, 3)
    assert torch.equal(toy.forces(x).cpu(), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_two_particle_harmonic_bond_known_answer(device):
    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.1, 100.0)  # r0 = 0.1 nm, k = 100 kJ/mol/nm^2
    system.addForce(bond)
    toy = OpenMMSystem(system, single_atom_topology(2))
    assert toy.term_paths == {"HarmonicBondForce": "torch"}
    x = torch.tensor([[[0.0, 0.0, 0.0], [0.15, 0.0, 0.0]]], dtype=torch.float64, device=device)
    expected_energy = torch.tensor([0.125], dtype=torch.float64, device=device)
    torch.testing.assert_close(toy.energy(x), expected_energy)
    # Stretched bond: atom 1 is pulled back toward atom 0 with k (r - r0) = 5 kJ/mol/nm.
    expected = torch.tensor([[[5.0, 0.0, 0.0], [-5.0, 0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(toy.forces(x), expected.to(device))


# --- the OpenMM fallback path ---------------------------------------------------------------


def test_fallback_path_agrees_with_torch_path(ala, perturbed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # use_torch=False is a choice: no warning
        slow = alanine_dipeptide(use_torch=False, platform="Reference")
    assert set(slow.term_paths.values()) == {"openmm"}
    xs = perturbed[:64]
    e_fast, f_fast = energy_and_forces(ala, xs)
    e_slow, f_slow = energy_and_forces(slow, xs)
    assert_energies_close(e_slow, e_fast, 1e-8)
    assert_forces_close(f_slow, f_fast, 1e-8)
    terms_slow = slow.energy_terms(torch.tensor(xs[:8]))
    terms_fast = ala.energy_terms(torch.tensor(xs[:8]))
    for name in ala.term_names:
        torch.testing.assert_close(terms_slow[name], terms_fast[name], rtol=1e-8, atol=1e-8)
    e32 = slow.energy(torch.tensor(xs[:4], dtype=torch.float32))
    assert e32.dtype == torch.float32


def test_fallback_workers_agree_with_single_process(perturbed):
    one = alanine_dipeptide(use_torch=False, platform="Reference")
    two = alanine_dipeptide(use_torch=False, platform="Reference", n_workers=2)
    try:
        xs = perturbed[:6]
        e1, f1 = energy_and_forces(one, xs)
        e2, f2 = energy_and_forces(two, xs)
    finally:
        two._evaluator.close()
    np.testing.assert_array_equal(e2, e1)
    np.testing.assert_array_equal(f2, f1)


def test_unsupported_force_warns_once_and_is_evaluated_by_openmm(ala, perturbed):
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala.openmm_system))
    for _ in range(2):
        extra = openmm.CustomBondForce("0.5*kb*(r-rb)^2")
        extra.addPerBondParameter("kb")
        extra.addPerBondParameter("rb")
        extra.addBond(0, 21, [10.0, 0.5])
        system.addForce(extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixed = OpenMMSystem(system, ala.topology, platform="Reference")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert "CustomBondForce" in messages[0] and "slower" in messages[0]
    assert mixed.term_paths["CustomBondForce"] == "openmm"
    assert mixed.term_paths["CustomBondForce:1"] == "openmm"
    assert mixed.term_paths["NonbondedForce"] == "torch"
    assert "CustomBondForce:1" in mixed.summary()
    xs = perturbed[:16]
    expected_e, expected_f = openmm_reference(reference_context(system)[0], xs)
    got_e, got_f = energy_and_forces(mixed, xs)
    assert_energies_close(got_e, expected_e, 1e-8)
    assert_forces_close(got_f, expected_f, 1e-8)


def test_nonbonded_with_periodic_cutoff_goes_to_openmm():
    # CutoffNonPeriodic compiles (tests/test_gb.py); a periodic method stays with OpenMM.
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * 3.0))
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    for i in range(3):
        system.addParticle(12.0)
        nonbonded.addParticle(0.2 * (i - 1), 0.3, 0.5)
    system.addForce(nonbonded)
    with pytest.warns(UserWarning, match="NonbondedForce"):
        toy = OpenMMSystem(system, single_atom_topology(3), platform="Reference")
    assert toy.term_paths == {"NonbondedForce": "openmm"}
    assert "CutoffPeriodic" in toy.summary()
    xs = np.random.default_rng(3).normal(0.0, 0.4, (5, 3, 3))
    expected_e, expected_f = openmm_reference(reference_context(system)[0], xs)
    got_e, got_f = energy_and_forces(toy, xs)
    np.testing.assert_array_equal(got_e, expected_e)
    np.testing.assert_array_equal(got_f, expected_f)


def test_nan_from_openmm_stays_nan():
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce("sqrt(x)")
    force.addParticle(0, [])
    system.addForce(force)
    with pytest.warns(UserWarning):
        toy = OpenMMSystem(system, single_atom_topology(1))
    x = torch.tensor([[[4.0, 0.0, 0.0]], [[-1.0, 0.0, 0.0]]], dtype=torch.float64)
    x.requires_grad_(True)
    energy = toy.energy(x)
    assert energy[0].item() == pytest.approx(2.0)
    assert torch.isnan(energy[1])
    (grad,) = torch.autograd.grad(energy.sum(), x)
    assert torch.isnan(grad[1]).all() and torch.isfinite(grad[0]).all()


# --- serialization and description ----------------------------------------------------------


def test_config_round_trip_gives_identical_energies(ala, perturbed):
    cfg = json.loads(json.dumps(ala.config()))
    assert cfg["build"]["forcefield"] == ["amber99sbildn.xml"]
    rebuilt = OpenMMSystem.from_config(cfg)
    x = torch.tensor(perturbed[:20])
    assert torch.equal(rebuilt.energy(x), ala.energy(x))
    np.testing.assert_array_equal(rebuilt.reference_positions, ala.reference_positions)
    assert rebuilt.term_names == ala.term_names
    assert [a.name for a in rebuilt.topology.atoms] == [a.name for a in ala.topology.atoms]


def test_config_round_trip_of_an_object_built_system():
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce("x^2 + 2*y")
    force.addParticle(0, [])
    system.addForce(force)
    with pytest.warns(UserWarning):
        toy = OpenMMSystem(system, single_atom_topology(1), positions=np.array([[0.1, 0.2, 0.3]]))
        rebuilt = OpenMMSystem.from_config(json.loads(json.dumps(toy.config())))
    x = torch.tensor([[[0.5, 1.0, 0.0]]], dtype=torch.float64)
    assert torch.equal(rebuilt.energy(x), toy.energy(x))
    np.testing.assert_array_equal(rebuilt.reference_positions, [[0.1, 0.2, 0.3]])


def test_from_xml_matches(ala, perturbed, tmp_path):
    xml = tmp_path / "system.xml"
    xml.write_text(openmm.XmlSerializer.serialize(ala.openmm_system))
    from_file = OpenMMSystem.from_xml(xml, PDB)
    from_text = OpenMMSystem.from_xml(xml.read_text(), PDB)
    x = torch.tensor(perturbed[:8])
    assert torch.equal(from_file.energy(x), ala.energy(x))
    assert torch.equal(from_text.energy(x), ala.energy(x))


def test_summary_and_properties(ala):
    text = ala.summary()
    assert "22 atoms" in text and "3 residues" in text
    for name in (
        "HarmonicBondForce",
        "HarmonicAngleForce",
        "PeriodicTorsionForce",
        "NonbondedForce",
    ):
        assert name in text
    assert ala.n_atoms == 22 and ala.topology.n_atoms == 22
    assert ala.reference_positions.shape == (22, 3)
    assert isinstance(ala.openmm_system, openmm.System)


def test_benchmark_smoke(ala):
    rows = benchmark_energy(ala, batch_sizes=(8,), repeats=1, openmm_max_configs=8)
    assert [r["method"] for r in rows][:3] == [  # then the CUDA rows where a GPU is present
        "openmm loop (CPU platform, 1 thread)", "openmm loop (Reference platform)",
        "torch eager float32"]
    # ratios are against the faster OpenMM loop of the same run
    assert max(rows[0]["ratio_vs_openmm"], rows[1]["ratio_vs_openmm"]) == 1.0
    assert rows[2]["configs_per_s"] > 0
    assert "| 8 |" in format_energy_table(rows)


# --- clear errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["energy", "energy_terms"])
def test_bad_coordinates_raise_clear_errors(ala, method):
    fn = getattr(ala, method)
    with pytest.raises(ValueError, match="unsqueeze"):
        fn(torch.zeros(22, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"22 atoms.*21"):
        fn(torch.zeros(2, 21, 3, dtype=torch.float64))
    bad = torch.tensor(ala.reference_positions).repeat(3, 1, 1)
    bad[1, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fn(bad)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        fn(ala.reference_positions[None])
    with pytest.raises(TypeError, match="float"):
        fn(torch.zeros(1, 22, 3, dtype=torch.int64))


def test_unknown_forcefield_name():
    with pytest.raises(ValueError, match=r"amber99sbXXX\.xml.*amber14-all\.xml"):
        OpenMMSystem.from_pdb(PDB, ("amber99sbXXX.xml",))


def test_residue_without_template(tmp_path):
    bad = tmp_path / "renamed.pdb"
    bad.write_text(PDB.read_text().replace("ALA A   2", "ALX A   2"))
    with pytest.raises(ValueError, match=r"ALX.*addHydrogens"):
        OpenMMSystem.from_pdb(bad)


def test_missing_pdb_file(tmp_path):
    missing = tmp_path / "nope.pdb"
    with pytest.raises(FileNotFoundError, match=r"nope\.pdb"):
        OpenMMSystem.from_pdb(missing)
    with pytest.raises(FileNotFoundError, match=r"nope\.pdb"):
        OpenMMSystem.from_xml("<System/>", missing)


def test_constraints_and_virtual_sites_are_refused(ala):
    with pytest.raises(ValueError, match="constraints=None"):
        alanine_dipeptide(constraints="HBonds")
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    system.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    with pytest.raises(ValueError, match="virtual sites"):
        OpenMMSystem(system, single_atom_topology(3))
    with pytest.raises(ValueError, match=r"21 atoms but the System has 22"):
        OpenMMSystem(ala.openmm_system, ala.topology.subset(range(21)))
    with pytest.raises(ValueError, match="platform"):
        OpenMMSystem(ala.openmm_system, ala.topology, platform="NoSuchPlatform")
