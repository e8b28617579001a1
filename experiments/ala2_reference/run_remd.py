"""Temperature replica exchange (REMD) of exactly the ccg target: alanine dipeptide,
amber99sbildn, vacuum, NoCutoff, no constraints (`ccg.alanine_dipeptide()`).

One OpenMM Context per temperature on the Reference platform (single-threaded), each with a
LangevinMiddleIntegrator (1 fs, friction 1/ps) at its fixed temperature. Every `--exchange-ps`
the configurations are recorded ((phi, psi) of the configuration at each temperature) and
neighbour swaps are attempted, alternating even pairs (0-1, 2-3, ...) and odd pairs (1-2,
3-4, ...), with the Metropolis criterion

    accept with probability min(1, exp[(1/kT_i - 1/kT_j) (U_i - U_j)]),

where U_i is the potential energy of the configuration at temperature T_i. An accepted swap
exchanges positions and velocities between the two contexts, the velocities rescaled by
sqrt(T_new / T_old). Each context starts from the bundled minimized structure and is
equilibrated at its own temperature for `--equilibrate-ps` before exchanges begin.

The default ladder has 8 temperatures, geometric between 300 and 450 K (4 intervals) and
between 450 and 600 K (3 intervals), so it holds 300, 450 and 600 K exactly:
    300.0, 332.0, 367.4, 406.6, 450.0, 495.3, 545.1, 600.0 K.

Usage:
    python experiments/ala2_reference/run_remd.py --ns 20 --seed 1 --out data/remd.npz

Writes an npz (complete or not at all) with:
    temperatures_k [n_T]; phi_psi [n_T, n, 2] float32 (rad), sample k of temperature i is the
    configuration at T_i after (k + 1) * exchange_ps of production (before that step's swap);
    energies_kjmol [n_T, n] float64 (potential energy of the same configurations);
    replica_at [n, n_T] int16 (which replica - numbered by starting temperature - sat at each
    temperature when sample k was taken); accepted [n_T - 1], attempted [n_T - 1] (per pair
    i, i+1); acceptance [n_T - 1]; frames [n_T, m, 22, 3] float32 (nm) every `--frame-every`
    samples; samples_per_ps [n_T] (every temperature gets one sample per exchange interval);
    dt_ps (sample spacing); steps_per_sample (integration steps per replica between samples);
    replica_steps_per_sample (= steps_per_sample * n_T, the MD cost of one sample of the
    whole ladder: the first k samples of any temperature cost k * replica_steps_per_sample
    steps); ns (per replica), seed, wall_s, steps_per_s (all replicas' steps per second).
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

KB_KJ_PER_MOL_K = 0.0083144626181532
"""Boltzmann constant in kJ / (mol K) (R of the 2019 SI)."""


def default_ladder() -> np.ndarray:
    """300 -> 450 K geometric in 4 steps, 450 -> 600 K geometric in 3 steps (8 temperatures)."""
    low = 300.0 * 1.5 ** (np.arange(4) / 4)
    high = 450.0 * (600.0 / 450.0) ** (np.arange(4) / 3)
    return np.concatenate([low, high])


def dihedrals(xyz: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Torsion angles (rad, in (-pi, pi]) of atoms `quads` [k, 4] in frames xyz [..., n, 3].

    Same convention as mdtraj.compute_dihedrals: with b1 = x1 - x0, b2 = x2 - x1,
    b3 = x3 - x2, the angle is atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3)).
    """
    p = xyz[..., quads, :]                      # [..., k, 4, 3]
    b1 = p[..., 1, :] - p[..., 0, :]
    b2 = p[..., 2, :] - p[..., 1, :]
    b3 = p[..., 3, :] - p[..., 2, :]
    n1 = np.cross(b1, b2)
    n2 = np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n2, axis=-1)
    x = np.sum(n1 * n2, axis=-1)
    return np.arctan2(y, x)


