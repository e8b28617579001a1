"""Temperature replica exchange (REMD) for a bundled peptide system, the reference that ccg's
free energies of many backbone torsions are compared with (e.g. Ace-(Ala)3-Nme in OBC2).

Exactly the ccg target: the bundled system (`ccg.SYSTEMS`, e.g. "ala3-obc2"), no constraints,
LangevinMiddleIntegrator (1 fs, friction 1/ps) at each fixed temperature. The replicas are
spread over `--workers` processes (one per core: the device machine's 16 cores run 16
replicas at once), each holding OpenMM Contexts on the Reference platform (faster than the CPU
platform for molecules this small, measured: 6.4k vs 2.6k steps/s for ala3-obc2 on one core).
Every `--exchange-ps` every replica reports its positions, velocities and potential energy,
the backbone torsions (every phi and psi mdtraj finds) are recorded, and neighbour swaps are
attempted, even pairs then odd pairs, with the Metropolis criterion

    accept with probability min(1, exp[(1/kT_i - 1/kT_j) (U_i - U_j)]),

an accepted swap exchanging positions and velocities (rescaled by sqrt(T_new / T_old)).

The default ladder (as for alanine dipeptide) has 8 temperatures, geometric between 300 and
450 K (4 intervals) and between 450 and 600 K (3), so it holds 300, 450 and 600 K exactly:
300.0, 332.0, 367.4, 406.6, 450.0, 495.3, 545.1, 600.0 K.

Usage:
    python experiments/peptide_reference/run_remd.py --system ala3-obc2 --ns 10 --seed 1 \
        --workers 16 --out data/ala3_remd_seed1.npz

The npz is written atomically (temporary file + rename) every `--save-minutes` and at the end,
so an interrupted run (Ctrl-C, SIGTERM, a killed job) leaves what it had: `complete` is False
and `n_samples` says how many samples per temperature are valid. `--resume` continues such a
file (or extends a complete one) to `--ns` from its last state (positions and velocities
of every slot, fresh integrator and exchange seeds). Arrays:
    temperatures_k [n_T]; torsion_names [m] ("phi2", "psi2", ... by residue number);
    torsion_atoms [m, 4]; torsions [n_T, n * K, m] float32 (rad), K =
    samples_per_exchange: sample k * K + j of temperature i is the configuration at T_i after
    (k + (j + 1) / K) * exchange_ps of production (j = K - 1: just before exchange k);
    energies_kjmol [n_T, n]; replica_at [n, n_T] int16; accepted / attempted [n_T - 1];
    frames [n_T, n_frames, n_atoms, 3] float32 nm every `--frame-every` exchanges; dt_ps
    (= exchange_ps), samples_per_exchange, sample_ps, steps_per_sample (MD steps per exchange
    interval), replica_steps_per_sample (of the whole ladder),
    ns, seed, wall_s, steps_per_s, complete, n_samples (exchange intervals), system; current
    [n_T], final_xyz,
    final_vel [n_T, n_atoms, 3] (the state to resume from).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import time
from pathlib import Path

import numpy as np
import openmm
from common import KB_KJ_PER_MOL_K, backbone_torsions, default_ladder, dihedrals
from openmm import unit
from tqdm.auto import tqdm

import ccg


def _worker(conn, system_name: str, temps: list[float], seeds: list[int],
            equilibrate_steps: int, starts: list | None, quads: list, per_exchange: int) -> None:
    """One process: Contexts for its replicas, started from the bundled structure and
    equilibrated, or from `starts` [(xyz, vel), ...] (a resumed run); answers ("run", n)
    (n steps in `per_exchange` chunks, the torsions `quads` recorded after each) and
    ("set", i, xyz, vel)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    system = ccg.SYSTEMS.resolve(system_name)()
    platform = openmm.Platform.getPlatformByName("Reference")
    contexts, integrators = [], []
    for temp, seed in zip(temps, seeds, strict=True):
        integrator = openmm.LangevinMiddleIntegrator(
            temp * unit.kelvin, 1.0 / unit.picosecond, 1.0 * unit.femtosecond)
        integrator.setRandomNumberSeed(seed)
        context = openmm.Context(system.openmm_system, integrator, platform)
        if starts is None:
            context.setPositions(system.reference_positions)
            context.setVelocitiesToTemperature(temp * unit.kelvin, seed)
            integrator.step(equilibrate_steps)
        else:
            context.setPositions(starts[len(contexts)][0])
            context.setVelocities(starts[len(contexts)][1])
        contexts.append(context)
        integrators.append(integrator)
    conn.send("ready")
    nm, nm_ps, kj = unit.nanometer, unit.nanometer / unit.picosecond, unit.kilojoule_per_mole
    while True:
        msg = conn.recv()
        if msg[0] == "run":
            out = []
            chunk = msg[1] // per_exchange
            for context, integrator in zip(contexts, integrators, strict=True):
                tors = []
                for _ in range(per_exchange - 1):
                    integrator.step(chunk)
                    xyz = context.getState(getPositions=True).getPositions(asNumpy=True)
                    tors.append(dihedrals(xyz.value_in_unit(nm), quads))
                integrator.step(msg[1] - chunk * (per_exchange - 1))
                state = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
                xyz = state.getPositions(asNumpy=True).value_in_unit(nm)
                tors.append(dihedrals(xyz, quads))
                out.append((xyz, state.getVelocities(asNumpy=True).value_in_unit(nm_ps),
                            state.getPotentialEnergy().value_in_unit(kj), np.stack(tors)))
            conn.send(out)
        elif msg[0] == "set":
            _, local, xyz, vel = msg
            contexts[local].setPositions(xyz)
            contexts[local].setVelocities(vel)
        else:
            return


