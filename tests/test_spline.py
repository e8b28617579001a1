"""ccg's branch-free rational-quadratic spline against nflows' reference function (float64):
values, log|det| and gradients to 1e-12, forward and inverse, at the interval's ends and
knots too; and it traces without graph breaks (what nflows' domain check prevents)."""

from __future__ import annotations

import pytest
import torch
from nflows.transforms.splines.rational_quadratic import rational_quadratic_spline

from ccg.flows.spline import rq_spline

K = 8
BOX = {"left": -3.0, "right": 2.0, "bottom": -3.0, "top": 2.0}
"""A square box, as the flows use (nflows checks the inverse's inputs against left / right)."""


def _params(n: int, seed: int, scale: float = 2.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    widths = scale * torch.randn(n, K, generator=g, dtype=torch.float64)
    heights = scale * torch.randn(n, K, generator=g, dtype=torch.float64)
    derivs = scale * torch.randn(n, K + 1, generator=g, dtype=torch.float64)
    return widths, heights, derivs


def _inputs(n: int, seed: int, low: float, high: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)
    x[:3] = torch.tensor([low, high, 0.5 * (low + high)], dtype=torch.float64)  # the ends
    return x


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_values_and_log_det_equal_nflows(inverse):
    n = 4000
    params = _params(n, 0)
    low, high = (BOX["bottom"], BOX["top"]) if inverse else (BOX["left"], BOX["right"])
    x = _inputs(n, 1, low, high)
    ours = rq_spline(x, *params, inverse=inverse, **BOX)
    ref = rational_quadratic_spline(x, *params, inverse=inverse, **BOX)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_inputs_on_the_knots_equal_nflows():
    params = _params(64, 2)
    widths = torch.softmax(params[0], -1)
    knots = BOX["left"] + (BOX["right"] - BOX["left"]) * torch.cumsum(
        1e-3 + (1 - 1e-3 * K) * widths, -1)[:, :-1]
    x = knots[:, 3]  # exactly on an inner knot
    ours = rq_spline(x, *params, **BOX)
    ref = rational_quadratic_spline(x, *params, **BOX)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradients_equal_nflows(inverse):
    n = 500
    low, high = (BOX["bottom"], BOX["top"]) if inverse else (BOX["left"], BOX["right"])
    x0 = _inputs(n, 3, low, high)[3:]  # interior: the clamped ends have one-sided gradients
    grads = []
    for fn in (rq_spline, rational_quadratic_spline):
        params = [p.requires_grad_(True) for p in _params(n - 3, 4)]
        x = x0.clone().requires_grad_(True)
        y, logdet = fn(x, *params, inverse=inverse, **BOX)
        (y.sin().sum() + logdet.cos().sum()).backward()
        grads.append([x.grad, *[p.grad for p in params]])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_round_trip_and_log_det_against_autograd():
    params = _params(200, 5)
    x = _inputs(200, 6, BOX["left"], BOX["right"]).requires_grad_(True)
    y, logdet = rq_spline(x, *params, **BOX)
    back, logdet_inv = rq_spline(y, *params, inverse=True, **BOX)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-10)  # slopes span e^+-4 here
    torch.testing.assert_close(logdet_inv, -logdet, rtol=0, atol=1e-10)
    (dy,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the Jacobian is diagonal
    torch.testing.assert_close(torch.log(dy), logdet.detach(), rtol=0, atol=1e-10)


def test_traces_without_graph_breaks():
    """The whole map is one graph (nflows' function breaks at its data-dependent check)."""
    import torch._dynamo as dynamo

    params = _params(32, 7)
    x = _inputs(32, 8, BOX["left"], BOX["right"])
    explanation = dynamo.explain(lambda v: rq_spline(v, *params, **BOX))(x)
    assert explanation.graph_break_count == 0
    reference = dynamo.explain(lambda v: rational_quadratic_spline(v, *params, **BOX))(x)
    assert reference.graph_break_count > 0  # what the ccg function exists for


def test_whole_flow_is_the_same_with_either_spline():
    """A flow with ccg's spline and the same flow with nflows' (same weights) give the same
    samples and densities to 1e-12 in float64."""
    import ccg

    config = ccg.RunConfig()
    config.flow.n_layers, config.flow.hidden = 2, 16
    torch.manual_seed(0)
    ours = ccg.build_model(config).flow.double()
    cfg = {**ours.config(), "spline": "nflows"}
    reference = ccg.build_flow(**cfg).double()
    with torch.no_grad():  # perturb the weights away from the identity, then share them
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    reference.load_state_dict(ours.state_dict())
    context = torch.randn(300, ours.context_dim, dtype=torch.float64) * 0.5
    r, log_q = ours.sample(context, generator=torch.Generator().manual_seed(1))
    r_ref, log_q_ref = reference.sample(context, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(r, r_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_q, log_q_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.log_prob(r, context), reference.log_prob(r, context),
                               rtol=0, atol=1e-12)


def test_compiled_flow_transforms_equal_eager():
    """`[train] compile = "flow"`: the compiled maps give the eager values (float64)."""
    import ccg

    config = ccg.RunConfig.from_dict({"system": {"name": "double-well"}, "map": {"cg": "split"},
                                      "flow": {"n_layers": 2, "hidden": 8, "n_blocks": 1}})
    torch.manual_seed(0)
    flow = ccg.build_model(config).flow.double()
    context = torch.randn(64, flow.context_dim, dtype=torch.float64)
    r, log_q = flow.sample(context, generator=torch.Generator().manual_seed(2))
    expected = flow.log_prob(r, context)
    flow.compile_transforms(dynamic=False)
    r_c, log_q_c = flow.sample(context, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(r_c, r, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_q_c, log_q, rtol=0, atol=1e-12)
    torch.testing.assert_close(flow.log_prob(r, context), expected, rtol=0, atol=1e-12)


def test_bench_train_times_the_real_step():
    import ccg

    rows = ccg.benchmark_training([32], compile_modes=("none",), repeats=1, warmup=1)
    assert len(rows) == 1 and rows[0]["step_s"] > 0 and rows[0]["vs_eager"] == 1.0
    assert "| cpu | 32 | none |" in ccg.format_training_table(rows)


def test_bench_train_on_another_system_with_a_compiled_energy(capsys):
    from ccg.cli import main

    assert main(["bench", "train", "--system", "double-well", "--batch-sizes", "32",
                 "--repeats", "1"]) == 0
    assert "| cpu | 32 | none |" in capsys.readouterr().out
    import ccg

    rows = ccg.benchmark_training([32], compile_modes=("none", "energy"), repeats=1, warmup=1,
                                  system="double-well")
    assert [r["compile"] for r in rows] == ["none", "energy"] and rows[1]["step_s"] > 0
    assert main(["bench", "train", "--system", "no-such-system", "--batch-sizes", "8"]) == 2
    assert "no-such-system" in capsys.readouterr().err
