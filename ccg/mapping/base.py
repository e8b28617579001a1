"""The `CGMap` interface: a CG map ξ with an exact inverse split x <-> (z, r, log|J|).

A map declares the shapes it works with and implements private `_coarse_grain`, `_split`,
`_merge`, `_cg_features`; the public methods validate their inputs once (shape, dtype,
finiteness, device) and then call the private ones.

Convention: `log_jac` is always log|det ∂x/∂(z, r)| of the map (z, r) -> x, in both `split`
and `merge`, so that p_x(x) · |J| = p_zr(z, r) and exp(−βF(z)) = ∫ exp(−βU(X(z, r))) |J| dr.

Two registries live here: `MAP_TYPES` (the classes a model file can store, by `config()`
"type"; filled by `register_map`) and `CG_MAPS` (the named maps a configuration asks for,
`[map] cg = ...`: builders `(system) -> CGMap`, registered next to each class).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import mdtraj
import torch

from ccg._checks import check_finite, check_shape, check_tensor
from ccg.registry import Registry
from ccg.systems.base import MolecularSystem

R_KINDS = ("bond", "angle", "torsion", "improper", "coord")

MAP_TYPES: Registry = Registry("map type")
"""Serializable CG map classes: config "type" -> class (see `register_map`)."""

CG_MAPS: Registry = Registry("CG map")
"""Named CG maps: name -> builder `(system) -> CGMap`; info `systems` is "molecular" (needs a
topology and reference positions) or "analytic"."""


def register_map(name: str):
    """Class decorator: register a CGMap subclass under `name` for `map_from_config`."""

    def decorate(cls: type[CGMap]) -> type[CGMap]:
        cls.map_type = name
        MAP_TYPES.register(name)(cls)
        return cls

    return decorate


def map_from_config(cfg: dict, topology_or_system: Any = None) -> CGMap:
    """Rebuild a map from `cg_map.config()`.

    Args:
        cfg: the dict returned by `config()` (after a JSON round trip).
        topology_or_system: an mdtraj.Topology, or an object with a `topology` attribute (a
            molecular `System`); None (or an analytic system) for `CoordinateSplitMap`.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f"Expected a map config dict; got {type(cfg).__name__}.")
    name = cfg.get("type")
    if name not in MAP_TYPES:
        raise ValueError(f'Invalid map type "{name}". Must be one of {MAP_TYPES.names()}.')
    topology = topology_or_system
    if isinstance(topology, MolecularSystem):
        topology = topology.topology
    elif not isinstance(topology, mdtraj.Topology):
        topology = None
    return MAP_TYPES[name].from_config(cfg, topology)


def check_topology(topology: Any, n_atoms: int, what: str) -> None:
    """Raise unless `topology` is an mdtraj.Topology of `n_atoms` atoms (rebuilding `what`)."""
    if not isinstance(topology, mdtraj.Topology):
        raise ValueError(f"Rebuilding a {what} needs the mdtraj.Topology (or a molecular "
                         f"System); got {type(topology).__name__}.")
    if topology.n_atoms != n_atoms:
        raise ValueError(f"The {what} config is for {n_atoms} atoms; the topology has "
                         f"{topology.n_atoms}.")


