"""Untrained samples of a bead map's flow: how far they land from the reference structure
(energy above it, largest atom displacement) and the map's largest lever |dx/dr|.

    python experiments/peptide_maps/ca_samples.py [--cg ca] [--sequence ACDEFGHIKLMNPQRSTVWY]
    python experiments/peptide_maps/ca_samples.py --sequence FPWYH --md runs/rings/md_xyz.npy

The peptide is capped (ACE/NME), minimized in amber99sbildn in vacuum; `build_model` gives the
flow its force-field base; 2,000 samples at 300 K, float64 energies. By default all at the
reference's z; with `--md` (frames [F, n_atoms, 3] nm, as `rings.py` saves them) 5 samples at
the z of each of the last 400 frames, and also the reference's own r put at those z.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import ccg

KT_300 = 2.494  # kJ/mol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cg", default="ca", help="named map (default: ca)")
    parser.add_argument("--sequence", default="ACDEFGHIKLMNPQRSTVWY",
                        help="one-letter sequence (default: all 20 amino acids)")
    parser.add_argument("--samples", type=int, default=2000, help="default: 2000")
    parser.add_argument("--md", default=None, help="MD frames (.npy) whose z to sample at")
    args = parser.parse_args()
    torch.set_num_threads(2)
    system = ccg.build_peptide(args.sequence, implicit_solvent="none").system
    ref = torch.as_tensor(system.reference_positions, dtype=torch.float64)
    config = ccg.RunConfig.from_dict({
        "map": {"cg": args.cg},
        "flow": {"n_layers": 2, "hidden": 16, "n_blocks": 1, "n_bins": 4},
        "train": {"steps": 1}})
    torch.manual_seed(0)
    model = ccg.build_model(config, system=system)
    cg_map = model.cg_map
    z0, r0, _ = cg_map.split(ref[None])
    shift = 1e-6 * torch.eye(cg_map.n_r, dtype=torch.float64)
    plus, _ = cg_map.merge(z0.expand(cg_map.n_r, -1), r0 + shift)
    minus, _ = cg_map.merge(z0.expand(cg_map.n_r, -1), r0 - shift)
    lever = ((plus - minus) / 2e-6).norm(dim=-1).amax()
    n = args.samples
    z = z0.expand(n, -1)
    u_ref = system.energy(ref[None])
    if args.md:
        frames = torch.as_tensor(np.load(args.md)[-400:], dtype=torch.float64)
        z = cg_map.coarse_grain(frames).repeat_interleave(5, dim=0)
        n = len(z)
        with torch.no_grad():
            x = cg_map.merge(z, r0.expand(n, -1))[0]
            own = (system.energy(x, validate=False) - u_ref) / KT_300
        print(f"the reference's r at the MD's z: median (U - U_ref) / kT {float(own.median()):.3g}")
    with torch.no_grad():
        context = model.context(z.float(), torch.full((n,), 300.0))
        r, _ = model.flow.sample(context, generator=torch.Generator().manual_seed(7))
        x = cg_map.merge(z, r.double())[0]
        excess = (system.energy(x, validate=False) - u_ref) / KT_300
    finite = torch.isfinite(excess)
    q = torch.quantile(excess[finite], torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    where = "the MD's z" if args.md else "the reference's z"
    print(f"{args.cg} map, {args.sequence}, at {where}: largest lever {float(lever):.3g} nm "
          f"per r unit; {n} samples, finite {float(finite.float().mean()):.3f}, "
          f"(U - U_ref) / kT 10/50/90 %: {float(q[0]):.3g} / {float(q[1]):.3g} / "
          f"{float(q[2]):.3g}")
    if not args.md:  # (at other z the structure differs from the reference anyway)
        shift_nm = (x - ref).norm(dim=-1).amax(dim=-1).median()
        print(f"median largest atom displacement from the reference {float(shift_nm):.3g} nm")


if __name__ == "__main__":
    main()
