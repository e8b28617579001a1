"""`ccg train`: train a backmapping flow data-free from the force field."""

from __future__ import annotations

import argparse

import ccg
from ccg._checks import check_compiler
from ccg.commands._common import (
    add_overwrite,
    add_resources,
    apply_resources,
    check_output_folder,
)
from ccg.systems.forcefields import IMPLICIT_SOLVENT_MODELS
from ccg.training.config import COMPILE_MODES, DEFAULT_MINUTES
from ccg.training.distributed import launched_world_size
from ccg.training.product_proposal import MAX_JUMP
from ccg.training.run import STRUCTURE_FILE, check_resume, read_initial_model

LOSS_RISE_WARNING = 2.0
"""nats: `ccg train` warns when the final 200-step mean loss is this far above the run's best."""



def add_parser(sub) -> None:
    """Register `ccg train`."""
    t, fc = ccg.TrainConfig, ccg.FlowConfig
    p = sub.add_parser(
        "train",
        help="train a backmapping flow data-free from the force field",
        description="Train q(r | z, T) by reverse KL against the atomistic energy (no MD data). "
        "With no arguments: alanine dipeptide, CG = (phi, psi), T in [300, 600] K, "
        f"{DEFAULT_MINUTES:g} minutes. Flags override the values of --config; the defaults "
        "shown are those of an empty config.",
    )
    p.add_argument("--config", help="TOML file with [system], [map], [flow], [train] tables")
    p.add_argument("--system", help=f"registered system: {', '.join(ccg.SYSTEMS.names())} "
                   "(default: alanine-dipeptide)")
    p.add_argument("--sequence", help="a peptide in one-letter codes (e.g. AAA): built with "
                   "ACE/NME caps, every hydrogen, minimized ([system] sequence)")
    p.add_argument("--pdb", help="a PDB file of the molecule ([system] pdb); with every "
                   "hydrogen unless --add-hydrogens")
    p.add_argument("--forcefield", nargs="+", metavar="XML",
                   help="OpenMM force-field files for --sequence / --pdb (default: "
                   "amber99sbildn.xml)")
    p.add_argument("--implicit-solvent", choices=list(IMPLICIT_SOLVENT_MODELS),
                   help="generalized Born model added to --forcefield, or none (vacuum); "
                   "default: obc2 for --sequence, the --forcefield files as listed for --pdb")
    p.add_argument("--add-hydrogens", action="store_true",
                   help="--pdb: add missing hydrogens (OpenMM Modeller, pH 7) and minimize")
    p.add_argument("--cg", help=f"CG map: {', '.join(ccg.CG_MAPS.names())} (default: the "
                   "system's own: phi-psi for molecules, split for analytic systems)")
    p.add_argument("--torsions", nargs="+", metavar="NAME",
                   help="--cg torsions: the CG torsions, e.g. phi2 psi2 chi1:3 2:-C-N-CA-C "
                   "(KIND:RES or RES:A-B-C-D; see docs/configuration.md)")
    p.add_argument("--cg-frames", help="bead maps: trajectory whose frames are the z proposal")
    p.add_argument("--contacts", action="store_true", default=None,
                   help="torsion maps: condition the flow on the backbone's soft contacts at z "
                   "too ([map] contacts; default: off)")
    p.add_argument("--minutes", type=float,
                   help=f"wall-time budget of the optimization (default: {DEFAULT_MINUTES:g})")
    p.add_argument("--steps", type=int, help="number of optimization steps (default: none)")
    p.add_argument("--t-min", type=float, help=f"lowest training temperature in K "
                   f"(default: {t.t_min:g})")
    p.add_argument("--t-max", type=float, help=f"highest training temperature in K "
                   f"(default: {t.t_max:g})")
    p.add_argument("--t-values", type=float, nargs="+", metavar="T",
                   help="train only at these temperatures (K) instead of the whole range")
    p.add_argument("--z-proposal", choices=ccg.Z_PROPOSALS.names(),
                   help="torsion maps: z uniform on the torus, or adaptive (more z where the "
                   f"flow's running estimate of F is low; default: {t.z_proposal})")
    p.add_argument("--n-z", type=int, help=f"distinct (z, T) per step (default: {t.n_z})")
    p.add_argument("--samples-per-z", type=int,
                   help=f"flow samples per (z, T) (default: {t.samples_per_z})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default: {t.lr:g})")
    p.add_argument("--backend", choices=ccg.FLOW_BACKENDS.names(),
                   help=f"flow layers (default: {fc.backend})")
    p.add_argument("--seed", type=int, help=f"random seed (default: {t.seed})")
    p.add_argument("--dtype", choices=["float32", "float64"],
                   help=f"training precision (default: {t.dtype})")
    p.add_argument("--compile", choices=list(COMPILE_MODES),
                   help="torch.compile the flow, the energy (peptides in implicit solvent on "
                   f"the CPU), or all of it; the first step compiles (default: {t.compile})")
    p.add_argument("--checkpoint-every", type=int, help=f"steps between checkpoints (default: "
                   f"{t.checkpoint_every}; also every {t.checkpoint_minutes:g} minutes)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from the flow weights of this model.pt (same system, map and "
                   "flow) with this run's training settings: fine-tuning ([train] init)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt (same configuration; "
                   "only minutes, steps, checkpointing, device and compile may change)")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_resources(p, device=None)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ccg.RunConfig:
    """A RunConfig from --config (if any) overridden by the command-line flags (validated)."""
    config = ccg.RunConfig.from_toml(args.config) if args.config else ccg.RunConfig()
    overrides = {
        ("system", "name"): args.system, ("system", "sequence"): args.sequence,
        ("system", "pdb"): args.pdb, ("system", "forcefield"): args.forcefield,
        ("system", "implicit_solvent"): args.implicit_solvent,
        ("system", "add_hydrogens"): args.add_hydrogens or None,
        ("map", "cg"): args.cg, ("map", "torsions"): args.torsions,
        ("map", "contacts"): args.contacts,
        ("map", "cg_frames"): args.cg_frames, ("train", "minutes"): args.minutes,
        ("train", "steps"): args.steps, ("train", "t_min"): args.t_min,
        ("train", "t_max"): args.t_max, ("train", "t_values"): args.t_values,
        ("train", "n_z"): args.n_z, ("train", "z_proposal"): args.z_proposal,
        ("train", "samples_per_z"): args.samples_per_z, ("train", "lr"): args.lr,
        ("flow", "backend"): args.backend, ("train", "seed"): args.seed,
        ("train", "dtype"): args.dtype, ("train", "checkpoint_every"): args.checkpoint_every,
        ("train", "compile"): args.compile, ("train", "init"): args.init,
    }
    given = [key for key in ("system", "sequence", "pdb") if getattr(args, key) is not None]
    if len(given) == 1:  # one molecule flag replaces the molecule of --config
        config.system.name = config.system.sequence = config.system.pdb = None
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    if (args.system or args.sequence or args.pdb) and not args.cg:
        config.system.validate()
        config.map.cg = config.system.default_map
    return config.validate()


