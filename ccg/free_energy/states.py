"""Populations of metastable states from joint samples, with standard errors.

A state is a region of CG space: a `Region` (a box of arcs, one per listed coordinate; an arc
from lo to hi in rad, lo > hi wrapping through pi) or any predicate z [N, d] -> bool [N]. Its
population under p(z) ∝ exp(-beta F(z, T)) is the self-normalized importance-sampling ratio

    P = sum_k w_k 1{z_k in state} / sum_k w_k,
    SE(P)^2 = sum_k w_k^2 (1{z_k in state} - P)^2 / (sum_k w_k)^2        (delta method),

over joint samples (`ccg.free_energy.joint`); with `n_batches` the sums run over batch sums
instead (correlated samples).

A `StateGroup` labels a few coordinates at a time (a residue's (phi, psi) pair, or a single
torsion): each sample gets one label per group (the first of its regions that holds it, else
`other`), and the string of labels over all groups is the sample's joint state. `group_populations`
gives every group's label populations and the most populated joint states.
`ramachandran_groups` builds the per-residue alpha-R / beta / PPII / alpha-L groups of a
peptide's (phi_i, psi_i); `halves_groups` splits each torsion at 0 and pi (the two wells of
`TorusDoubleWells`); `default_groups` picks the first where it applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ccg.free_energy.joint import JointSamples
from ccg.io.atomic import atomic_path
from ccg.mapping.peptide import phi_psi_pairs

RAMACHANDRAN_DEG = {
    "A": [((-160.0, -20.0), (-120.0, 50.0))],            # alpha-R
    "B": [((-180.0, -90.0), (50.0, -150.0))],            # beta (psi wraps through 180)
    "P": [((-90.0, -20.0), (50.0, -150.0))],             # polyproline II
    "L": [((20.0, 120.0), (-90.0, 90.0))],               # alpha-L
}
"""Per-residue Ramachandran regions, (phi arc, psi arc) in degrees; the rest is "O" (other)."""
RAMACHANDRAN_NAMES = {"A": "alpha-R", "B": "beta", "P": "PPII", "L": "alpha-L", "O": "other"}


def _wrap(a: float) -> float:
    v = math.remainder(float(a), 2 * math.pi)
    return -math.pi if v >= math.pi else v


@dataclass(frozen=True)
class Region:
    """A box on the torus: z_i on the arc from lo to hi (rad) for each (i, lo, hi) in `arcs`.

    lo > hi wraps through pi ((3, -3) is the arc of width 2pi - 6 around pi); lo == hi is the
    whole circle. Coordinates not listed are free.
    """

    arcs: tuple[tuple[int, float, float], ...]

    @classmethod
    def box(cls, bounds: Mapping[int, tuple[float, float]]) -> Region:
        """From {coordinate index: (lo, hi)} in rad."""
        return cls(tuple((int(i), float(lo), float(hi)) for i, (lo, hi) in bounds.items()))

    def contains(self, z: np.ndarray) -> np.ndarray:
        """bool [N]: which rows of z [N, d] (rad) lie in the box."""
        inside = np.ones(z.shape[0], dtype=bool)
        for i, lo, hi in self.arcs:
            if not 0 <= i < z.shape[1]:
                raise ValueError(f"The region names coordinate {i}; z has {z.shape[1]}.")
            a, b = _wrap(lo), _wrap(hi)
            x = np.remainder(z[:, i] + math.pi, 2 * math.pi) - math.pi
            if a < b:
                inside &= (x >= a) & (x < b)
            elif a > b:
                inside &= (x >= a) | (x < b)
        return inside


@dataclass
class StateGroup:
    """Labels for a few CG coordinates: label -> regions (their union), in priority order.

    Attributes:
        name: the group's name ("residue 2", "z0").
        labels: {label: [Region, ...]}; a sample in none of them is `other`.
        other: the label of the rest.
    """

    name: str
    labels: dict[str, list[Region]]
    other: str = "O"

    @property
    def all_labels(self) -> list[str]:
        return [*self.labels, self.other]

    def assign(self, z: np.ndarray) -> np.ndarray:
        """Label index [N] of each row of z (index len(labels) is `other`)."""
        out = np.full(z.shape[0], len(self.labels), dtype=np.int64)
        for j, regions in reversed(list(enumerate(self.labels.values()))):
            hit = np.zeros(z.shape[0], dtype=bool)
            for region in regions:
                hit |= region.contains(z)
            out[hit] = j
        return out


@dataclass
class StateTable:
    """Populations with standard errors: one row per (kind, group, state).

    kind is "group" (a label of one group) or "joint" (the string of labels of every group,
    the `top` most populated). `temperature_k` and the `joint_ess` of the samples come along.
    """

    kind: list[str]
    group: list[str]
    state: list[str]
    population: np.ndarray
    se: np.ndarray
    temperature_k: float
    joint_ess: float
    groups: list[StateGroup] = field(default_factory=list)

    def rows(self, kind: str) -> list[tuple[str, str, float, float]]:
        """(group, state, population, se) of the rows of one kind."""
        return [(g, s, float(p), float(e)) for k, g, s, p, e in
                zip(self.kind, self.group, self.state, self.population, self.se, strict=True)
                if k == kind]

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The arrays `ccg states` writes: kind, group, state (strings), population, se,
        temperature_k, joint_ess."""
        return {"kind": np.array(self.kind), "group": np.array(self.group),
                "state": np.array(self.state), "population": self.population, "se": self.se,
                "temperature_k": np.array(self.temperature_k),
                "joint_ess": np.array(self.joint_ess)}

    def csv_text(self) -> str:
        """The table as CSV: kind,group,state,population,se."""
        lines = ["kind,group,state,population,se"]
        lines += [f"{k},{g},{s},{p:.6g},{e:.3g}" for k, g, s, p, e in
                  zip(self.kind, self.group, self.state, self.population, self.se, strict=True)]
        return "\n".join(lines) + "\n"


