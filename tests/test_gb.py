"""Generalized Born and cutoff nonbonded on the torch path against OpenMM's Reference platform.

Per term (each force in its own force group), energies and forces (autograd through the hand
written gradient) agree with OpenMM to 1e-8 relative in float64 on 500 configurations of
Ace-(Ala)3-Nme and Ace-(Ala)5-Nme in OBC2 (GBSAOBCForce of amber99_obc.xml and CustomGBForce of
implicit/obc2.xml) and GBn2 (implicit/gbn2.xml), and of chignolin in GBn2. Configurations: 400
Gaussian perturbations of 0.015 nm of the bundled minimized structure (compressed bonds put
atoms inside their neighbours' scaled spheres, which exercises every branch of the Born
integral) and 100 low-energy ones: the minimum, a 300 K Langevin run from it (60 frames) and
tiny (1e-4 nm) perturbations of the minimum. float32 agrees with float64 to 1e-5 (see
test_float32_matches_float64).
"""

from __future__ import annotations

import warnings

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from ccg.cli import main
from ccg.systems import OpenMMSystem
from ccg.systems._gb_recognize import gb_models
from ccg.systems._gb_terms import CustomGBTerm, GBSAOBCTerm
from ccg.systems._torch_terms import (
    TORCH_FORCES,
    UnsupportedForce,
    atom_major,
    compile_force,
    supported_forces,
)
from ccg.systems.bundled import (
    ala3_gbn2,
    ala3_obc2,
    ala5_gbn2,
    ala5_obc2,
    bundled_pdb_path,
    chignolin_gbn2,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


def _obc2_custom(molecule: str):
    def build(**kwargs):
        return OpenMMSystem.from_pdb(
            bundled_pdb_path(molecule), ("amber99sbildn.xml", "implicit/obc2.xml"), **kwargs
        )

    return build


CASES = {
    "ala3-obc2": ala3_obc2,
    "ala3-obc2-custom": _obc2_custom("ala3"),
    "ala3-gbn2": ala3_gbn2,
    "ala5-obc2": ala5_obc2,
    "ala5-obc2-custom": _obc2_custom("ala5"),
    "ala5-gbn2": ala5_gbn2,
    "chignolin-gbn2": chignolin_gbn2,
}
N_PERTURBED, N_LOW = 400, 100
GB_CLASS = {
    "obc2": ("GBSAOBCForce", GBSAOBCTerm),
    "obc2-custom": ("CustomGBForce", CustomGBTerm),
    "gbn2": ("CustomGBForce", CustomGBTerm),
}


# --- OpenMM references -------------------------------------------------------------------------


def group_context(system: openmm.System) -> tuple[openmm.Context, list[str]]:
    """A Reference-platform Context on a copy of `system`, force k in force group k."""
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for group, force in enumerate(copy.getForces()):
        force.setForceGroup(group)
    context = openmm.Context(
        copy, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    return context, [type(f).__name__ for f in copy.getForces()]


def per_term_reference(system: OpenMMSystem, xs: np.ndarray) -> dict[str, tuple]:
    """{term name: (energies [B], forces [B, n, 3])} from OpenMM's Reference platform."""
    context, classes = group_context(system.openmm_system)
    groups = {}
    seen: dict[str, int] = {}
    for k, cls in enumerate(classes):
        if cls == "CMMotionRemover":
            continue
        name = cls if cls not in seen else f"{cls}:{seen[cls]}"
        seen[cls] = seen.get(cls, 0) + 1
        groups[name] = k
    out = {name: ([], []) for name in groups}
    for conf in xs:
        context.setPositions(conf)
        for name, k in groups.items():
            state = context.getState(getEnergy=True, getForces=True, groups=1 << k)
            out[name][0].append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            out[name][1].append(
                state.getForces(asNumpy=True).value_in_unit(
                    unit.kilojoule_per_mole / unit.nanometer
                )
            )
    return {name: (np.array(e), np.array(f)) for name, (e, f) in out.items()}


def torch_terms(system: OpenMMSystem, xs: np.ndarray, dtype=torch.float64, device="cpu"):
    """{term name: (energies [B], forces [B, n, 3])} from the torch path (forces by autograd)."""
    x = torch.tensor(xs, dtype=dtype, device=device, requires_grad=True)
    terms = system.energy_terms(x)
    out = {}
    for name, energy in terms.items():
        (grad,) = torch.autograd.grad(energy.sum(), x, retain_graph=True)
        out[name] = (energy.detach().cpu().double().numpy(), -grad.cpu().double().numpy())
    return out


def energy_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |difference| / max(|E|, 1 kJ/mol) over configurations."""
    return float((np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)).max())


def force_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max over configurations of max |difference| / max |force| (per configuration)."""
    err = np.abs(got - expected).reshape(len(got), -1).max(1)
    scale = np.maximum(np.abs(expected).reshape(len(got), -1).max(1), 1.0)
    return float((err / scale).max())


def configurations(system: OpenMMSystem, n_perturbed: int, n_low: int, seed: int) -> np.ndarray:
    """Perturbed (0.015 nm) and low-energy (minimum, 300 K Langevin, tiny noise) positions."""
    rng = np.random.default_rng(seed)
    reference = system.reference_positions
    perturbed = reference + rng.normal(0.0, 0.015, (n_perturbed, *reference.shape))
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.0005)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(
        system.openmm_system, integrator, openmm.Platform.getPlatformByName("CPU"),
        {"Threads": "1"},
    )
    context.setPositions(reference)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 500)
    minimum = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    n_frames = n_low * 3 // 5
    frames = []
    for _ in range(n_frames):
        integrator.step(10)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    tiny = minimum + rng.normal(0.0, 1e-4, (n_low - n_frames - 1, *reference.shape))
    return np.concatenate([perturbed, minimum[None], np.array(frames), tiny])