def run(args: argparse.Namespace) -> int:
    """Validate everything first, then train and report where the outputs are."""
    config = config_from_args(args)
    device = apply_resources(args, config.train.device)
    if args.device is not None:
        config.train.device = args.device
    check_compiler(config.train.compile, device)
    if config.train.init is not None:
        read_initial_model(config)
    out = check_output_folder(args.out, "--out", overwrite=args.overwrite, resume=args.resume,
                              finished=("model.pt",), resumable=("checkpoint.pt",))
    if args.resume:
        check_resume(config, out)
    t = config.train
    budget = f"{t.minutes} min" if t.minutes is not None else f"{t.steps} steps"
    ranks = launched_world_size()
    per_rank = f" per process ({ranks} processes)" if ranks > 1 else ""
    threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
    if t.compile != "none":
        threads += f", compile = {t.compile}: the first step compiles"
    start = f", from the weights of {t.init}" if t.init is not None and not args.resume else ""
    print(f"training {config.system.label} (cg = {config.map.cg}) over T in "
          f"[{t.t_min}, {t.t_max}] K for {budget}, batch {t.n_z} x {t.samples_per_z}"
          f"{per_rank}, on {device} ({threads}){start} -> {out}/")
    _, summary = ccg.train(config, out, resume=args.resume, progress=not args.no_progress)
    print(f"done: {summary['steps']} steps in {summary['train_time_s']:.0f} s, final loss "
          f"{summary['final_loss']:.3f}, per-z ESS {summary['final_ess']:.2f}, "
          f"{summary['nonfinite_samples']} non-finite samples excluded")
    if summary.get("proposal_capped"):
        print(f"note: {summary['proposal_capped']} per-z free-energy estimates were more than "
              f"{MAX_JUMP:.0f} nats above everything the z proposal held in their temperature "
              "band and were capped there (outliers; a few early in training are normal).")
    if summary["loss_rise_from_best"] > LOSS_RISE_WARNING:
        print(f"warning: the loss ended {summary['loss_rise_from_best']:.1f} nats above its best "
              f"(200-step means; best up to step {summary['best_loss_step']}). The flow has "
              "probably jumped into a wrong state and stayed there, which the ESS cannot show: "
              "look at its samples, and train again with another --seed.")
    print(f"model:   {out / 'model.pt'}")
    print(f"metrics: {out / 'metrics.json'}")
    print(f"plot:    {out / 'training.png'}")
    if config.system.pdb is not None or config.system.sequence is not None:
        print(f"structure: {out / STRUCTURE_FILE}")
    return 0
