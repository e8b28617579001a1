"""Tests for ccg.mapping: Z-matrix bijection, torsion / bead / coordinate maps, chirality."""

from __future__ import annotations

import json
import math
from importlib.resources import files

import mdtraj as md
import numpy as np
import pytest
import torch

from ccg.mapping import (
    HALF_RANGE_LOG_JAC,
    AtomSubsetMap,
    ChiralCenter,
    CoordinateSplitMap,
    TorsionMap,
    ZMatrix,
    bond_angle,
    chirality_signs,
    dihedral,
    find_chiral_centers,
    map_from_config,
    torsion_map_for,
)
from ccg.mapping.graph import graph_from_bonds

PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)
CA = 8
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available"))]
TOL = {torch.float64: {"rad": 1e-10, "nm": 1e-10}, torch.float32: {"rad": 1e-5, "nm": 1e-4}}


@pytest.fixture(scope="module")
def pdb():
    return md.load(str(files("ccg") / "data" / "alanine_dipeptide.pdb"))


@pytest.fixture(scope="module")
def ref(pdb):
    return torch.tensor(pdb.xyz[0], dtype=torch.float64)


@pytest.fixture(scope="module")
def tmap():
    return TorsionMap.alanine_dipeptide()


@pytest.fixture(scope="module")
def bmap(pdb, ref):
    return AtomSubsetMap.heavy_atoms(pdb.topology, ref)


@pytest.fixture(scope="module")
def backbone_map(pdb, ref):
    return AtomSubsetMap(pdb.topology, "backbone", ref)


@pytest.fixture(scope="module")
def zfull(pdb, ref):
    return ZMatrix.from_topology(pdb.topology, required_torsions=[PHI, PSI], reference_xyz=ref)