# --- fixtures: one system, its configurations and OpenMM's per-term answers per case ------------


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    name = request.param
    system = CASES[name]()
    xs = configurations(system, N_PERTURBED, N_LOW, seed=11)
    return name, system, xs, per_term_reference(system, xs)


# --- the torch path against OpenMM Reference, per term ------------------------------------------


def test_every_term_runs_on_the_torch_path(case):
    name, system, _, _ = case
    assert set(system.term_paths.values()) == {"torch"}, system.summary()
    gb_name, gb_class = GB_CLASS[name.split("-", 1)[1]]
    assert isinstance(system._torch_terms[gb_name], gb_class)


def test_per_term_energies_and_forces_match_openmm_reference(case):
    _, system, xs, reference = case
    assert len(xs) >= 500
    got = torch_terms(system, xs)
    assert sorted(got) == sorted(reference)
    for term, (expected_e, expected_f) in reference.items():
        e, f = got[term]
        assert energy_error(e, expected_e) < 1e-8, (term, energy_error(e, expected_e))
        assert force_error(f, expected_f) < 1e-8, (term, force_error(f, expected_f))
    # energy() (generalized Born and nonbonded fused into one pass) against the sum of terms
    assert system._fused is not None
    total = sum(r[0] for r in reference.values())
    total_forces = sum(r[1] for r in reference.values())
    x = torch.tensor(xs, requires_grad=True)
    energy = system.energy(x)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    assert energy_error(energy.detach().numpy(), total) < 1e-8
    assert force_error(-grad.numpy(), total_forces) < 1e-8
    # the low-energy configurations are low: the minimum is below every perturbed one
    assert total[-N_LOW] < total[:-N_LOW].min()


def test_float32_matches_float64(case):
    # Same (float32-representable) positions in both dtypes, so only the arithmetic differs.
    # The generalized Born term agrees to 1e-5 of its own energy and largest force, per
    # configuration. The others are measured as in test_openmm_system.py: energies against
    # the sum of |term energies| (the nonbonded sum cancels to a small number), forces against
    # the largest per-term force (near the minimum float32 bond lengths alone give bond forces
    # errors of ~1e-2 kJ/mol/nm, so there 1e-4).
    name, system, xs, reference = case
    sample = np.concatenate([xs[:100], xs[-N_LOW:]]).astype(np.float32).astype(np.float64)
    got32 = torch_terms(system, sample, dtype=torch.float32)
    got64 = torch_terms(system, sample)
    gb_name = GB_CLASS[name.split("-", 1)[1]][0]
    e32, f32 = got32[gb_name]
    e64, f64 = got64[gb_name]
    assert energy_error(e32, e64) < 1e-5
    assert force_error(f32, f64) < 1e-5
    energy_scale = sum(np.abs(e) for e, _ in got64.values())
    force_scale = np.max([np.abs(f).reshape(len(f), -1).max(1) for _, f in got64.values()], 0)
    for term in reference:
        (e32, f32), (e64, f64) = got32[term], got64[term]
        assert (np.abs(e32 - e64) / energy_scale).max() < 1e-5, term
        force_err = np.abs(f32 - f64).reshape(len(f32), -1).max(1) / force_scale
        assert force_err[:100].max() < 1e-5, term
        assert force_err[100:].max() < 1e-4, term


