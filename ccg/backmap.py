"""Backmapping CG frames to atoms: `backmap_frames` and the `ccg backmap` command.

For each CG frame z, K configurations x = X(z, r), r ~ q(r | z, T), are drawn with their
importance log-weights log w = -beta U(x) + log|J| - log q. Selection per frame:

- `weighted`: one of the K resampled with probability proportional to w (a draw from
  p(x | z, T) as K grows);
- `best`: the highest weight;
- `all`: all K.

Every output frame coarse-grains back onto its input exactly (up to float precision): x is
built from z. Frames are processed in chunks, so memory stays flat for long trajectories, and
outputs are written to temporary files that are renamed only when everything succeeded.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ccg._checks import check_finite, check_temperature
from ccg.io.atomic import atomic_path, check_output_path

SELECT_MODES = ("weighted", "best", "all")


def backmap_frames(model, z: torch.Tensor, temperature_k: float, *, samples_per_frame: int = 1,
                   select: str = "weighted", seed: int = 0, chunk_frames: int = 1024,
                   progress: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Yield chunks of backmapped frames.

    Args:
        model: a `BackmappingModel`.
        z: CG frames [N, cg_dim] (rad / nm).
        temperature_k: T in K.
        samples_per_frame: K flow samples per CG frame.
        select: one of SELECT_MODES.
        seed: random seed (same seed, same output).
        chunk_frames: CG frames per chunk.

    Yields:
        dicts with "xyz" [n, n_atoms, 3] (nm, float32), "frame" [n] (input frame index),
        "energy_kjmol" [n], "log_weight" [n].
    """
    if select not in SELECT_MODES:
        raise ValueError(f'Unknown selection "{select}". Must be one of {list(SELECT_MODES)}.')
    if isinstance(samples_per_frame, bool) or not isinstance(samples_per_frame, int) or (
            samples_per_frame < 1):
        raise ValueError(f"Expected samples_per_frame >= 1; got {samples_per_frame!r}.")
    check_temperature(temperature_k)
    check_finite(z, "CG frames")
    k = samples_per_frame
    gen = torch.Generator().manual_seed(seed)
    from tqdm.auto import tqdm

    for start in tqdm(range(0, z.shape[0], chunk_frames), disable=not progress, unit="chunk",
                      desc="backmap"):
        zc = z[start:start + chunk_frames]
        n = zc.shape[0]
        with torch.no_grad():
            s = model.sample(zc.repeat_interleave(k, dim=0), temperature_k, generator=gen)
        log_w = s.log_weights.double().reshape(n, k)
        frame = torch.arange(start, start + n).repeat_interleave(k).reshape(n, k)
        if select == "all":
            pick = torch.arange(n * k).reshape(n, k)
        else:
            if select == "best":
                col = log_w.argmax(dim=1)
            else:
                probs = torch.softmax(log_w, dim=1)
                probs = torch.where(torch.isfinite(log_w).any(1, keepdim=True), probs,
                                    torch.full_like(probs, 1.0 / k))
                col = torch.multinomial(probs, 1, generator=gen)[:, 0]
            pick = (torch.arange(n) * k + col)[:, None]
        idx = pick.reshape(-1)
        yield {
            "xyz": s.x.detach().reshape(n * k, -1, 3)[idx].float().numpy(),
            "frame": frame.reshape(-1)[idx].numpy(),
            "energy_kjmol": s.energy_kjmol.detach().double()[idx].numpy(),
            "log_weight": log_w.reshape(-1)[idx].numpy(),
        }


