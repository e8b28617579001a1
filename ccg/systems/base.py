"""The `System` interface: a batched, differentiable potential energy U(x).

A system declares `event_shape` (the shape of one configuration) and implements `_energy`.
The public `energy` validates once (type, shape, finiteness) and then calls `_energy`.
Molecular systems have `event_shape == (n_atoms, 3)` (nm) and a `topology`; analytic
systems have `event_shape == (dim,)`.
"""

from __future__ import annotations

import abc

import torch

from ccg._checks import check_finite, check_shape
from ccg._hessian import central_difference_hessian


class System(abc.ABC):
    """A potential energy U(x) in kJ/mol, batched over configurations.

    Subclasses set `event_shape` and implement `_energy(x) -> [B]`. Energies are
    differentiable with respect to x (forces by autograd) in float32 and float64, on the
    device of x.
    """

    event_shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        """Number of degrees of freedom of one configuration."""
        n = 1
        for s in self.event_shape:
            n *= s
        return n

    @property
    def reference_positions(self):  # -> np.ndarray | None
        """A reference configuration [*event_shape] (nm for molecules; a copy), or None.

        Molecular systems use their (energy-minimized) structure: the flow's base is
        initialized there and the energy cut is measured from its energy.
        """
        return None

    def _describe_event(self) -> str:
        return "nm" if len(self.event_shape) == 2 else ""

    def energy(self, x: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """Potential energy U(x).

        Args:
            x: configurations, shape [B, *event_shape] (nm for molecular systems).
            validate: check type, shape and finiteness first. `False` skips the checks (a
                host sync each) for callers on a hot path that guarantee them, or that handle
                non-finite rows themselves (`ccg.model.safe_energy`).

        Returns:
            U(x) in kJ/mol, shape [B], same dtype and device as x.
        """
        if validate:
            self._check_input(x)
        return self._energy(x)

    def _check_input(self, x: torch.Tensor) -> None:
        """Raise unless x is a finite float tensor of shape [B, *event_shape]."""
        check_shape(x, self.event_shape, "x", self._describe_event())
        if not x.is_floating_point():
            raise TypeError(f"Expected x as float32 or float64; got {x.dtype}. Use x.double().")
        check_finite(x, "x")

    def compile_energy(self, **options) -> None:
        """`torch.compile` `_energy` in place: `energy` then runs the compiled code (same
        values and gradients). `options` go to `torch.compile` (default `dynamic=False`: one
        graph per batch shape, as training uses one shape; each new shape compiles again)."""
        options = {"dynamic": False, **options}
        self._energy = torch.compile(type(self)._energy.__get__(self), **options)

    def forces(self, x: torch.Tensor) -> torch.Tensor:
        """Forces -dU/dx in kJ/mol/nm, shape [B, *event_shape] (no graph kept)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            u = self.energy(xg)
            (grad,) = torch.autograd.grad(u.sum(), xg)
        return -grad

    def reference_hessian(self) -> torch.Tensor:
        """d2U/dx2 [dim, dim] (kJ/mol per unit^2, float64, CPU) at `reference_positions`, by
        central differences of the forces (`ccg._hessian`); computed once per system and
        kept (the maps of one system all start from it). Raises ValueError without a
        reference configuration."""
        cached = getattr(self, "_reference_hessian", None)
        if cached is not None:
            return cached
        ref = self.reference_positions
        if ref is None:
            raise ValueError(f"{type(self).__name__} has no reference configuration, so no "
                             "reference Hessian.")

        def gradient(flat: torch.Tensor) -> torch.Tensor:
            return -self.forces(flat.reshape(-1, *self.event_shape)).reshape(len(flat), -1)

        hessian = central_difference_hessian(
            gradient, torch.as_tensor(ref, dtype=torch.float64).reshape(-1))
        self._reference_hessian = hessian
        return hessian

    @abc.abstractmethod
    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        """U(x) for validated x of shape [B, *event_shape]; returns [B] kJ/mol."""


class MolecularSystem(System):
    """A system of atoms: `event_shape == (n_atoms, 3)` and an mdtraj `topology`."""

    @property
    @abc.abstractmethod
    def n_atoms(self) -> int:
        """Number of atoms."""

    @property
    @abc.abstractmethod
    def topology(self):  # -> mdtraj.Topology
        """The mdtraj.Topology of the atoms, in the order of x's second axis."""

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.n_atoms, 3)

    def _describe_event(self) -> str:
        return "n_atoms, 3 in nm"
