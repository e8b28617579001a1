"""One registry test over every transform, map and flow of ccg.

Each registry entry is a square float64 bijection a <-> b with its log|det|, wrapped by a small
adapter (`Bijection`); the same generic checks run on every entry:

1. round trip: inverse(forward(a)) == a and forward(inverse(b)) == b to 1e-9 (nm / rad,
   compared modulo 2π on periodic dims), and the two log|det| cancel;
2. log|det| against `torch.autograd.functional.jacobian` (slogdet) to 1e-7, both directions;
3. every trainable parameter receives a nonzero gradient from a training-like objective; maps
   have none (asserted), and `.to()` moves every tensor they compute with;
4. eval() equals train(), bitwise;
5. save/load: `config()` -> JSON text -> `map_from_config` / `flow_from_config` (or
   `ZMatrix.from_config`) + `load_state_dict` gives identical outputs (to 1e-12: BLAS
   rounding may depend on memory alignment).

Entries:

- `zmatrix-full`: `ZMatrix` without fixed atoms, x [66] <-> (bonds, angles, torsions, frame).
- `torsion-phi-psi+frame`: `TorsionMap` (φ, ψ) completed by the rigid frame (see
  `TorsionWithFrame`).
- `atoms-heavy`, `atoms-backbone`: `AtomSubsetMap`, split x <-> (z, r) (already square).
- `coordinate-split`: `CoordinateSplitMap` on the harmonic analytic system.
- `flow-<backend>-tscale-<on|off>`: every backend of `FLOW_BACKENDS`, sample direction u -> r
  (`_forward`) and density direction r -> u (`_inverse`), on the (φ, ψ) map's r layout
  (58 dims: bonds, angles, free and chirality-constrained torsions) with its context.

The layers inside the flows (couplings, shifts, standardization) have their own registry in
tests/test_flows.py.
"""

from __future__ import annotations

import abc
import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files

import mdtraj as md
import pytest
import torch
from torch import nn

from ccg.flows import FLOW_BACKENDS, ConditionalFlow, build_flow, flow_from_config, make_context
from ccg.mapping import (
    AtomSubsetMap,
    CGMap,
    CoordinateSplitMap,
    TorsionMap,
    ZMatrix,
    map_from_config,
)
from ccg.mapping.base import MAP_TYPES
from ccg.mapping.torsion import _CANONICAL_FRAME
from ccg.mapping.zmatrix import InternalCoordinates, _frame_vectors
from ccg.systems import alanine_dipeptide, make_analytic
from ccg.training.base_init import base_scale, circular_concentration, harmonic_scale_tril