def minimize_keeping_cg(model, xyz_nm: np.ndarray, *, tolerance: float = 10.0,
                        max_iterations: int = 500) -> np.ndarray:
    """Relax frames [n, n_atoms, 3] (nm) with OpenMM's minimizer, CG coordinates held fixed.

    Bead maps: the CG atoms get zero mass, which OpenMM's minimizer keeps in place. Torsion
    maps: the minimized frame is split and rebuilt with the original z (the minimizer may move
    the torsions a little), so the output still coarse-grains exactly onto the input.
    `tolerance` in kJ/mol/nm. One OpenMM minimization per frame (slow; optional).
    """
    import openmm
    from openmm import unit

    system = model.system.openmm_system.__copy__()
    cg_atoms = getattr(model.cg_map, "cg_atom_indices", None)
    for atom in cg_atoms or ():
        system.setParticleMass(atom, 0.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    out = np.empty_like(xyz_nm)
    for n, frame in enumerate(xyz_nm):
        context.setPositions(frame.astype(np.float64))
        openmm.LocalEnergyMinimizer.minimize(
            context, tolerance * unit.kilojoule_per_mole / unit.nanometer, max_iterations)
        out[n] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(
            unit.nanometer)
    if cg_atoms is None:  # torsion map: put the exact CG values back
        x = torch.as_tensor(out, dtype=torch.float64)
        z_in, _, _ = model.cg_map.split(torch.as_tensor(xyz_nm, dtype=torch.float64))
        _, r, _ = model.cg_map.split(x)
        out = model.cg_map.merge(z_in, r)[0].numpy()
    return out.astype(xyz_nm.dtype)


class _TrajectoryWriter:
    """Appends frames to an mdtraj-format file chosen by extension (pdb, dcd, xtc, h5)."""

    FORMATS = (".pdb", ".dcd", ".xtc", ".h5")

    def __init__(self, path: Path, topology):
        import mdtraj.formats as mdf

        self.suffix = path.suffix.lower()
        self.topology = topology
        self.model_index = 0
        if self.suffix == ".pdb":
            self.handle = mdf.PDBTrajectoryFile(str(path), "w")
        elif self.suffix == ".dcd":
            self.handle = mdf.DCDTrajectoryFile(str(path), "w")
        elif self.suffix == ".xtc":
            self.handle = mdf.XTCTrajectoryFile(str(path), "w")
        else:
            self.handle = mdf.HDF5TrajectoryFile(str(path), "w")
            self.handle.topology = topology

    def write(self, xyz_nm: np.ndarray) -> None:
        if self.suffix == ".pdb":
            for frame in xyz_nm:
                self.model_index += 1
                self.handle.write(10.0 * frame, self.topology, modelIndex=self.model_index)
        elif self.suffix == ".dcd":
            self.handle.write(10.0 * xyz_nm)
        elif self.suffix == ".xtc":
            self.handle.write(xyz_nm)
        else:
            self.handle.write(coordinates=xyz_nm)

    def close(self) -> None:
        self.handle.close()


def read_cg_input(path: str | Path, model, *, top=None, degrees: bool = False) -> torch.Tensor:
    """CG frames z [N, cg_dim] from a trajectory, or (torsion maps) a CSV/NPY table."""
    from ccg.io.trajectories import read_cg_frames

    path = Path(path)
    if path.suffix.lower() in (".csv", ".npy", ".txt"):
        if not path.is_file():
            raise FileNotFoundError(f"CG table not found: {path}")
        if getattr(model.cg_map, "cg_atom_indices", None) is not None:
            raise ValueError("A bead-map model takes CG trajectories (pdb, dcd with --top, ...), "
                             "not a CSV/NPY table.")
        try:
            table = (np.load(path) if path.suffix.lower() == ".npy"
                     else np.loadtxt(path, delimiter=",", ndmin=2))
        except ValueError as err:
            raise ValueError(f"Could not read the CG table {path}: {err}") from None
        table = np.atleast_2d(np.asarray(table, dtype=np.float64))
        if table.shape[1] != model.cg_dim:
            raise ValueError(
                f"Expected {model.cg_dim} columns (one per CG coordinate: "
                f"{getattr(model.cg_map, 'torsion_names', '')}) in {path.name}; got "
                f"{table.shape[1]}.")
        if degrees:
            table = np.radians(table)
        z = torch.as_tensor(table)
        check_finite(z, f"CG values in {path.name}")
        return torch.remainder(z + np.pi, 2 * np.pi) - np.pi
    return read_cg_frames(path, model.cg_map, model.system, top=top)


def add_parser(sub) -> None:
    """Register `ccg backmap`."""
    p = sub.add_parser(
        "backmap", help="backmap a CG trajectory to atoms",
        description="Draw atomistic frames consistent with each CG frame at temperature T from "
        "the trained flow, and write them as a trajectory (format by extension: "
        f"{', '.join(_TrajectoryWriter.FORMATS)}) plus a CSV sidecar with per-frame potential "
        "energy and log importance weight.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model.pt written by `ccg train`")
    p.add_argument("--cg", required=True, help="CG input: a trajectory mdtraj reads (atomistic, "
                   "or the CG atoms only for bead maps), or a CSV/NPY table of torsions")
    p.add_argument("--top", help="topology for coordinate-only formats (dcd, xtc, ...)")
    p.add_argument("--degrees", action="store_true", help="the CSV/NPY table is in degrees")
    p.add_argument("--temperature", type=float, required=True, help="T in K")
    p.add_argument("--samples-per-frame", type=int, default=1, help="K samples per CG frame")
    p.add_argument("--select", choices=SELECT_MODES, default="weighted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minimize", action="store_true",
                   help="relax each frame with OpenMM, holding the CG coordinates fixed")
    p.add_argument("--chunk", type=int, default=1024, help="CG frames per chunk")
    p.add_argument("--out", required=True, help="output trajectory (.pdb, .dcd, .xtc, .h5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ccg.io.model_file import load_model

    out = check_output_path(args.out)
    if out.suffix.lower() not in _TrajectoryWriter.FORMATS:
        raise ValueError(f"Unsupported output format {out.suffix!r}; use one of "
                         f"{list(_TrajectoryWriter.FORMATS)}.")
    sidecar = out.with_suffix(".csv")
    model = load_model(args.model)
    z = read_cg_input(args.cg, model, top=args.top, degrees=args.degrees)
    rows = []
    with atomic_path(out) as tmp_traj:
        writer = _TrajectoryWriter(tmp_traj, model.system.topology)
        try:
            for chunk in backmap_frames(model, z.to(torch.float32), args.temperature,
                                        samples_per_frame=args.samples_per_frame,
                                        select=args.select, seed=args.seed,
                                        chunk_frames=args.chunk,
                                        progress=not args.no_progress):
                if args.minimize:
                    chunk["xyz"] = minimize_keeping_cg(model, chunk["xyz"])
                    energy = model.system.energy(torch.as_tensor(chunk["xyz"], dtype=torch.float64))
                    chunk["energy_kjmol"] = energy.detach().numpy()
                writer.write(chunk["xyz"])
                rows.append(np.stack([chunk["frame"], chunk["energy_kjmol"],
                                      chunk["log_weight"]], axis=1))
        finally:
            writer.close()
        table = np.concatenate(rows)
        with atomic_path(sidecar) as tmp_csv:
            np.savetxt(tmp_csv, table, delimiter=",", fmt=["%d", "%.6f", "%.6f"],
                       header="frame,energy_kjmol,log_weight", comments="")
    print(f"wrote {out} ({len(table)} frames from {z.shape[0]} CG frames at "
          f"{args.temperature} K, select={args.select}, K={args.samples_per_frame}) and "
          f"{sidecar}")
    return 0