def perturbed(ref: torch.Tensor, n: int, scale: float = 0.02, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return ref[None] + scale * torch.randn((n, *ref.shape), generator=g, dtype=ref.dtype)


def random_rotation(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 0] *= det[:, None]
    return q


def kabsch_rmsd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMSD [B] of a onto b after the optimal proper rotation and translation."""
    a0, b0 = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    u, _, vt = torch.linalg.svd(a0.transpose(1, 2) @ b0)
    d = torch.sign(torch.linalg.det(u @ vt))
    s = torch.ones_like(u[:, 0])
    s[:, 2] = d
    rot = u @ torch.diag_embed(s) @ vt
    return ((a0 @ rot - b0) ** 2).sum(-1).mean(-1).sqrt()


def random_r(cg_map, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Bonds / angles near the reference, torsions (and half-range t') uniform on [-π, π),
    improper torsions uniform on [t_ref - π, t_ref + π) (their packing range)."""
    g = torch.Generator().manual_seed(seed)
    kinds = cg_map.r_kinds
    noise = torch.tensor([0.005 if k == "bond" else 0.05 for k in kinds], dtype=torch.float64)
    r = cg_map.r_reference[None] + noise * torch.randn(n, cg_map.n_r, generator=g,
                                                       dtype=torch.float64)
    tors = torch.tensor([k == "torsion" for k in kinds])
    improper = torch.tensor([k == "improper" for k in kinds])
    uni = (2 * torch.rand(n, cg_map.n_r, generator=g, dtype=torch.float64) - 1) * math.pi
    r = torch.where(improper, cg_map.r_reference[None] + uni, r)
    return torch.where(tors, uni, r).to(dtype)


# ---------------------------------------------------------------- Z-matrix
def test_zmatrix_structure(zfull, pdb):
    assert zfull.root == (6, 8, 14)
    assert PHI in zfull.rows or PHI[::-1] in zfull.rows
    assert PSI in zfull.rows or PSI[::-1] in zfull.rows
    # CB placed improper-style from (CA, N, C) and chirality-constrained
    cb_row = next(n for n, row in enumerate(zfull.rows) if row[0] == 10)
    assert zfull.rows[cb_row] == (10, 8, 6, 14)
    assert cb_row in dict(zfull.chiral)
    assert zfull.n_bonds == 21 and zfull.n_angles == 20 and zfull.n_torsions == 19
    assert zfull.n_generations <= 5
    assert "ALA2-CB" in zfull.table(pdb.topology)


def test_zmatrix_roundtrip_and_ranges(zfull, ref, pdb):
    traj = md.load(str(files("ccg") / "data" / "mdtraj_example_ala2.h5"))
    x = torch.cat([perturbed(ref, 16), torch.tensor(traj.xyz[::5], dtype=torch.float64)])
    ic, ld_fwd = zfull(x)
    assert ((ic.torsions >= -math.pi) & (ic.torsions < math.pi)).all()
    assert ((ic.angles >= 0) & (ic.angles <= math.pi)).all()
    x2, ld_inv = zfull.inverse(ic)
    assert (x2 - x).abs().max() < 1e-10
    torch.testing.assert_close(ld_fwd, -ld_inv, rtol=0, atol=1e-12)
    torch.testing.assert_close(zfull._inverse_loop(ic), x2, rtol=0, atol=1e-13)
    # torsions follow mdtraj's sign convention
    expected = md.compute_dihedrals(md.Trajectory(x.numpy(), pdb.topology), zfull.rows)
    diff = np.remainder(ic.torsions.numpy() - expected + np.pi, 2 * np.pi) - np.pi
    assert np.abs(diff).max() < 1e-5


def _ic_vector(zm: ZMatrix, flat_x: torch.Tensor) -> torch.Tensor:
    ic, _ = zm(flat_x.reshape(1, -1, 3))
    return torch.cat([ic.bonds, ic.angles, ic.torsions, ic.frame], -1)[0]


def _x_from_ic_vector(zm: ZMatrix, template, flat_ic: torch.Tensor) -> torch.Tensor:
    sizes = [zm.n_bonds, zm.n_angles, zm.n_torsions, 6]
    b, a, t, f = torch.split(flat_ic[None], sizes, dim=-1)
    return zm.inverse(template._replace(bonds=b, angles=a, torsions=t, frame=f))[0].reshape(-1)


def test_zmatrix_logdet_matches_autograd(zfull, ref):
    jacobian = torch.autograd.functional.jacobian
    for x in perturbed(ref, 3, seed=3):
        jac = jacobian(lambda v: _ic_vector(zfull, v), x.reshape(-1))
        assert jac.shape == (66, 66)
        ic, ld = zfull(x[None])
        torch.testing.assert_close(ld[0], torch.linalg.slogdet(jac)[1], rtol=0, atol=1e-9)
        v = _ic_vector(zfull, x.reshape(-1))
        jac_inv = jacobian(lambda u, ic=ic: _x_from_ic_vector(zfull, ic, u), v)
        torch.testing.assert_close(zfull.inverse(ic)[1][0], torch.linalg.slogdet(jac_inv)[1],
                                   rtol=0, atol=1e-9)
        torch.testing.assert_close(ld[0], -zfull.inverse(ic)[1][0], rtol=0, atol=1e-12)


def test_angle_gradients_finite_at_0_and_pi():
    a = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, 3, dtype=torch.float64)
    c = torch.tensor([[2.0, 0, 0], [-1.0, 0, 0]], dtype=torch.float64)
    theta = bond_angle(a, b, c)
    torch.testing.assert_close(theta, torch.tensor([0.0, math.pi], dtype=torch.float64))
    theta.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_zmatrix_builder_errors(pdb):
    with pytest.raises(ValueError, match="required torsions"):
        ZMatrix.from_topology(pdb.topology, required_torsions=[(0, 6, 14, 21)])
    with pytest.raises(ValueError, match="root"):
        ZMatrix.from_topology(pdb.topology, root=(0, 6, 8))  # 0 is not bonded to 6
    with pytest.raises(ValueError, match="entirely in the root / fixed"):
        ZMatrix.from_topology(pdb.topology, fixed_atoms=[4, 6, 8, 14, 1],
                              required_torsions=[PHI])
    two_fragments = graph_from_bonds(7, [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6)])
    with pytest.raises(ValueError, match="Cannot anchor"):
        ZMatrix.from_graph(two_fragments, fixed_atoms=[0, 1, 2, 4, 5])
    with pytest.raises(ValueError, match="one bonded molecule"):
        ZMatrix.from_graph(two_fragments)
    with pytest.raises(ValueError, match="not placed before"):
        ZMatrix(4, [(3, 0, 1, 2), (2, 3, 1, 0)], fixed_atoms=[0, 1])


