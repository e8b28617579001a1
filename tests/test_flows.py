"""Tests for ccg.flows: a registry test over every transform and flow, then densities, bounds,
input checks, and a short training run."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import normflows
import pytest
import torch
from nflows.transforms.linear import NaiveLinear
from torch import nn

from ccg.flows import (
    FLOW_BACKENDS,
    ConditionalFlow,
    build_flow,
    flow_from_config,
    make_context,
    temperature_feature,
)
from ccg.flows.base import Standardize
from ccg.flows.conditional_affine import ConditionalAffine
from ccg.flows.coupling import CircularShift, RQSplineCoupling, linear_tail_spline
from ccg.flows.layout import circular_shifts, coupling_masks
from ccg.flows.normflows_backend import NormflowsCoupling, NormflowsShift

PI = math.pi
BACKENDS = sorted(FLOW_BACKENDS)
CIRC = torch.tensor([True, False, True, False, False, True])
DIM, CTX = len(CIRC), 3
LOC = torch.tensor([0.5, 0.15, -2.0, 1.9, 0.0, 3.0])
SCALE = torch.tensor([1.0, 0.003, 1.0, 0.07, 2.0, 1.0])
SMALL = {"n_layers": 4, "hidden": 16, "n_blocks": 1, "n_bins": 6}
# absolute tolerances on log-densities / coordinates by dtype
TOL = {torch.float64: 1e-8, torch.float32: 2e-3}

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def perturb(module: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Add Gaussian noise to every parameter, so splines and conditioners are not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))
    return module


def small_flow(backend: str, *, dtype=torch.float64, seed: int = 0, **kw) -> ConditionalFlow:
    args = {"circular": CIRC, "loc": LOC, "scale": SCALE, "dim": DIM, "context_dim": CTX}
    args.update(SMALL)
    args.update(kw)
    torch.manual_seed(seed)
    return perturb(build_flow(backend=backend, **args), seed=seed).to(dtype)


def random_context(b: int, width: int = CTX, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ctx = torch.randn(b, width, generator=gen, dtype=dtype)
    ctx[:, -1] = torch.log(torch.empty(b, dtype=dtype).uniform_(0.8, 2.0, generator=gen))
    return ctx


def angular(a: torch.Tensor, circular: torch.Tensor) -> torch.Tensor:
    """Elementwise difference, wrapped to [-π, π) on circular dims."""
    d = a
    return torch.where(circular, torch.remainder(d + PI, 2 * PI) - PI, d)


# --- registry ----------------------------------------------------------------------------


class FlowAsTransform(nn.Module):
    """A ConditionalFlow seen as a bijection: forward = _forward (u -> r), inverse = _inverse."""

    def __init__(self, flow: ConditionalFlow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x, context):
        return self.flow._forward(x, context)

    def inverse(self, y, context):
        return self.flow._inverse(y, context)


@dataclass
class Entry:
    build: Callable[[], nn.Module]  # fresh module (float64, non-identity)
    circular: torch.Tensor  # which dims of its input are angles
    box: float  # spline box on linear dims in the module's units (inputs go beyond it)
    loc: torch.Tensor | None = None  # data-side inputs: loc + scale * standard units
    scale: torch.Tensor | None = None


def _mask(circ: torch.Tensor) -> torch.Tensor:
    return coupling_masks(circ, 2)[0]


def _nflows_coupling(circ):
    return lambda: perturb(RQSplineCoupling(_mask(circ), circ, CTX, hidden=16, n_blocks=1)).double()


ALL_LIN = torch.zeros(4, dtype=torch.bool)
ALL_CIRC = torch.ones(4, dtype=torch.bool)
UNIT = PI / 5.0
REGISTRY: dict[str, Entry] = {
    **{
        f"flow-{b}": Entry(lambda b=b: FlowAsTransform(small_flow(b)), CIRC, 5.0, LOC, SCALE)
        for b in BACKENDS
    },
    "coupling-nflows-mixed": Entry(_nflows_coupling(CIRC), CIRC, 5.0),
    "coupling-nflows-linear": Entry(_nflows_coupling(ALL_LIN), ALL_LIN, 5.0),
    "coupling-nflows-circular": Entry(_nflows_coupling(ALL_CIRC), ALL_CIRC, PI),
    "coupling-normflows-mixed": Entry(
        lambda: perturb(NormflowsCoupling(_mask(CIRC), CIRC, CTX, hidden=16, n_blocks=1)).double(),
        CIRC,
        PI,
    ),
    "shift-nflows": Entry(
        lambda: CircularShift(circular_shifts(CIRC, 3)[2], CIRC).double(), CIRC, 1
    ),
    "shift-normflows": Entry(
        lambda: NormflowsShift(circular_shifts(CIRC, 3)[2], CIRC).double(), CIRC, 1.0
    ),
    "standardize": Entry(lambda: Standardize(CIRC, LOC, SCALE).double(), CIRC, 1.0),
    "standardize-temperature-scaled": Entry(
        lambda: Standardize(CIRC, LOC, SCALE, temperature_scaled=True).double(), CIRC, 1.0
    ),
    **{
        f"flow-{b}-scale-after-layers": Entry(
            lambda b=b: FlowAsTransform(small_flow(b, scale_after_layers=True)), CIRC, 5.0, LOC,
            SCALE)
        for b in BACKENDS
    },
    **{
        f"flow-{b}-conditional-affine": Entry(
            lambda b=b: FlowAsTransform(small_flow(b, conditional_affine=True)), CIRC, 5.0, LOC,
            SCALE)
        for b in BACKENDS
    },
    "conditional-affine": Entry(
        lambda: perturb(ConditionalAffine(CIRC, CTX, hidden=16, n_blocks=1), std=0.5).double(),
        CIRC, 5.0
    ),
    "standardize-normflows-units": Entry(
        lambda: Standardize(CIRC, LOC, SCALE, unit=UNIT).double(), CIRC, 1.0
    ),
}


def registry_inputs(entry: Entry, b: int = 12, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in the module's domain: angles in [-π, π), linear values ~N(0, (box/2)²) with a few
    far beyond the spline box (2x and 10x) to exercise the tails."""
    gen = torch.Generator().manual_seed(seed)
    n = len(entry.circular)
    angles = (torch.rand(b, n, generator=gen, dtype=torch.float64) * 2 - 1) * PI
    lin = torch.randn(b, n, generator=gen, dtype=torch.float64) * entry.box / 2
    lin[0], lin[1] = 2 * entry.box, -10 * entry.box
    x = torch.where(entry.circular, angles, lin)
    return x, random_context(b, seed=seed)


