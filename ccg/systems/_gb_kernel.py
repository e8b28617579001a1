"""The C++ generalized Born kernel (`_gb_kernel.cpp`): energy and forces of a `_GBTerm` in
three passes over the atom pairs on the CPU, built on first use with torch's C++ extension
tools and exposed as the opaque custom op `ccg::gb_energy_gradient` (so `torch.compile`
calls it as it is).

`_GBTerm._evaluate` stays the reference (tests compare the two to 1e-12 in float64) and the
fallback: on other devices, for settings the kernel does not cover (a cutoff, salt), for a
second derivative, and wherever the kernel cannot be built (no C++ compiler).

Build: `torch.utils.cpp_extension.load` with the vector instruction set torch.compile picks
on this CPU (`torch._inductor.cpu_vec_isa`), about half a minute the first time, then cached in
torch's extensions folder (`TORCH_EXTENSIONS_DIR`).
"""

from __future__ import annotations

import copy
import functools
import re
import warnings
from pathlib import Path
from types import ModuleType

import torch

_SOURCE = Path(__file__).with_name("_gb_kernel.cpp")


class KernelUnavailable(RuntimeError):
    """The C++ kernel could not be built here (the message says why)."""


@functools.cache
def _module() -> ModuleType:
    """Build (or load the cached build of) the extension; raises KernelUnavailable."""
    from torch.utils import cpp_extension

    flags = ["-O3"]
    try:
        from torch._inductor import cpu_vec_isa

        isa = cpu_vec_isa.pick_vec_isa()
        if isa:
            flags += isa.build_arch_flags().split()
            flags += [f"-D{macro}" for macro in isa.build_macro()]
    except Exception:  # no vector ISA found: the portable (slower) build
        pass
    try:
        # One build per torch version: a build against another torch's ABI must not load.
        name = "ccg_gb_kernel_" + re.sub(r"\W", "_", torch.__version__)
        return cpp_extension.load(
            name=name, sources=[str(_SOURCE)], extra_cflags=flags, verbose=False
        )
    except Exception as error:  # compiler or ninja missing, build failure
        raise KernelUnavailable(
            f"the C++ generalized Born kernel could not be built ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[-1] if str(error).strip() else ''})"
        ) from error


@functools.cache
def unavailable_reason() -> str | None:
    """Why the kernel cannot be built here, or None when it builds (builds it if needed; the
    answer is kept, so a failed build is not retried in this process)."""
    try:
        _module()
    except KernelUnavailable as why:
        return str(why)
    return None


def kernel_available() -> bool:
    """Whether the kernel builds (or is built) here; builds it if needed."""
    return unavailable_reason() is None


def vector_width(dtype: torch.dtype) -> int:
    """Configurations per SIMD vector of the build (the kernel pads B to a multiple)."""
    return int(_module().vector_width(dtype == torch.float64))


