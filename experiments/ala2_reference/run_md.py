"""Reference MD of exactly the ccg target: alanine dipeptide, amber99sbildn, vacuum, NoCutoff,
no constraints (the system `ccg.alanine_dipeptide()` builds).

Langevin dynamics (LangevinMiddleIntegrator, 1 fs, friction 1/ps) on OpenMM's Reference
platform (the fastest for 22 atoms on a CPU), started from the bundled minimized structure.
Every `--save-every` steps the (phi, psi) torsions are recorded; every `--frame-every` steps
the full configuration is kept. Convergence is checked by comparing the free-energy surfaces
of the first and second halves of the run (analyze.py).

Usage:
    python experiments/ala2_reference/run_md.py --temperature 300 --ns 100 --out ref_300K.npz

Writes an npz (complete or not at all) with:
    phi_psi [n, 2] float32 (rad), dt_ps (spacing), temperature_k, ns, seed,
    frames [m, 22, 3] float32 (nm) every frame_every steps (held-out MD frames for backmapping),
    wall_s, steps_per_s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mdtraj
import numpy as np
import openmm
from openmm import unit
from tqdm.auto import tqdm

import ccg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temperature", type=float, required=True)
    parser.add_argument("--ns", type=float, default=100.0, help="simulated time (ns)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between (phi, psi)")
    parser.add_argument("--frame-every", type=int, default=20000, help="steps between frames")
    parser.add_argument("--equilibrate-ps", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    system = ccg.alanine_dipeptide()
    dt_fs = 1.0
    integrator = openmm.LangevinMiddleIntegrator(
        args.temperature * unit.kelvin, 1.0 / unit.picosecond, dt_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(args.seed)
    context = openmm.Context(system.openmm_system, integrator,
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(system.reference_positions)
    context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    integrator.step(int(args.equilibrate_ps * 1000 / dt_fs))

    n_steps = int(args.ns * 1e6 / dt_fs)
    n_save = n_steps // args.save_every
    per_frame = args.frame_every // args.save_every
    xyz = np.empty((n_save, system.n_atoms, 3), dtype=np.float32)
    start = time.perf_counter()
    for k in tqdm(range(n_save), desc=f"MD {args.temperature:.0f} K", unit="save",
                  mininterval=5.0):
        integrator.step(args.save_every)
        state = context.getState(getPositions=True)
        xyz[k] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    wall = time.perf_counter() - start
    traj = mdtraj.Trajectory(xyz, system.topology)
    phi = mdtraj.compute_phi(traj)[1][:, 0]
    psi = mdtraj.compute_psi(traj)[1][:, 0]
    partial = Path(args.out).with_name(Path(args.out).name + ".partial")  # renamed when complete
    with open(partial, "wb") as fh:
        np.savez_compressed(
            fh, phi_psi=np.stack([phi, psi], 1).astype(np.float32),
            dt_ps=np.array(args.save_every * dt_fs / 1000),
            temperature_k=np.array(args.temperature),
            ns=np.array(args.ns), seed=np.array(args.seed), frames=xyz[::per_frame],
            wall_s=np.array(wall), steps_per_s=np.array(n_steps / wall))
    partial.replace(args.out)
    print(f"{args.out}: {args.ns} ns at {args.temperature} K in {wall:.0f} s "
          f"({n_steps / wall:,.0f} steps/s), {n_save} (phi, psi) samples, "
          f"{len(xyz[::per_frame])} frames")


if __name__ == "__main__":
    main()