def _save(path: Path, arrays: dict) -> None:
    """Write the npz atomically (a temporary file renamed over `path`)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="ala3-obc2", help="a bundled system (ccg.SYSTEMS)")
    parser.add_argument("--ns", type=float, required=True, help="production time per replica")
    parser.add_argument("--temperatures", type=float, nargs="+", help="ladder in K (increasing)")
    parser.add_argument("--exchange-ps", type=float, default=1.0)
    parser.add_argument("--samples-per-exchange", type=int, default=10,
                        help="torsion samples per exchange interval (1-ps samples are already "
                             "nearly independent for the per-residue histograms)")
    parser.add_argument("--equilibrate-ps", type=float, default=100.0)
    parser.add_argument("--frame-every", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="processes (one per core)")
    parser.add_argument("--save-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="extend an existing --out (complete or interrupted) to --ns")
    args = parser.parse_args()

    out = Path(args.out)
    if out.exists() and not (args.overwrite or args.resume):
        raise SystemExit(f"error: {out} exists; pass --resume to extend it to --ns or "
                         "--overwrite to replace it.")
    previous = dict(np.load(out)) if args.resume and out.exists() else None
    if args.system not in ccg.SYSTEMS:
        raise SystemExit(f"error: unknown --system {args.system}; one of {ccg.SYSTEMS.names()}")
    temps = np.asarray(args.temperatures or default_ladder(), float)
    if np.any(np.diff(temps) <= 0) or temps[0] <= 0:
        raise SystemExit(f"error: --temperatures must be positive and increasing; got {temps}")
    n_temps = len(temps)
    betas = 1.0 / (KB_KJ_PER_MOL_K * temps)
    steps_per_sample = round(args.exchange_ps * 1000)
    per_exchange = args.samples_per_exchange
    if not 1 <= per_exchange <= steps_per_sample:
        raise SystemExit(f"error: --samples-per-exchange must be in 1..{steps_per_sample}; got "
                         f"{per_exchange}")
    n_samples = round(args.ns * 1000 / args.exchange_ps)
    system = ccg.SYSTEMS.resolve(args.system)()
    names, quads = backbone_torsions(system.topology)
    done, starts, wall0 = 0, None, 0.0
    if previous is not None:
        same = (str(previous["system"]) == args.system
                and np.allclose(previous["temperatures_k"], temps)
                and float(previous["dt_ps"]) == args.exchange_ps
                and int(previous.get("samples_per_exchange", 1)) == per_exchange
                and int(previous["seed"]) == args.seed)
        if not same:
            raise SystemExit(f"error: {out} was run with another --system, ladder, "
                             "--exchange-ps, --samples-per-exchange or --seed; resume with "
                             "the same ones.")
        done, wall0 = int(previous["n_samples"]), float(previous["wall_s"])
        if done >= n_samples:
            raise SystemExit(f"error: {out} already holds {done} samples (--ns "
                             f"{done * args.exchange_ps / 1000:g}); ask for more --ns.")
        starts = list(zip(previous["final_xyz"], previous["final_vel"], strict=True))

    workers = max(1, min(args.workers, n_temps))
    owner = [i % workers for i in range(n_temps)]          # replica slot i -> worker
    local = [i // workers for i in range(n_temps)]         # its index inside the worker
    conns, procs = [], []
    ctx = mp.get_context("spawn")
    for w in range(workers):
        mine = [i for i in range(n_temps) if owner[i] == w]
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(
            child, args.system, [float(temps[i]) for i in mine],
            # fresh integrator seeds on resume, so the noise does not repeat
            [args.seed * 1000 + i + 1 + 7919 * done for i in mine],
            round(args.equilibrate_ps * 1000),
            None if starts is None else [starts[i] for i in mine], quads, per_exchange))
        proc.start()
        conns.append(parent)
        procs.append(proc)
    for conn in tqdm(conns, desc="equilibration", unit="worker"):
        conn.recv()

    rng = np.random.default_rng([args.seed, done])
    torsions = np.zeros((n_temps, n_samples * per_exchange, len(names)), dtype=np.float32)
    energies = np.zeros((n_temps, n_samples))
    replica_at = np.zeros((n_samples, n_temps), dtype=np.int16)
    frames = []
    accepted = np.zeros(n_temps - 1, dtype=np.int64)
    attempted = np.zeros(n_temps - 1, dtype=np.int64)
    current = np.arange(n_temps)
    xyz = np.zeros((n_temps, system.n_atoms, 3))
    vel = np.zeros_like(xyz)
    if previous is not None:
        torsions[:, :done * per_exchange] = previous["torsions"]
        energies[:, :done] = previous["energies_kjmol"]
        replica_at[:done] = previous["replica_at"]
        frames = list(np.moveaxis(previous["frames"], 1, 0))
        accepted[:], attempted[:] = previous["accepted"], previous["attempted"]
        current[:] = previous["current"]
        xyz[:], vel[:] = previous["final_xyz"], previous["final_vel"]
    stop = {"signum": 0}

    def request_stop(signum, _frame):
        stop["signum"] = signum

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def arrays(done: int, wall: float) -> dict:
        steps = done * steps_per_sample * n_temps
        return dict(
            temperatures_k=temps, torsion_names=np.array(names), torsion_atoms=np.array(quads),
            torsions=torsions[:, :done * per_exchange], energies_kjmol=energies[:, :done],
            replica_at=replica_at[:done], accepted=accepted, attempted=attempted,
            frames=np.stack(frames, 1) if frames else np.zeros((n_temps, 0, system.n_atoms, 3)),
            dt_ps=np.array(args.exchange_ps), samples_per_exchange=np.array(per_exchange),
            sample_ps=np.array(args.exchange_ps / per_exchange),
            steps_per_sample=np.array(steps_per_sample),
            replica_steps_per_sample=np.array(steps_per_sample * n_temps),
            ns=np.array(done * args.exchange_ps / 1000), seed=np.array(args.seed),
            wall_s=np.array(wall), steps_per_s=np.array(steps / max(wall, 1e-9)),
            complete=np.array(done == n_samples), n_samples=np.array(done),
            system=np.array(args.system), current=current.copy(), final_xyz=xyz.copy(),
            final_vel=vel.copy())

    start = last_save = time.perf_counter() - wall0
    bar = tqdm(total=n_samples, initial=done, desc=f"REMD {args.system} {n_temps} x "
               f"{args.ns:g} ns", unit="ps", mininterval=10.0)
    for k in range(done, n_samples):
        if stop["signum"]:
            break
        for conn in conns:
            conn.send(("run", steps_per_sample))
        results = [conn.recv() for conn in conns]
        for i in range(n_temps):
            xyz[i], vel[i], energies[i, k], tors = results[owner[i]][local[i]]
            torsions[i, k * per_exchange:(k + 1) * per_exchange] = tors
        replica_at[k] = current
        if k % args.frame_every == 0:
            frames.append(xyz.astype(np.float32))
        for i in range(k % 2, n_temps - 1, 2):
            j = i + 1
            attempted[i] += 1
            log_ratio = (betas[i] - betas[j]) * (energies[i, k] - energies[j, k])
            if log_ratio >= 0 or rng.random() < np.exp(log_ratio):
                accepted[i] += 1
                xi, vi = xyz[i].copy(), vel[i].copy()
                xyz[i], vel[i] = xyz[j], vel[j] * np.sqrt(temps[i] / temps[j])
                xyz[j], vel[j] = xi, vi * np.sqrt(temps[j] / temps[i])
                current[[i, j]] = current[[j, i]]
                for m in (i, j):
                    conns[owner[m]].send(("set", local[m], xyz[m].copy(), vel[m].copy()))
        done = k + 1
        bar.update(1)
        if time.perf_counter() - last_save > 60.0 * args.save_minutes:
            _save(out, arrays(done, time.perf_counter() - start))
            last_save = time.perf_counter()
    bar.close()
    for conn in conns:
        conn.send(("stop",))
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - start
    _save(out, arrays(done, wall))
    acceptance = accepted / np.maximum(attempted, 1)
    print(f"{out}: {n_temps} replicas x {done * args.exchange_ps / 1000:g} ns in {wall:.0f} s "
          f"({done * steps_per_sample * n_temps / wall:,.0f} replica-steps/s)"
          + ("" if done == n_samples else f"; stopped early by signal {stop['signum']}"))
    print("ladder (K): " + ", ".join(f"{t:.1f}" for t in temps))
    print("acceptance per pair: " + ", ".join(f"{a:.2f}" for a in acceptance))
    if stop["signum"]:
        raise SystemExit(128 + stop["signum"])


if __name__ == "__main__":
    main()