@pytest.mark.parametrize("device", DEVICES)
def test_devices_agree(case, device):
    _, system, xs, _ = case
    cpu = torch_terms(system, xs[:16])
    dev = torch_terms(system, xs[:16], device=device)
    for term in cpu:
        assert energy_error(dev[term][0], cpu[term][0]) < 1e-10
        assert force_error(dev[term][1], cpu[term][1]) < 1e-10


# --- variants: salt, dielectrics, no surface term, cutoffs ------------------------------------


def _from_bundled(molecule: str, files, **options) -> OpenMMSystem:
    return OpenMMSystem.from_pdb(bundled_pdb_path(molecule), files, **options)


VARIANTS = {
    "obc2-custom salt + dielectrics": (
        ("amber99sbildn.xml", "implicit/obc2.xml"),
        {"implicitSolventKappa": 1.2 / unit.nanometer, "soluteDielectric": 2.0,
         "solventDielectric": 80.0},
    ),
    "gbn2 salt": (("amber99sbildn.xml", "implicit/gbn2.xml"),
                  {"implicitSolventKappa": 0.8 / unit.nanometer}),
    "obc2-custom without surface term": (
        ("amber99sbildn.xml", "implicit/obc2.xml"), {"sasaMethod": None}),
    "gbn2 without surface term": (("amber99sbildn.xml", "implicit/gbn2.xml"), {"sasaMethod": None}),
    "obc2 dielectrics": (
        ("amber99sbildn.xml", "amber99_obc.xml"),
        {"soluteDielectric": 1.5, "solventDielectric": 60.0},
    ),
    "obc2 + nonbonded CutoffNonPeriodic": (
        ("amber99sbildn.xml", "amber99_obc.xml"),
        {"nonbonded_method": "CutoffNonPeriodic", "nonbondedCutoff": 0.7 * unit.nanometer},
    ),
    "vacuum CutoffNonPeriodic + switch": (
        ("amber99sbildn.xml",),
        {"nonbonded_method": "CutoffNonPeriodic", "nonbondedCutoff": 0.6 * unit.nanometer,
         "switchDistance": 0.45 * unit.nanometer},
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_match_openmm_reference(variant):
    files, options = VARIANTS[variant]
    system = _from_bundled("ala5", files, **options)
    assert set(system.term_paths.values()) == {"torch"}, system.summary()
    rng = np.random.default_rng(5)
    spread = 0.3 if "Cutoff" in variant else 0.015  # move pairs across the cutoff
    xs = system.reference_positions + rng.normal(0.0, 0.015, (40, system.n_atoms, 3))
    if "Cutoff" in variant:  # also stretch the molecule so that many pairs cross the cutoff
        xs = xs * rng.uniform(1.0, 1.0 + spread, (40, 1, 1))
    reference = per_term_reference(system, xs)
    got = torch_terms(system, xs)
    for term, (expected_e, expected_f) in reference.items():
        assert energy_error(got[term][0], expected_e) < 1e-8, term
        assert force_error(got[term][1], expected_f) < 1e-8, term


def test_reaction_field_dielectric_of_obc2_xml_is_used():
    # implicit/obc2.xml sets the NonbondedForce's reaction-field dielectric to 1 (k_rf = 0)
    with pytest.warns(UserWarning, match="CustomGBForce"):
        system = _from_bundled(
            "ala3", ("amber99sbildn.xml", "implicit/obc2.xml"),
            nonbonded_method="CutoffNonPeriodic", nonbondedCutoff=0.5 * unit.nanometer,
        )
    nonbonded = system._torch_terms["NonbondedForce"]
    assert nonbonded.k_rf == 0.0 and nonbonded.c_rf == pytest.approx(2.0)
    assert system.term_paths["CustomGBForce"] == "openmm"  # a CustomGBForce with a cutoff


# --- recognition: anything but the exact expressions is refused and falls back --------------------


def custom_gb_force(model: str = "implicit/obc2.xml") -> openmm.CustomGBForce:
    """A copy (the System owning the original goes away) of Ace-(Ala)3-Nme's CustomGBForce."""
    system = _from_bundled("ala3", ("amber99sbildn.xml", model)).openmm_system
    force = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))


