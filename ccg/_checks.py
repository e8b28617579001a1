"""Input validation shared by public functions.

Every check raises (never asserts) with what was expected, what was got, and how to fix it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Sequence

import torch

from ccg.errors import ConfigError


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Raise TypeError unless `x` is a torch.Tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"Expected {name} to be a torch.Tensor; got {type(x).__name__}. "
            f"Convert it with torch.as_tensor({name}, dtype=torch.float64)."
        )
    return x


def check_shape(x: torch.Tensor, event_shape: Sequence[int], name: str, what: str = "") -> None:
    """Check `x` has shape [B, *event_shape] with B >= 1.

    `what` is a short description of the trailing axes used in the message (for example
    "n_atoms, 3 in nm").
    """
    check_tensor(x, name)
    expected = tuple(int(s) for s in event_shape)
    got = tuple(x.shape)
    if x.ndim != len(expected) + 1 or got[1:] != expected:
        desc = f" ({what})" if what else ""
        hint = ""
        if x.ndim == len(expected) and got == expected:
            hint = f" A single configuration needs a batch axis: use {name}.unsqueeze(0)."
        elif len(expected) == 2 and x.ndim == 3 and got[2] == expected[1] and got[1] != expected[0]:
            hint = (
                f" The second axis is the atom count: this system has {expected[0]} atoms, "
                f"the input has {got[1]}. Check that the coordinates belong to this system."
            )
        raise ValueError(
            f"Expected {name} of shape [B, {', '.join(map(str, expected))}]{desc}; "
            f"got {list(got)}.{hint}"
        )
    if got[0] == 0:
        raise ValueError(f"Expected a non-empty batch for {name}; got batch size 0.")


_TRUSTED = contextvars.ContextVar("ccg_trusted_values", default=False)


@contextlib.contextmanager
def trusted_values() -> Iterator[None]:
    """Within this block the value checks of tensors (`check_finite`, the tensor branch of
    `check_temperature`), which read the device and so wait for it, are off; shape and type
    checks stay. For ccg's own hot loops, whose inputs ccg made (the training step)."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ValueError naming the first offending batch rows if `x` has NaN or inf (not
    checked inside `trusted_values`)."""
    if _TRUSTED.get():
        return
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(
            f"{name} contains NaN or infinite values in {int(bad.sum())} of {x.shape[0]} "
            f"rows (first: {rows}). Remove or repair those configurations before calling."
        )


def check_temperature(temperature_k: object, name: str = "temperature_k") -> None:
    """Raise ValueError unless every temperature is finite and > 0 K (tensors are not checked
    inside `trusted_values`)."""
    if isinstance(temperature_k, torch.Tensor):
        if _TRUSTED.get():
            return
        ok = bool(torch.isfinite(temperature_k).all()) and bool((temperature_k > 0).all())
        got = temperature_k.min().item() if temperature_k.numel() else "an empty tensor"
    else:
        try:
            value = float(temperature_k)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise TypeError(
                f"Expected {name} as a number or tensor in K; got {type(temperature_k).__name__}."
            ) from None
        ok = math.isfinite(value) and value > 0
        got = value
    if not ok:
        raise ValueError(
            f"Expected {name} > 0 K (finite); got {got}. Temperatures are absolute, in kelvin "
            "(for example 300.0)."
        )


def check_field_types(obj: object, section: str) -> None:
    """Raise ConfigError unless every field of the dataclass `obj` holds a value of its
    annotated type (ints are accepted for floats, never bools for numbers).

    `section` names the config table in the message (for example "train" for `[train]`).
    """
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):  # type: ignore[arg-type]
        value, expected = getattr(obj, field.name), hints[field.name]
        if not _matches(value, expected):
            raise ConfigError(
                f"[{section}] {field.name} must be {_describe(expected)}; got {value!r} "
                f"({type(value).__name__}). Write it without quotes if it is a number, as "
                f"true / false if it is a switch."
            )


def _matches(value: object, expected: object) -> bool:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, expected)  # type: ignore[arg-type]


def _describe(expected: object) -> str:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        words = [_describe(a) for a in args if a is not type(None)]
        absent = " or absent" if type(None) in args else ""
        return " or ".join(words) + absent
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(expected, f"a {getattr(expected, '__name__', expected)}")


def check_device(spec: object, flag: str = "device") -> torch.device:
    """The torch.device for "auto" (CUDA when there is one, else the CPU), "cpu", "cuda" or
    "cuda:N"; ConfigError naming `flag` for anything else or a CUDA device that is not there."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f'{flag} must be "auto", "cpu", "cuda" or "cuda:N"; got "{spec}".') \
            from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f'{flag} must be "auto", "cpu", "cuda" or "cuda:N"; got "{spec}".')
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f'{flag} "{spec}" asks for a GPU, but this torch sees no CUDA device (torch '
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Use {flag} cpu "
                "(or auto), or install a CUDA build of torch on a machine with a GPU."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f'{flag} "{spec}": there are only {torch.cuda.device_count()} CUDA '
                              f"devices (cuda:0 .. cuda:{torch.cuda.device_count() - 1}).")
    return device


def check_compiler(mode: str, device: torch.device,
                   flag: str = "[train] compile (--compile)") -> None:
    """ConfigError naming `flag` when `mode` (a `[train] compile` value) asks torch.compile to
    build CPU code and no working C++ compiler is found (inductor compiles C++ on the CPU), so
    that the run fails before it starts instead of at its first step."""
    if mode == "none" or device.type != "cpu":
        return
    try:
        from torch._inductor import cpp_builder
    except ImportError:  # pragma: no cover - another torch layout: let torch.compile decide
        return
    try:
        cpp_builder.get_cpp_compiler()
    except Exception as err:  # torch raises its InvalidCxxCompiler
        raise ConfigError(
            f'{flag} = "{mode}": torch.compile on the CPU builds C++ code, and no working C++ '
            f"compiler was found ({err}). Install one (for example g++, or set CXX to its "
            f'path), or use compile = "none".'
        ) from None
