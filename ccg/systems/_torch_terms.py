"""Torch modules compiled from standard OpenMM forces (the fast, batched path).

Each supported OpenMM force becomes a `TorchTerm`: an `nn.Module` whose parameters are float64
buffers (cast once per (dtype, device) and cached) and whose atom indices are precomputed, so
`forward` is a fixed sequence of gathers and element-wise operations with no Python loop over
samples or atoms.

Terms read configurations in a *component-major* layout `xt = atom_major(x)` of shape
[3, n_atoms, B] (nm): the displacements of k atom pairs are one `index_select` per side, giving
[3, k, B] whose x, y, z components are contiguous [k, B] blocks with the batch as the fast axis,
so every element-wise operation is vectorized and no reduction runs over a length-3 axis.
`atom_major` is an opaque custom op so that `torch.compile` materializes this layout once.

Angles, torsions, nonbonded and generalized Born terms compute their gradient by hand in the
same pass as the energy (`energy_with_gradient`): cheaper than autograd through the chain of
element-wise operations, and exact (tests compare forces with OpenMM's to 1e-8). A higher
derivative (`create_graph=True`, e.g. a Hessian) is computed by autograd through the same
energy code.

Supported (compiled exactly, float64 agrees with OpenMM's Reference platform to rounding):

- HarmonicBondForce      E = k/2 (r - r0)^2
- HarmonicAngleForce     E = k/2 (theta - theta0)^2
- PeriodicTorsionForce   E = k (1 + cos(n phi - phi0))
- NonbondedForce (NoCutoff or CutoffNonPeriodic, no parameter offsets): Coulomb
  ONE_4PI_EPS0 q_i q_j / r plus Lennard-Jones 4 eps ((sigma/r)^12 - (sigma/r)^6) with
  Lorentz-Berthelot combination over all pairs that are not exceptions; exceptions with their
  own (chargeProd, sigma, epsilon). CutoffNonPeriodic as OpenMM's Reference platform computes
  it: `ccg.systems._nonbonded_term`.
- GBSAOBCForce and the CustomGBForce of OpenMM's implicit/obc2.xml and implicit/gbn2.xml:
  `ccg.systems._gb_terms`.

`TORCH_FORCES` maps an OpenMM force class name to its compiler (a `TorchTerm` subclass whose
constructor takes the force); each term registers itself next to its class. Anything not in
the table, or a force whose settings a compiler cannot reproduce exactly, raises
`UnsupportedForce` from `compile_force`, and the caller evaluates that force with OpenMM
instead.
"""

from __future__ import annotations

import math

import numpy as np
import openmm
import torch
from openmm import unit
from torch import nn

from ccg.registry import Registry

_EPSILON0 = 1e-6 * 8.8541878128e-12 / (1.602176634e-19 * 1.602176634e-19 * 6.02214076e23)
ONE_4PI_EPS0 = 1.0 / (4.0 * math.pi * _EPSILON0)
"""Coulomb constant 1/(4 pi eps0) in kJ mol^-1 nm e^-2, computed exactly as OpenMM 8.6 does
(CODATA 2018, `SimTKOpenMMRealType.h`): 138.93545764438198."""


class UnsupportedForce(Exception):
    """Raised by `compile_force` when a force cannot be compiled exactly; carries the reason."""


TORCH_FORCES: Registry = Registry("torch-compiled OpenMM force")
"""OpenMM force class name -> `TorchTerm` subclass compiling it (`cls(force)`)."""


def _atom_major_copy(x: torch.Tensor) -> torch.Tensor:
    return x.permute(2, 1, 0).contiguous()


if hasattr(torch.library, "custom_op"):  # torch >= 2.4
    # An opaque op, so that torch.compile materializes the layout once: inlined, inductor
    # would gather every pair's coordinates from [B, n_atoms, 3] with stride 3 n_atoms,
    # which doubles the compiled time of the pair terms.
    _atom_major_op = torch.library.custom_op("ccg::atom_major", mutates_args=())(
        _atom_major_copy
    )
    _atom_major_op.register_fake(
        lambda x: x.new_empty((x.shape[2], x.shape[1], x.shape[0]))
    )
    _atom_major_op.register_autograd(lambda ctx, grad: _atom_major_copy(grad))
else:  # pragma: no cover - older torch: the plain copy
    _atom_major_op = _atom_major_copy


def atom_major(x: torch.Tensor) -> torch.Tensor:
    """Rearrange positions [B, n_atoms, 3] (nm) into the terms' layout [3, n_atoms, B]."""
    return _atom_major_op(x)


def _md(value: object) -> float:
    """A float in OpenMM's MD unit system (nm, kJ/mol, rad, e) from a Quantity or a number."""
    if isinstance(value, unit.Quantity):
        return float(value.value_in_unit_system(unit.md_unit_system))
    return float(value)  # type: ignore[arg-type]