PI = math.pi
ROUND_TRIP_TOL = 1e-9  # nm / rad, and nats for the log|det| sum
LOGDET_TOL = 1e-7  # nats
T_REF = 300.0  # K
DEVICE_RANDOM = "random:"  # outputs drawn with a generator: equal on one device only
DATA_NOISE_NM = 0.005  # per-coordinate noise of the flows' data-side structures (hot, not torn)
FLOW_SIZE = {"n_layers": 4, "hidden": 16, "n_blocks": 1, "n_bins": 6}
DEVICES = [
    "meta",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@dataclass(frozen=True)
class Molecule:
    """Alanine dipeptide: topology and reference structure [22, 3] nm (float64)."""

    topology: md.Topology
    ref: torch.Tensor


@pytest.fixture(scope="module")
def molecule() -> Molecule:
    pdb = md.load(str(files("ccg") / "data" / "alanine_dipeptide.pdb"))
    return Molecule(pdb.topology, torch.tensor(pdb.xyz[0], dtype=torch.float64))


# --- realistic inputs -------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uniform_angles(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Uniform on [-π, π) (rad)."""
    return (2.0 * torch.rand(shape, generator=_generator(seed), dtype=torch.float64) - 1.0) * PI


def random_rotations(n: int, seed: int) -> torch.Tensor:
    """Uniformly distributed proper rotations [n, 3, 3]."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=_generator(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[:, :, 0] *= torch.linalg.det(q)[:, None]
    return q


def structures(ref: torch.Tensor, n: int, seed: int, noise_nm: float = 0.02) -> torch.Tensor:
    """Perturbed reference structures [n, 22, 3] nm, randomly rotated and translated."""
    x = ref[None] + noise_nm * torch.randn((n, *ref.shape), generator=_generator(seed),
                                           dtype=torch.float64)
    shift = torch.randn(n, 1, 3, generator=_generator(seed + 1), dtype=torch.float64)
    return x @ random_rotations(n, seed + 2).transpose(1, 2) + shift


def wrapped(d: torch.Tensor, periodic: torch.Tensor) -> torch.Tensor:
    """A difference, taken modulo 2π (in [-π, π)) on periodic dims."""
    return torch.where(periodic, torch.remainder(d + PI, 2 * PI) - PI, d)


@dataclass
class Inputs:
    """Points on both sides of a bijection: a [B, n], b [B, n], cond [B, context_dim] or None."""

    a: torch.Tensor
    b: torch.Tensor
    cond: torch.Tensor | None = None

    def row(self, i: int) -> torch.Tensor | None:
        return None if self.cond is None else self.cond[i : i + 1]


# --- adapters ---------------------------------------------------------------------------------


class Bijection(abc.ABC):
    """A square float64 bijection a [B, n] <-> b [B, n], with log|det| in both directions.

    `forward(a, cond)` -> (b, log|det ∂b/∂a| [B]); `inverse(b, cond)` -> (a, log|det ∂a/∂b| [B]).
    `module` owns every parameter and buffer; `covers` names the registered map type or flow
    backend the entry exercises.
    """

    module: nn.Module
    covers: str
    periodic_a: torch.Tensor  # BoolTensor [n]: dims compared modulo 2π
    periodic_b: torch.Tensor
    has_parameters: bool = False
    cpu_side_tensors: frozenset[str] = frozenset()  # plain tensor attributes kept on the CPU

    @abc.abstractmethod
    def forward(self, a, cond=None) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abc.abstractmethod
    def inverse(self, b, cond=None) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abc.abstractmethod
    def inputs(self, n: int, seed: int) -> Inputs:
        """Realistic points on both sides (b is not forward(a))."""

    @abc.abstractmethod
    def rebuilt(self) -> Bijection:
        """The same bijection rebuilt from config() as JSON text plus the state_dict."""

    def outputs(self, x: Inputs) -> dict[str, torch.Tensor]:
        """Everything the object computes on these inputs (compared bitwise)."""
        (b, ld_fwd), (a, ld_inv) = self.forward(x.a, x.cond), self.inverse(x.b, x.cond)
        return {"forward": b, "forward_log_det": ld_fwd, "inverse": a, "inverse_log_det": ld_inv}

    def objective(self, x: Inputs) -> torch.Tensor:
        """A training-like scalar whose gradient reaches every parameter."""
        raise NotImplementedError

    def to(self, device) -> Bijection:
        self.module.to(device)
        return self


def _json(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg))


def _rebuild_map(cg_map: CGMap, topology) -> CGMap:
    new = map_from_config(_json(cg_map.config()), topology)
    new.load_state_dict(cg_map.state_dict())
    return new


class ZMatrixFull(Bijection):
    """x [3N] <-> [bonds, angles, torsions, frame] (nm, rad): the full Z-matrix bijection."""

    covers = "zmatrix"

    def __init__(self, zm: ZMatrix, molecule: Molecule) -> None:
        self.module, self.molecule = zm, molecule
        self.sizes = [zm.n_bonds, zm.n_angles, zm.n_torsions, 6]
        self.periodic_a = torch.zeros(3 * zm.n_atoms, dtype=torch.bool)
        self.periodic_b = torch.cat([torch.zeros(zm.n_bonds + zm.n_angles, dtype=torch.bool),
                                     torch.ones(zm.n_torsions, dtype=torch.bool),
                                     torch.tensor([False] * 4 + [True] * 2)])

    def forward(self, a, cond=None):
        ic, ld = self.module(a.reshape(a.shape[0], -1, 3))
        return torch.cat([ic.bonds, ic.angles, ic.torsions, ic.frame], -1), ld

    def inverse(self, b, cond=None):
        bonds, angles, torsions, frame = torch.split(b, self.sizes, dim=-1)
        fixed = b.new_zeros((b.shape[0], 0, 3))
        x, ld = self.module.inverse(InternalCoordinates(bonds, angles, torsions, frame, fixed))
        return x.reshape(b.shape[0], -1), ld

    def inputs(self, n, seed):
        x = structures(self.molecule.ref, n, seed)
        b, _ = self.forward(structures(self.molecule.ref, n, seed + 10).reshape(n, -1))
        b = torch.where(self.periodic_b, uniform_angles(b.shape, seed + 20), b)
        return Inputs(x.reshape(n, -1), b)

    def rebuilt(self):
        zm = ZMatrix.from_config(_json(self.module.config()))
        zm.load_state_dict(self.module.state_dict())
        return ZMatrixFull(zm, self.molecule)


class TorsionWithFrame(Bijection):
    """`TorsionMap` completed to a square bijection x [66] <-> (z [2], r [58], frame [6]).

    `TorsionMap.merge` drops the six rigid-body coordinates (it builds x in a canonical frame),
    so (z, r) -> x is 60 -> 66 and has no determinant. Rather than subtracting the rigid-body
    term from a full Z-matrix Jacobian (as tests/test_mapping.py does), the adapter composes the
    map with the frame exactly as `ZMatrix` does: forward x -> (split(x), frame(x)) with the
    frame of the map's own Z-matrix; inverse places merge(z, r) by the proper rotation and
    translation that carry the canonical frame onto the given one. The composite's log|det| is
    then TorsionMap's log_jac plus the rotation measure log sin α (`ZMatrix.frame_log_jac`), so
    autograd checks log_jac itself (its bonds, angles and half-range chirality terms) with
    nothing taken from the code under test but that one known term.
    """

    covers = "map:torsion"
    cpu_side_tensors = frozenset({"_reference_xyz"})  # config copy, read with .tolist()

    def __init__(self, tmap: TorsionMap, molecule: Molecule) -> None:
        self.module, self.molecule = tmap, molecule
        self.periodic_a = torch.zeros(3 * tmap.event_shape[0], dtype=torch.bool)
        self.periodic_b = torch.cat([tmap.z_circular.cpu(), tmap.r_circular.cpu(),
                                     torch.tensor([False] * 4 + [True] * 2)])

    @staticmethod
    def _basis(frame: torch.Tensor) -> torch.Tensor:
        """Orthonormal frame basis [B, 3, 3]: columns e1 and the γ-rotated perpendiculars."""
        e1, ex, ey = _frame_vectors(frame[:, 3], frame[:, 4])
        c, s = torch.cos(frame[:, 5:6]), torch.sin(frame[:, 5:6])
        return torch.stack([e1, c * ex + s * ey, c * ey - s * ex], dim=-1)

    def forward(self, a, cond=None):
        x = a.reshape(a.shape[0], -1, 3)
        z, r, log_jac = self.module.split(x)
        frame = self.module.zmatrix(x)[0].frame
        return torch.cat([z, r, frame], -1), -(log_jac + ZMatrix.frame_log_jac(frame))

    def inverse(self, b, cond=None):
        m = self.module
        z, r, frame = torch.split(b, [m.cg_dim, m.n_r, 6], dim=-1)
        x_canonical, log_jac = m.merge(z, r)
        canonical = b.new_tensor(_CANONICAL_FRAME)[None]
        rotation = self._basis(frame) @ self._basis(canonical).transpose(1, 2)  # [B, 3, 3]
        x = frame[:, None, :3] + (x_canonical - canonical[:, None, :3]) @ rotation.transpose(1, 2)
        return x.reshape(b.shape[0], -1), log_jac + ZMatrix.frame_log_jac(frame)

    def inputs(self, n, seed):
        """a: perturbed structures; b: z uniform on the torus, r and frame split from other
        perturbed (randomly rotated) structures."""
        m, ref = self.module, self.molecule.ref
        x = structures(ref, n, seed)
        other = structures(ref, n, seed + 10)
        _, r, _ = m.split(other)
        frame = m.zmatrix(other)[0].frame
        z = uniform_angles((n, m.cg_dim), seed + 20)
        return Inputs(x.reshape(n, -1), torch.cat([z, r, frame], -1))

    def outputs(self, x):
        z = x.b[:, : self.module.cg_dim]
        atoms = x.a.reshape(x.a.shape[0], -1, 3)
        return {**super().outputs(x), "coarse_grain": self.module.coarse_grain(atoms),
                "cg_features": self.module.cg_features(z)}

    def rebuilt(self):
        return TorsionWithFrame(_rebuild_map(self.module, self.molecule.topology), self.molecule)


class SplitMerge(Bijection):
    """A CGMap whose split is already square: x [*event_shape] <-> (z [cg_dim], r [n_r])."""

    cpu_side_tensors = frozenset({"_reference_xyz"})  # config copy, read with .tolist()

    def __init__(self, cg_map: CGMap, topology, sample_x: Callable[[int, int], torch.Tensor]):
        self.module, self.topology, self.sample_x = cg_map, topology, sample_x
        self.covers = f"map:{cg_map.map_type}"
        n = math.prod(cg_map.event_shape)
        if cg_map.cg_dim + cg_map.n_r != n:
            raise ValueError(f"{cg_map.map_type} split is not square: {cg_map.cg_dim} + "
                             f"{cg_map.n_r} != {n}.")
        self.periodic_a = torch.zeros(n, dtype=torch.bool)
        self.periodic_b = torch.cat([cg_map.z_circular.cpu(), cg_map.r_circular.cpu()])

    def forward(self, a, cond=None):
        m = self.module
        z, r, log_jac = m.split(a.reshape(a.shape[0], *m.event_shape))
        return torch.cat([z, r], -1), -log_jac

    def inverse(self, b, cond=None):
        m = self.module
        x, log_jac = m.merge(b[:, : m.cg_dim], b[:, m.cg_dim :])
        return x.reshape(b.shape[0], -1), log_jac

    def inputs(self, n, seed):
        """a: sampled configurations; b: z of some, r split from others."""
        m = self.module
        x = self.sample_x(n, seed)
        z = m.coarse_grain(self.sample_x(n, seed + 10))
        _, r, _ = m.split(self.sample_x(n, seed + 20))
        return Inputs(x.reshape(n, -1), torch.cat([z, r], -1))

    def outputs(self, x):
        m = self.module
        z = x.b[:, : m.cg_dim]
        atoms = x.a.reshape(x.a.shape[0], *m.event_shape)
        return {**super().outputs(x), "coarse_grain": m.coarse_grain(atoms),
                "cg_features": m.cg_features(z)}

    def rebuilt(self):
        return SplitMerge(_rebuild_map(self.module, self.topology), self.topology, self.sample_x)


def perturb(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Add Gaussian noise to every parameter: splines and conditioners leave the identity."""
    gen = _generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))
    return module