def _mutations():
    def energy_term(k, old, new):
        def apply(force):
            expression, kind = force.getEnergyTermParameters(k)
            assert old in expression
            force.setEnergyTermParameters(k, expression.replace(old, new), kind)
        return apply

    def computed_value(k, old, new):
        def apply(force):
            name, expression, kind = force.getComputedValueParameters(k)
            assert old in expression
            force.setComputedValueParameters(k, name, expression.replace(old, new), kind)
        return apply

    def pair_type(force):
        expression, _ = force.getEnergyTermParameters(2)
        force.setEnergyTermParameters(2, expression, openmm.CustomGBForce.ParticlePair)

    def add_global(force):
        force.addGlobalParameter("lambda", 1.0)

    def cutoff(force):
        force.setNonbondedMethod(openmm.CustomGBForce.CutoffNonPeriodic)

    def extra_term(force):
        force.addEnergyTerm("0.1*B", openmm.CustomGBForce.SingleParticle)

    return {
        "surface constant": (energy_term(1, "28.3919551", "28.3919552"), "energy term"),
        "probe radius": (energy_term(1, "+0.14", "+0.15"), "energy term"),
        "Coulomb constant": (energy_term(2, "138.935485", "138.935456"), "energy term"),
        "pair type": (pair_type, "energy term"),
        "OBC1 Born radii": (
            computed_value(1, "psi-0.8*psi^2+4.85*psi^3", "0.8*psi+2.909125*psi^3"),
            "computed value 1",
        ),
        "HCT integral": (computed_value(0, "0.25*(r-sr2^2/r)", "0.26*(r-sr2^2/r)"),
                         "computed value 0"),
        "global parameter": (add_global, "global parameters"),
        "cutoff": (cutoff, "cutoff"),
        "extra energy term": (extra_term, "4 energy terms"),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_modified_custom_gb_force_is_refused(mutation):
    apply, reason = MUTATIONS[mutation]
    force = custom_gb_force()
    CustomGBTerm(force)  # the unmodified force compiles
    apply(force)
    with pytest.raises(UnsupportedForce, match=reason):
        compile_force(force)


def test_gbn2_with_other_parameters_is_refused():
    force = custom_gb_force("implicit/gbn2.xml")
    CustomGBTerm(force)
    name, expression, kind = force.getComputedValueParameters(0)
    force.setComputedValueParameters(0, name, expression.replace("neckCut=", "neckKut="), kind)
    with pytest.raises(UnsupportedForce, match="computed value 0"):
        compile_force(force)
    other = openmm.CustomGBForce()
    for parameter in ("charge", "radius", "scale"):
        other.addPerParticleParameter(parameter)
    with pytest.raises(UnsupportedForce, match="per-particle parameters"):
        compile_force(other)


def test_modified_force_falls_back_to_openmm_with_a_warning_and_its_energy():
    system = _from_bundled("ala3", ("amber99sbildn.xml", "implicit/obc2.xml")).openmm_system
    force = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    expression, kind = force.getEnergyTermParameters(1)
    force.setEnergyTermParameters(1, expression.replace("(radius+0.14)", "(radius+0.15)"), kind)
    topology = ala3_obc2().topology
    with pytest.warns(UserWarning, match="CustomGBForce"):
        modified = OpenMMSystem(system, topology, platform="Reference")
    assert modified.term_paths["CustomGBForce"] == "openmm"
    assert modified.term_paths["NonbondedForce"] == "torch"
    assert "surface area (ACE)" in modified.summary()
    xs = ala3_obc2().reference_positions + np.random.default_rng(2).normal(0, 0.01, (6, 42, 3))
    reference = per_term_reference(modified, xs)
    got = torch_terms(modified, xs)
    for term, (expected_e, expected_f) in reference.items():
        assert energy_error(got[term][0], expected_e) < 1e-10, term
        assert force_error(got[term][1], expected_f) < 1e-8, term


def test_gbsaobc_periodic_is_refused():
    force = openmm.GBSAOBCForce()
    force.addParticle(0.1, 0.15, 0.8)
    force.setNonbondedMethod(openmm.GBSAOBCForce.CutoffPeriodic)
    with pytest.raises(UnsupportedForce, match="periodic"):
        compile_force(force)


def test_registry_of_compiled_forces():
    assert {"GBSAOBCForce", "CustomGBForce", "NonbondedForce"} <= set(supported_forces())
    assert TORCH_FORCES["GBSAOBCForce"] is GBSAOBCTerm
    assert len(gb_models()) == 2


# --- derivatives -------------------------------------------------------------------------------


def test_hessian_through_the_hand_written_gradient_is_exact():
    # create_graph=True (a Hessian, as the base initialization computes) recomputes through
    # autograd; compare with the Hessian of the plain autograd energy
    system = ala3_gbn2()
    x0 = torch.tensor(system.reference_positions[None]) + 0.003

    def energy(flat):
        return system.energy(flat.reshape(1, -1, 3))[0]

    def plain(flat):
        xt = atom_major(flat.reshape(1, -1, 3))
        return sum(
            t._evaluate(xt, t._cast(xt), False)[0] if hasattr(t, "_evaluate") else t(xt)
            for t in system._torch_terms.values()
        )[0]

    flat = x0.reshape(-1)[:30].clone()
    rest = x0.reshape(-1)[30:]
    h1 = torch.autograd.functional.hessian(lambda v: energy(torch.cat([v, rest])), flat)
    h2 = torch.autograd.functional.hessian(lambda v: plain(torch.cat([v, rest])), flat)
    torch.testing.assert_close(h1, h2, rtol=1e-9, atol=1e-6)


def test_batch_chunks_give_the_whole_batch_answer():
    # the pair terms evaluate a batch in chunks (`batch_chunk`, for the cache); the chunks must
    # not change the answer: energies and gradients equal one whole-batch pass to rounding
    system = ala5_obc2()
    rng = np.random.default_rng(3)
    x = torch.tensor(system.reference_positions[None] + rng.normal(0.0, 0.01, (2048, 62, 3)))
    xt = atom_major(x).requires_grad_(True)
    pair_terms = {n: t for n, t in system._torch_terms.items() if hasattr(t, "batch_chunk")
                  and t.batch_chunk(2048) < 2048}
    assert {type(t).__name__ for t in pair_terms.values()} == {"GBSAOBCTerm", "NonbondedTerm"}
    for name, term in pair_terms.items():
        energy = term(xt)
        (grad,) = torch.autograd.grad(energy.sum(), xt)
        whole_e, whole_g = term._evaluate(xt.detach(), term._cast(xt), True)
        torch.testing.assert_close(energy.detach(), whole_e, rtol=1e-12, atol=0, msg=name)
        torch.testing.assert_close(grad, whole_g, rtol=1e-12, atol=1e-12, msg=name)


def test_energy_without_gradient_needs_no_graph():
    system = ala5_obc2()
    x = torch.tensor(system.reference_positions[None])
    with torch.no_grad():
        e1 = system.energy(x)
    e2 = system.energy(x.requires_grad_(True))
    assert not e1.requires_grad and e2.requires_grad
    torch.testing.assert_close(e1, e2.detach(), rtol=0, atol=0)


def test_compile_energy_matches_eager():
    """`System.compile_energy` on a generalized-Born system (float64): the eager energies and
    forces."""
    system, eager = ala3_obc2(), ala3_obc2()
    x = torch.tensor(system.reference_positions[None] + 0.01).repeat(4, 1, 1)
    x = x + 0.003 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        system.compile_energy()
        xg = x.clone().requires_grad_(True)
        e1 = system.energy(xg)
        (g1,) = torch.autograd.grad(e1.sum(), xg)
    xe = x.clone().requires_grad_(True)
    e2 = eager.energy(xe)
    (g2,) = torch.autograd.grad(e2.sum(), xe)
    torch.testing.assert_close(e1, e2, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-9)


# --- the benchmark command on these systems ----------------------------------------------------


def test_bench_energy_on_a_registered_system(capsys):
    assert main(["bench", "energy", "--system", "ala3-obc2", "--batch-sizes", "8"]) == 0
    table = capsys.readouterr().out
    assert "| 8 | torch eager float32 |" in table and "openmm loop (Reference platform)" in table
    assert main(["bench", "energy", "--system", "harmonic", "--batch-sizes", "8"]) == 2
    assert "not a molecular system" in capsys.readouterr().err
