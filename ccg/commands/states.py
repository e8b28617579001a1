"""`ccg states`: populations of metastable states of a trained model, with standard errors.

Joint samples (z from a fitted product proposal, r from the flow) are reweighted into the
populations of per-residue Ramachandran states (alpha-R A, beta B, PPII P, alpha-L L, other O)
of a backbone torsion map, or of the two halves of each torsion (+: [0, pi), -: [-pi, 0)), and
into the most populated joint states. Writes an npz and a CSV (each atomically), optionally
panels of the projected free energy of each (phi, psi) pair.
"""

from __future__ import annotations

import argparse

import ccg
from ccg._checks import check_temperature
from ccg.commands._common import (
    add_overwrite,
    add_resources,
    apply_resources,
    check_number,
    check_output_file,
    check_plot_file,
)
from ccg.commands._joint import (
    add_joint_arguments,
    check_joint_arguments,
    draw_joint,
    load_flow_model,
)
from ccg.errors import ConfigError

SCHEMES = ("auto", "ramachandran", "halves")
"""State definitions: auto = ramachandran when the map has (phi, psi) pairs, else halves."""


def add_parser(sub) -> None:
    """Register `ccg states`."""
    p = sub.add_parser(
        "states", help="populations of metastable states (Ramachandran per residue, joint "
        "states) with standard errors",
        description="Populations of metastable states at one temperature by reweighting joint "
        "samples of a trained flow model: per residue alpha-R (A), beta (B), PPII (P), alpha-L "
        "(L), other (O) for (phi, psi) maps, or the halves + [0, pi) / - [-pi, 0) of each "
        "torsion; and the most populated joint states. Standard errors by the delta method.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model.pt written by `ccg train` (a torsion CG map)")
    p.add_argument("--temperature", type=float, required=True, help="T in K")
    p.add_argument("--scheme", choices=SCHEMES, default="auto",
                   help="state definitions (auto: ramachandran if the map has phi/psi pairs)")
    p.add_argument("--top", type=int, default=10, help="joint states to report")
    add_joint_arguments(p)
    p.add_argument("--grid", type=int, default=36, help="bins per axis of the --plot panels")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="states.npz", help="output npz")
    p.add_argument("--csv", help="output CSV (default: --out with .csv)")
    p.add_argument("--plot", help="also write panels of F projected onto each (phi, psi) pair "
                   "(halves: consecutive pairs of torsions) with the state regions")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_resources(p)
    p.set_defaults(func=run)


def _groups(model, scheme: str) -> list[ccg.StateGroup]:
    names = model.cg_map.cg_names
    atoms = getattr(model.cg_map, "torsion_atoms", None)
    if scheme == "auto":
        return ccg.default_groups(names, atoms)
    if scheme == "ramachandran":
        try:
            return ccg.ramachandran_groups(names, atoms)
        except ValueError as err:
            raise ConfigError(f"--scheme ramachandran: {err} Use --scheme halves.") from None
    return ccg.halves_groups(names)


def _panel_dims(groups: list[ccg.StateGroup], d: int) -> list[tuple[int, ...]]:
    pairs = []
    for g in groups:
        dims = sorted({i for regions in g.labels.values() for r in regions for i, _, _ in r.arcs})
        if len(dims) == 2 and tuple(dims) not in pairs:
            pairs.append(tuple(dims))
    return pairs or [tuple(range(i, min(i + 2, d))) for i in range(0, d, 2)]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run(args: argparse.Namespace) -> int:
    check_temperature(args.temperature, "--temperature")
    check_number(args.joint_samples, "--joint-samples", minimum=2)
    check_number(args.pilot_samples, "--pilot-samples", minimum=2)
    check_joint_arguments(args)
    check_number(args.top, "--top", minimum=0)
    check_number(args.grid, "--grid", minimum=2)
    out = check_output_file(args.out, "--out", overwrite=args.overwrite, suffixes=(".npz",))
    csv = check_output_file(args.csv or out.with_suffix(".csv"), "--csv",
                            overwrite=args.overwrite, suffixes=(".csv",))
    if csv.resolve() == out.resolve():
        raise ConfigError("--csv and --out name the same file; choose two names.")
    if args.plot:
        check_plot_file(args.plot, "--plot", overwrite=args.overwrite)
    device = apply_resources(args)
    model = load_flow_model(args.model, device, "ccg states")
    groups = _groups(model, args.scheme)
    samples = draw_joint(model, args, device)
    table = ccg.group_populations(samples, groups, top=args.top)
    ccg.save_state_table(table, out, csv)
    for g in groups:
        rows = [f"{s} {p:.3f}±{e:.3f}" for _, s, p, e in table.rows("group")
                if _ == g.name]
        print(f"  {g.name}: " + "  ".join(rows))
    joint = table.rows("joint")
    if joint:
        print("  most populated joint states: " + ", ".join(
            f"{s} {p:.3f}±{e:.3f}" for _, s, p, e in joint[:5]))
    print(f"wrote {out} and {csv}: {_count(len(groups), 'group')}, "
          f"{_count(len(joint), 'joint state')}")
    if args.plot:
        projections = [ccg.project_free_energy(samples, dims, n_bins=args.grid)
                       for dims in _panel_dims(groups, model.cg_dim)]
        ccg.plot_projections(projections, args.plot, groups=groups)
        print(f"plot: {args.plot} ({_count(len(projections), 'panel')})")
    return 0
