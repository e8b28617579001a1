"""What the backmapping model needs of its parts, as `typing.Protocol`s.

`BackmappingModel` combines a system, a CG map and a conditional flow through these
interfaces only (saving it to a model file also needs their `config()`). ccg's own classes
(`System`, `CGMap`, `ConditionalFlow`) satisfy them; so does any object with the same methods
and attributes, for example a torch energy from another library wrapped with `event_shape`
and `energy`. The checks are structural (`isinstance(obj, SystemProtocol)` looks for the
names, not their signatures).

Shapes: x [B, *event_shape], z [B, cg_dim], r [B, n_r], context [B, context_dim]; energies and
log-densities [B]. Units: nm, kJ/mol, rad.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SystemProtocol(Protocol):
    """A batched, differentiable potential energy U(x) in kJ/mol."""

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration: (n_atoms, 3) for molecules, (dim,) otherwise."""
        ...

    def energy(self, x: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """U(x) [B] for x [B, *event_shape]; `validate=False` skips the input checks."""
        ...


@runtime_checkable
class CGMapProtocol(Protocol):
    """A CG map ξ(x) = z with its exact split x <-> (z, r, log|det ∂x/∂(z, r)|)."""

    event_shape: tuple[int, ...]
    cg_dim: int
    n_r: int
    cg_feature_dim: int
    r_chiral: torch.Tensor

    def coarse_grain(self, x: torch.Tensor) -> torch.Tensor:
        """z [B, cg_dim] of x [B, *event_shape]."""
        ...

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z [B, cg_dim], r [B, n_r], log_jac [B]) of x."""
        ...

    def merge(self, z: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x [B, *event_shape], log_jac [B]) with ξ(x) = z exactly."""
        ...

    def cg_features(self, z: torch.Tensor) -> torch.Tensor:
        """Conditioning features [B, cg_feature_dim] of z."""
        ...


@runtime_checkable
class FlowProtocol(Protocol):
    """A conditional density q(r | context) that samples with its log-density."""

    dim: int
    context_dim: int

    def sample(self, context: torch.Tensor, *, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """One (r [B, dim], log q [B]) per context row, reparameterized."""
        ...

    def log_prob(self, r: torch.Tensor, context: torch.Tensor, *,
                 validate: bool = True) -> torch.Tensor:
        """log q(r | context) [B]."""
        ...


def check_protocol(obj: object, protocol: type, name: str) -> None:
    """Raise TypeError naming the missing attributes unless `obj` satisfies `protocol`."""
    if isinstance(obj, protocol):
        return
    wanted = [n for n in dir(protocol) if not n.startswith("_")]
    wanted += list(getattr(protocol, "__annotations__", {}))
    missing = sorted({n for n in wanted if not hasattr(obj, n)})
    raise TypeError(f"Expected {name} with the interface of ccg.protocols.{protocol.__name__}; "
                    f"{type(obj).__name__} lacks {missing}.")
