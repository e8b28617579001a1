"""The CG free-energy model F_theta(z, T) with explicit temperature dependence.

An ensemble of small MLPs on the CG map's invariant features (cos/sin for torsions, internal
coordinates for beads) and b = beta / beta_ref = T_ref / T. Each member outputs two fields
e(z, b) and s(z, b) and

    beta F_theta(z, T) = b e(z, b) - s(z, b)            (dimensionless)

an energy-entropy split that is exact, with b-independent e and s, when <U>_z does not depend on
T, and that lets the network learn the rest. The observables follow by autograd:

    grad_z F        = k_B T grad_z (beta F)                  kJ/mol per CG unit   [B, d]
    <U>_z           = d(beta F)/d beta = k_B T_ref d(beta F)/d b   kJ/mol         [B]

The ensemble mean is the prediction and the members' standard deviation its uncertainty (it is
large where no data constrain the model; the cycle uses it as a diagnostic).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.autograd.forward_ad as fwAD

from ccg._checks import check_finite, check_shape, check_temperature
from ccg.constants import KB_KJMOL_PER_K


class _EnsembleMLP(torch.nn.Module):
    """n_members independent MLPs evaluated together by batched matrix products (SiLU).

    Input [M, B, n_in] (one batch per member) -> output [M, B, n_out].
    """

    def __init__(self, n_members: int, n_in: int, hidden: int, n_layers: int, n_out: int):
        super().__init__()
        sizes = [n_in] + [hidden] * n_layers + [n_out]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default initialization
            self.weights.append(torch.nn.Parameter(
                torch.empty(n_members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(torch.nn.Parameter(
                torch.empty(n_members, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.nn.functional.silu(x)
        return x


def _temperatures(temperature_k, n: int, like: torch.Tensor) -> torch.Tensor:
    """T [n] (float64 tensor on like's device) from a number or a tensor; all > 0 and finite."""
    t = torch.as_tensor(temperature_k, dtype=like.dtype, device=like.device)
    t = t.expand(n) if t.ndim == 0 or t.numel() == 1 else t.reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"Expected one temperature or {n} (one per point); got {t.shape[0]}.")
    check_temperature(t)
    return t.reshape(n)