# ---------------------------------------------------------------- torsion map
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torsion_map_cycle(tmap, dtype):
    tol = TOL[dtype]
    tm = tmap
    n = 64
    g = torch.Generator().manual_seed(5)
    z = ((2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1) * math.pi).to(dtype)
    r = random_r(tm, n, seed=6, dtype=dtype)
    x, lj = tm.merge(z, r)
    assert x.dtype == dtype and lj.shape == (n,)
    dz = torch.remainder(tm.coarse_grain(x) - z + math.pi, 2 * math.pi) - math.pi
    assert dz.abs().max() < tol["rad"]
    z2, r2, lj2 = tm.split(x)
    assert (torch.remainder(z2 - z + math.pi, 2 * math.pi) - math.pi).abs().max() < tol["rad"]
    circ = tm.r_circular
    dr = torch.where(circ, torch.remainder(r2 - r + math.pi, 2 * math.pi) - math.pi, r2 - r)
    assert dr.abs().max() < tol["rad"]
    torch.testing.assert_close(lj2, lj, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=0)


def test_torsion_map_split_merge_rigid(tmap, ref):
    x = perturbed(ref, 8, seed=7)
    z, r, lj = tmap.split(x)
    x2, lj2 = tmap.merge(z, r)
    assert kabsch_rmsd(x2, x).max() < 1e-10
    torch.testing.assert_close(lj, lj2, rtol=0, atol=1e-10)
    # log_jac = full Z-matrix log|det| minus the rigid-body rotation measure
    ic, ld_fwd = tmap.zmatrix(x)
    n_chiral = int(tmap.r_chiral.sum())
    expected = -ld_fwd - torch.log(torch.sin(ic.frame[:, 3])) + n_chiral * HALF_RANGE_LOG_JAC
    torch.testing.assert_close(lj, expected, rtol=0, atol=1e-10)
    assert n_chiral == 2  # CB and HA at ALA CA
    # canonical frame: r0 at the origin, r1 on +x, r2 in the xy plane with y > 0
    r0, r1, r2 = tmap.zmatrix.root
    assert x2[:, r0].abs().max() < 1e-12
    assert x2[:, r1, 1:].abs().max() < 1e-12 and (x2[:, r1, 0] > 0).all()
    assert x2[:, r2, 2].abs().max() < 1e-12 and (x2[:, r2, 1] > 0).all()


def test_torsion_map_declarations(tmap):
    assert tmap.cg_dim == 2 and tmap.n_r == 58 and tmap.cg_feature_dim == 4
    assert tmap.event_shape == (22, 3)
    assert tmap.z_circular.all()
    assert tmap.r_kinds[:21] == ["bond"] * 21 and tmap.r_kinds[21:41] == ["angle"] * 20
    kinds = tmap.r_kinds[41:]
    assert set(kinds) == {"torsion", "improper"} and len(kinds) == 17
    # free rotors (3 methyls, 2 peptide omegas) are circular; 10 branch torsions are improper
    assert kinds.count("improper") == 10 and int(tmap.r_circular.sum()) == 5
    assert int(tmap.r_chiral.sum()) == 2
    assert not tmap.r_circular[:41].any()
    assert tmap.r_reference.dtype == torch.float64
    chiral = (~tmap.r_circular[41:]).nonzero().flatten() + 41
    assert ((tmap.r_reference[chiral] > -math.pi) & (tmap.r_reference[chiral] < math.pi)).all()
    z = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    feats = tmap.cg_features(z)
    torch.testing.assert_close(feats[0], torch.tensor(
        [math.cos(0.3), math.sin(0.3), math.cos(-1.2), math.sin(-1.2)], dtype=torch.float64))


