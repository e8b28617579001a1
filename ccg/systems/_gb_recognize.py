"""Recognizing OpenMM's generalized Born CustomGBForces exactly, for the torch path of
`_gb_terms`: the CustomGBForce of `implicit/obc2.xml` (OBC2) and of `implicit/gbn2.xml` (GBn2),
as `openmm/app/internal/customgbforces.py` (OpenMM 8) writes them.

A CustomGBForce is compiled only if it is exactly one of the recognized models: its computed
values, energy terms (expressions compared character by character, numbers such as the
dielectrics read from them), computation types, per-particle parameter names, global
parameters and tabulated functions. Anything else raises `UnsupportedForce` and OpenMM
evaluates the force.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import openmm

from ccg.systems._torch_terms import UnsupportedForce

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _template(text: str) -> re.Pattern[str]:
    """A regex matching `text` literally except `{name}` fields, which match one number."""
    parts = re.split(r"\{(\w+)\}", text)
    regex = "".join(
        re.escape(part) if k % 2 == 0 else f"(?P<{part}>{_NUMBER})" for k, part in enumerate(parts)
    )
    return re.compile(regex)


# Expressions exactly as openmm/app/internal/customgbforces.py (OpenMM 8) writes them.
_HCT = (
    "select(step(r+sr2-or1), 0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/r), 0);"
    "U=r+sr2;"
    "L=max(or1, D);"
    "D=abs(r-sr2)"
)
_OBC2_I = _template(_HCT)
_OBC2_B = _template(
    "1/(1/or-tanh(psi-0.8*psi^2+4.85*psi^3)/radius);psi=I*or; radius=or+offset; offset={offset}"
)
_GBN2_I = _template(
    "Ivdw+neckScale*Ineck;"
    "Ineck=step(radius1+radius2+neckCut-r)*getm0(radindex1,radindex2)/(1+100*(r-getd0(radindex1,"
    "radindex2))^2+0.3*1000000*(r-getd0(radindex1,radindex2))^6);"
    "Ivdw=" + _HCT + ";"
    "radius1=or1+offset; radius2=or2+offset;"
    "neckScale={neck_scale}; neckCut={neck_cut}; offset={offset}"
)
_GBN2_B = _template(
    "1/(1/or-tanh(alpha*psi-beta*psi^2+gamma*psi^3)/radius);"
    "psi=I*or; radius=or+offset; offset={offset}"
)
_PARAMS = "; solventDielectric={solvent}; soluteDielectric={solute}; kappa={kappa}; offset={offset}"
_SELF = _template("-0.5*138.935485*(1/soluteDielectric-1/solventDielectric)*charge^2/B" + _PARAMS)
_SELF_SALT = _template(
    "-0.5*138.935485*(1/soluteDielectric-exp(-kappa*B)/solventDielectric)*charge^2/B" + _PARAMS
)
_ACE = _template("28.3919551*(radius+0.14)^2*(radius/B)^6; radius=or+offset" + _PARAMS)
_PAIR_F = ";f=sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2)))"
_PAIR = _template(
    "-138.935485*(1/soluteDielectric-1/solventDielectric)*charge1*charge2/f" + _PAIR_F + _PARAMS
)
_PAIR_SALT = _template(
    "-138.935485*(1/soluteDielectric-exp(-kappa*f)/solventDielectric)*charge1*charge2/f"
    + _PAIR_F
    + _PARAMS
)
K_E_CUSTOM = 138.935485
"""The Coulomb constant written into OpenMM's GB expressions (not ONE_4PI_EPS0)."""
ACE_CUSTOM = 28.3919551
"""4 pi x surface-area energy written into OpenMM's GB expressions, kJ/mol/nm^2."""

_PAIR_TYPE = openmm.CustomGBForce.ParticlePairNoExclusions
_SINGLE_TYPE = openmm.CustomGBForce.SingleParticle
_TYPE_NAMES = {
    openmm.CustomGBForce.SingleParticle: "SingleParticle",
    openmm.CustomGBForce.ParticlePair: "ParticlePair",
    openmm.CustomGBForce.ParticlePairNoExclusions: "ParticlePairNoExclusions",
}


@dataclass(frozen=True)
class _Model:
    """A recognized CustomGBForce model: its parameter names and computed-value templates."""

    name: str
    parameters: tuple[str, ...]
    value_i: re.Pattern[str]
    value_b: re.Pattern[str]
    tables: tuple[str, ...]


_MODELS = (
    _Model("OBC2 (implicit/obc2.xml)", ("charge", "or", "sr"), _OBC2_I, _OBC2_B, ()),
    _Model(
        "GBn2 (implicit/gbn2.xml)",
        ("charge", "or", "sr", "alpha", "beta", "gamma", "radindex"),
        _GBN2_I,
        _GBN2_B,
        ("getd0", "getm0"),
    ),
)


def _numbers(match: re.Match[str]) -> dict[str, float]:
    out = {k: float(v) for k, v in match.groupdict().items()}
    bad = [k for k, v in out.items() if not np.isfinite(v)]
    if bad:
        raise UnsupportedForce(f"non-finite constants {bad} in its expressions")
    return out


def _describe(expression: str) -> str:
    return expression if len(expression) <= 60 else expression[:57] + "..."