@pytest.fixture(params=sorted(REGISTRY))
def entry_name(request) -> str:
    return request.param


def test_round_trip(entry_name):
    entry = REGISTRY[entry_name]
    module = entry.build()
    x, ctx = registry_inputs(entry)
    y, ld = module(x, ctx)
    x2, ld2 = module.inverse(y, ctx)
    assert torch.allclose(angular(x2 - x, entry.circular), torch.zeros_like(x), atol=1e-8)
    assert torch.allclose(ld + ld2, torch.zeros_like(ld), atol=1e-8)
    assert y.shape == x.shape and ld.shape == (x.shape[0],)
    # also from the data side: inverse then forward
    data = y if entry.loc is None else x * entry.scale.double() + entry.loc.double()
    data = torch.where(entry.circular, torch.remainder(data + PI, 2 * PI) - PI, data)
    u, _ = module.inverse(data, ctx)
    back, _ = module(u, ctx)
    assert torch.allclose(angular(back - data, entry.circular), torch.zeros_like(x), atol=1e-8)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_logdet_matches_autograd_jacobian(entry_name, direction):
    entry = REGISTRY[entry_name]
    module = entry.build()
    x, ctx = registry_inputs(entry, b=5)
    fn = module if direction == "forward" else module.inverse
    if direction == "inverse":
        x, _ = module(x, ctx)  # a point of the data side
    _, ld = fn(x, ctx)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(
            lambda row, i=i: fn(row[None], ctx[i : i + 1])[0][0], x[i]
        )
        expected = torch.linalg.slogdet(jac).logabsdet
        # slogdet of the composed Jacobian loses ~eps * cond(J) (cond reaches 3e7 where a flow
        # meets a point 10 boxes into the tails; its error there was 8e-9 here, 1.4e-8 in CI);
        # each layer alone agrees to 1e-12
        tol = max(1e-8, 64 * torch.finfo(jac.dtype).eps * torch.linalg.cond(jac).item())
        assert abs(ld[i].item() - expected.item()) < tol, (i, ld[i].item(), expected.item(), tol)


def test_every_parameter_gets_a_gradient(entry_name):
    entry = REGISTRY[entry_name]
    module = entry.build()
    params = list(module.parameters())
    if not params:
        pytest.skip("parameter-free transform")
    x, ctx = registry_inputs(entry, b=64)
    y, ld = module(x, ctx)
    # reverse-KL shape: E[energy(y) - log|det|] for y pushed forward from base samples
    energy = torch.where(entry.circular, 1 - torch.cos(y), 0.5 * (y / entry.box) ** 2).sum(1)
    (energy - ld).mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and bool((p.grad != 0).any()), name