def _run(
    xt: torch.Tensor, i: torch.Tensor, j: torch.Tensor, pair: torch.Tensor, atom: torch.Tensor,
    engulf: bool, ace: bool, ace_positive_only: bool, has_neck: bool, neck_scale: float,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = xt.shape[-1]
    width = vector_width(xt.dtype)
    pad = -batch % width
    if pad:  # repeat the last configuration up to a whole vector
        xt = torch.cat([xt, xt[..., -1:].expand(-1, -1, pad)], -1)
    energy, grad = _module().gb_energy_gradient(
        xt.contiguous(), i, j, pair, atom, engulf, ace, ace_positive_only, has_neck,
        neck_scale, fused,
    )
    if pad:
        energy, grad = energy[:batch], grad[..., :batch].contiguous()
    return energy, grad


if hasattr(torch.library, "custom_op"):  # torch >= 2.4
    _op = torch.library.custom_op("ccg::gb_energy_gradient", mutates_args=())(_run)

    @_op.register_fake
    def _(xt, i, j, pair, atom, engulf, ace, ace_positive_only, has_neck, neck_scale, fused):
        return xt.new_empty(xt.shape[-1]), torch.empty_like(xt)
else:  # pragma: no cover - older torch: called directly (not traced by torch.compile)
    _op = _run


_PAIR_ROWS = ("or_i", "sr_i", "sr2_i", "or_j", "sr_j", "sr2_j", "qq")
_NECK_ROWS = ("neck_cut", "m0_ij", "d0_ij", "m0_ji", "d0_ji")
_NONBONDED_ROWS = ("nb_coulomb", "nb_a12", "nb_a6")
_ATOM_ROWS = ("half_or", "inv_or", "inv_rho", "alpha", "beta", "gamma", "q2", "ace_coef",
              "ace_rho")


def supports(term: object) -> bool:
    """Whether the kernel computes this `_GBTerm`'s settings (not a cutoff, not salt)."""
    return (getattr(term, "r_cut", None) is None and not getattr(term, "self_salt", True)
            and not getattr(term, "pair_salt", True))


def pack(term: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's parameter blocks (pair [K, P], atom [9, N], CPU, `dtype`) of a `_GBTerm`
    from its per-pair [P, 1] and per-atom [N, 1] buffers."""
    names = list(_PAIR_ROWS)
    if term.neck_scale:
        names += _NECK_ROWS
    if term.fused_nonbonded:
        names += _NONBONDED_ROWS

    def rows(keys: list[str] | tuple[str, ...]) -> torch.Tensor:
        return torch.cat([getattr(term, k).reshape(1, -1) for k in keys]).to("cpu", dtype)

    return rows(names).contiguous(), rows(_ATOM_ROWS).contiguous()


def gb_energy_gradient(
    xt: torch.Tensor, i: torch.Tensor, j: torch.Tensor, pair: torch.Tensor, atom: torch.Tensor,
    *, engulf: bool, ace: bool, ace_positive_only: bool, has_neck: bool, neck_scale: float,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy [B] (kJ/mol) and its gradient [3, N, B] (kJ/mol/nm) of a generalized Born term
    at xt [3, N, B] (nm, CPU, float32 or float64).

    pair [K, P]: the per-pair rows of `_gb_kernel.cpp` (K = 7, + 5 with the GBn2 neck, + 3
    fused with a nonbonded term); atom [9, N]; i, j [P] int64, the pairs i < j.
    """
    return _op(xt, i, j, pair, atom, engulf, ace, ace_positive_only, has_neck,
               float(neck_scale), fused)


def kernel_copy(term: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of a `_GBTerm` that uses the kernel on the CPU; None where the kernel does not
    cover its settings (a cutoff, salt) or cannot be built here."""
    if not supports(term) or not kernel_available():
        return None
    copied = copy.copy(term)
    copied.use_kernel = True
    # Packed here, not at the first call: torch.compile traces that call, and a tensor
    # created while tracing cannot be kept for later calls.
    copied._kernel_blocks = {
        dtype: pack(term, dtype) for dtype in (torch.float32, torch.float64)
    }
    return copied


def with_kernel(
    terms: dict[str, torch.nn.Module], fused: tuple[str, str, torch.nn.Module] | None
) -> tuple[dict[str, torch.nn.Module], tuple[str, str, torch.nn.Module] | None, bool]:
    """`OpenMMSystem`'s torch terms and fused GB + nonbonded term with every generalized Born
    term the kernel covers replaced by its `kernel_copy`, in new containers; and whether any
    was replaced."""
    covered = [t for t in [*terms.values(), *([fused[2]] if fused else [])] if supports(t)]
    if covered and (reason := unavailable_reason()) is not None:
        warnings.warn(f"{reason}; generalized Born stays on the torch path.", stacklevel=3)
        return terms, fused, False
    changed = False
    terms = dict(terms)
    for name, term in terms.items():
        replacement = kernel_copy(term) if hasattr(term, "use_kernel") else None
        if replacement is not None:
            terms[name] = replacement
            changed = True
    if fused is not None:
        replacement = kernel_copy(fused[2])
        if replacement is not None:
            fused = (fused[0], fused[1], replacement)
            changed = True
    return terms, fused, changed
