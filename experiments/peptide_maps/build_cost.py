"""Wall time of `ccg.build_model` for each named map of one peptide, the system built once
(the force-field base initialization, dominated by the reference Hessian).

    python experiments/peptide_maps/build_cost.py [--sequence ACDEFGHIKLMNPQRSTVWY] [--threads 1]

Capped peptide in vacuum (amber99sbildn), small flow; maps in the order given.
"""

from __future__ import annotations

import argparse
import time

import torch

import ccg

MAPS = ["backbone-torsions", "ca", "heavy-atoms", "backbone", "torsions"]
TORSIONS = ["phi2", "psi2", "omega3", "chi1:6", "chi2:6", "chi1:14", "SER17:CA-CB-OG-HG"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence", default="ACDEFGHIKLMNPQRSTVWY",
                        help="one-letter sequence (default: all 20 amino acids)")
    parser.add_argument("--maps", nargs="+", default=MAPS, help=f"default: {' '.join(MAPS)}")
    parser.add_argument("--threads", type=int, default=1, help="default: 1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    system = ccg.build_peptide(args.sequence, implicit_solvent="none").system
    total = 0.0
    for name in args.maps:
        cfg = {"cg": name, **({"torsions": TORSIONS} if name == "torsions" else {})}
        config = ccg.RunConfig.from_dict({
            "map": cfg, "flow": {"n_layers": 2, "hidden": 16, "n_blocks": 1, "n_bins": 4},
            "train": {"steps": 1}})
        tick = time.perf_counter()
        model = ccg.build_model(config, system=system)
        seconds = time.perf_counter() - tick
        total += seconds
        print(f"{name:<18} n_r = {model.cg_map.n_r:>4}: build_model {seconds:6.1f} s", flush=True)
    print(f"total {total:.1f} s ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
