"""Backmapping CG frames to atoms: `backmap` (chunks in memory) and `backmap_to_file`.

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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit
from tqdm.auto import tqdm

from ccg._checks import check_finite, check_temperature
from ccg.io.atomic import atomic_path, check_output_path
from ccg.io.trajectories import TrajectoryWriter
from ccg.mapping.beads import AtomSubsetMap
from ccg.model import BackmappingModel

SELECT_MODES = ("weighted", "best", "all")


def backmap(model: BackmappingModel, z: torch.Tensor, temperature_k: float, *,
            samples_per_frame: int = 1, select: str = "weighted", seed: int = 0,
            chunk_frames: int = 1024, progress: bool = False) -> Iterator[dict[str, np.ndarray]]:
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
    device = next(model.flow.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    for start in tqdm(range(0, z.shape[0], chunk_frames), disable=not progress, unit="chunk",
                      desc="backmap"):
        zc = z[start:start + chunk_frames]
        n = zc.shape[0]
        with torch.no_grad():
            s = model.sample(zc.repeat_interleave(k, dim=0), temperature_k, generator=gen)
        log_w = s.log_weights.double().reshape(n, k)
        frame = torch.arange(start, start + n, device=device).repeat_interleave(k).reshape(n, k)
        if select == "all":
            pick = torch.arange(n * k, device=device).reshape(n, k)
        else:
            if select == "best":
                col = log_w.argmax(dim=1)
            else:
                probs = torch.softmax(log_w, dim=1)
                probs = torch.where(torch.isfinite(log_w).any(1, keepdim=True), probs,
                                    torch.full_like(probs, 1.0 / k))
                col = torch.multinomial(probs, 1, generator=gen)[:, 0]
            pick = (torch.arange(n, device=device) * k + col)[:, None]
        idx = pick.reshape(-1)
        yield {  # one copy to the host per chunk
            "xyz": s.x.detach().reshape(n * k, -1, 3)[idx].float().cpu().numpy(),
            "frame": frame.reshape(-1)[idx].cpu().numpy(),
            "energy_kjmol": s.energy_kjmol.detach().double()[idx].cpu().numpy(),
            "log_weight": log_w.reshape(-1)[idx].cpu().numpy(),
        }


def minimize_keeping_cg(model: BackmappingModel, xyz_nm: np.ndarray, *, tolerance: float = 10.0,
                        max_iterations: int = 500) -> np.ndarray:
    """Relax frames [n, n_atoms, 3] (nm) with OpenMM's minimizer, CG coordinates held fixed.

    Bead maps: the CG atoms get zero mass, which OpenMM's minimizer keeps in place. Torsion
    maps: the minimized frame is split and rebuilt with the original z (the minimizer may move
    the torsions a little), so the output still coarse-grains exactly onto the input.
    `tolerance` in kJ/mol/nm. One OpenMM minimization per frame (slow; optional).
    """
    system = model.system.openmm_system.__copy__()
    beads = isinstance(model.cg_map, AtomSubsetMap)
    for atom in model.cg_map.cg_atom_indices if beads else ():
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
    if not beads:  # torsion map: put the exact CG values back
        x = torch.as_tensor(out, dtype=torch.float64)
        z_in, _, _ = model.cg_map.split(torch.as_tensor(xyz_nm, dtype=torch.float64))
        _, r, _ = model.cg_map.split(x)
        out = model.cg_map.merge(z_in, r)[0].numpy()
    return out.astype(xyz_nm.dtype)


def sidecar_path(out: str | Path) -> Path:
    """The CSV sidecar of a backmapped trajectory: its whole name plus .csv."""
    out = Path(out)
    return out.with_name(out.name + ".csv")


@dataclass
class BackmapResult:
    """What `backmap_to_file` wrote: the trajectory, its CSV sidecar (frame, energy_kjmol,
    log_weight per output frame), and the frame counts."""

    trajectory: Path
    sidecar: Path
    n_frames: int
    n_cg_frames: int


def backmap_to_file(model: BackmappingModel, z: torch.Tensor, temperature_k: float,
                    out: str | Path, *, samples_per_frame: int = 1, select: str = "weighted",
                    seed: int = 0, chunk_frames: int = 1024, minimize: bool = False,
                    progress: bool = False) -> BackmapResult:
    """Backmap CG frames z [N, cg_dim] at T and stream the atomistic frames to `out`.

    The format follows the extension (`TrajectoryWriter.FORMATS`: pdb, dcd, xtc, h5); a CSV
    sidecar next to it (`sidecar_path(out)`: the whole name plus .csv, e.g. atoms.dcd.csv, so
    outputs in two formats never share one) holds each output frame's input frame index,
    potential energy (kJ/mol) and log importance weight. Both are written to temporary files
    and renamed only when everything succeeded. `minimize` relaxes each frame with OpenMM
    holding the CG coordinates fixed (`minimize_keeping_cg`); the other arguments are those
    of `backmap`.
    """
    out = check_output_path(out)
    if out.suffix.lower() not in TrajectoryWriter.FORMATS:
        raise ValueError(f"Unsupported output format {out.suffix!r}; use one of "
                         f"{list(TrajectoryWriter.FORMATS)}.")
    sidecar = sidecar_path(out)
    rows = []
    with atomic_path(out) as tmp_traj:
        writer = TrajectoryWriter(tmp_traj, model.system.topology)
        try:
            for chunk in backmap(model, z, temperature_k, samples_per_frame=samples_per_frame,
                                 select=select, seed=seed, chunk_frames=chunk_frames,
                                 progress=progress):
                if minimize:
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
    return BackmapResult(out, sidecar, len(table), int(z.shape[0]))
