"""The committed form of a REMD reference: block counts from which every reported number follows.

A run of `run_remd.py` keeps every torsion sample (tens of MB; it lives under `runs/`, which
git ignores, and is lost with the machine). `summarize` reduces it, at chosen temperatures and
after the equilibration is dropped, to counts in `n_blocks` consecutive blocks of the time
series (block b holds samples i with i * n_blocks // n == b, the batches of
`ccg.group_populations(..., n_batches=n_blocks)`):

    hist          [n_T, n_res, n_blocks, grid, grid]  per-residue (phi_k, psi_k) histograms
                                                      over [-pi, pi)^2
    state_counts  [n_T, n_res, n_blocks, n_states]    per-residue Ramachandran labels
                                                      (`ccg.ramachandran_groups`)
    joint_counts  [n_T, n_blocks, n_states ** n_res]  joint labels of all residues (residue
                                                      order, first residue most significant)

plus the run's metadata (system, seed, ns, sample_ps, acceptance, MD steps of the whole ladder
per sample, ...). From these, exactly:
the free-energy surface of a seed or of seeds merged with equal weights, the halves of a run
(blocks 0..n/2-1 against the rest), the populations with the batch-means standard errors of
`ccg.group_populations`, and the joint states. A summary is a few hundred kB, committed under
`data/`. `load` reads either form (a raw run is summarized on the fly); no pickles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import residue_pairs

import ccg

FORMAT = "ccg-remd-summary-1"


def _ladder_index(temperatures: np.ndarray, temperature: float, where: str) -> int:
    i = int(np.argmin(np.abs(temperatures - temperature)))
    if abs(temperatures[i] - temperature) > 0.5:
        raise SystemExit(f"error: {temperature} K is not on the ladder of {where} "
                         f"({', '.join(f'{t:.1f}' for t in temperatures)} K); pick one of those "
                         "with --temperatures")
    return i


def summarize(run: dict, temperatures: Sequence[float], *, discard_ns: float = 1.0,
              grid: int = 36, n_blocks: int = 20, where: str = "the run") -> dict:
    """Block counts of a run_remd.py npz (opened, as a mapping of arrays) at `temperatures` (K)."""
    names = [str(n) for n in run["torsion_names"]]
    pairs = residue_pairs(names)
    cg_names = [f"{n[:3]}_{n[3:]}" for n in names]
    groups = {g.name: g for g in ccg.ramachandran_groups(cg_names)}
    groups = [groups[f"phi_{res}/psi_{res}"] for res, _, _ in pairs]
    labels = groups[0].all_labels
    n_states = len(labels)
    sample_ps = float(run["sample_ps"]) if "sample_ps" in run else float(run["dt_ps"])
    skip = round(discard_ns * 1000 / sample_ps)
    n_valid = int(run["n_samples"]) * int(run["samples_per_exchange"]) \
        if "n_samples" in run else run["torsions"].shape[1]
    if n_valid - skip < n_blocks:
        raise SystemExit(f"error: {where} has {n_valid} samples per temperature, "
                         f"{skip} of them inside --discard-ns {discard_ns}: too few for "
                         f"{n_blocks} blocks; lower --discard-ns or run longer")
    edges = np.linspace(-np.pi, np.pi, grid + 1)
    hist, state_counts, joint_counts = [], [], []
    for temp in temperatures:
        i = _ladder_index(np.asarray(run["temperatures_k"]), temp, where)
        z = np.asarray(run["torsions"][i, skip:n_valid], np.float64)
        n = len(z)
        block = np.arange(n) * n_blocks // n
        wrapped = np.remainder(z + np.pi, 2 * np.pi)         # the bins of ccg's projections
        cell = np.clip((wrapped / (2 * np.pi / grid)).astype(np.int64), 0, grid - 1).T
        codes = [g.assign(z) for g in groups]
        hist.append([np.bincount((block * grid + cell[a]) * grid + cell[b],
                                 minlength=n_blocks * grid * grid).reshape(n_blocks, grid, grid)
                     for _, a, b in pairs])
        state_counts.append([np.bincount(block * n_states + c, minlength=n_blocks * n_states)
                             .reshape(n_blocks, n_states) for c in codes])
        flat = np.zeros(n, np.int64)
        for c in codes:
            flat = flat * n_states + c
        size = n_states ** len(codes)
        joint_counts.append(np.bincount(block * size + flat, minlength=n_blocks * size)
                            .reshape(n_blocks, size))
    accepted, attempted = np.asarray(run["accepted"]), np.asarray(run["attempted"])
    return {"format": np.array(FORMAT), "system": np.array(str(run["system"])),
            "seed": np.array(int(run["seed"])), "ns": np.array(n_valid * sample_ps / 1000),
            "complete": np.array(bool(run["complete"])), "sample_ps": np.array(sample_ps),
            "discard_ns": np.array(float(discard_ns)), "discarded_samples": np.array(skip),
            "ladder_steps_per_sample": np.array(float(run["replica_steps_per_sample"])
                                                / int(run["samples_per_exchange"])),
            "ladder_k": np.asarray(run["temperatures_k"]),
            "acceptance": accepted / np.maximum(attempted, 1),
            "temperatures_k": np.asarray(temperatures, np.float64),
            "torsion_names": np.array(names), "residues": np.array([r for r, _, _ in pairs]),
            "states": np.array(labels), "edges": edges,
            "hist": np.asarray(hist, np.uint32), "state_counts": np.asarray(state_counts, np.int64),
            "joint_counts": np.asarray(joint_counts, np.int64)}


def load(path: str | Path, temperatures: Sequence[float], *, discard_ns: float = 1.0,
         grid: int = 36, n_blocks: int = 20) -> dict:
    """A summary (as written by `save`) or a raw run (summarized now) at `temperatures` (K).

    Summaries keep their own discard and blocks: `temperatures` must be among theirs, and the
    returned arrays hold exactly those temperatures, in that order."""
    with np.load(path, allow_pickle=False) as data:
        d = {k: data[k] for k in data.files}
    if "format" not in d:
        return summarize(d, temperatures, discard_ns=discard_ns, grid=grid, n_blocks=n_blocks,
                         where=str(path))
    if str(d["format"]) != FORMAT:
        raise SystemExit(f"error: {path} is a {d['format']} file; this script reads {FORMAT}")
    rows = [_ladder_index(d["temperatures_k"], t, str(path)) for t in temperatures]
    for key in ("hist", "state_counts", "joint_counts"):
        d[key] = d[key][rows]
    d["temperatures_k"] = d["temperatures_k"][rows]
    return d


def save(summary: dict, path: str | Path) -> None:
    """Write a summary npz atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **summary)
    tmp.replace(path)