class CGMap(torch.nn.Module, abc.ABC):
    """A CG map ξ(x) = z completed by coordinates r to a bijection x <-> (z, r).

    Attributes:
        event_shape: shape of one configuration x: (n_atoms, 3) in nm, or (dim,).
        cg_dim: size of z.
        n_r: size of r.
        cg_feature_dim: size of `cg_features(z)`.
        z_circular: BoolTensor [cg_dim], True for torsion-type CG dims on the circle [−π, π).
        r_circular: BoolTensor [n_r], True for torsion-type r dims on the circle [−π, π).
        r_kinds: list of n_r strings in ("bond", "angle", "torsion", "improper", "coord");
            "improper" torsions are stiff branch torsions, unwrapped around their reference.
        r_reference: Tensor [n_r], r of the reference structure (float64).
        r_chiral: BoolTensor [n_r]: True for chirality-constrained torsions in half-range form
            t' (kind "torsion", not circular): they must stay in the open interval (−π, π);
            a value outside gives the mirror-image chirality, so a flow should bound them.

    Buffers move with `.to(device)`; computations follow the dtype of the input (float32 or
    float64).
    """

    map_type: ClassVar[str] = ""
    event_shape: tuple[int, ...]
    cg_dim: int
    n_r: int
    cg_feature_dim: int
    r_kinds: list[str]

    def _declare(
        self, *, event_shape: Sequence[int], cg_dim: int, n_r: int, cg_feature_dim: int,
        z_circular: Sequence[bool], r_circular: Sequence[bool], r_kinds: Sequence[str],
        r_chiral: Sequence[bool] | None = None,
    ) -> None:
        self.event_shape = tuple(int(s) for s in event_shape)
        self.cg_dim, self.n_r, self.cg_feature_dim = int(cg_dim), int(n_r), int(cg_feature_dim)
        if len(z_circular) != cg_dim or len(r_circular) != n_r or len(r_kinds) != n_r:
            raise ValueError(
                f"Inconsistent map declaration: cg_dim={cg_dim}, n_r={n_r}, but "
                f"len(z_circular)={len(z_circular)}, len(r_circular)={len(r_circular)}, "
                f"len(r_kinds)={len(r_kinds)}."
            )
        bad = sorted(set(r_kinds) - set(R_KINDS))
        if bad:
            raise ValueError(f"Unknown r_kinds {bad}. Must be one of {list(R_KINDS)}.")
        self.r_kinds = list(r_kinds)
        self.register_buffer("z_circular", torch.tensor(list(z_circular), dtype=torch.bool),
                             persistent=False)
        self.register_buffer("r_circular", torch.tensor(list(r_circular), dtype=torch.bool),
                             persistent=False)
        self.register_buffer("r_reference", torch.zeros(n_r, dtype=torch.float64),
                             persistent=False)
        chiral = [False] * n_r if r_chiral is None else list(r_chiral)
        if len(chiral) != n_r:
            raise ValueError(f"Expected r_chiral of length n_r={n_r}; got {len(chiral)}.")
        self.register_buffer("r_chiral", torch.tensor(chiral, dtype=torch.bool), persistent=False)

    @property
    def cg_names(self) -> list[str]:
        """Names of the CG coordinates in z order (table headers, plot labels)."""
        return [f"z{i}" for i in range(self.cg_dim)]

    # ------------------------------------------------------------------ checks
    def _check_device(self, t: torch.Tensor, name: str) -> None:
        dev = self.z_circular.device
        if t.device != dev:
            raise ValueError(
                f"Expected {name} on the map's device {dev}; got {t.device}. Move the map with "
                f"cg_map.to({name}.device) or the tensor with {name}.to('{dev}')."
            )

    def _check_float(self, t: torch.Tensor, name: str, what: str) -> None:
        check_tensor(t, name)
        if not t.is_floating_point():
            raise TypeError(f"Expected {name} ({what}) as float32 or float64; got {t.dtype}.")

    def _check_x(self, x: torch.Tensor) -> None:
        what = "n_atoms, 3 in nm" if len(self.event_shape) == 2 else "dim"
        self._check_float(x, "x", what)
        check_shape(x, self.event_shape, "x", what)
        check_finite(x, "x")
        self._check_device(x, "x")

    def _check_z(self, z: torch.Tensor) -> None:
        self._check_float(z, "z", "CG coordinates")
        check_shape(z, (self.cg_dim,), "z", "cg_dim")
        check_finite(z, "z")
        self._check_device(z, "z")

    # ------------------------------------------------------------------ public API
    def coarse_grain(self, x: torch.Tensor) -> torch.Tensor:
        """ξ(x): x [B, *event_shape] -> z [B, cg_dim] (rad for torsions, nm for beads)."""
        self._check_x(x)
        return self._coarse_grain(x)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, *event_shape] -> (z [B, cg_dim], r [B, n_r], log_jac [B]).

        log_jac = log|det ∂x/∂(z, r)| of the inverse map (z, r) -> x at this point.
        """
        self._check_x(x)
        return self._split(x)

    def merge(self, z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [B, cg_dim], r [B, n_r]) -> (x [B, *event_shape], log_jac [B]).

        log_jac = log|det ∂x/∂(z, r)|; ξ(x) == z exactly (up to rounding).
        """
        self._check_z(z)
        self._check_float(r, "r", "completing coordinates")
        check_shape(r, (self.n_r,), "r", "n_r")
        check_finite(r, "r")
        self._check_device(r, "r")
        if r.shape[0] != z.shape[0]:
            raise ValueError(
                f"Expected z and r with the same batch size; got {z.shape[0]} and {r.shape[0]}. "
                "Broadcast z explicitly (z.expand(n, -1)) to draw several r per z."
            )
        if r.dtype != z.dtype:
            raise TypeError(f"Expected z and r of the same dtype; got {z.dtype} and {r.dtype}.")
        return self._merge(z, r)

    def cg_features(self, z: torch.Tensor) -> torch.Tensor:
        """Conditioning features of z for a flow: [B, cg_dim] -> [B, cg_feature_dim]."""
        self._check_z(z)
        return self._cg_features(z)

    @abc.abstractmethod
    def config(self) -> dict:
        """JSON-serializable description; `map_from_config(cfg, topology)` rebuilds the map."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: dict, topology: Any) -> CGMap:
        """Rebuild from `config()` (topology: mdtraj.Topology or None)."""

    @abc.abstractmethod
    def _coarse_grain(self, x: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    @abc.abstractmethod
    def _merge(self, z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abc.abstractmethod
    def _cg_features(self, z: torch.Tensor) -> torch.Tensor: ...

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, cg_dim={self.cg_dim}, n_r={self.n_r}"


def as_reference_xyz(reference_xyz: Any, n_atoms: int) -> torch.Tensor:
    """A reference structure as a float64 CPU tensor [n_atoms, 3] (nm).

    Accepts an array / tensor of shape [n_atoms, 3] or [1, n_atoms, 3], or an mdtraj.Trajectory
    (its first frame).
    """
    if reference_xyz is None:
        raise ValueError(
            "reference_xyz is required (a structure [n_atoms, 3] in nm, e.g. traj.xyz[0]): it "
            "fixes the chirality signs and r_reference."
        )
    if isinstance(reference_xyz, mdtraj.Trajectory):
        reference_xyz = reference_xyz.xyz[0]
    if not isinstance(reference_xyz, torch.Tensor):  # a list (a config) would become float32
        reference_xyz = torch.as_tensor(reference_xyz, dtype=torch.float64)
    ref = reference_xyz.detach().to("cpu", torch.float64)
    if ref.ndim == 3 and ref.shape[0] == 1:
        ref = ref[0]
    if tuple(ref.shape) != (n_atoms, 3):
        raise ValueError(
            f"Expected reference_xyz of shape [{n_atoms}, 3] (nm); got {list(ref.shape)}."
        )
    if not bool(torch.isfinite(ref).all()):
        raise ValueError("reference_xyz contains NaN or infinite values.")
    return ref.clone()