def recognize(force: openmm.CustomGBForce) -> tuple[_Model, dict[str, object]]:
    """Match a CustomGBForce against the known models; UnsupportedForce says what differs."""
    names = tuple(
        force.getPerParticleParameterName(k) for k in range(force.getNumPerParticleParameters())
    )
    model = next((m for m in _MODELS if m.parameters == names), None)
    if model is None:
        raise UnsupportedForce(
            f"its per-particle parameters {list(names)} are those of no recognized GB model "
            f"({'; '.join(f'{m.name}: {list(m.parameters)}' for m in _MODELS)})"
        )
    if force.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
        raise UnsupportedForce(f"it is {model.name} with a cutoff (only NoCutoff compiles)")
    if force.getNumGlobalParameters():
        globals_ = [force.getGlobalParameterName(k) for k in range(force.getNumGlobalParameters())]
        raise UnsupportedForce(f"it has global parameters {globals_} ({model.name} has none)")
    n_tables = force.getNumTabulatedFunctions()
    tables = tuple(force.getTabulatedFunctionName(k) for k in range(n_tables))
    if tuple(sorted(tables)) != model.tables:
        raise UnsupportedForce(
            f"its tabulated functions {list(tables)} differ from {model.name}'s "
            f"{list(model.tables)}"
        )
    if force.getNumComputedValues() != 2:
        raise UnsupportedForce(
            f"it has {force.getNumComputedValues()} computed values ({model.name}: I and B)"
        )
    consts: dict[str, object] = {}
    for k, (want, pattern, kind) in enumerate(
        (("I", model.value_i, _PAIR_TYPE), ("B", model.value_b, _SINGLE_TYPE))
    ):
        name, expression, ctype = force.getComputedValueParameters(k)
        match = pattern.fullmatch(expression)
        if name != want or ctype != kind or match is None:
            raise UnsupportedForce(
                f"its computed value {k} ({name}, {_TYPE_NAMES.get(ctype, ctype)}: "
                f"'{_describe(expression)}') is not {model.name}'s {want} "
                f"({_TYPE_NAMES[kind]}) expression"
            )
        consts.update({f"{want}_{key}": v for key, v in _numbers(match).items()})
    terms = [force.getEnergyTermParameters(k) for k in range(force.getNumEnergyTerms())]
    expected = "self energy, [surface area (ACE)], pair energy"
    if len(terms) not in (2, 3):
        raise UnsupportedForce(f"it has {len(terms)} energy terms ({model.name}: {expected})")
    kinds = [("self", (_SELF, _SELF_SALT), _SINGLE_TYPE)]
    if len(terms) == 3:
        kinds.append(("ace", (_ACE,), _SINGLE_TYPE))
    kinds.append(("pair", (_PAIR, _PAIR_SALT), _PAIR_TYPE))
    for (label, patterns, kind), (expression, ctype) in zip(kinds, terms, strict=True):
        matches = [(p, p.fullmatch(expression)) for p in patterns]
        found = [(p, m) for p, m in matches if m is not None]
        if ctype != kind or not found:
            raise UnsupportedForce(
                f"its energy term '{_describe(expression)}' "
                f"({_TYPE_NAMES.get(ctype, ctype)}) is not {model.name}'s {label} term "
                f"({_TYPE_NAMES[kind]}; expected: {expected})"
            )
        pattern, match = found[0]
        consts[f"{label}_salt"] = pattern in (_SELF_SALT, _PAIR_SALT)
        consts.update({f"{label}_{key}": v for key, v in _numbers(match).items()})
    consts["ace"] = len(terms) == 3
    return model, consts


def particle_table(force: openmm.CustomGBForce) -> np.ndarray:
    n = force.getNumParticles()
    rows = [force.getParticleParameters(p) for p in range(n)]
    return np.array(rows, dtype=np.float64).reshape(n, force.getNumPerParticleParameters())


def discrete_table(force: openmm.CustomGBForce, name: str) -> tuple[int, int, np.ndarray]:
    index = [force.getTabulatedFunctionName(k) for k in range(force.getNumTabulatedFunctions())]
    function = force.getTabulatedFunction(index.index(name))
    if not isinstance(function, openmm.Discrete2DFunction):
        raise UnsupportedForce(
            f"its tabulated function {name} is a {type(function).__name__}, not the "
            "Discrete2DFunction of GBn2"
        )
    xsize, ysize, values = function.getFunctionParameters()
    return int(xsize), int(ysize), np.asarray(values, dtype=np.float64)


def energy_constants(consts: dict[str, object], label: str) -> tuple[float, float, float, bool]:
    """(1/eps_solute, 1/eps_solvent, kappa, salt) of one energy term."""
    solute, solvent = float(consts[f"{label}_solute"]), float(consts[f"{label}_solvent"])
    if solute == 0.0 or solvent == 0.0:
        raise UnsupportedForce(f"its {label} term has a zero dielectric constant")
    kappa, salt = float(consts[f"{label}_kappa"]), bool(consts[f"{label}_salt"])
    return 1.0 / solute, 1.0 / solvent, kappa, salt


def gb_models() -> tuple[str, ...]:
    """Names of the CustomGBForce models the torch path recognizes."""
    return tuple(m.name for m in _MODELS)
