"""The documentation site: it builds with `mkdocs build --strict`, its generated pages cover the
whole public API, every configuration field (with its current default) and every subcommand,
its Python examples run, its TOML examples are valid configurations, and every `ccg` command
line it shows parses.
"""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest
import torch

import ccg
from ccg.cli import build_parser
from ccg.io.model_file import save_model

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
SKIP = "<!-- docs-test: skip"
"""A ```python block right after a comment starting with this is not run (it trains for
minutes, or needs files a reader has and the tests do not)."""


def _blocks(page: Path, language: str) -> list[tuple[str, bool]]:
    """(code, skipped) of every fenced block of `language` on a page, in order."""
    text = page.read_text()
    pattern = rf"^(?P<skip>{re.escape(SKIP)}[^\n]*\n)?```{language}\n(?P<code>.*?)^```"
    return [(m["code"], bool(m["skip"])) for m in re.finditer(pattern, text, re.M | re.S)]


def _hooks():
    """docs/hooks.py as a module (it needs mkdocs)."""
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("ccg_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path  # it adds the repository and docs/ for mkdocs' sake
    return module


# --- the build ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with `mkdocs build --strict` (any warning fails it)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_the_site_builds_strict(site):
    for page in PAGES:
        if page.name == "index.md":
            built = site / page.relative_to(DOCS).parent / "index.html"
        else:
            built = site / page.relative_to(DOCS).with_suffix("") / "index.html"
        assert built.is_file(), f"{page.relative_to(ROOT)} was not built"


def test_api_pages_document_every_public_name(site):
    api = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    missing = [name for name in ccg.__all__ if f'id="ccg.{name}"' not in api]
    assert not missing, f"names of ccg.__all__ missing from the API pages: {missing}"


def test_api_groups_name_only_public_names():
    hooks = _hooks()
    assignment = hooks.api_assignment()
    assert sorted(assignment) == sorted(ccg.__all__)
    pages = {p.stem for p in (DOCS / "api").glob("*.md")}
    assert {g.slug for g in hooks.API_GROUPS} <= pages


def _row(page: str, anchor: str) -> str:
    """The text of the table row that holds `id="anchor"`."""
    match = re.search(rf'id="{re.escape(anchor)}".*?</tr>', page, re.S)
    assert match, f'no row with id="{anchor}" on the configuration page'
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(0)))


def test_configuration_page_lists_every_field_with_its_current_default(site):
    hooks = _hooks()
    page = _page(site, "configuration")
    tables = hooks.config_tables()
    documented = {t.cls for t in tables}
    assert {ccg.SystemConfig, ccg.MapConfig, ccg.FlowConfig, ccg.TrainConfig,
            ccg.CycleConfig} <= documented
    for table in tables:
        docs = hooks.attribute_docstrings(table.cls)
        for f in dataclasses.fields(table.cls):
            row = _row(page, f"{table.anchor}-{f.name}")
            default = hooks.format_default(hooks.default_of(f), table.toml)
            assert f" {default} " in row, (table.cls.__name__, f.name, default, row)
            first_word = docs.get(f.name, "").split(" ")[0].strip("`")
            assert first_word in row, (table.cls.__name__, f.name, row)


def test_configuration_page_follows_a_changed_default(monkeypatch):
    """The page is generated from the dataclasses: a new default is on it at the next build."""
    hooks = _hooks()
    lr = next(f for f in dataclasses.fields(ccg.TrainConfig) if f.name == "lr")
    monkeypatch.setattr(lr, "default", 0.0123)
    text = hooks.config_reference()
    row = next(line for line in text.splitlines() if 'id="train-lr"' in line)
    assert "`0.0123`" in row


def test_cli_page_lists_every_subcommand_and_option(site):
    page = html.unescape(_page(site, "cli"))
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert commands
    for name, sub in commands.items():
        assert f'id="ccg-{name}"' in page, f"ccg {name} is not on the command-line page"
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in page, f"ccg {name} {option} is not on the command-line page"


# --- the examples -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory) -> Path:
    """What the pages' examples assume exists: runs/demo/model.pt (a small, untrained flow, as
    `ccg train --minutes 3 --out runs/demo` leaves a trained one), runs/cycle/cg_model.pt (an
    untrained CG model), and input.pdb and my.pdb (alanine dipeptide)."""
    root = tmp_path_factory.mktemp("demo")
    config = ccg.RunConfig()
    config.flow.n_layers, config.flow.hidden = 2, 16
    config.train.steps = 1
    torch.manual_seed(0)
    model = ccg.build_model(config)
    (root / "runs" / "demo").mkdir(parents=True)
    save_model(root / "runs" / "demo" / "model.pt", model, run_config=config.to_dict())
    cg_model = ccg.FreeEnergyModel(model.cg_map, t_ref=300.0, t_range=(300.0, 600.0),
                                   hidden=16, n_layers=2, n_members=2,
                                   system=model.system).double()
    (root / "runs" / "cycle").mkdir(parents=True)
    ccg.save_cg_model(root / "runs" / "cycle" / "cg_model.pt", cg_model)
    pdb = files("ccg") / "data" / "alanine_dipeptide.pdb"
    for name in ("input.pdb", "my.pdb"):
        shutil.copyfile(str(pdb), root / name)
    return root


PYTHON_PAGES = [p for p in PAGES if _blocks(p, "python")]


@pytest.fixture
def registries():
    """Restore the registries after a page registers its examples' systems and maps."""
    saved = [(r, dict(r._entries), dict(r._info))
             for r in (ccg.SYSTEMS, ccg.CG_MAPS, ccg.FLOW_BACKENDS, ccg.Z_PROPOSALS)]
    yield
    for registry, entries, info in saved:
        registry._entries, registry._info = entries, info


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_examples_run(page, demo_files, tmp_path, monkeypatch, registries):
    """Each page's Python blocks run in order, in one namespace, in a fresh folder."""
    shutil.copytree(demo_files, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    for code, skipped in _blocks(page, "python"):
        if skipped:
            compile(code, str(page), "exec")  # still valid Python
            continue
        exec(compile(code, str(page), "exec"), namespace)
        ran += 1
    assert ran, f"{page.name}: every Python block is skipped"
    samples = namespace.get("samples")
    if isinstance(samples, ccg.FlowSamples):  # the cycle consistency the pages promise
        residual = namespace["model"].cg_map.coarse_grain(samples.x) - samples.z
        assert residual.abs().max() < 1e-4


def test_toml_examples_are_valid_configs(demo_files, monkeypatch):
    monkeypatch.chdir(demo_files)  # where my.pdb exists
    blocks = [(page, code) for page in PAGES for code, _ in _blocks(page, "toml")]
    assert blocks
    for page, code in blocks:
        try:
            ccg.RunConfig.from_dict(tomllib.loads(code)).validate()
        except ccg.ConfigError as err:
            pytest.fail(f"{page.relative_to(ROOT)}: a TOML example is not a valid config: {err}")


def _command_lines(code: str) -> list[str]:
    """The `ccg ...` commands of a bash block (continuations joined, comments dropped)."""
    text = code.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("#"):
            continue
        for part in line.split("&&"):
            part = part.strip()
            if part == "ccg" or part.startswith("ccg "):
                commands.append(part)
    return commands


def test_every_ccg_command_shown_parses():
    """Every flag a page shows exists: each `ccg ...` line of a bash block parses."""
    shown = [(page, line) for page in PAGES for code, _ in _blocks(page, "bash")
             for line in _command_lines(code)]
    assert len(shown) > 10
    for page, line in shown:
        try:
            build_parser().parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{page.relative_to(ROOT)}: `{line}` does not parse")