class FlowBijection(Bijection):
    """A ConditionalFlow as a bijection: forward = `_forward` (base u -> data r, the sample
    direction), inverse = `_inverse` (r -> u, the density direction), one context row each.

    Built on the (φ, ψ) TorsionMap's r layout as `ccg.training.run.build_model` builds it
    (circular = free and chirality-constrained torsions, loc = r_reference, scale =
    `base_scale`), with contexts `make_context(cg_features(z), T, 300 K)` for z uniform on the
    torus and T in [200, 900] K. `temperature_scaling` changes only the base density, so it is
    exercised through the public `sample` / `log_prob` in `outputs` (eval/train, save/load) and
    in the gradient objective.
    """

    has_parameters = True

    def __init__(self, flow: ConditionalFlow, tmap: TorsionMap, molecule: Molecule) -> None:
        self.module, self.tmap, self.molecule = flow, tmap, molecule
        self.covers = f"flow:{flow.backend}"
        self.periodic_a = self.periodic_b = flow.circular.cpu()

    @classmethod
    def build(cls, backend: str, temperature_scaling: bool, molecule: Molecule,
              correlated: bool = False) -> FlowBijection:
        tmap = TorsionMap.phi_psi(molecule.topology, molecule.ref)
        circular = tmap.r_circular | tmap.r_chiral
        tril = None
        if correlated:  # the harmonic covariance at the reference structure, as build_model
            tril = harmonic_scale_tril(tmap, alanine_dipeptide(), T_REF, ~circular)
            assert tril is not None
        # the concentrated circular base of build_model (peptide omega, chiral torsions)
        rho = circular_concentration(tmap, alanine_dipeptide(), T_REF, circular)
        assert rho is not None and int((rho > 0).sum()) == 4
        torch.manual_seed(0)
        flow = build_flow(
            tmap.n_r, tmap.cg_feature_dim + 1, circular, tmap.r_reference,
            base_scale(tmap, T_REF), backend=backend, temperature_scaling=temperature_scaling,
            scale_tril=tril, circular_concentration=rho, **FLOW_SIZE,
        )
        return cls(perturb(flow.double(), seed=1), tmap, molecule)

    def forward(self, a, cond=None):
        return self.module._forward(a, cond)

    def inverse(self, b, cond=None):
        return self.module._inverse(b, cond)

    def inputs(self, n, seed):
        """a: base draws; b: r split from thermally perturbed structures (bonds up to ~8
        base widths out, past the spline box); cond: CG context rows."""
        flow, tmap = self.module, self.tmap
        z = uniform_angles((n, tmap.cg_dim), seed)
        temperature = 200.0 + 700.0 * torch.rand(n, generator=_generator(seed + 1),
                                                 dtype=torch.float64)
        ctx = make_context(tmap.cg_features(z), temperature, T_REF)
        u = flow._base_sample(ctx, _generator(seed + 2))
        _, r, _ = tmap.split(structures(self.molecule.ref, n, seed + 3, DATA_NOISE_NM))
        return Inputs(u, r, ctx)

    def outputs(self, x):
        flow = self.module
        gen = torch.Generator(x.cond.device).manual_seed(7)
        r, log_q = flow.sample(x.cond, generator=gen)
        return {**super().outputs(x), "log_prob": flow.log_prob(x.b, x.cond),
                DEVICE_RANDOM + "sample": r, DEVICE_RANDOM + "sample_log_q": log_q}

    def objective(self, x):
        """Reverse KL to a harmonic / von Mises target plus the forward-KL term on data r."""
        flow = self.module
        r, log_q = flow.sample(x.cond, generator=_generator(8))
        d = r - flow.loc
        energy = torch.where(flow.circular, 1 - torch.cos(d), 0.5 * (d / flow.scale) ** 2).sum(1)
        return (log_q + energy).mean() - flow.log_prob(x.b, x.cond).mean()

    def rebuilt(self):
        cfg = _json(self.module.config())
        fresh = perturb(flow_from_config(cfg).double(), seed=99)  # loading must overwrite this
        fresh.load_state_dict(self.module.state_dict())
        assert fresh.config() == cfg
        return FlowBijection(fresh, self.tmap, self.molecule)

    def to(self, device):
        self.tmap.to(device)
        return super().to(device)