def _ratio_error(w: np.ndarray, member: np.ndarray, n_cells: int,
                 n_batches: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Self-normalized population of each cell and its delta-method standard error."""
    n, total = w.shape[0], w.sum()
    s1 = np.bincount(member, weights=w, minlength=n_cells)
    p = s1 / total
    if n_batches is None:
        s2 = np.bincount(member, weights=w * w, minlength=n_cells)
        ss = s2 * (1 - 2 * p) + p**2 * (w * w).sum()  # sum_k w_k^2 (1_k - p)^2
        units = n
    else:
        if isinstance(n_batches, bool) or not isinstance(n_batches, int) or \
                not 2 <= n_batches <= n:
            raise ValueError(f"Expected n_batches as an integer in [2, N = {n}] (or None for "
                             f"independent samples); got {n_batches!r}.")
        batch = np.arange(n) * n_batches // n
        u = np.bincount(batch * n_cells + member, weights=w,
                        minlength=n_batches * n_cells).reshape(n_batches, n_cells)
        v = np.bincount(batch, weights=w, minlength=n_batches)
        ss = ((u - p[None, :] * v[:, None]) ** 2).sum(0)
        units = n_batches
    return p, np.sqrt(np.clip(ss, 0.0, None) * units / (units - 1)) / total


def region_populations(samples: JointSamples,
                       states: Mapping[str, Region | Callable[[np.ndarray], np.ndarray]], *,
                       n_batches: int | None = None) -> dict[str, tuple[float, float]]:
    """{name: (population, standard error)} of named states (regions or predicates on z).

    States may overlap or leave gaps: each is estimated on its own.
    """
    w, _ = samples.weights()
    out = {}
    for name, state in states.items():
        inside = state.contains(samples.z) if isinstance(state, Region) else \
            np.asarray(state(samples.z), dtype=bool)
        if inside.shape != (len(samples),):
            raise ValueError(f"State {name!r} gave a mask of shape {list(inside.shape)}; "
                             f"expected [{len(samples)}] (one bool per sample).")
        p, se = _ratio_error(w, inside.astype(np.int64), 2, n_batches)
        out[name] = (float(p[1]), float(se[1]))
    return out


def joint_states(labels: Sequence[np.ndarray], groups: Sequence[StateGroup]
                 ) -> tuple[np.ndarray, list[str]]:
    """The joint state of each sample from its label index in every group (`StateGroup.assign`,
    one array [N] per group): (index [N] into the joint states that occur, their names). A
    name joins the groups' labels in order ("ABA"; with "|" between labels longer than one
    character)."""
    all_labels = [g.all_labels for g in groups]
    sep = "" if all(len(x) == 1 for labels in all_labels for x in labels) else "|"
    radix = [len(x) for x in all_labels]
    flat = np.zeros(len(labels[0]), dtype=np.int64)
    for c, r in zip(labels, radix, strict=True):
        flat = flat * r + c
    uniq, member = np.unique(flat, return_inverse=True)
    names = []
    for code in uniq:
        digits, rest = [], int(code)
        for r in radix[::-1]:
            digits.append(rest % r)
            rest //= r
        names.append(sep.join(x[d] for x, d in zip(all_labels, digits[::-1], strict=True)))
    return member.reshape(-1), names


def group_populations(samples: JointSamples, groups: Sequence[StateGroup], *, top: int = 10,
                      n_batches: int | None = None) -> StateTable:
    """Label populations of every group and the `top` most populated joint states.

    Joint states are the labels of all groups in order, joined ("ABA"; with "|" between
    labels longer than one character).
    """
    if not groups:
        raise ValueError("Expected at least one StateGroup.")
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"Expected top as an integer >= 0; got {top!r}.")
    w, _ = samples.weights()
    kind, group, state, pops, errs = [], [], [], [], []
    codes = []
    for g in groups:
        labels = g.assign(samples.z)
        codes.append(labels)
        p, se = _ratio_error(w, labels, len(g.all_labels), n_batches)
        for j, label in enumerate(g.all_labels):
            kind.append("group")
            group.append(g.name)
            state.append(label)
            pops.append(p[j])
            errs.append(se[j])
    member, names = joint_states(codes, groups)
    p, se = _ratio_error(w, member, len(names), n_batches)
    for j in np.argsort(-p, kind="stable")[:top]:
        name = names[j]
        kind.append("joint")
        group.append("all")
        state.append(name)
        pops.append(p[j])
        errs.append(se[j])
    return StateTable(kind, group, state, np.array(pops), np.array(errs),
                      samples.temperature_k, samples.ess, list(groups))


def ramachandran_groups(cg_names: Sequence[str],
                        torsion_atoms: Sequence[Sequence[int]] | None = None
                        ) -> list[StateGroup]:
    """One alpha-R (A) / beta (B) / PPII (P) / alpha-L (L) / other (O) group per residue.

    (phi, psi) pairs as `ccg.mapping.peptide.phi_psi_pairs` finds them: by name ("phi"/"psi",
    "phi_k"/"psi_k", "phi<res>"/"psi<res>"), or with `torsion_atoms` (the map's atom quadruples,
    as `TorsionMap.torsion_atoms`) by their shared C-alpha atom. Regions: `RAMACHANDRAN_DEG`.
    Raises ValueError when no pair is found.
    """
    names = list(cg_names)
    pairs = phi_psi_pairs(names, torsion_atoms)
    if not pairs:
        raise ValueError(f"No (phi, psi) pair among the CG coordinates {names}; Ramachandran "
                         "states need a backbone torsion map (cg = \"phi-psi\" or "
                         "\"backbone-torsions\").")
    groups = []
    for i, j in pairs:
        labels = {}
        for code, boxes in RAMACHANDRAN_DEG.items():
            labels[code] = [Region(((i, math.radians(a), math.radians(b)),
                                    (j, math.radians(c), math.radians(d))))
                            for (a, b), (c, d) in boxes]
        suffix = names[i][3:].lstrip("_")
        groups.append(StateGroup(f"{names[i]}/{names[j]}" if suffix else "phi/psi", labels))
    return groups


def halves_groups(cg_names: Sequence[str]) -> list[StateGroup]:
    """One group per CG torsion: "+" for z in [0, pi), "-" for z in [-pi, 0)."""
    return [StateGroup(name, {"+": [Region(((i, 0.0, math.pi),))]}, other="-")
            for i, name in enumerate(cg_names)]


def default_groups(cg_names: Sequence[str],
                   torsion_atoms: Sequence[Sequence[int]] | None = None) -> list[StateGroup]:
    """`ramachandran_groups` where the CG coordinates hold (phi, psi) pairs, else
    `halves_groups`."""
    try:
        return ramachandran_groups(cg_names, torsion_atoms)
    except ValueError:
        return halves_groups(cg_names)


def save_state_table(table: StateTable, npz_path: str | Path,
                     csv_path: str | Path | None = None) -> list[Path]:
    """Write `table.as_arrays()` as an npz and (optionally) `table.csv_text()` as a CSV, each
    atomically (a temporary file renamed into place). Returns the paths written."""
    written = []
    with atomic_path(npz_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **table.as_arrays())
    written.append(Path(npz_path))
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            Path(tmp).write_text(table.csv_text())
        written.append(Path(csv_path))
    return written