class FreeEnergyModel(torch.nn.Module):
    """F_theta(z, T) for the CG coordinates of `cg_map` over the temperature range `t_range`.

    Args:
        cg_map: the CG map (its `cg_features`, `cg_dim`, `z_circular`); not trained.
        t_ref: reference temperature (K) of b = T_ref / T.
        t_range: (t_min, t_max) in K, the range the model was fitted over (for warnings).
        hidden, n_layers: width and depth of each member MLP.
        n_members: ensemble size (>= 1; >= 2 gives an uncertainty).
        system: the system the map belongs to (its topology and reference structure; stored
            in CG model files, used to start CG dynamics and to write bead trajectories).
    """

    def __init__(self, cg_map, *, t_ref: float, t_range: tuple[float, float], hidden: int = 128,
                 n_layers: int = 3, n_members: int = 4, system=None):
        super().__init__()
        if n_members < 1 or hidden < 1 or n_layers < 1:
            raise ValueError(f"Expected n_members, hidden, n_layers >= 1; got {n_members}, "
                             f"{hidden}, {n_layers}.")
        object.__setattr__(self, "cg_map", cg_map)  # not a submodule: no parameters, no state
        object.__setattr__(self, "system", system)  # likewise
        self.t_ref, self.t_range = float(t_ref), (float(t_range[0]), float(t_range[1]))
        self.arch = {"hidden": hidden, "n_layers": n_layers, "n_members": n_members}
        n_in = cg_map.cg_feature_dim + 1
        self.net = _EnsembleMLP(n_members, n_in, hidden, n_layers, 2)
        self.n_members = n_members

    @property
    def cg_dim(self) -> int:
        return self.cg_map.cg_dim

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def config(self) -> dict:
        return {"t_ref": self.t_ref, "t_range": list(self.t_range), **self.arch}

    def member_beta_f(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """beta F of every member [M, B] (no checks).

        z: [B, d] (every member at the same points) or [M, B, d] (a batch per member);
        b = T_ref / T: [B] or [M, B].
        """
        m = self.n_members
        if z.ndim == 2:  # features once, shared by the members (contacts rebuild the chain)
            feats = self.cg_map.cg_features(z).expand(m, -1, -1)
            b = b.expand(m, *b.shape)
        else:
            feats = self.cg_map.cg_features(z.reshape(-1, z.shape[-1])).reshape(
                m, z.shape[1], -1)
        return self._beta_f_of_features(feats, b)

    def _beta_f_of_features(self, feats: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """beta F [M, B] of every member from features [M, B, F] and b [M, B]."""
        outs = self.net(torch.cat([feats, (b - 1.0)[..., None]], dim=-1))  # [M, B, 2]
        return b * outs[..., 0] - outs[..., 1]

    def feature_jacobian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CG features at z [B, d] and their Jacobian: ([B, F], d features / dz [B, F, d]),
        by forward-mode autograd, one pass per CG dimension. Points that are fitted many
        times (`fit_free_energy_model`) keep these, so that each step differentiates only the
        MLPs (`observables_of_features`), not the features (contacts rebuild the chain)."""
        check_shape(z, (self.cg_dim,), "z", "cg_dim")
        z = z.detach().to(dtype=self.dtype)
        columns, feats = [], None
        with torch.no_grad(), fwAD.dual_level():
            for k in range(self.cg_dim):
                tangent = torch.zeros_like(z)
                tangent[:, k] = 1.0
                dual = self.cg_map.cg_features(fwAD.make_dual(z, tangent))
                feats, column = fwAD.unpack_dual(dual)
                columns.append(column if column is not None else torch.zeros_like(feats))
        return feats, torch.stack(columns, -1)

    def _prepare(self, z: torch.Tensor, temperature_k) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape(z, (self.cg_dim,), "z", "cg_dim")
        check_finite(z, "z")
        z = z.to(dtype=self.dtype)
        t = _temperatures(temperature_k, z.shape[0], z)
        return z, t

    def beta_free_energy(self, z: torch.Tensor, temperature_k) -> torch.Tensor:
        """Ensemble-mean beta F_theta(z, T) [B] (dimensionless; a per-T constant is arbitrary).

        z [B, cg_dim] in the map's units; temperature_k a number or [B] (K).
        """
        z, t = self._prepare(z, temperature_k)
        return self.member_beta_f(z, self.t_ref / t).mean(0)

    def observables(self, z: torch.Tensor, temperature_k, *, create_graph: bool = False,
                    members: bool = False) -> dict[str, torch.Tensor]:
        """beta F, grad_z F and <U>_z = d(beta F)/d beta by autograd.

        Returns a dict of `beta_f` [B], `beta_f_std` [B] (ensemble spread at each point; the fit
        pins all members to the data with one shared constant per T), `mean_force`
        [B, d] (kJ/mol per CG unit), `mean_energy_kjmol` [B]. With `members=True` the values
        are per member ([n_members, B], [n_members, B, d]) and there is no `beta_f_std`.
        """
        z, t = self._prepare(z, temperature_k)
        beta_f, grad_z, grad_b = self._member_gradients(self.member_beta_f, z, t, create_graph)
        return self._observables(beta_f, grad_z, grad_b, t, create_graph, members)

    def observables_of_features(self, feats: torch.Tensor, jacobian: torch.Tensor,
                                temperature_k, *, create_graph: bool = False,
                                members: bool = False) -> dict[str, torch.Tensor]:
        """`observables` at the points whose features [B, F] and Jacobian [B, F, d] are
        given (`feature_jacobian`): the same numbers, with autograd through the MLPs only and
        grad_z (beta F) = d(beta F)/d features @ Jacobian."""
        t = _temperatures(temperature_k, feats.shape[0], feats)
        beta_f, grad_f, grad_b = self._member_gradients(self._beta_f_of_features, feats, t,
                                                        create_graph)
        grad_z = torch.einsum("mbf,bfd->mbd", grad_f, jacobian)
        return self._observables(beta_f, grad_z, grad_b, t, create_graph, members)

    def _member_gradients(self, beta_f_of, inputs: torch.Tensor, t: torch.Tensor,
                          create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-member beta F [M, B] = beta_f_of(inputs [M, B, k], b [M, B]) and its gradients
        in the inputs [M, B, k] and in b [M, B]. One copy of the inputs per member, so that
        one backward pass gives every member's own gradients."""
        m = self.n_members
        with torch.enable_grad():
            x = inputs.detach().expand(m, *inputs.shape).clone().requires_grad_(True)
            b = (self.t_ref / t).detach().expand(m, *t.shape).clone().requires_grad_(True)
            beta_f = beta_f_of(x, b)
            grad_x, grad_b = torch.autograd.grad(beta_f.sum(), (x, b), create_graph=create_graph)
        return beta_f, grad_x, grad_b

    def _observables(self, beta_f, grad_z, grad_b, t, create_graph: bool,
                     members: bool) -> dict[str, torch.Tensor]:
        """The observables dict from per-member beta F [M, B], grad_z [M, B, d], grad_b [M, B]."""
        if not create_graph:
            beta_f, grad_z, grad_b = beta_f.detach(), grad_z.detach(), grad_b.detach()
        kt = KB_KJMOL_PER_K * t
        force = grad_z * kt[:, None]  # grad_z F = k_B T grad_z (beta F)
        energy = grad_b * (KB_KJMOL_PER_K * self.t_ref)
        if members:
            return {"beta_f": beta_f, "mean_force": force, "mean_energy_kjmol": energy}
        spread = beta_f.std(0) if beta_f.shape[0] > 1 else torch.zeros_like(beta_f[0])
        return {"beta_f": beta_f.mean(0), "beta_f_std": spread, "mean_force": force.mean(0),
                "mean_energy_kjmol": energy.mean(0)}