def phi_psi_atoms(topology: mdtraj.Topology, xyz: np.ndarray) -> np.ndarray:
    """The [2, 4] atom indices of phi (C-N-CA-C) and psi (N-CA-C-N), as mdtraj finds them."""
    traj = mdtraj.Trajectory(xyz[None].astype(np.float32), topology)
    phi = mdtraj.compute_phi(traj)[0]
    psi = mdtraj.compute_psi(traj)[0]
    if len(phi) != 1 or len(psi) != 1:
        raise ValueError(f"expected one phi and one psi; got {len(phi)} and {len(psi)}")
    return np.concatenate([phi, psi]).astype(np.int64)


def exchange_pairs(attempt: int, n_temps: int) -> range:
    """Lower indices i of the pairs (i, i + 1) tried at this attempt: even, then odd, ..."""
    return range(attempt % 2, n_temps - 1, 2)


def metropolis_log_ratio(beta_i: float, beta_j: float, u_i: float, u_j: float) -> float:
    """log acceptance ratio for swapping the configurations at beta_i and beta_j."""
    return (beta_i - beta_j) * (u_i - u_j)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", type=float, required=True, help="production time per replica")
    parser.add_argument("--temperatures", type=float, nargs="+",
                        help="ladder in K, increasing (default: the 8-temperature one above)")
    parser.add_argument("--exchange-ps", type=float, default=1.0,
                        help="time between exchange attempts (and samples)")
    parser.add_argument("--equilibrate-ps", type=float, default=100.0)
    parser.add_argument("--frame-every", type=int, default=20,
                        help="samples between stored full configurations")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    temps = np.asarray(args.temperatures if args.temperatures else default_ladder(), float)
    if np.any(np.diff(temps) <= 0) or temps[0] <= 0:
        raise SystemExit(f"temperatures must be positive and increasing; got {temps}")
    n_temps = len(temps)
    betas = 1.0 / (KB_KJ_PER_MOL_K * temps)
    dt_fs = 1.0
    steps_per_sample = round(args.exchange_ps * 1000 / dt_fs)
    n_samples = round(args.ns * 1000 / args.exchange_ps)
    if n_samples < 2:
        raise SystemExit("--ns too short for two samples")

    system = ccg.alanine_dipeptide()
    platform = openmm.Platform.getPlatformByName("Reference")
    reference = np.asarray(system.reference_positions, dtype=np.float64)
    quads = phi_psi_atoms(system.topology, reference)
    contexts, integrators = [], []
    for i, temp in enumerate(temps):
        integrator = openmm.LangevinMiddleIntegrator(
            temp * unit.kelvin, 1.0 / unit.picosecond, dt_fs * unit.femtosecond)
        integrator.setRandomNumberSeed(args.seed * 1000 + i + 1)
        context = openmm.Context(system.openmm_system, integrator, platform)
        context.setPositions(system.reference_positions)
        context.setVelocitiesToTemperature(temp * unit.kelvin, args.seed * 1000 + i + 1)
        contexts.append(context)
        integrators.append(integrator)
    for integrator in tqdm(integrators, desc="equilibration", unit="replica"):
        integrator.step(round(args.equilibrate_ps * 1000 / dt_fs))

    rng = np.random.default_rng(args.seed)
    n_atoms = system.n_atoms
    phi_psi = np.empty((n_temps, n_samples, 2), dtype=np.float32)
    energies = np.empty((n_temps, n_samples), dtype=np.float64)
    replica_at = np.empty((n_samples, n_temps), dtype=np.int16)
    frames = []
    accepted = np.zeros(n_temps - 1, dtype=np.int64)
    attempted = np.zeros(n_temps - 1, dtype=np.int64)
    current = np.arange(n_temps)        # replica id now at temperature index i
    xyz = np.empty((n_temps, n_atoms, 3))
    vel = np.empty((n_temps, n_atoms, 3))
    nm, nm_ps = unit.nanometer, unit.nanometer / unit.picosecond
    start = time.perf_counter()
    bar = tqdm(range(n_samples), desc=f"REMD {n_temps} x {args.ns:g} ns", unit="ps",
               mininterval=10.0, unit_scale=args.exchange_ps)
    for k in bar:
        for i in range(n_temps):
            integrators[i].step(steps_per_sample)
            state = contexts[i].getState(getPositions=True, getVelocities=True,
                                         getEnergy=True)
            xyz[i] = state.getPositions(asNumpy=True).value_in_unit(nm)
            vel[i] = state.getVelocities(asNumpy=True).value_in_unit(nm_ps)
            energies[i, k] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        phi_psi[:, k] = dihedrals(xyz, quads)
        replica_at[k] = current
        if k % args.frame_every == 0:
            frames.append(xyz.astype(np.float32))
        swapped = set()
        for i in exchange_pairs(k, n_temps):
            j = i + 1
            attempted[i] += 1
            log_ratio = metropolis_log_ratio(betas[i], betas[j], energies[i, k], energies[j, k])
            if log_ratio >= 0 or rng.random() < np.exp(log_ratio):
                accepted[i] += 1
                xyz[[i, j]] = xyz[[j, i]]
                vel[i], vel[j] = (vel[j] * np.sqrt(temps[i] / temps[j]),
                                  vel[i] * np.sqrt(temps[j] / temps[i]))
                current[[i, j]] = current[[j, i]]
                swapped.update((i, j))
        for i in swapped:
            contexts[i].setPositions(xyz[i])
            contexts[i].setVelocities(vel[i])
        if k % 1000 == 999:
            bar.set_postfix_str("acc " + " ".join(
                f"{a / max(t, 1):.2f}" for a, t in zip(accepted, attempted, strict=True)))
    bar.close()
    wall = time.perf_counter() - start
    total_steps = n_samples * steps_per_sample * n_temps
    acceptance = accepted / np.maximum(attempted, 1)
    partial = Path(args.out).with_name(Path(args.out).name + ".partial")  # renamed when complete
    with open(partial, "wb") as fh:
        np.savez_compressed(
            fh, temperatures_k=temps, phi_psi=phi_psi, energies_kjmol=energies,
            replica_at=replica_at, accepted=accepted, attempted=attempted,
            acceptance=acceptance, frames=np.stack(frames, 1),
            samples_per_ps=np.full(n_temps, 1.0 / args.exchange_ps),
            dt_ps=np.array(args.exchange_ps), steps_per_sample=np.array(steps_per_sample),
            replica_steps_per_sample=np.array(steps_per_sample * n_temps),
            equilibrate_ps=np.array(args.equilibrate_ps), ns=np.array(args.ns),
            seed=np.array(args.seed), wall_s=np.array(wall),
            steps_per_s=np.array(total_steps / wall))
    partial.replace(args.out)
    print(f"{args.out}: {n_temps} replicas x {args.ns:g} ns in {wall:.0f} s "
          f"({total_steps / wall:,.0f} replica-steps/s), {n_samples} samples per temperature")
    print("ladder (K): " + ", ".join(f"{t:.1f}" for t in temps))
    print("acceptance per pair: " + ", ".join(
        f"{temps[i]:.0f}-{temps[i + 1]:.0f}: {acceptance[i]:.3f}" for i in range(n_temps - 1)))
    # round trips: a replica going from the lowest to the highest temperature and back
    position = np.argsort(replica_at, axis=1)   # [n, replica] -> temperature index
    trips = 0
    for r in range(n_temps):
        last_end, count = None, 0
        for t_index in position[:, r]:
            if t_index == 0 and last_end != 0:
                if last_end == n_temps - 1:
                    count += 1
                last_end = 0
            elif t_index == n_temps - 1 and last_end != n_temps - 1:
                last_end = n_temps - 1
        trips += count
    print(f"round trips (lowest -> highest -> lowest, all replicas): {trips}")
    for i, temp in enumerate(temps):
        print(f"  {temp:6.1f} K: phi > 0 population {100 * (phi_psi[i, :, 0] > 0).mean():.2f} %")


if __name__ == "__main__":
    main()