def free_energy(hist: np.ndarray) -> np.ndarray:
    """-log p (kT, min 0; inf where empty) of counts [..., grid, grid] summed over leading axes
    but the last two."""
    counts = hist.reshape(-1, *hist.shape[-2:]).sum(0).astype(np.float64)
    with np.errstate(divide="ignore"):
        f = -np.log(counts / counts.sum())
    return f - f[np.isfinite(f)].min()


def merged_free_energy(hists: Sequence[np.ndarray]) -> np.ndarray:
    """-log of the mean of the seeds' normalized histograms (each seed weighs the same)."""
    p = np.mean([h.reshape(-1, *h.shape[-2:]).sum(0) / h.sum() for h in hists], 0)
    with np.errstate(divide="ignore"):
        f = -np.log(p)
    return f - f[np.isfinite(f)].min()


def merged_free_energy_error(hists: Sequence[np.ndarray]) -> np.ndarray:
    """Standard error (kT) of each bin of `merged_free_energy` from the seeds' batch means
    (block histograms [n_blocks, grid, grid] each; inf where no seed visited the bin)."""
    grid = hists[0].shape[-2:]
    p, se = merged_populations([h.reshape(h.shape[0], -1) for h in hists])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, se / p, np.inf).reshape(grid)


def populations(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Populations [k] and batch-means standard errors [k] of block counts [n_blocks, k]
    (the estimator of `ccg.group_populations` with unit weights)."""
    counts = np.asarray(counts, np.float64)
    v = counts.sum(1)
    total = v.sum()
    p = counts.sum(0) / total
    ss = ((counts - p[None, :] * v[:, None]) ** 2).sum(0)
    n_blocks = counts.shape[0]
    return p, np.sqrt(ss * n_blocks / (n_blocks - 1)) / total


def merged_populations(counts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Seeds averaged with equal weights; their standard errors combined."""
    each = [populations(c) for c in counts]
    p = np.mean([e[0] for e in each], 0)
    se = np.sqrt(np.sum([e[1] ** 2 for e in each], 0)) / len(each)
    return p, se


def joint_name(code: int, states: Sequence[str], n_res: int) -> str:
    """The label string of a joint code (first residue first), e.g. "AAB"."""
    digits = []
    for _ in range(n_res):
        digits.append(states[code % len(states)])
        code //= len(states)
    return "".join(digits[::-1])
