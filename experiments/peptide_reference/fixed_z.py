"""Can the flow fit one z at all? Train it at a single Ramachandran state and temperature.

Usage: python experiments/peptide_reference/fixed_z.py --state A --steps 1000 --out DIR
       [--spread DEG] [--system ala5-obc2] [--temperature 300] [--n-layers 4] [--hidden 128]
       [--contacts] [--affine] [--threads 1]

The same model as `ccg train` builds for `--system` with the (phi, psi) map, but every
training z is the centre of `--state` (one Ramachandran letter per residue, or one for all,
as in `energy_excess.py`) and every T is `--temperature`: the conditional problem is reduced
to one p(r | z, T) (with `--spread`: z uniform within that many degrees of the centre in
every torsion, a small neighbourhood of conditions). Writes DIR/model.pt; read it with
`python energy_excess.py DIR/model.pt --states ...`. If a flow trained only at the helix still
sits far above the harmonic excess there while one trained only at the beta strand does not,
the helix is hard for the flow itself (its layers or its coordinates), not for the way
training draws z.
"""

from __future__ import annotations

import argparse
import math

import torch
from common import state_centres

import ccg


class CentreBox(ccg.ZProposal):
    """z uniform in a box of half-width `half` (rad) around `centre` [cg_dim], wrapped."""

    def __init__(self, centre: torch.Tensor, half: float):
        self.centre, self.half, self.cg_dim = centre, half, len(centre)

    def sample(self, n, generator, dtype, device, temperature_k=None) -> torch.Tensor:
        u = torch.rand(n, self.cg_dim, generator=generator, dtype=torch.float64,
                       device=generator.device).cpu()
        z = self.centre + (2 * u - 1) * self.half
        return torch.remainder(z + math.pi, 2 * math.pi).sub(math.pi).to(dtype=dtype,
                                                                          device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="ala5-obc2", help="a bundled peptide (default: "
                        "ala5-obc2)")
    parser.add_argument("--state", default="A", help="one letter per residue or one for all "
                        "(default: A)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default: 300)")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="degrees: draw each torsion uniformly within +- this of its "
                             "centre instead of at it (default: 0, one z)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default: 1000)")
    parser.add_argument("--n-layers", type=int, default=4, help="coupling layers (default: 4)")
    parser.add_argument("--hidden", type=int, default=128, help="conditioner width (default: 128)")
    parser.add_argument("--contacts", action="store_true",
                        help="condition on the backbone's soft contacts at z too ([map] contacts)")
    parser.add_argument("--affine", action="store_true",
                        help="end the flow with a context-only shift and width "
                             "([flow] conditional_affine)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder (model.pt, checkpoint.pt)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    @ccg.Z_PROPOSALS.register("fixed-state")
    def fixed_state(model, **_) -> ccg.ZProposal:
        """z at the centre of args.state, or uniform within +- args.spread degrees of it (a
        registered z proposal, so `ccg.train` runs exactly as `ccg train` does, automatic
        energy cut included)."""
        (_, z), = state_centres(model, [args.state])
        if args.spread <= 0:
            return ccg.FrameProposal(z[None])
        return CentreBox(z, math.radians(args.spread))

    config = ccg.RunConfig.from_dict({
        "system": {"name": args.system},
        "map": {"cg": "phi-psi", "contacts": args.contacts},
        "flow": {"n_layers": args.n_layers, "hidden": args.hidden,
                 "conditional_affine": args.affine},
        "train": {"steps": args.steps, "t_values": [args.temperature], "seed": args.seed,
                  "z_proposal": "fixed-state"},
    })
    _, summary = ccg.train(config, args.out)
    print(f"{args.state} at {args.temperature} K: {summary['steps']} steps in "
          f"{summary['train_time_s']:.0f} s, final loss {summary['final_loss']:.1f}, "
          f"per-z ESS {summary['final_ess']:.3f}, energy cut {summary['energy_cut_kt']:.0f} "
          f"k_BT; model: {args.out}/model.pt")


if __name__ == "__main__":
    main()
