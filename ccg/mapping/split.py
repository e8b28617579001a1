"""Splitting coordinates into (z, r): the analytic `CoordinateSplitMap`, and `ICSplit`, the r
layout shared by the Z-matrix based maps.

r layout of the Z-matrix maps: [bonds (nm) ..., angles (rad) ..., torsions (rad) ...], each
block in Z-matrix order (root entries first), torsions that are CG coordinates removed.
Chirality-constrained torsions appear as t' = 2 · sign · torsion − π (see
`ccg.mapping.chirality`): kind "torsion" but not circular (an interval [−π, π], not a circle).
Improper-style torsions (the dihedral atom i bonded to the bond atom k: branch geometry such
as a carbonyl O, an amide H, or the second and third H of a methyl group) are stiff; they are
kind "improper", not circular, and packed unwrapped around their reference value,
r = t_ref + wrap(t − t_ref) in [t_ref − π, t_ref + π), so a flow can model them as narrow
real-valued coordinates (merge accepts any real value: torsions enter through cos and sin).
Further torsions can be given the same treatment (`stiff_rows`): a map builder passes the
torsions that are stiff with a single minimum by energy, such as peptide ω (see
`ccg.training.run.build_model`), so that no flow models them on a circle, whose fixed point at ±π
can trap a narrow peak on the wrong side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ccg.mapping.base import CG_MAPS, CGMap, register_map
from ccg.mapping.chirality import (
    HALF_RANGE_LOG_JAC,
    half_range_to_torsion,
    torsion_to_half_range,
)
from ccg.mapping.zmatrix import InternalCoordinates, ZMatrix, wrap_angle


class ICSplit(torch.nn.Module):
    """Packs Z-matrix internal coordinates into r, with some torsions moved to z.

    Args:
        zmatrix: the Z-matrix.
        z_torsions: torsion indices (Z-matrix rows) that are CG coordinates, in z order.
        bonds: the molecule's bonds as atom-index pairs; with `reference_torsions`, marks the
            improper-style torsions (see the module docstring). None: no improper kind.
        reference_torsions: [n_torsions] torsions of the reference structure (rad).
        stiff_rows: further torsion indices (Z-matrix rows, neither z nor chiral) to pack like
            the improper-style ones (kind "improper": not circular, unwrapped around the
            reference); needs `reference_torsions`.
    """

    def __init__(self, zmatrix: ZMatrix, z_torsions: Sequence[int] = (), *,
                 bonds: Sequence[tuple[int, int]] | None = None,
                 reference_torsions: torch.Tensor | None = None,
                 stiff_rows: Sequence[int] = ()) -> None:
        super().__init__()
        nt = zmatrix.n_torsions
        z_t = [int(t) for t in z_torsions]
        r_t = [t for t in range(nt) if t not in set(z_t)]
        signs = dict(zmatrix.chiral)
        for t in z_t:
            signs.pop(t, None)
        self.n_bonds, self.n_angles = zmatrix.n_bonds, zmatrix.n_angles
        self.n_r = self.n_bonds + self.n_angles + len(r_t)
        self.n_chiral = sum(t in signs for t in r_t)
        bonded = {frozenset((int(a), int(b))) for a, b in (bonds or ())}
        extra = {int(t) for t in stiff_rows}
        bad = sorted(t for t in extra if t not in r_t or t in signs)
        if bad or (extra and reference_torsions is None):
            raise ValueError(f"stiff_rows must be r torsions (not z, not chiral) of a layout with "
                             f"reference torsions; got rows {bad or sorted(extra)}.")
        stiff = {
            t for t in r_t
            if t not in signs and reference_torsions is not None
            and (t in extra or frozenset((zmatrix.rows[t][1], zmatrix.rows[t][3])) in bonded)
        }
        self.r_kinds = ["bond"] * self.n_bonds + ["angle"] * self.n_angles + [
            "improper" if t in stiff else "torsion" for t in r_t]
        self.r_circular = [False] * (self.n_bonds + self.n_angles) + [
            t not in signs and t not in stiff for t in r_t]
        t_ref = torch.zeros(len(r_t), dtype=torch.float64)
        if reference_torsions is not None:
            t_ref = reference_torsions.detach().to(torch.float64)[r_t]
        self.register_buffer("_stiff", torch.tensor([t in stiff for t in r_t]), False)
        self.register_buffer("_t_ref", t_ref, False)
        perm = [0] * nt
        for pos, t in enumerate(z_t + r_t):
            perm[t] = pos
        self.register_buffer("_z_index", torch.tensor(z_t, dtype=torch.long), False)
        self.register_buffer("_r_index", torch.tensor(r_t, dtype=torch.long), False)
        self.r_torsion_rows = r_t
        """The Z-matrix torsion (row index) of each r torsion dim, in r order."""
        self.register_buffer("_perm", torch.tensor(perm, dtype=torch.long), False)
        sign = torch.tensor([signs.get(t, 0.0) for t in r_t], dtype=torch.float64)
        self.register_buffer("_r_sign", sign, False)
        self.register_buffer("_r_chiral", sign != 0, False)
        self.r_chiral = [False] * (self.n_bonds + self.n_angles) + [t in signs for t in r_t]

    @property
    def log_jac_constant(self) -> float:
        """n_chiral · log(1/2): log|d torsions / d t'| of the half-range torsions."""
        return self.n_chiral * HALF_RANGE_LOG_JAC

    def z_torsions(self, ic: InternalCoordinates) -> torch.Tensor:
        """The CG torsions [B, n_z] (rad, [−π, π))."""
        return ic.torsions[:, self._z_index]

    def pack(self, ic: InternalCoordinates) -> torch.Tensor:
        """Internal coordinates -> r [B, n_r]."""
        rt = ic.torsions[:, self._r_index]
        sign = self._r_sign.to(rt.dtype)
        rt = torch.where(self._r_chiral, torsion_to_half_range(rt, sign), rt)
        t_ref = self._t_ref.to(rt.dtype)
        rt = torch.where(self._stiff, t_ref + wrap_angle(rt - t_ref), rt)
        return torch.cat([ic.bonds, ic.angles, rt], dim=-1)

    def unpack(
        self, r: torch.Tensor, z_torsions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """r [B, n_r] (and the CG torsions [B, n_z]) -> (bonds, angles, all torsions)."""
        nb, na = self.n_bonds, self.n_angles
        bonds, angles, rt = r[:, :nb], r[:, nb:nb + na], r[:, nb + na:]
        sign = self._r_sign.to(rt.dtype)
        rt = torch.where(self._r_chiral, half_range_to_torsion(rt, sign), rt)
        if z_torsions is not None:
            rt = torch.cat([z_torsions, rt], dim=-1)
        return bonds, angles, rt[:, self._perm]


@register_map("coordinate_split")
class CoordinateSplitMap(CGMap):
    """z = x[:, :cg_dim], r = x[:, cg_dim:] for analytic systems with x [B, dim].

    log_jac = 0; r_kinds "coord", no r circular, r_reference zeros. With `z_circular` the CG
    coordinates are angles on [−π, π) (rad) and cg_features(z) = [cos z, sin z] (2 cg_dim
    features, periodic); otherwise cg_features(z) = z.
    """

    def __init__(self, dim: int, cg_dim: int, z_circular: bool = False) -> None:
        super().__init__()
        if not (isinstance(dim, int) and isinstance(cg_dim, int) and 0 < cg_dim < dim):
            raise ValueError(f"Expected integers 0 < cg_dim < dim; got dim={dim}, cg_dim={cg_dim}.")
        n_r = dim - cg_dim
        self.periodic = bool(z_circular)
        self._declare(event_shape=(dim,), cg_dim=cg_dim, n_r=n_r,
                      cg_feature_dim=2 * cg_dim if self.periodic else cg_dim,
                      z_circular=[self.periodic] * cg_dim, r_circular=[False] * n_r,
                      r_kinds=["coord"] * n_r)

    def _coarse_grain(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :self.cg_dim]

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x[:, :self.cg_dim], x[:, self.cg_dim:], x.new_zeros(x.shape[0])

    def _merge(self, z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([z, r], dim=-1), z.new_zeros(z.shape[0])

    def _cg_features(self, z: torch.Tensor) -> torch.Tensor:
        if self.periodic:
            return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)
        return z

    def config(self) -> dict:
        cfg = {"type": self.map_type, "dim": self.event_shape[0], "cg_dim": self.cg_dim}
        if self.periodic:
            cfg["z_circular"] = True
        return cfg

    @classmethod
    def from_config(cls, cfg: dict, topology: Any) -> CoordinateSplitMap:
        return cls(int(cfg["dim"]), int(cfg["cg_dim"]), bool(cfg.get("z_circular", False)))


@CG_MAPS.register("split", systems="analytic")
def coordinate_split_map(system) -> CoordinateSplitMap:
    """`[map] cg = "split"`: z = the first `system.cg_dim` coordinates of an analytic system
    (angles on circles when the system declares `z_periodic`)."""
    return CoordinateSplitMap(system.dim, system.cg_dim, bool(getattr(system, "z_periodic", False)))