# --- the registry -----------------------------------------------------------------------------


def _harmonic_split(molecule: Molecule) -> Bijection:
    system = make_analytic("harmonic")

    def sample_x(n: int, seed: int) -> torch.Tensor:
        return system.sample(n, 300.0, generator=_generator(seed))

    return SplitMerge(CoordinateSplitMap(system.dim, system.cg_dim), None, sample_x)


def _atoms(selection: str) -> Callable[[Molecule], Bijection]:
    def build(molecule: Molecule) -> Bijection:
        cg_map = AtomSubsetMap(molecule.topology, selection, molecule.ref)
        return SplitMerge(cg_map, molecule.topology,
                          lambda n, seed: structures(molecule.ref, n, seed))

    return build


REGISTRY: dict[str, Callable[[Molecule], Bijection]] = {
    "zmatrix-full": lambda m: ZMatrixFull(ZMatrix.from_topology(m.topology, reference_xyz=m.ref),
                                          m),
    "torsion-phi-psi+frame": lambda m: TorsionWithFrame(TorsionMap.phi_psi(m.topology, m.ref), m),
    "atoms-heavy": _atoms("heavy"),
    "atoms-backbone": _atoms("backbone"),
    "coordinate-split": _harmonic_split,
    **{
        f"flow-{backend}-tscale-{'on' if ts else 'off'}": (
            lambda m, backend=backend, ts=ts: FlowBijection.build(backend, ts, m)
        )
        for backend in sorted(FLOW_BACKENDS)
        for ts in (True, False)
    },
    **{
        f"flow-{backend}-correlated-base": (
            lambda m, backend=backend: FlowBijection.build(backend, True, m, correlated=True)
        )
        for backend in sorted(FLOW_BACKENDS)
    },
}


