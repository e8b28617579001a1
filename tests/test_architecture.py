"""The architecture as tests: layers, no import cycles, the command line in one place, the public
API importable, and every subcommand's --help.

Layers (DESIGN.md), lowest first; a module imports only from its own layer or below:

    0  ccg._version, ccg._checks, ccg._hessian, ccg._signals, ccg.constants, ccg.errors,
       ccg.registry, ccg.protocols
    1  ccg.systems, ccg.mapping, ccg.flows
    2  ccg.model
    3  ccg.training, ccg.free_energy, ccg.io, ccg.backmapping
    4  ccg.cycle
    5  ccg (the public API, ccg/__init__.py)
    6  ccg.cli, ccg.commands, ccg.__main__
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ccg
from ccg.cli import build_parser, main

PACKAGE = Path(ccg.__file__).resolve().parent

LAYERS = {
    "ccg._version": 0, "ccg._checks": 0, "ccg._hessian": 0, "ccg.constants": 0, "ccg.errors": 0,
    "ccg.registry": 0, "ccg.protocols": 0, "ccg._signals": 0,
    "ccg.systems": 1, "ccg.mapping": 1, "ccg.flows": 1,
    "ccg.model": 2,
    "ccg.training": 3, "ccg.free_energy": 3, "ccg.io": 3, "ccg.backmapping": 3,
    "ccg.cycle": 4,
    "ccg": 5,
    "ccg.cli": 6, "ccg.commands": 6, "ccg.__main__": 6,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    """The layer of a module: that of its longest prefix in LAYERS."""
    name = module
    while name not in LAYERS:
        if "." not in name:
            raise AssertionError(f"{module} has no layer: add it (or its package) to LAYERS")
        name = name.rpartition(".")[0]
    return LAYERS[name]


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported ccg module, line, inside a function) for every import of a ccg module."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    in_function.add(id(sub))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in MODULES else node.module for n in names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append((name, node.lineno, id(node) in in_function))
    return found


GRAPH = {m: {name for name, _, _ in _imports(m)} for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_module_imports_a_higher_layer():
    bad = [f"{m} (layer {_layer(m)}) imports {name} (layer {_layer(name)}) at line {line}"
           for m in MODULES for name, line, _ in _imports(m)
           if _layer(name) > _layer(m) and not (m.startswith(f"{name}.") or m == name)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    # Package __init__ modules import their children; a child importing a sibling through the
    # package would show up as child -> package -> child. Tarjan's strongly connected components:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_no_function_level_imports_of_ccg():
    bad = [f"{m}:{line} imports {name} inside a function"
           for m in MODULES for name, line, inside in _imports(m) if inside]
    assert not bad, "\n".join(bad)


def test_argparse_only_in_the_command_line():
    users = sorted(m for m, path in MODULES.items() if "argparse" in {
        a.name for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import) for a in node.names} | {
        node.module for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)})
    assert users and all(m == "ccg.cli" or m.startswith("ccg.commands") for m in users), users


def test_the_layer_test_catches_an_upward_import(tmp_path):
    """The checks above can fail: a core module importing the command line is caught."""
    fake = tmp_path / "ccg" / "systems"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ccg.cli import main\n\n\ndef f():\n    import ccg.cycle\n")
    MODULES["ccg.systems.bad"] = fake / "bad.py"
    try:
        found = _imports("ccg.systems.bad")
    finally:
        del MODULES["ccg.systems.bad"]
    assert ("ccg.cli", 1, False) in found and ("ccg.cycle", 5, True) in found
    assert _layer("ccg.cli") > _layer("ccg.systems.bad")


# --- the public API --------------------------------------------------------------------------

def test_every_public_name_imports():
    assert len(ccg.__all__) == len(set(ccg.__all__))
    missing = [name for name in ccg.__all__ if not hasattr(ccg, name)]
    assert not missing, missing
    for name in ccg.__all__:
        obj = getattr(ccg, name)
        if callable(obj) and not isinstance(obj, ccg.Registry):
            assert obj.__doc__, f"ccg.{name} has no docstring"


def test_public_names_come_from_the_package():
    """Everything in the API is ccg's own (no re-exported third-party objects)."""
    for name in ccg.__all__:
        module = getattr(getattr(ccg, name), "__module__", "ccg") or "ccg"
        assert module == "ccg" or module.startswith("ccg."), (name, module)


# --- the command line ------------------------------------------------------------------------

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def test_subcommands_are_the_documented_ones():
    assert SUBCOMMANDS == sorted(["info", "bench", "train", "free-energy", "states", "backmap",
                                  "cycle", "simulate"])


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ccg {command}")
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        assert action.help, f"ccg {command} {action.option_strings or action.dest} has no help"


def test_top_level_help_and_version(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == ccg.__version__
