"""Untrained samples of a bead map's flow at the reference z: how far they land from the
reference structure (energy above it, largest atom displacement, largest lever |dx/dr|).

    python experiments/peptide_maps/ca_samples.py [--cg ca] [--sequence ACDEFGHIKLMNPQRSTVWY]

The peptide is capped (ACE/NME), minimized in amber99sbildn in vacuum; `build_model` gives the
flow its force-field base; 2,000 samples at 300 K, float64 energies.
"""

from __future__ import annotations

import argparse

import torch

import ccg

KT_300 = 2.494  # kJ/mol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cg", default="ca", help="named map (default: ca)")
    parser.add_argument("--sequence", default="ACDEFGHIKLMNPQRSTVWY",
                        help="one-letter sequence (default: all 20 amino acids)")
    parser.add_argument("--samples", type=int, default=2000, help="default: 2000")
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
    z = z0.float().expand(n, -1)
    with torch.no_grad():
        context = model.context(z, torch.full((n,), 300.0))
        r, _ = model.flow.sample(context, generator=torch.Generator().manual_seed(7))
        x = cg_map.merge(z0.expand(n, -1), r.double())[0]
        excess = (system.energy(x, validate=False) - system.energy(ref[None])) / KT_300
    finite = torch.isfinite(excess)
    q = torch.quantile(excess[finite], torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    shift_nm = (x - ref).norm(dim=-1).amax(dim=-1).median()
    print(f"{args.cg} map, {args.sequence}: largest lever {float(lever):.3g} nm per r unit; "
          f"{n} samples, finite {float(finite.float().mean()):.3f}, (U - U_ref) / kT "
          f"10/50/90 %: {float(q[0]):.3g} / {float(q[1]):.3g} / {float(q[2]):.3g}; median "
          f"largest displacement {float(shift_nm):.3g} nm")


if __name__ == "__main__":
    main()
