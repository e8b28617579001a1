"""CG maps of Ace-ACDEFGHIKLMNPQRSTVWY-Nme: dimensions, chirality constraints, ring closures.

For every named map: z and r dimensions, the chirality-constrained torsions, the bonds no
Z-matrix row carries (ring closures), their length after merge(split(x_ref)), and their
lengths in 10,000 samples of an untrained flow built by `ccg.build_model` (force-field base
widths at the minimized structure, as training starts) at 300 K.

    PYTHONPATH=. python experiments/peptide_maps/measure.py
"""

from __future__ import annotations

import time

import torch
from common import open_bonds, ring_closures

import ccg

SEQUENCE = "ACDEFGHIKLMNPQRSTVWY"
TORSIONS = ["phi2", "psi2", "omega3", "chi1:6", "chi2:6", "chi1:14", "SER17:CA-CB-OG-HG"]
MAPS = ["backbone-torsions", "ca", "heavy-atoms", "backbone", "torsions"]
FLOW = {"n_layers": 2, "hidden": 16, "n_blocks": 1, "n_bins": 4}


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    system = ccg.build_peptide(SEQUENCE, implicit_solvent="none").system
    top = system.topology
    ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    print(f"built {SEQUENCE}: {system.n_atoms} atoms, {top.n_residues} residues "
          f"({time.perf_counter() - start:.1f} s)")
    centers = ccg.find_chiral_centers(top)
    print(f"chiral centers ({len(centers)}):", " ".join(str(top.atom(c.center)) for c in centers))
    label = {a.index: f"{a.residue.name}{a.residue.resSeq}:{a.name}" for a in top.atoms}
    for name in MAPS:
        cfg = {"cg": name, **({"torsions": TORSIONS} if name == "torsions" else {})}
        config = ccg.RunConfig.from_dict({"map": cfg, "flow": FLOW, "train": {"steps": 1}})
        tick = time.perf_counter()
        torch.manual_seed(0)
        model = ccg.build_model(config, system=system)
        built = time.perf_counter() - tick
        cg_map = model.cg_map
        bonds = open_bonds(cg_map, top)
        rings = ring_closures(cg_map, top)
        print(f"\n{name}: z {cg_map.cg_dim}, r {cg_map.n_r}, chirality-constrained torsions "
              f"{len(cg_map.zmatrix.chiral)}, bonds not in the Z-matrix {len(bonds)} "
              f"(ring closures {len(rings)}); build_model {built:.0f} s")
        if not rings:
            continue
        idx = torch.tensor(rings)
        z, r, _ = cg_map.split(ref[None])
        x, _ = cg_map.merge(z, r)
        b_ref = (ref[idx[:, 0]] - ref[idx[:, 1]]).norm(dim=-1)
        b_merge = (x[0, idx[:, 0]] - x[0, idx[:, 1]]).norm(dim=-1)
        print(f"  merge(split(x_ref)): max |b - b_ref| = {(b_merge - b_ref).abs().max():.1e} nm")
        n = 10_000
        if bool(cg_map.z_circular.all()):
            zs = z.expand(n, -1).float()  # the reference's CG coordinates
        else:
            zs = cg_map.coarse_grain(ref[None]).expand(n, -1).float()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            rs, _ = model.flow.sample(model.context(zs, torch.full((n,), 300.0)), generator=gen)
            xs, _ = cg_map.merge(zs, rs)
        want = ccg.chirality_signs(ref[None].float(), centers)
        kept = (ccg.chirality_signs(xs, centers) == want).all(1).float().mean()
        print(f"  untrained flow at z_ref, 300 K, {n} samples: chirality kept in "
              f"{100 * float(kept):.2f} %")
        lengths = (xs[:, idx[:, 0]] - xs[:, idx[:, 1]]).norm(dim=-1).double()
        carried = [row for row in cg_map.zmatrix.rows
                   if top.atom(row[0]).element.symbol != "H"
                   and top.atom(row[1]).element.symbol != "H"][:40]
        cidx = torch.tensor([row[:2] for row in carried])
        c_len = (xs[:, cidx[:, 0]] - xs[:, cidx[:, 1]]).norm(dim=-1).double()
        c_dev = (c_len - (ref[cidx[:, 0]] - ref[cidx[:, 1]]).norm(dim=-1)).abs()
        print(f"  (for scale: heavy-atom bonds that are Z-matrix entries deviate by "
              f"median {c_dev.median():.4f} nm, 99 % {c_dev.quantile(0.99):.4f} nm)")
        for k, (a, b) in enumerate(rings):
            dev = (lengths[:, k] - b_ref[k]).abs()
            far = 100 * float((dev > 0.05).double().mean())
            print(f"  {label[a]}-{label[b].split(':')[1]}: b_ref {b_ref[k]:.4f} nm; |b - b_ref| "
                  f"median {dev.median():.3f}, 99 % {dev.quantile(0.99):.3f}, max "
                  f"{dev.max():.3f} nm; > 0.05 nm in {far:.1f} %")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
