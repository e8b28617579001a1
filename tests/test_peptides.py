"""Peptides from a sequence or a PDB, the implicit-solvent choice, the bundled systems, errors."""

from __future__ import annotations

import json

import mdtraj
import numpy as np
import openmm
import pytest
import torch

import ccg
from ccg.errors import ConfigError
from ccg.systems import SYSTEMS, OpenMMSystem, build_peptide, forcefield_files, prepare_pdb
from ccg.systems.bundled import BUNDLED_RECIPES, bundled_pdb_path
from ccg.systems.peptides import peptide_heavy_atoms

# --- implicit solvent -> force-field files -------------------------------------------------------


@pytest.mark.parametrize(
    ("forcefield", "model", "expected"),
    [
        (("amber99sbildn.xml",), "obc2", ["amber99sbildn.xml", "amber99_obc.xml"]),
        (("amber96.xml",), "obc2", ["amber96.xml", "amber96_obc.xml"]),
        (("amber14-all.xml",), "obc2", ["amber14-all.xml", "implicit/obc2.xml"]),
        (("amber99sbildn.xml",), "gbn2", ["amber99sbildn.xml", "implicit/gbn2.xml"]),
        (("amber14-all.xml",), "none", ["amber14-all.xml"]),
        # an implicit-solvent file listed by the user is kept: the CustomGBForce form of OBC2
        (("amber99sbildn.xml", "implicit/obc2.xml"), "obc2",
         ["amber99sbildn.xml", "implicit/obc2.xml"]),
        ("amber99sbildn.xml", "obc2", ["amber99sbildn.xml", "amber99_obc.xml"]),
    ],
)
def test_forcefield_files(forcefield, model, expected):
    assert forcefield_files(forcefield, model) == expected


def test_forcefield_files_errors():
    with pytest.raises(ConfigError, match=r'Unknown implicit_solvent "obc".*obc2'):
        forcefield_files(("amber99sbildn.xml",), "obc")
    with pytest.raises(ConfigError, match=r"implicit/gbn2\.xml.*gbn2.*obc2"):
        forcefield_files(("amber99sbildn.xml", "implicit/gbn2.xml"), "obc2")
    with pytest.raises(ConfigError, match="implicit_solvent"):
        forcefield_files(("amber99sbildn.xml", "implicit/obc2.xml"), "none")
    with pytest.raises(ConfigError, match="forcefield"):
        forcefield_files((), "none")


# --- building from a sequence --------------------------------------------------------------------


def test_backbone_torsions_are_the_requested_ones():
    backbone = [(-70.0, 140.0), (-60.0, -45.0), (-150.0, 160.0)]
    topology, positions = peptide_heavy_atoms("AVS", backbone=backbone, chi1={2: 180.0})
    traj = mdtraj.Trajectory(positions[None], mdtraj.Topology.from_openmm(topology))
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    # phi of the three residues (ACE C - N - CA - C), psi of the three (N - CA - C - N next)
    np.testing.assert_allclose(np.degrees(phi[0][:3]), [b[0] for b in backbone], atol=1e-3)
    np.testing.assert_allclose(np.degrees(psi[0][:3]), [b[1] for b in backbone], atol=1e-3)
    _, chi1 = mdtraj.compute_chi1(traj)
    assert np.degrees(chi1[0][0]) == pytest.approx(180.0, abs=1e-3) or np.degrees(
        chi1[0][0]
    ) == pytest.approx(-180.0, abs=1e-3)
    assert [r.name for r in topology.residues()] == ["ACE", "ALA", "VAL", "SER", "NME"]


def test_build_peptide_capped_minimized(tmp_path):
    out = tmp_path / "aa.pdb"
    built = build_peptide("aa", pdb_out=out)  # lower case is accepted
    system = built.system
    assert isinstance(system, OpenMMSystem) and system.n_atoms == 22 + 10
    assert [r.name for r in system.topology.residues] == ["ACE", "ALA", "ALA", "NME"]
    assert set(system.term_paths.values()) == {"torch"}
    assert "GBSAOBCForce" in system.term_paths
    assert out.read_text() == built.pdb and "REMARK" in built.pdb and "PeptideBuilder" in built.pdb
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)
    # minimized: small forces at the reference structure, and the PDB holds that structure
    x = torch.tensor(system.reference_positions[None])
    assert system.forces(x).abs().max() < 5.0
    pdb = openmm.app.PDBFile(str(out))
    np.testing.assert_allclose(
        pdb.getPositions(asNumpy=True)._value, system.reference_positions, atol=1e-4
    )
    cfg = json.loads(json.dumps(system.config()))
    assert cfg["build"]["forcefield"] == ["amber99sbildn.xml", "amber99_obc.xml"]
    rebuilt = OpenMMSystem.from_config(cfg)
    assert torch.equal(rebuilt.energy(x), system.energy(x))


def test_build_peptide_free_termini_and_charged_residues():
    built = build_peptide(
        "KD", caps=False, implicit_solvent="gbn2", forcefield="amber14-all.xml",
        minimize_structure=False,
    )
    names = [a.name for a in built.system.topology.atoms]
    assert "OXT" in names and "H3" in names  # charged termini
    nonbonded = next(
        f for f in built.system.openmm_system.getForces() if isinstance(f, openmm.NonbondedForce)
    )
    charge = sum(nonbonded.getParticleParameters(i)[0]._value for i in range(len(names)))
    assert charge == pytest.approx(0.0, abs=1e-6)  # NH3+, COO-, Lys+, Asp-
    assert built.system.term_paths["CustomGBForce"] == "torch"