OMEGA_1, OMEGA_2 = (1, 4, 6, 8), (18, 16, 14, 8)  # CH3-C-N-CA (ACE), C(NME)-N-C-CA


def test_stiff_torsions_are_packed_as_real_coordinates(tmap, pdb, ref):
    """stiff_torsions (the peptide ω here): kind "improper", not circular, unwrapped around
    the reference; the cycle is exact, values beyond ±π from the reference merge to the same
    structure, and the config rebuilds the same map."""
    tm = TorsionMap(pdb.topology, {"phi": PHI, "psi": PSI}, ref, zmatrix=tmap.zmatrix,
                    stiff_torsions=[OMEGA_1, OMEGA_2])
    changed = [d for d in range(tm.n_r) if tm.r_kinds[d] != tmap.r_kinds[d]]
    assert len(changed) == 2 and all(tmap.r_kinds[d] == "torsion" for d in changed)
    assert [tm.r_kinds[d] for d in changed] == ["improper"] * 2
    assert bool(tmap.r_circular[changed].all()) and not bool(tm.r_circular[changed].any())
    assert int(tm.r_circular.sum()) == 3  # the methyl rotors
    torch.testing.assert_close(  # same torsions as before, modulo 2π
        torch.remainder(tm.r_reference - tmap.r_reference + math.pi, 2 * math.pi) - math.pi,
        torch.zeros(tm.n_r, dtype=torch.float64), rtol=0, atol=1e-12)
    n = 32
    g = torch.Generator().manual_seed(3)
    z = (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1) * math.pi
    r = random_r(tm, n, seed=4)
    x, lj = tm.merge(z, r)
    _, r2, lj2 = tm.split(x)
    torch.testing.assert_close(r2, r, rtol=0, atol=1e-10)  # packed range: no wrapping at all
    torch.testing.assert_close(lj2, lj, rtol=1e-10, atol=0)
    turned = r.clone()
    turned[:, changed] += 2 * math.pi
    torch.testing.assert_close(tm.merge(z, turned)[0], x, rtol=0, atol=1e-10)
    rebuilt = map_from_config(json.loads(json.dumps(tm.config())), pdb.topology)
    assert rebuilt.stiff_torsions == [OMEGA_1, OMEGA_2]
    for a, b in zip(rebuilt.split(x), tm.split(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not rows of the Z-matrix"):
        TorsionMap(pdb.topology, {"phi": PHI, "psi": PSI}, ref, zmatrix=tmap.zmatrix,
                   stiff_torsions=[(0, 1, 2, 3)])


def test_bead_map_stiff_torsions_are_packed_as_real_coordinates(backbone_map, pdb, ref):
    """AtomSubsetMap(stiff_torsions=...): the same packing as TorsionMap's; exact round trip,
    the same log|J| as the circular map, and the config rebuilds the same map."""
    zm = backbone_map.zmatrix
    first = backbone_map.layout.n_bonds + backbone_map.layout.n_angles
    chiral = {t for t, _ in zm.chiral}
    rows = [t for d, t in enumerate(backbone_map.layout.r_torsion_rows)
            if backbone_map.r_kinds[first + d] == "torsion" and t not in chiral]
    quads = [zm.rows[t] for t in rows[:2]]
    bm = AtomSubsetMap(pdb.topology, "backbone", ref, zmatrix=zm, stiff_torsions=quads)
    changed = [d for d in range(bm.n_r) if bm.r_kinds[d] != backbone_map.r_kinds[d]]
    assert len(changed) == 2 and [bm.r_kinds[d] for d in changed] == ["improper"] * 2
    assert not bool(bm.r_circular[changed].any())
    x = perturbed(ref, 16, scale=0.01, seed=5)
    z, r, log_jac = bm.split(x)
    x2, log_jac2 = bm.merge(z, r)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_jac2, log_jac, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_jac, backbone_map.split(x)[2], rtol=0, atol=1e-10)
    rebuilt = map_from_config(json.loads(json.dumps(bm.config())), pdb.topology)
    assert rebuilt.stiff_torsions == [tuple(q) for q in quads]
    for a, b in zip(rebuilt.split(x), bm.split(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not rows of the Z-matrix"):
        AtomSubsetMap(pdb.topology, "backbone", ref, zmatrix=zm, stiff_torsions=[(0, 1, 2, 3)])


def test_torsion_map_matches_mdtraj(pdb):
    traj = md.load(str(files("ccg") / "data" / "mdtraj_example_ala2.h5"))
    tm = torsion_map_for(traj.topology, ("phi", "psi"), pdb.xyz[0])
    assert tm.torsion_atoms == [PHI, PSI] and tm.torsion_names == ["phi", "psi"]
    x = torch.tensor(traj.xyz, dtype=torch.float64)
    expected = np.stack([md.compute_phi(traj)[1][:, 0], md.compute_psi(traj)[1][:, 0]], 1)
    for z in (tm.coarse_grain(x), tm.split(x)[0]):
        diff = np.remainder(z.numpy() - expected + np.pi, 2 * np.pi) - np.pi
        assert np.abs(diff).max() < 1e-5
        assert (z >= -math.pi).all() and (z < math.pi).all()
    z32 = tm.coarse_grain(x.float())
    assert z32.dtype == torch.float32


# ---------------------------------------------------------------- bead maps
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bead_map_cycle(bmap, ref, dtype):
    tol = TOL[dtype]
    x = perturbed(ref, 32, seed=9).to(dtype)
    z, r, lj = bmap.split(x)
    assert z.shape == (32, 30) and r.shape == (32, 36)
    x2, lj2 = bmap.merge(z, r)
    assert (x2 - x).abs().max() < tol["nm"]
    torch.testing.assert_close(lj2, lj, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
    r_new = random_r(bmap, 32, seed=10, dtype=dtype)
    x3, _ = bmap.merge(z, r_new)
    assert (bmap.coarse_grain(x3) - z).abs().max() < tol["nm"]
    z3, r3, _ = bmap.split(x3)
    assert (z3 - z).abs().max() < tol["nm"]
    dr = torch.where(bmap.r_circular, torch.remainder(r3 - r_new + math.pi, 2 * math.pi)
                     - math.pi, r3 - r_new)
    assert dr.abs().max() < tol["rad"]


def test_bead_map_logjac_autograd(bmap, ref):
    x = perturbed(ref, 2, seed=11)
    z, r, lj = bmap.split(x)
    for b in range(2):

        def merge(flat: torch.Tensor) -> torch.Tensor:
            return bmap.merge(flat[None, :30], flat[None, 30:])[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(merge, torch.cat([z[b], r[b]]))
        assert jac.shape == (66, 66)
        _, logdet = torch.linalg.slogdet(jac)
        torch.testing.assert_close(lj[b], logdet, rtol=0, atol=1e-9)


def test_bead_map_equivariance(bmap, ref):
    n = 16
    z = bmap.coarse_grain(perturbed(ref, n, seed=12))
    r = random_r(bmap, n, seed=13)
    rot = random_rotation(n)
    shift = torch.randn(n, 1, 3, dtype=torch.float64)
    x, lj = bmap.merge(z, r)
    zr = (z.reshape(n, -1, 3) @ rot.transpose(1, 2) + shift).reshape(n, -1)
    xr, ljr = bmap.merge(zr, r)
    torch.testing.assert_close(xr, x @ rot.transpose(1, 2) + shift, rtol=0, atol=1e-12)
    torch.testing.assert_close(ljr, lj)
    feats = bmap.cg_features(z)
    torch.testing.assert_close(bmap.cg_features(zr), feats, rtol=0, atol=1e-9)
    mirrored = bmap.cg_features(-z)
    assert not torch.allclose(mirrored, feats, atol=1e-3)  # not reflection invariant
    assert feats.shape == (n, bmap.cg_feature_dim)


def test_bead_map_declarations(bmap, backbone_map, pdb):
    heavy = [a.index for a in pdb.topology.atoms if a.element.symbol != "H"]
    assert bmap.cg_atom_indices == heavy
    assert bmap.cg_dim + bmap.n_r == 66
    assert backbone_map.cg_atom_indices == [4, 5, 6, 8, 14, 15, 16, 18]
    assert not bmap.z_circular.any()


# ---------------------------------------------------------------- chirality
def test_chiral_centers(pdb):
    centers = find_chiral_centers(pdb.topology)
    assert [c.center for c in centers] == [CA]
    assert centers[0].neighbors[0] == 6 and set(centers[0].neighbors[1:3]) == {10, 14}


@pytest.mark.parametrize("which", ["torsion", "heavy", "backbone"])
def test_chirality_kept_over_random_r(which, tmap, bmap, backbone_map, ref, pdb):
    cg_map = {"torsion": tmap, "heavy": bmap, "backbone": backbone_map}[which]
    n = 10_000
    centers = find_chiral_centers(pdb.topology)
    ref_sign = chirality_signs(ref[None], centers)
    r = random_r(cg_map, n, seed=14)
    if which == "torsion":
        z = (2 * torch.rand(n, 2, generator=torch.Generator().manual_seed(15),
                            dtype=torch.float64) - 1) * math.pi
    else:
        z = cg_map.coarse_grain(ref[None]).expand(n, -1)
    x, _ = cg_map.merge(z, r)
    assert (chirality_signs(x, centers) == ref_sign).all()
    # every chirality-constrained torsion keeps its reference sign
    for t, sign in cg_map.zmatrix.chiral:
        q = cg_map.zmatrix.rows[t]
        phi = dihedral(*(x[:, a] for a in q))
        assert (torch.sign(phi) == sign).all()


def test_without_chirality_constraint_d_appears(pdb, ref):
    """Negative control: free torsions at CA produce the wrong chirality."""
    zm = ZMatrix.from_topology(pdb.topology, required_torsions=[PHI, PSI], reference_xyz=ref,
                               chirality=False)
    free = TorsionMap(pdb.topology, {"phi": PHI, "psi": PSI}, ref, zmatrix=zm)
    assert not free.r_chiral.any()
    z = torch.zeros(2000, 2, dtype=torch.float64)
    x, _ = free.merge(z, random_r(free, 2000, seed=20))
    centers = find_chiral_centers(pdb.topology)
    wrong = (chirality_signs(x, centers) != chirality_signs(ref[None], centers)).float().mean()
    assert 0.2 < wrong < 0.8


@pytest.mark.parametrize("which", ["torsion", "heavy"])
def test_mirror_image_leaves_support(which, tmap, bmap, ref, pdb):
    cg_map = tmap if which == "torsion" else bmap
    x = perturbed(ref, 4, scale=0.005, seed=16)
    mirror = x * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    centers = find_chiral_centers(pdb.topology)
    assert (chirality_signs(mirror, centers) == -chirality_signs(x, centers)).all()
    _, r, _ = cg_map.split(x)
    _, r_mirror, _ = cg_map.split(mirror)
    chiral = cg_map.r_chiral
    assert chiral.any()
    assert torch.equal(chiral, ~cg_map.r_circular & torch.tensor(
        [k == "torsion" for k in cg_map.r_kinds]))
    assert ((r[:, chiral] >= -math.pi) & (r[:, chiral] < math.pi)).all()
    assert (r_mirror[:, chiral] < -math.pi).all()


def test_chirality_signs_rotation_invariant(ref):
    centers = [ChiralCenter(CA, (6, 14, 10, 9))]
    x = ref[None].expand(4, -1, -1)
    rot = random_rotation(4, seed=17)
    torch.testing.assert_close(chirality_signs(x @ rot.transpose(1, 2), centers),
                               chirality_signs(x, centers))


# ---------------------------------------------------------------- analytic split, configs
def test_coordinate_split_map():
    m = CoordinateSplitMap(5, 2)
    x = torch.randn(7, 5)
    z, r, lj = m.split(x)
    assert torch.equal(z, x[:, :2]) and torch.equal(r, x[:, 2:]) and torch.equal(lj, torch.zeros(7))
    x2, lj2 = m.merge(z, r)
    assert torch.equal(x2, x) and torch.equal(lj2, torch.zeros(7))
    assert torch.equal(m.cg_features(z), z) and m.r_kinds == ["coord"] * 3
    assert not m.r_circular.any()
    assert torch.equal(m.r_reference, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="cg_dim < dim"):
        CoordinateSplitMap(2, 2)


def test_config_roundtrip(tmap, bmap, pdb, ref):
    x = perturbed(ref, 3, seed=18)
    for cg_map in (tmap, bmap):
        cfg = json.loads(json.dumps(cg_map.config()))
        rebuilt = map_from_config(cfg, pdb.topology)
        for a, b in zip(rebuilt.split(x), cg_map.split(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    split_cfg = json.loads(json.dumps(CoordinateSplitMap(3, 1).config()))
    assert map_from_config(split_cfg).n_r == 2
    with pytest.raises(ValueError, match='Invalid map type "nope"'):
        map_from_config({"type": "nope"}, pdb.topology)
    with pytest.raises(ValueError, match=r"needs the mdtraj\.Topology"):
        map_from_config(json.loads(json.dumps(tmap.config())), None)


# ---------------------------------------------------------------- bad input
def test_bad_inputs(tmap, bmap, pdb, ref):
    with pytest.raises(ValueError, match="this system has 22 atoms"):
        tmap.split(torch.zeros(2, 21, 3, dtype=torch.float64))
    x = ref[None].clone()
    x[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bmap.split(x)
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        tmap.coarse_grain(ref)
    with pytest.raises(ValueError, match=r"Expected z of shape \[B, 2\]"):
        tmap.merge(torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, 58, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"Expected r of shape \[B, 58\]"):
        tmap.merge(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 57, dtype=torch.float64))
    with pytest.raises(ValueError, match="same batch size"):
        tmap.merge(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(4, 58, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        bmap.coarse_grain(torch.zeros(1, 22, 3, dtype=torch.long))
    with pytest.raises(ValueError, match='Unknown torsion name "phy"'):
        torsion_map_for(pdb.topology, ("phy",), ref)
    with pytest.raises(ValueError, match="reference_xyz is required"):
        TorsionMap(pdb.topology, {"phi": PHI}, None)
    bad_cg = [([0, 99, 4], ValueError, r"in \[0, 22\)"), ([4, 4, 6], ValueError, "duplicate"),
              ([4, 6], ValueError, "at least 3"), ("sidechain", ValueError, "Unknown cg_atoms"),
              ([1.5, 4, 6], TypeError, "integer"), (list(range(22)), ValueError, "all 22")]
    for cg_atoms, err, match in bad_cg:
        with pytest.raises(err, match=match):
            AtomSubsetMap(pdb.topology, cg_atoms, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_device(device, pdb, ref):
    tm = TorsionMap.alanine_dipeptide().to(device)
    bm = AtomSubsetMap.heavy_atoms(pdb.topology, ref).to(device)
    x = perturbed(ref, 4, seed=19).to(device)
    for cg_map in (tm, bm):
        z, r, lj = cg_map.split(x)
        assert z.device.type == device and lj.device.type == device
        x2, _ = cg_map.merge(z, r)
        assert x2.device.type == device
        cg_map.cg_features(z)
    if device == "cpu" and torch.cuda.is_available():  # pragma: no cover
        with pytest.raises(ValueError, match="device"):
            tm.split(x.cuda())
