"""experiments/ uses the public API only: every script imports `ccg` (or names from it), never a
submodule, uses only names of `ccg.__all__`, and imports from its own folder only plain helper
modules (no other script, no private `_name`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ccg

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPTS = sorted(EXPERIMENTS.rglob("*.py"))


def _is_script(path: Path) -> bool:
    return 'if __name__ == "__main__"' in path.read_text()


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    siblings = {p.stem: p for p in path.parent.glob("*.py")}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ccg."):
                    out.append(f"line {node.lineno}: import {alias.name} (use `import ccg`)")
                if alias.name in siblings:
                    out.append(f"line {node.lineno}: import {alias.name} (a sibling module)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [a.name for a in node.names]
            if node.module.startswith("ccg."):
                out.append(f"line {node.lineno}: from {node.module} import ... (use `ccg.NAME`)")
            elif node.module == "ccg":
                out += [f"line {node.lineno}: ccg.{n} is not public" for n in names
                        if n not in ccg.__all__]
            elif node.module in siblings:
                if _is_script(siblings[node.module]):
                    out.append(f"line {node.lineno}: imports from the script {node.module}.py "
                               "(move shared code to a helper module or the library)")
                out += [f"line {node.lineno}: imports the private {node.module}.{n}"
                        for n in names if n.startswith("_")]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "ccg" and node.attr not in ccg.__all__):
            out.append(f"line {node.lineno}: ccg.{node.attr} is not in ccg.__all__")
    return out


def test_there_are_experiment_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_experiment_uses_only_the_public_api(path):
    assert _problems(path) == []


def test_the_check_catches_deep_imports(tmp_path):
    (tmp_path / "helper.py").write_text('def _private():\n    pass\n')
    (tmp_path / "other.py").write_text('def run():\n    pass\n\nif __name__ == "__main__":\n'
                                       '    run()\n')
    script = tmp_path / "script.py"
    script.write_text("import ccg\nimport ccg.io\nfrom ccg.io.model_file import load_model\n"
                      "from ccg import load_model, _version\nfrom helper import _private\n"
                      "from other import run\nx = ccg.io\ny = ccg.load_model\n")
    problems = _problems(script)
    assert len(problems) == 6, problems