@pytest.fixture(params=sorted(REGISTRY))
def bijection(request, molecule) -> Bijection:
    return REGISTRY[request.param](molecule)


def test_registry_covers_every_map_and_backend(molecule):
    """A newly registered map type or flow backend must get a registry entry."""
    covered = {REGISTRY[name](molecule).covers for name in REGISTRY}
    expected = {f"map:{t}" for t in MAP_TYPES} | {f"flow:{b}" for b in FLOW_BACKENDS}
    assert expected <= covered, sorted(expected - covered)


# --- the generic checks -----------------------------------------------------------------------


def test_round_trip(bijection):
    x = bijection.inputs(16, seed=1)
    b, ld_fwd = bijection.forward(x.a, x.cond)
    a2, ld_inv = bijection.inverse(b, x.cond)
    assert b.shape == x.a.shape and ld_fwd.shape == (x.a.shape[0],)
    assert wrapped(a2 - x.a, bijection.periodic_a).abs().max() < ROUND_TRIP_TOL
    assert (ld_fwd + ld_inv).abs().max() < ROUND_TRIP_TOL
    a, ld_inv = bijection.inverse(x.b, x.cond)
    b2, ld_fwd = bijection.forward(a, x.cond)
    assert wrapped(b2 - x.b, bijection.periodic_b).abs().max() < ROUND_TRIP_TOL
    assert (ld_fwd + ld_inv).abs().max() < ROUND_TRIP_TOL


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_log_det_matches_autograd_jacobian(bijection, direction):
    x = bijection.inputs(3, seed=2)
    fn, points = (bijection.forward, x.a) if direction == "forward" else (bijection.inverse, x.b)
    _, log_det = fn(points, x.cond)
    for i in range(points.shape[0]):
        jac = torch.autograd.functional.jacobian(
            lambda p, i=i: fn(p[None], x.row(i))[0][0], points[i], vectorize=True
        )
        sign, expected = torch.linalg.slogdet(jac)
        assert sign != 0, (i, "singular Jacobian")
        assert abs(log_det[i].item() - expected.item()) < LOGDET_TOL, (
            i, log_det[i].item(), expected.item())