def test_eval_equals_train(entry_name):
    entry = REGISTRY[entry_name]
    module = entry.build()
    x, ctx = registry_inputs(entry)
    module.train()
    y1, ld1 = module(x, ctx)
    module.eval()
    y2, ld2 = module(x, ctx)
    assert torch.equal(y1, y2) and torch.equal(ld1, ld2)


def test_state_dict_round_trip(entry_name):
    entry = REGISTRY[entry_name]
    module = entry.build()
    torch.manual_seed(123)
    fresh = entry.build()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    fresh.load_state_dict(module.state_dict())
    x, ctx = registry_inputs(entry)
    assert torch.equal(module.inverse(x, ctx)[1], fresh.inverse(x, ctx)[1])
    assert torch.equal(module(x, ctx)[0], fresh(x, ctx)[0])


# --- flow interface ----------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_log_prob_consistent(backend, dtype, device):
    flow = small_flow(backend, dtype=dtype).to(device)
    ctx = random_context(256, dtype=dtype).to(device)
    r, log_q = flow.sample(ctx)
    assert r.dtype == dtype and log_q.dtype == dtype and r.device.type == device
    assert r.shape == (256, DIM) and log_q.shape == (256,)
    assert bool((r[:, CIRC].abs() <= PI).all())
    lp = flow.log_prob(r, ctx)
    assert torch.allclose(lp, log_q, atol=TOL[dtype] * 10, rtol=0)
    r2, lq2 = flow.sample_and_log_prob(ctx, generator=torch.Generator(device).manual_seed(5))
    r3, lq3 = flow.sample(ctx, generator=torch.Generator(device).manual_seed(5))
    assert torch.equal(r2, r3) and torch.equal(lq2, lq3)
    r4, _ = flow.sample(ctx, generator=torch.Generator(device).manual_seed(6))
    assert not torch.equal(r2, r4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_is_reparameterized(backend):
    flow = small_flow(backend)
    r, log_q = flow.sample(random_context(32))
    assert r.requires_grad and log_q.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_config_json_round_trip(backend):
    flow = small_flow(backend)
    cfg = json.loads(json.dumps(flow.config()))
    fresh = flow_from_config(cfg).double()
    fresh.load_state_dict(flow.state_dict())
    r, _ = flow.sample(random_context(64))
    ctx = random_context(64)
    assert torch.equal(fresh.log_prob(r.detach(), ctx), flow.log_prob(r.detach(), ctx))
    assert fresh.config() == flow.config()


@pytest.mark.parametrize(("scaling", "after"), [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_flow_is_the_base_family(backend, scaling, after):
    """At initialization the flow is exactly uniform x N(loc, (scale * sqrt(T/T_ref))²)
    (or N(loc, scale²) without temperature scaling), whether the sqrt(T / T_ref) is applied in
    the base or after the layers."""
    flow = build_flow(
        DIM, CTX, CIRC, LOC, SCALE, backend=backend, temperature_scaling=scaling,
        scale_after_layers=after, **SMALL
    ).double()
    ctx = random_context(4000)
    r, log_q = flow.sample(ctx, generator=torch.Generator().manual_seed(0))
    s = SCALE.double() * torch.exp(0.5 * ctx[:, -1:] * scaling)
    z = (r - LOC.double()) / s
    expected = torch.where(
        CIRC,
        torch.full_like(r, -math.log(2 * PI)),
        -0.5 * z**2 - torch.log(s) - 0.5 * math.log(2 * PI),
    ).sum(1)
    assert torch.allclose(log_q, expected, atol=1e-9)
    assert abs(z[:, ~CIRC].std().item() - 1) < 0.03


@pytest.mark.parametrize("scaling", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_concentrated_circular_base_is_a_wrapped_cauchy(backend, scaling):
    """With circular_concentration rho, the identity flow is exactly a wrapped Cauchy around
    loc on circular dims, with rho(T) = rho^sqrt(T/T_ref); its samples follow the closed-form
    CDF P(|t - loc| < a) = (2/pi) atan((1 + rho) / (1 - rho) tan(a / 2))."""
    rho = torch.tensor([0.9, 0.0, 0.5, 0.0, 0.0, 0.0])
    flow = build_flow(DIM, CTX, CIRC, LOC, SCALE, backend=backend, temperature_scaling=scaling,
                      circular_concentration=rho, **SMALL).double()
    ctx = random_context(20000)
    r, log_q = flow.sample(ctx, generator=torch.Generator().manual_seed(0))
    s = SCALE.double() * torch.exp(0.5 * ctx[:, -1:] * scaling)
    rho_t = rho.double()[None, :] ** torch.exp(0.5 * ctx[:, -1:] * scaling)
    t = torch.remainder(r - LOC.double() + PI, 2 * PI) - PI
    cauchy = (torch.log(1 - rho_t**2) - math.log(2 * PI)
              - torch.log(1 + rho_t**2 - 2 * rho_t * torch.cos(t)))
    gauss = -0.5 * ((r - LOC.double()) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * PI)
    # 1e-5: the flow is built in float32 (rho and the base centre), then cast to float64
    assert torch.allclose(log_q, torch.where(CIRC, cauchy, gauss).sum(1), atol=1e-5)
    assert torch.allclose(flow.log_prob(r, ctx), log_q, atol=1e-9)
    for d in (0, 2, 5):
        for a in (0.1, 0.5, 2.0):
            c = (1 + rho_t[:, d]) / (1 - rho_t[:, d])
            expected = (2 / PI * torch.atan(c * math.tan(a / 2))).mean()
            observed = (t[:, d].abs() < a).double().mean()
            assert abs(float(observed - expected)) < 0.015, (d, a)
    cfg = json.loads(json.dumps(flow.config()))
    assert cfg["circular_concentration"] == pytest.approx(rho.tolist())
    fresh = flow_from_config(cfg).double()
    fresh.load_state_dict(flow.state_dict())
    assert torch.allclose(fresh.log_prob(r, ctx), log_q, atol=1e-12)
    with pytest.raises(ValueError, match="circular_concentration"):
        build_flow(DIM, CTX, CIRC, LOC, SCALE, backend=backend,
                   circular_concentration=[1.0] * DIM, **SMALL)


@pytest.mark.parametrize("scaling", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_second_circular_mode_is_a_temperature_weighted_mixture(backend, scaling):
    """With circular_modes, the identity flow on that dim is the two-component wrapped Cauchy
    (1 - π) WC(loc) + π WC(loc + offset), π = sigmoid(-energy_kt T_ref / T + log_ratio): its
    log density in closed form, and the share of samples near the second centre follows π(T)
    (plus the first component's tail there, from the closed-form CDF)."""
    rho = torch.tensor([0.9, 0.0, 0.5, 0.0, 0.0, 0.0])
    modes = [[0, 2.5, 4.0, -0.3], [2, -2.0, 1.0, 0.2]]  # arcs of ±0.5 stay in (-π, π)
    flow = build_flow(DIM, CTX, CIRC, LOC, SCALE, backend=backend, temperature_scaling=scaling,
                      circular_concentration=rho, circular_modes=modes, **SMALL).double()
    for log_t in (0.0, math.log(2.0)):  # T = T_ref and 2 T_ref
        ctx = random_context(40000)
        ctx[:, -1] = log_t
        r, log_q = flow.sample(ctx, generator=torch.Generator().manual_seed(0))
        rho_t = rho.double() ** (math.exp(0.5 * log_t) if scaling else 1.0)
        t = torch.remainder(r - LOC.double() + PI, 2 * PI) - PI
        expected = torch.zeros(len(r), dtype=torch.float64)
        for d in range(DIM):
            wc = [(torch.log(1 - rho_t[d] ** 2) - math.log(2 * PI)
                   - torch.log(1 + rho_t[d] ** 2 - 2 * rho_t[d] * torch.cos(t[:, d] - c)))
                  for c in (0.0, *(m[1] for m in modes if m[0] == d))]
            if not CIRC[d]:
                s = SCALE[d].double() * (math.exp(0.5 * log_t) if scaling else 1.0)
                expected += -0.5 * ((r[:, d] - LOC[d]) / s) ** 2 - torch.log(s) - 0.5 * math.log(
                    2 * PI)
                continue
            if len(wc) == 1:
                expected += wc[0]
                continue
            _, offset, energy_kt, log_ratio = next(m for m in modes if m[0] == d)
            lam = -energy_kt * (math.exp(-log_t) if scaling else 1.0) + log_ratio
            share = 1 / (1 + math.exp(-lam))
            expected += torch.logaddexp(math.log1p(-share) + wc[0], math.log(share) + wc[1])
            # P(|t - offset| < a) = (1 - π) P_WC(around the other centre) + π P_WC(< a)
            a = 0.5
            c = (1 + rho_t[d]) / (1 - rho_t[d])

            def cdf(x, c=c):  # P(-π < t < x) of a wrapped Cauchy centred at 0
                return 0.5 + torch.atan(c * torch.tan(torch.as_tensor(x) / 2)) / PI

            near_far = cdf(offset + a) - cdf(offset - a)
            predicted = (1 - share) * near_far + share * (2 / PI) * torch.atan(c * math.tan(a / 2))
            observed = (torch.remainder(t[:, d] - offset + PI, 2 * PI) - PI).abs() < a
            assert abs(float(observed.double().mean() - predicted)) < 0.01, (d, log_t)
        assert torch.allclose(log_q, expected, atol=1e-5)
        assert torch.allclose(flow.log_prob(r, ctx), log_q, atol=1e-9)
    cfg = json.loads(json.dumps(flow.config()))
    assert cfg["circular_modes"] == modes
    fresh = flow_from_config(cfg).double()
    fresh.load_state_dict(flow.state_dict())
    assert torch.allclose(fresh.log_prob(r, ctx), log_q, atol=1e-12)
    for bad in ([[1, 3.0, 4.0, 0.0]], [[0, 3.0, math.nan, 0.0]], [[0, 3.0]],
                [[0, 3.0, 1.0, 0.0], [0, 2.0, 1.0, 0.0]]):  # linear dim, NaN, short, twice
        with pytest.raises(ValueError, match="circular_modes"):
            build_flow(DIM, CTX, CIRC, LOC, SCALE, backend=backend, circular_modes=bad, **SMALL)


def test_masks_transform_every_dim_in_half_the_layers_and_mix_types():
    for circ in [CIRC, torch.tensor([True] * 3 + [False] * 7), torch.tensor([False, True])]:
        masks = torch.stack(coupling_masks(circ, 8))
        assert bool((masks.sum(0) == 4).all())
        for m in masks:
            if circ.sum() >= 2 and (~circ).sum() >= 2:
                assert bool((m & circ).any()) and bool((m & ~circ).any())


def test_no_nflows_naive_linear_layers():
    """nflows 0.14 NaiveLinear.inverse calls the removed torch.solve; no flow may contain it."""
    for backend in BACKENDS:
        flow = build_flow(DIM, CTX, CIRC, LOC, SCALE, backend=backend, **SMALL)
        assert not any(isinstance(m, NaiveLinear) for m in flow.modules())


# --- densities ---------------------------------------------------------------------------


def _grid_integral(flow, ctx_row, axes):
    mesh = torch.meshgrid(*[a for a, _ in axes], indexing="ij")
    pts = torch.stack([m.reshape(-1) for m in mesh], dim=1)
    with torch.no_grad():
        dens = torch.exp(flow.log_prob(pts, ctx_row.expand(len(pts), -1)))
    cell = math.prod(w for _, w in axes)
    return dens.sum().item() * cell


def _axis(circular: bool, loc: float, width: float, n: int):
    if circular:  # periodic midpoint rule
        w = 2 * PI / n
        return torch.arange(n, dtype=torch.float64) * w - PI + w / 2, w
    lo, hi = loc - 14 * width, loc + 14 * width
    w = (hi - lo) / n
    return torch.arange(n, dtype=torch.float64) * w + lo + w / 2, w


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("circ", [[True], [False], [True, False], [True, True]],
                         ids=["circ", "lin", "2d", "circ-concentrated"])
def test_density_integrates_to_one(backend, circ):
    circ_t = torch.tensor(circ)
    loc, scale = [0.4, 1.2][: len(circ)], [1.0, 0.05][: len(circ)]
    rho = [0.8, 0.3] if circ == [True, True] else None
    flow = small_flow(backend, circular=circ_t, loc=loc, scale=scale, dim=len(circ), seed=2,
                      circular_concentration=rho)
    for row in random_context(2, seed=4):
        s = math.exp(0.5 * row[-1].item())
        n = 4000 if len(circ) == 1 else 300
        axes = [_axis(c, loc[i], scale[i] * s, n) for i, c in enumerate(circ)]
        assert abs(_grid_integral(flow, row, axes) - 1) < 2e-3
    # the flow is far from its identity initialization (the base family)
    r, log_q = flow.sample(random_context(500, seed=5))
    base = build_flow(len(circ), CTX, circ, loc, scale, backend=backend, **SMALL).double()
    assert (log_q - base.log_prob(r, random_context(500, seed=5))).abs().max().item() > 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_tails_beyond_tail_bound_are_exact(backend):
    """1-D linear flow: beyond ±tail_bound the spline is the identity, so log q is the base."""
    flow = small_flow(backend, circular=[False], loc=[1.0], scale=[0.1], dim=1, seed=3,
                      scale_after_layers=False)  # the base carries sqrt(T / T_ref)
    ctx = random_context(1, seed=7).expand(6, -1)
    s = math.exp(0.5 * ctx[0, -1].item())
    z = torch.tensor([5.0 + 1e-6, 5.5, 8.0, 50.0, -6.0, -400.0], dtype=torch.float64)
    r = (1.0 + 0.1 * z)[:, None]
    expected = -0.5 * (z / s) ** 2 - math.log(s * 0.1) - 0.5 * math.log(2 * PI)
    lp = flow.log_prob(r, ctx)
    assert torch.allclose(lp, expected, atol=1e-9)
    # continuous across the bound, and sampling far out (heated) round-trips exactly
    edge = torch.tensor([[1.0 + 0.1 * (5 - 1e-7)], [1.0 + 0.1 * (5 + 1e-7)]], dtype=torch.float64)
    lp_edge = flow.log_prob(edge, ctx[:2])
    assert abs(lp_edge[0] - lp_edge[1]).item() < 1e-5
    hot = torch.full((2000, CTX), math.log(8.0), dtype=torch.float64)
    r, log_q = flow.sample(hot, generator=torch.Generator().manual_seed(0))
    assert bool(((r - 1.0).abs() > 0.5).any())  # some samples beyond the spline box
    assert torch.allclose(flow.log_prob(r, hot), log_q, atol=1e-8)


@pytest.mark.parametrize("inverse", [False, True])
def test_linear_tail_spline_equals_nflows_unconstrained_spline(inverse):
    """The mask-free evaluation is nflows' identity-tailed spline: values, log|det| and the
    gradients with respect to inputs and spline parameters, inside and outside the interval."""
    from nflows.transforms.splines.rational_quadratic import (
        unconstrained_rational_quadratic_spline,
    )

    gen = torch.Generator().manual_seed(11)
    b, n, k, bound = 64, 5, 7, 3.0
    x = (4.0 * torch.randn(b, n, generator=gen, dtype=torch.float64))
    x[0, :3] = torch.tensor([bound, -bound, 0.0], dtype=torch.float64)  # the ends are inside
    params = torch.randn(b, n, 3 * k - 1, generator=gen, dtype=torch.float64)
    assert bool((x.abs() > bound).any()) and bool((x.abs() < bound).any())
    results = []
    for fn in (linear_tail_spline, unconstrained_rational_quadratic_spline):
        xi, pi = x.clone().requires_grad_(True), params.clone().requires_grad_(True)
        extra = {} if fn is linear_tail_spline else {"tails": "linear"}
        y, ld = fn(xi, pi[..., :k], pi[..., k : 2 * k], pi[..., 2 * k :], inverse=inverse,
                   tail_bound=bound, **extra)
        (y.sin().sum() + (ld * ld.cos()).sum()).backward()
        results.append((y, ld, xi.grad, pi.grad))
    for mine, ref in zip(*results, strict=True):
        assert torch.allclose(mine, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_circular_boundary_and_out_of_domain(backend):
    # the base carries sqrt(T / T_ref): the batch-size dependent rounding (1 ulp) of scaling
    # after the layers would break the bitwise comparison below
    flow = small_flow(backend, seed=4, scale_after_layers=False)
    ctx = random_context(1, seed=8).expand(7, -1)
    r0 = LOC.double().clone()
    r = r0.repeat(7, 1)
    r[0, 0], r[1, 0] = -PI, PI  # the same point of the circle
    r[2, 0], r[3, 0] = PI - 1e-9, -PI + 1e-9
    r[4, 2] = PI + 1e-3  # outside [-π, π]
    r[5, 5] = -3.5
    r[6, 1] = float("nan")
    lp = flow.log_prob(r, ctx)
    assert bool(torch.isfinite(lp[:4]).all())
    assert abs(lp[0] - lp[1]).item() < 1e-9 and abs(lp[2] - lp[3]).item() < 1e-6
    assert bool(torch.isneginf(lp[4:]).all())
    # valid rows are unaffected by invalid rows in the batch
    assert torch.equal(lp[:4], flow.log_prob(r[:4], ctx[:4]))


def test_normflows_mixed_tail_hazard_is_guarded():
    """Raw normflows mixed-tail coupling maps a linear input outside its box to 0 (log|det| 0);
    ccg's guarded layer passes it through (identity tail) and stays invertible."""
    circ = torch.tensor([True, False, False, True])
    mask = torch.tensor([False, True, False, True])
    torch.manual_seed(0)
    raw = normflows.flows.CircularCoupledRationalQuadraticSpline(
        4, 1, 8, ind_circ=[0, 3], num_context_channels=2, tail_bound=PI, mask=mask.to(torch.uint8)
    ).double()
    x = torch.tensor([[0.3, 7.0, -9.0, 1.0]], dtype=torch.float64)
    ctx = torch.zeros(1, 2, dtype=torch.float64)
    y_raw, _ = raw(x, ctx)
    assert y_raw[0, 1].item() == 0.0 and y_raw[0, 2].item() == 0.0  # the hazard, as of 1.7.3
    guarded = perturb(NormflowsCoupling(mask, circ, 2, hidden=8, n_blocks=1)).double()
    y, ld = guarded(x, ctx)
    assert y[0, 1].item() == 7.0 and y[0, 2].item() == -9.0
    x2, ld2 = guarded.inverse(y, ctx)
    assert torch.allclose(x2, x, atol=1e-10) and torch.allclose(
        ld + ld2, torch.zeros_like(ld), atol=1e-10
    )


# --- inputs and errors -------------------------------------------------------------------


def test_bad_inputs_raise():
    flow = small_flow("nflows")
    ctx = random_context(4)
    r, _ = flow.sample(ctx)
    with pytest.raises(ValueError, match=r"Expected context of shape \[B, 3\].*got \[4, 2\]"):
        flow.sample(ctx[:, :2])
    with pytest.raises(ValueError, match="batch axis"):
        flow.sample(ctx[0])
    with pytest.raises(ValueError, match=r"Expected r of shape \[B, 6\]"):
        flow.log_prob(r[:, :5], ctx)
    with pytest.raises(ValueError, match="one context row per r row"):
        flow.log_prob(r[:3], ctx)
    bad = ctx.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="context contains NaN"):
        flow.sample(bad)
    with pytest.raises(TypeError, match="dtype"):
        flow.sample(ctx.float())
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        flow.log_prob(r.tolist(), ctx)


def test_bad_construction_raises():
    with pytest.raises(ValueError, match=r'Unknown flow backend "x". Must be one of \['):
        build_flow(DIM, CTX, CIRC, LOC, SCALE, backend="x")
    with pytest.raises(ValueError, match="even n_layers"):
        build_flow(DIM, CTX, CIRC, LOC, SCALE, n_layers=3)
    with pytest.raises(ValueError, match="scale > 0"):
        build_flow(DIM, CTX, CIRC, LOC, -SCALE)
    with pytest.raises(ValueError, match=r"circular of shape \[6\]"):
        build_flow(DIM, CTX, CIRC[:4], LOC, SCALE)
    with pytest.raises(ValueError, match="context_dim"):
        build_flow(DIM, 0, CIRC, LOC, SCALE)


def test_context_helpers():
    feats = torch.randn(5, 2, dtype=torch.float64)
    ctx = make_context(feats, 600.0, 300.0)
    assert ctx.shape == (5, 3) and ctx.dtype == torch.float64
    assert torch.allclose(ctx[:, -1], torch.full((5,), math.log(2.0), dtype=torch.float64))
    t = torch.tensor([300.0, 450.0, 300.0, 150.0, 1200.0])
    ctx = make_context(feats.float(), t, 300.0)
    assert ctx.dtype == torch.float32 and torch.equal(ctx[:, :2], feats.float())
    assert torch.allclose(ctx[:, -1:], temperature_feature(t, 300.0))
    assert make_context(torch.empty(3, 0), 300.0, 300.0).shape == (3, 1)
    with pytest.raises(ValueError, match="> 0 K"):
        make_context(feats, torch.tensor([300.0, -1.0, 300.0, 300.0, 300.0]), 300.0)
    with pytest.raises(ValueError, match="> 0 K"):
        make_context(feats, 0.0, 300.0)
    with pytest.raises(ValueError, match="> 0 K"):
        temperature_feature(torch.tensor([300.0]), 0.0)
    with pytest.raises(ValueError, match=r"shape \[5\]"):
        make_context(feats, torch.full((4,), 300.0), 300.0)


# --- training ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_reverse_kl_training_fits_conditional_target(backend):
    """Target given c ∈ [-2, 2]: φ ~ vonMises(c, κ=2), x ~ N(0.5 sin φ, 0.3²). Reverse KL from
    the identity flow (KL ≈ 1.50 nats) for 300 steps; measured final KL 0.019-0.038 over 3 seeds
    and both backends, so the threshold is 0.08."""
    torch.manual_seed(0)
    flow = build_flow(
        2, 2, [True, False], [0.0, 0.0], [1.0, 0.3], backend=backend,
        n_layers=4, hidden=32, n_blocks=1, n_bins=8,
    )  # fmt: skip
    kappa, sigma = 2.0, 0.3
    log_z_vm = math.log(2 * PI * torch.special.i0(torch.tensor(kappa)).item())

    def kl(ctx, generator=None):
        r, log_q = flow.sample(ctx, generator=generator)
        phi, x = r[:, 0], r[:, 1]
        log_p = kappa * torch.cos(phi - ctx[:, 0]) - log_z_vm
        log_p = log_p - 0.5 * ((x - 0.5 * torch.sin(phi)) / sigma) ** 2
        log_p = log_p - math.log(sigma) - 0.5 * math.log(2 * PI)
        return (log_q - log_p).mean()

    def context(b):
        return torch.stack([torch.rand(b) * 4 - 2, torch.zeros(b)], dim=1)

    gen = torch.Generator().manual_seed(1)
    test_ctx = torch.stack([torch.linspace(-2, 2, 4096), torch.zeros(4096)], dim=1)
    with torch.no_grad():
        kl0 = kl(test_ctx, gen).item()
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = kl(context(256))
        loss.backward()
        opt.step()
    with torch.no_grad():
        kl1 = kl(test_ctx, gen).item()
    assert kl0 > 1.0
    assert kl1 < 0.08, (kl0, kl1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conditional_affine_starts_as_the_identity_and_round_trips_its_config(backend):
    """The `ConditionalAffine` end layer has a zero final layer: the flow's density at
    initialization is the flow's without it, and `config()` rebuilds it."""
    torch.manual_seed(0)
    plain = build_flow(DIM, CTX, CIRC, LOC, SCALE, backend=backend, **SMALL).double()
    torch.manual_seed(0)
    flow = build_flow(DIM, CTX, CIRC, LOC, SCALE, backend=backend, conditional_affine=True,
                      **SMALL).double()
    ctx = random_context(256)
    r, log_q = flow.sample(ctx, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(plain.log_prob(r, ctx), log_q, atol=1e-10)
    perturb(flow)
    cfg = json.loads(json.dumps(flow.config()))
    assert cfg["conditional_affine"] is True
    fresh = flow_from_config(cfg).double()
    fresh.load_state_dict(flow.state_dict())
    assert torch.equal(fresh.log_prob(r, ctx), flow.log_prob(r, ctx))


def test_conditional_affine_alone_fits_a_context_dependent_location_and_width():
    """Pushed from N(0, 1), the layer alone can represent x ~ N(2.5 c, (0.5 exp(c / 2))²) for
    c in [-1, 1] exactly (the mean moves 2.5 widths either way, as helical N-CA-C angles do in
    an Ace-(Ala)5-Nme model); reverse KL from 6.7 nats reaches < 0.01 nats in 300 steps
    (measured 0.002)."""
    torch.manual_seed(0)
    layer = ConditionalAffine(torch.tensor([False, True]), 2, hidden=32, n_blocks=1)
    gen = torch.Generator().manual_seed(1)

    def kl(c):
        ctx = torch.stack([c, torch.zeros_like(c)], dim=1)
        u = torch.randn(len(c), 2, generator=gen)
        u[:, 1] = (torch.rand(len(c), generator=gen) * 2 - 1) * PI
        x, logdet = layer(u, ctx)
        log_base = -0.5 * u[:, 0] ** 2 - 0.5 * math.log(2 * PI) - math.log(2 * PI)
        width = 0.5 * torch.exp(c / 2)
        log_p = (-0.5 * ((x[:, 0] - 2.5 * c) / width) ** 2 - torch.log(width)
                 - 0.5 * math.log(2 * PI) - math.log(2 * PI))
        return (log_base - logdet - log_p).mean()

    test_c = torch.linspace(-1, 1, 4096)
    with torch.no_grad():
        kl0 = kl(test_c).item()
    opt = torch.optim.Adam(layer.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        kl(torch.rand(256, generator=gen) * 2 - 1).backward()
        opt.step()
    with torch.no_grad():
        kl1 = kl(test_c).item()
    assert kl0 > 1.0 and kl1 < 0.01, (kl0, kl1)