Vec = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""A batch of 3-vectors as its (x, y, z) components, each [k, B]."""


def _displacement(xt: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """x_i - x_j for index tensors i, j of length k: [3, k, B] from xt [3, n_atoms, B]."""
    return xt.index_select(1, i) - xt.index_select(1, j)


def pair_gradient(
    xt: torch.Tensor, i: torch.Tensor, j: torch.Tensor, per_pair: torch.Tensor
) -> torch.Tensor:
    """The gradient [3, n_atoms, B] of pair terms whose gradient with respect to x_i - x_j
    is per_pair [3, P, B]: +per_pair onto atom i, -per_pair onto atom j."""
    return torch.zeros_like(xt).index_add(1, i, per_pair).index_add(1, j, -per_pair)


def _dot(a: Vec, b: Vec) -> torch.Tensor:
    """Dot product of component triples: [k, B]."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vec, b: Vec) -> Vec:
    """Cross product of component triples."""
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


class TorchTerm(nn.Module):
    """One compiled OpenMM force: `forward(xt [3, n_atoms, B]) -> energy [B]` in kJ/mol.

    Subclasses register float64 parameter buffers named in `_param_names` and long index
    buffers named in `_index_names`; `_cast(ref)` returns them on ref's device, parameters in
    ref's dtype, cached per (dtype, device) so repeated calls do not re-cast.
    """

    _param_names: tuple[str, ...] = ()
    _index_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    def _register(self, **arrays: np.ndarray) -> None:
        for name, value in arrays.items():
            if name in self._index_names:
                tensor = torch.as_tensor(np.asarray(value, dtype=np.int64))
            else:
                tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
            self.register_buffer(name, tensor, persistent=False)

    def _cast(self, ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (ref.dtype, ref.device)
        cached = self._cache.get(key)
        if cached is None:
            idx = tuple(getattr(self, n).to(ref.device) for n in self._index_names)
            par = tuple(getattr(self, n).to(ref.device, ref.dtype) for n in self._param_names)
            cached = idx + par
            self._cache[key] = cached
        return cached

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._cache = {}
        return super()._apply(fn, recurse)

    @property
    def n_interactions(self) -> int:
        """Number of interactions (bonds, angles, torsion terms or atom pairs) evaluated."""
        return int(getattr(self, self._index_names[0]).shape[0])

    def batch_chunk(self, batch: int) -> int:
        """Configurations evaluated together by `energy_with_gradient` (all of them by
        default). The generalized Born terms return a power of two that keeps one
        [pairs, chunk] float32 array near `_CHUNK_ELEMENTS`: their several passes over the
        pairs then reuse the CPU cache instead of streaming every array from memory (about
        17% less CPU time compiled at B = 1024 for Ace-(Ala)5-Nme); so does the nonbonded
        term, which gains where the pairs are many."""
        return batch

    def _evaluate_batch(
        self, xt: torch.Tensor, tensors: tuple[torch.Tensor, ...], need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_evaluate` (energy [B], gradient [3, n_atoms, B] or None) over the whole batch,
        in chunks of `batch_chunk` configurations; used by `energy_with_gradient`."""
        size = self.batch_chunk(xt.shape[-1])
        if size >= xt.shape[-1]:
            return self._evaluate(xt, tensors, need_grad)  # type: ignore[attr-defined]
        # Batch chunks whose pair arrays stay in cache between the term's passes.
        parts = [self._evaluate(chunk, tensors, need_grad)  # type: ignore[attr-defined]
                 for chunk in xt.split(size, -1)]
        energy = torch.cat([e for e, _ in parts])
        grad = torch.cat([g for _, g in parts], -1) if need_grad else None
        return energy, grad


_CHUNK_ELEMENTS = 2**18
"""Target size (elements) of one [pairs, chunk] array of a chunked pair term."""


_MAX_CHUNKS = 16
"""At most this many chunks per batch: torch.compile unrolls the loop over chunks, and its
compile time grows with their number."""


def pair_chunk(n_pairs: int, batch: int) -> int:
    """A power-of-two batch chunk (16 to 1024) with n_pairs * chunk near _CHUNK_ELEMENTS, and
    at least batch / _MAX_CHUNKS."""
    size = 16
    while size < 1024 and 2 * size * max(n_pairs, 1) <= _CHUNK_ELEMENTS:
        size *= 2
    return min(max(size, -(-batch // _MAX_CHUNKS)), batch)


class _EnergyWithGradient(torch.autograd.Function):
    """A term's energy whose gradient the term computes itself, in the same pass.

    The backward pass multiplies that gradient by the incoming one. When a higher derivative
    is asked for (`create_graph=True`, as a Hessian does), the backward recomputes the energy
    with autograd instead, so second derivatives stay exact.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, xt: torch.Tensor, term: TorchTerm, *tensors: torch.Tensor
    ) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0]
        energy, grad = term._evaluate_batch(xt, tensors, need_grad)
        ctx.term = term
        ctx.n_tensors = len(tensors)
        ctx.save_for_backward(xt, grad, *tensors)
        return energy

    @staticmethod
    def backward(ctx, grad_energy: torch.Tensor):  # type: ignore[override]
        xt, grad, *tensors = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate through autograd
            energy, _ = ctx.term._evaluate(xt, tuple(tensors), False)
            (grad_xt,) = torch.autograd.grad(energy, xt, grad_energy, create_graph=True)
        else:
            grad_xt = grad * grad_energy
        return (grad_xt, None, *([None] * ctx.n_tensors))


def energy_with_gradient(
    xt: torch.Tensor, term: TorchTerm, tensors: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """`term._evaluate(xt, tensors, need_grad)` as a differentiable energy [B].

    `_evaluate` returns (energy [B], d energy / d xt [3, n_atoms, B] or None when not needed)
    and must also work as plain autograd-differentiable torch code (with need_grad False).
    Used by terms whose hand-written gradient is much cheaper than autograd's (generalized
    Born, nonbonded).
    """
    return _EnergyWithGradient.apply(xt, term, *tensors)


@TORCH_FORCES.register("HarmonicBondForce")
class HarmonicBondTerm(TorchTerm):
    """E = sum k/2 (r - r0)^2 over bonds; r0 in nm, k in kJ/mol/nm^2."""

    _index_names = ("i", "j")
    _param_names = ("r0", "half_k")

    def __init__(self, force: openmm.HarmonicBondForce) -> None:
        super().__init__()
        if force.usesPeriodicBoundaryConditions():
            raise UnsupportedForce("it uses periodic boundary conditions")
        rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
        self._register(
            i=[r[0] for r in rows],
            j=[r[1] for r in rows],
            r0=[_md(r[2]) for r in rows],
            half_k=[0.5 * _md(r[3]) for r in rows],
        )

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        i, j, r0, half_k = self._cast(xt)
        d = _displacement(xt, i, j)
        r = (d * d).sum(0).sqrt()
        dr = r - r0[:, None]
        return (half_k[:, None] * dr * dr).sum(0)


@TORCH_FORCES.register("HarmonicAngleForce")
class HarmonicAngleTerm(TorchTerm):
    """E = sum k/2 (theta - theta0)^2 over angles i-j-k (j the vertex); theta in rad.

    theta = atan2(|u x v|, u . v) with u = x_i - x_j, v = x_k - x_j: accurate at every angle and
    with finite gradients, unlike acos.
    """

    _index_names = ("i", "j", "k")
    _param_names = ("theta0", "half_k")

    def __init__(self, force: openmm.HarmonicAngleForce) -> None:
        super().__init__()
        if force.usesPeriodicBoundaryConditions():
            raise UnsupportedForce("it uses periodic boundary conditions")
        rows = [force.getAngleParameters(a) for a in range(force.getNumAngles())]
        self._register(
            i=[r[0] for r in rows],
            j=[r[1] for r in rows],
            k=[r[2] for r in rows],
            theta0=[_md(r[3]) for r in rows],
            half_k=[0.5 * _md(r[4]) for r in rows],
        )

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        return energy_with_gradient(xt, self, self._cast(xt))

    def _evaluate(
        self, xt: torch.Tensor, tensors: tuple[torch.Tensor, ...], need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Energy [B] and, if `need_grad`, its gradient [3, n_atoms, B] with respect to xt.

        With s = |u x v|, t = u . v: dtheta/du = (t (v x c)/s - s v) / (s^2 + t^2) and
        dtheta/dv = (t (c x u)/s - s u) / (s^2 + t^2), c = u x v.
        """
        i, j, k, theta0, half_k = tensors
        u = _displacement(xt, i, j)
        v = _displacement(xt, k, j)
        uu, vv = u.unbind(0), v.unbind(0)
        c = _cross(uu, vv)
        s = _dot(c, c).sqrt()
        t = _dot(uu, vv)
        dtheta = torch.atan2(s, t) - theta0[:, None]
        energy = (half_k[:, None] * dtheta * dtheta).sum(0)
        if not need_grad:
            return energy, None
        scale = 2.0 * half_k[:, None] * dtheta / (s * s + t * t)  # dE/dtheta / (s^2 + t^2)
        ts = t / s
        vxc, cxu = _cross(vv, c), _cross(c, uu)
        du = torch.stack([scale * (ts * vxc[m] - s * vv[m]) for m in range(3)])
        dv = torch.stack([scale * (ts * cxu[m] - s * uu[m]) for m in range(3)])
        grad = torch.zeros_like(xt).index_add(1, i, du).index_add(1, k, dv)
        return energy, grad.index_add(1, j, -(du + dv))


@TORCH_FORCES.register("PeriodicTorsionForce")
class PeriodicTorsionTerm(TorchTerm):
    """E = sum k (1 + cos(n phi - phi0)) over torsion terms i-j-k-l.

    phi (IUPAC sign, as OpenMM) = atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3)) with
    b1 = x_j - x_i, b2 = x_k - x_j, b3 = x_l - x_k. Each distinct atom quadruple is evaluated
    once; terms sharing it (several periodicities) gather its phi.
    """

    _index_names = ("term_quad", "a1", "a2", "a3", "a4")
    _param_names = ("periodicity", "phase", "k_torsion")

    def __init__(self, force: openmm.PeriodicTorsionForce) -> None:
        super().__init__()
        if force.usesPeriodicBoundaryConditions():
            raise UnsupportedForce("it uses periodic boundary conditions")
        rows = [force.getTorsionParameters(t) for t in range(force.getNumTorsions())]
        quads = np.asarray([r[:4] for r in rows], dtype=np.int64).reshape(-1, 4)
        unique, inverse = np.unique(quads, axis=0, return_inverse=True)
        self._register(
            term_quad=inverse.reshape(-1),
            a1=unique[:, 0],
            a2=unique[:, 1],
            a3=unique[:, 2],
            a4=unique[:, 3],
            periodicity=[float(r[4]) for r in rows],
            phase=[_md(r[5]) for r in rows],
            k_torsion=[_md(r[6]) for r in rows],
        )

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        return energy_with_gradient(xt, self, self._cast(xt))

    def _evaluate(
        self, xt: torch.Tensor, tensors: tuple[torch.Tensor, ...], need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Energy [B] and, if `need_grad`, its gradient [3, n_atoms, B] with respect to xt.

        dphi/dx1 = -|b2| n1 / |n1|^2, dphi/dx4 = |b2| n2 / |n2|^2, and the middle atoms
        (Blondel and Karplus 1996) dphi/dx2 = q dphi/dx4 - (p + 1) dphi/dx1,
        dphi/dx3 = p dphi/dx1 - (q + 1) dphi/dx4 with p = b1.b2/|b2|^2, q = b3.b2/|b2|^2.
        """
        term_quad, a1, a2, a3, a4, n, phase, k_torsion = tensors
        b1 = _displacement(xt, a2, a1).unbind(0)
        b2 = _displacement(xt, a3, a2).unbind(0)
        b3 = _displacement(xt, a4, a3).unbind(0)
        n1 = _cross(b1, b2)
        n2 = _cross(b2, b3)
        b2_sq = _dot(b2, b2)
        b2_len = b2_sq.sqrt()
        y = b2_len * _dot(b1, n2)
        phi = torch.atan2(y, _dot(n1, n2))
        angle = n[:, None] * phi.index_select(0, term_quad) - phase[:, None]
        energy = (k_torsion[:, None] * (1.0 + torch.cos(angle))).sum(0)
        if not need_grad:
            return energy, None
        d_term = -k_torsion[:, None] * n[:, None] * torch.sin(angle)  # dE/dphi per term
        d_phi = torch.zeros_like(phi).index_add(0, term_quad, d_term)  # per quadruple
        c1 = -d_phi * b2_len / _dot(n1, n1)
        c4 = d_phi * b2_len / _dot(n2, n2)
        p = _dot(b1, b2) / b2_sq
        q = _dot(b3, b2) / b2_sq
        f1 = torch.stack([c1 * n1[m] for m in range(3)])
        f4 = torch.stack([c4 * n2[m] for m in range(3)])
        f2 = q * f4 - (p + 1.0) * f1
        f3 = p * f1 - (q + 1.0) * f4
        grad = torch.zeros_like(xt).index_add(1, a1, f1).index_add(1, a2, f2)
        return energy, grad.index_add(1, a3, f3).index_add(1, a4, f4)


def supported_forces() -> tuple[str, ...]:
    """Names of the OpenMM force classes the torch path can compile (those in `TORCH_FORCES`)."""
    return tuple(TORCH_FORCES.names())


def compile_force(force: openmm.Force) -> TorchTerm:
    """Compile an OpenMM force into a `TorchTerm` with the compiler `TORCH_FORCES` names.

    Raises:
        UnsupportedForce: the force's class or settings cannot be reproduced exactly (the
            message says why); evaluate it with OpenMM instead.
    """
    name = type(force).__name__
    if name not in TORCH_FORCES:
        raise UnsupportedForce(
            f"{name} has no torch implementation (compiled: {', '.join(supported_forces())})"
        )
    return TORCH_FORCES[name](force)