def test_every_parameter_gets_a_gradient(bijection):
    params = dict(bijection.module.named_parameters())
    if not bijection.has_parameters:
        assert params == {}, f"expected a parameter-free map; got {sorted(params)}"
        return
    assert params
    bijection.objective(bijection.inputs(64, seed=3)).backward()
    no_grad = [n for n, p in params.items() if p.grad is None or not bool((p.grad != 0).any())]
    assert no_grad == []


def _plain_tensor_attributes(module: nn.Module) -> list[str]:
    """Tensors held as plain attributes (not parameters or buffers): `.to()` skips them."""
    return [f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules()
            for name, value in vars(sub).items()
            if isinstance(value, torch.Tensor)]


@pytest.mark.parametrize("device", DEVICES)
def test_to_moves_every_tensor(bijection, device):
    """Every tensor used in computation is a parameter or buffer and follows `.to(device)`; on
    an accelerator the outputs match the CPU's."""
    stray = sorted(set(_plain_tensor_attributes(bijection.module))
                   - set(bijection.cpu_side_tensors))
    assert stray == []
    if device == "meta":  # no data: checks only where `.to()` puts the tensors
        moved = copy.deepcopy(bijection.module).to("meta")
        assert all(t.device.type == "meta" for t in [*moved.parameters(), *moved.buffers()])
        return
    x = bijection.inputs(8, seed=4)
    expected = bijection.outputs(x)
    bijection.to(device)
    on_device = Inputs(x.a.to(device), x.b.to(device),
                       None if x.cond is None else x.cond.to(device))
    got = bijection.outputs(on_device)
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        assert got[key].device.type == device, key
        if not key.startswith(DEVICE_RANDOM):  # drawn from the device's generator
            torch.testing.assert_close(got[key].cpu(), want, rtol=0, atol=1e-9, msg=key)


def test_eval_equals_train(bijection):
    x = bijection.inputs(16, seed=5)
    bijection.module.train()
    train = bijection.outputs(x)
    bijection.module.eval()
    evaluated = bijection.outputs(x)
    assert train.keys() == evaluated.keys()
    for key in train:
        assert torch.equal(train[key], evaluated[key]), key


def test_save_load_round_trip(bijection):
    x = bijection.inputs(16, seed=6)
    rebuilt = bijection.rebuilt()
    assert type(rebuilt.module) is type(bijection.module)
    assert rebuilt.module.state_dict().keys() == bijection.module.state_dict().keys()
    want, got = bijection.outputs(x), rebuilt.outputs(x)
    assert want.keys() == got.keys()
    for key in want:
        # 1e-12, not bitwise: BLAS may round a dense matmul (the correlated base) differently
        # for differently aligned copies of the same weights.
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-12, msg=key)