# --- building from a PDB --------------------------------------------------------------------------


def _without_hydrogens(tmp_path):
    pdb = openmm.app.PDBFile(str(bundled_pdb_path("ala3")))
    modeller = openmm.app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([a for a in modeller.topology.atoms() if a.element.symbol == "H"])
    path = tmp_path / "heavy.pdb"
    with open(path, "w") as handle:
        openmm.app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    return path


def test_prepare_pdb(tmp_path):
    built = prepare_pdb(bundled_pdb_path("ala5"), implicit_solvent="gbn2")
    assert built.system.n_atoms == 62
    assert "CustomGBForce" in built.system.term_paths
    np.testing.assert_allclose(
        built.system.reference_positions,
        openmm.app.PDBFile(str(bundled_pdb_path("ala5"))).getPositions(asNumpy=True)._value,
    )
    out = tmp_path / "with_h.pdb"
    heavy = _without_hydrogens(tmp_path)
    added = prepare_pdb(heavy, add_hydrogens=True, minimize_structure=True, pdb_out=out)
    assert added.system.n_atoms == 42 and out.is_file()
    assert "hydrogens added" in out.read_text()


# --- clear errors, nothing written ---------------------------------------------------------------


def test_unknown_residue_letter(tmp_path):
    out = tmp_path / "x.pdb"
    with pytest.raises(ConfigError, match=r"Unknown residue letter 'X' at position 2.*ACDEF"):
        build_peptide("AXA", pdb_out=out)
    assert not out.exists()
    with pytest.raises(ConfigError, match="sequence"):
        build_peptide("  ")


def test_pdb_without_hydrogens_needs_add_hydrogens(tmp_path):
    heavy = _without_hydrogens(tmp_path)
    out = tmp_path / "out.pdb"
    with pytest.raises(ConfigError, match=r"no hydrogen.*add_hydrogens=True.*--add-hydrogens"):
        prepare_pdb(heavy, pdb_out=out)
    assert not out.exists()


def test_forcefield_that_does_not_cover_the_molecule(tmp_path):
    out = tmp_path / "out.pdb"
    with pytest.raises(ConfigError, match=r"No template found in.*\['tip3p\.xml'\].*ACE"):
        build_peptide("AA", forcefield="tip3p.xml", implicit_solvent="none", pdb_out=out)
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"Unknown force-field file.*amber99sbXXX\.xml"):
        build_peptide("AA", forcefield="amber99sbXXX.xml", pdb_out=out)
    with pytest.raises(ConfigError, match="PDB file not found"):
        prepare_pdb(tmp_path / "missing.pdb")
    assert not out.exists()


def test_bad_backbone_and_chi1():
    with pytest.raises(ConfigError, match=r"2 \(phi, psi\) pairs"):
        build_peptide("AA", backbone=[(-60.0, -45.0)])
    with pytest.raises(ConfigError, match="no chi1"):
        build_peptide("AG", chi1={2: 60.0})
    with pytest.raises(ConfigError, match=r"positions 1\.\.2"):
        build_peptide("AV", chi1={3: 60.0})


# --- bundled systems ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n_atoms", "gb"),
    [
        ("ala3-obc2", 42, "GBSAOBCForce"),
        ("ala5-obc2", 62, "GBSAOBCForce"),
        ("ala3-gbn2", 42, "CustomGBForce"),
        ("ala5-gbn2", 62, "CustomGBForce"),
        ("chignolin-gbn2", 166, "CustomGBForce"),
    ],
)
def test_bundled_systems(name, n_atoms, gb):
    info = SYSTEMS.info(name)
    assert info == {"kind": "molecular", "default_map": "phi-psi"}
    system = SYSTEMS[name]()
    assert system.n_atoms == n_atoms
    assert set(system.term_paths.values()) == {"torch"} and gb in system.term_paths
    x = torch.tensor(system.reference_positions[None])
    # minimized (in OBC2 for the alanine peptides); rounding to the PDB's 0.001 A alone gives
    # bond forces of ~50 kJ/mol/nm, against ~1e4 in a structure off its minimum
    assert system.forces(x).abs().max() < 250.0
    assert ccg.build_system is not None  # the systems are reachable from the public API


def test_chignolin_is_a_beta_hairpin():
    traj = mdtraj.load(str(bundled_pdb_path("chignolin")))
    assert "".join(r.code for r in traj.topology.residues) == BUNDLED_RECIPES["chignolin"][
        "sequence"
    ]
    bonds = mdtraj.baker_hubbard(traj, distance_cutoff=0.25)
    atom = traj.topology.atom
    backbone = {
        (atom(d).residue.index + 1, atom(a).residue.index + 1)
        for d, _, a in bonds
        if atom(d).name == "N" and atom(a).name == "O"
    }
    assert (3, 8) in backbone  # Asp3 N-H ... O Thr8: the strands are paired
    ca = traj.topology.select("name CA")
    xyz = traj.xyz[0]
    assert np.linalg.norm(xyz[ca[2]] - xyz[ca[7]]) < 0.6  # Asp3 - Thr8 across the strands


def test_rebuilding_a_bundled_structure_reproduces_it():
    rebuilt = ccg.systems.build_bundled("ala3")
    bundled = openmm.app.PDBFile(str(bundled_pdb_path("ala3"))).getPositions(asNumpy=True)._value
    np.testing.assert_allclose(rebuilt.system.reference_positions, bundled, atol=2e-4)
