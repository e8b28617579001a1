"""Ring closure and chirality of backmapped samples, untrained and after a short training,
against molecular dynamics of the same force field.

A ring's closing bond is no Z-matrix entry: its length follows from the ring's angles and
torsions. This script builds a ring-rich peptide (default Ace-FPWYH-Nme in vacuum), runs
Langevin MD at 300 K with OpenMM (the Boltzmann reference of every closing bond's length),
trains one model per CG map for a few minutes with `ccg.train` (bead maps use the MD's CG
frames as their z proposal), and backmaps held-out MD frames at 300 K: per closing bond the
deviation |b − b_0| from the force field's equilibrium length b_0 (HarmonicBondForce), for
MD, the untrained flow (as `ccg.build_model` starts it) and the trained flow, and the share
of samples that keep every chirality.

    python experiments/peptide_maps/rings.py --out runs/rings --minutes 8

Writes `rings.json` (every number printed) and `rings.png` (histograms of b − b_0).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import matplotlib
import mdtraj
import numpy as np
import openmm
import torch
from common import ring_closures
from openmm import unit

import ccg

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TOLERANCE_NM = 0.005


def equilibrium_lengths(system: openmm.System) -> dict[frozenset, float]:
    """b_0 (nm) of every HarmonicBondForce bond, by atom pair."""
    out = {}
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for n in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(n)
                out[frozenset((i, j))] = length.value_in_unit(unit.nanometer)
    return out


def run_md(omm_system: openmm.System, xyz: np.ndarray, *, ps: float, equilibrate_ps: float,
           seed: int) -> np.ndarray:
    """Langevin MD at 300 K (1 fs, 1/ps), one frame per 0.1 ps: positions [n, N, 3] nm."""
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                 0.001 * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(omm_system, integrator, openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "2"})
    context.setPositions(xyz)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(int(equilibrate_ps * 1000))
    frames = []
    for _ in range(int(ps * 10)):
        integrator.step(100)
        state = context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.asarray(frames)


@torch.no_grad()
def backmap(model: ccg.BackmappingModel, x_md: torch.Tensor, per_frame: int, seed: int):
    """x [n_frames · per_frame, N, 3] of flow samples at the MD frames' z, 300 K, their
    energies U (kJ/mol) and the mask of finite samples."""
    z = model.cg_map.coarse_grain(x_md.to(torch.float32)).repeat_interleave(per_frame, 0)
    gen = torch.Generator().manual_seed(seed)
    xs, us, ok = [], [], []
    for chunk in z.split(2048):
        out = model.sample(chunk, 300.0, generator=gen)
        xs.append(out.x)
        us.append(out.energy_kjmol)
        ok.append(out.finite)
    return torch.cat(xs).double(), torch.cat(us).double(), torch.cat(ok)


def deviations(x: torch.Tensor, bonds, b0: torch.Tensor) -> torch.Tensor:
    idx = torch.tensor(bonds)
    return (x[:, idx[:, 0]] - x[:, idx[:, 1]]).norm(dim=-1) - b0  # [n, n_bonds]


def summary(dev: torch.Tensor) -> dict:
    a = dev.abs()
    flat = a.flatten()
    return {"within_tolerance_all_bonds": float((a < TOLERANCE_NM).all(1).float().mean()),
            "within_tolerance_per_bond": float((flat < TOLERANCE_NM).float().mean()),
            "median_nm": float(flat.median()), "q99_nm": float(flat.quantile(0.99)),
            "q999_nm": float(flat.quantile(0.999)), "max_nm": float(flat.max()),
            "above_0.05_nm": float((flat > 0.05).float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sequence", default="FPWYH")
    parser.add_argument("--maps", nargs="+", default=["ca", "backbone-torsions"])
    parser.add_argument("--minutes", type=float, default=8.0, help="training per map")
    parser.add_argument("--md-ps", type=float, default=1000.0, help="MD after equilibration")
    parser.add_argument("--frames", type=int, default=2000, help="held-out MD frames backmapped")
    parser.add_argument("--per-frame", type=int, default=5, help="flow samples per frame")
    parser.add_argument("--energy-cut", type=float, default=None,
                        help="[train] energy_cut in k_BT (default: max(100, n_r/2 + "
                             "6 sqrt(n_r/2)), just above the physical range)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/rings"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    solvent = {"implicit_solvent": "none"}
    built = ccg.build_peptide(args.sequence, **solvent)
    system = built.system
    top = system.topology
    b0_of = equilibrium_lengths(system.openmm_system)
    u_ref = float(system.energy(torch.as_tensor(system.reference_positions)[None])[0])
    start = time.perf_counter()
    md = run_md(system.openmm_system, system.reference_positions, ps=args.md_ps,
                equilibrate_ps=100.0, seed=1)
    print(f"MD: {len(md)} frames of {args.md_ps:.0f} ps at 300 K in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    np.save(args.out / "md_xyz.npy", md.astype(np.float32))  # for a later look
    train_frames, held_out = md[: len(md) // 2], md[len(md) // 2:]
    step = max(1, len(held_out) // args.frames)
    x_md = torch.as_tensor(held_out[::step][: args.frames], dtype=torch.float64)
    ca = top.select("name CA")
    frames_file = args.out / "md_ca.pdb"  # CG frames (C-alpha atoms) for the bead-map proposal
    mdtraj.Trajectory(train_frames[::5, ca], top.subset(ca)).save_pdb(str(frames_file))
    centers = ccg.find_chiral_centers(top)
    signs_ref = ccg.chirality_signs(torch.as_tensor(system.reference_positions)[None], centers)

    results: dict = {"sequence": args.sequence, "md_frames": len(md), "held_out": len(x_md),
                     "per_frame": args.per_frame, "minutes": args.minutes, "maps": {}}
    histograms = {}
    for name in args.maps:
        cg_map = ccg.build_map(ccg.RunConfig.from_dict({"map": {"cg": name}}), system)
        bonds = ring_closures(cg_map, top)
        labels = [f"{top.atom(a).residue}:{top.atom(a).name}-{top.atom(b).name}"
                  for a, b in bonds]
        b0 = torch.tensor([b0_of[frozenset(p)] for p in bonds], dtype=torch.float64)
        entry = {"closing_bonds": labels, "md": summary(deviations(x_md, bonds, b0))}
        histograms[name] = {"md": deviations(x_md, bonds, b0)}
        cut = args.energy_cut or max(100.0, math.ceil(cg_map.n_r / 2
                                                      + 6 * math.sqrt(cg_map.n_r / 2)))
        entry["energy_cut_kt"] = cut
        map_cfg = {"cg": name, **({"cg_frames": str(frames_file)}
                                  if isinstance(cg_map, ccg.AtomSubsetMap) else {})}
        config = ccg.RunConfig.from_dict({
            "system": {"sequence": args.sequence, **solvent}, "map": map_cfg,
            # energy_cut above the physical spread of n_r fast coordinates (n_r / 2 +- ...)
            "train": {"minutes": args.minutes, "seed": 0, "energy_cut": cut}})
        torch.manual_seed(0)
        untrained = ccg.build_model(config, system=system).eval()
        tick = time.perf_counter()
        trained, info = ccg.train(config, args.out / name, progress=False)
        entry["training"] = {"steps": info.get("steps"), "wall_s": time.perf_counter() - tick,
                             "final_ess": info.get("final_ess"),
                             "energy_cut_kt": info.get("energy_cut_kt")}  # as trained
        for label, model in (("untrained", untrained), ("trained", trained)):
            x, energy, finite = backmap(model, x_md, args.per_frame, seed=2)
            dev = deviations(x, bonds, b0)
            kept = (ccg.chirality_signs(x.float(), centers) == signs_ref).all(1)
            # beta (U - U_ref) at 300 K against the training's energy_cut: above it the loss
            # sees a softened (log) energy and the flow's entropy can win
            excess = (energy[finite] - u_ref) / (ccg.KB_KJMOL_PER_K * 300.0)
            cut = info.get("energy_cut_kt") or cut
            entry[label] = {**summary(dev), "finite": float(finite.float().mean()),
                            "chirality_kept": float(kept.float().mean()),
                            "median_excess_energy_kt": float(excess.median()),
                            "share_above_energy_cut": float((excess > cut).float().mean())}
            histograms[name][label] = dev
        results["maps"][name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)

    tmp = args.out / "rings.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(args.out / "rings.json")
    fig, axes = plt.subplots(1, len(histograms), figsize=(5 * len(histograms), 3.6),
                             squeeze=False)
    edges = np.linspace(-0.03, 0.03, 121)
    for ax, (name, curves) in zip(axes[0], histograms.items(), strict=True):
        for label, dev in curves.items():
            ax.hist(dev.flatten().clamp(-0.03, 0.03).numpy(), bins=edges, density=True,
                    histtype="step", label=label)
        for sign in (-1, 1):
            ax.axvline(sign * TOLERANCE_NM, color="grey", lw=0.8, ls=":")
        ax.set(title=f"{name}: ring-closing bonds", xlabel="b − b₀ (nm)", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "rings.png", dpi=120)
    print(f"wrote {args.out / 'rings.json'} and {args.out / 'rings.png'}")


if __name__ == "__main__":
    main()
