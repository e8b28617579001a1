"""MkDocs hooks: the pages that are generated from the code at build time.

A page asks for generated content with a marker comment on a line of its own:

    <!-- ccg:config -->         the configuration reference (every field of every config class:
                                its type, its current default, its docstring, its flag)
    <!-- ccg:cli -->            the command line, from `ccg.cli.build_parser()`
    <!-- ccg:api GROUP -->      mkdocstrings blocks for the names of `ccg.__all__` in GROUP
    <!-- ccg:api-index -->      a table of every name of `ccg.__all__`, with its group

Nothing on these pages is copied by hand, so they cannot drift from the code. Every name of
`ccg.__all__` lands in a group: the groups below list names in a reading order, a name that
no group lists goes to the group of the module that defines it (`PREFIXES`), and anything left
to "Other names" on the API index page. The build fails when a group lists a name that
`ccg.__all__` no longer has.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "docs"):  # the ccg of this checkout (as mkdocstrings documents)
    if str(folder) not in sys.path:   # and griffe_plaintext beside this file
        sys.path.insert(0, str(folder))

from griffe_plaintext import escape_line  # noqa: E402

import ccg  # noqa: E402
from ccg.cli import build_parser  # noqa: E402
from ccg.commands import cycle as cycle_command  # noqa: E402
from ccg.commands import train as train_command  # noqa: E402

MARKER = re.compile(r"^<!--\s*ccg:(?P<what>[\w-]+)(?:\s+(?P<arg>[\w-]+))?\s*-->\s*$", re.M)


# --- the API reference ---------------------------------------------------------------------


@dataclass
class ApiGroup:
    """One page of the API reference."""

    slug: str
    """Page name under docs/api/ (without .md)."""
    title: str
    intro: str
    names: list[str]
    """Names of `ccg.__all__`, in reading order."""
    prefixes: tuple[str, ...] = ()
    """Modules whose further public names join this group."""


API_GROUPS = [
    ApiGroup("configuration", "Configuration",
             "The settings of a run, as dataclasses. `RunConfig` holds the `[system]`, `[map]`, "
             "`[flow]` and `[train]` tables of a TOML file; `CycleConfig` the settings of "
             "`ccg cycle`. The [configuration reference](../configuration.md) lists every key "
             "with its default.",
             ["RunConfig", "SystemConfig", "MapConfig", "FlowConfig", "TrainConfig",
              "CycleConfig", "FitConfig"]),
    ApiGroup("training", "Building and training",
             "Build a model from a configuration, train it data-free, and the pieces training "
             "is made of: losses as objects, proposals over z and T, the trainer.",
             ["train", "build_model", "build_system", "build_map", "build_proposal", "Trainer",
              "ReverseKL", "ForwardKL", "JointReverseKL", "ZProposal", "UniformTorus",
              "AdaptiveTorusProposal", "ProductTorusProposal", "UniformBox", "FrameProposal",
              "TemperatureSampler",
              "benchmark_flow_backends", "format_flow_table", "benchmark_training",
              "format_training_table"],
             ("ccg.training",)),
    ApiGroup("model", "The model and units",
             "System + CG map + flow = the backmapping model; the protocols its parts satisfy; "
             "the physical constants.",
             ["BackmappingModel", "FlowSamples", "SystemProtocol", "CGMapProtocol",
              "FlowProtocol", "KB_KJMOL_PER_K", "beta_from_temperature", "__version__"],
             ("ccg.model", "ccg.protocols", "ccg.constants", "ccg._version")),
    ApiGroup("systems", "Systems",
             "Targets: batched, differentiable potential energies U(x) in kJ/mol of x "
             "[B, n_atoms, 3] in nm (molecules) or [B, dim] (analytic systems).",
             ["System", "MolecularSystem", "OpenMMSystem", "alanine_dipeptide", "build_peptide",
              "prepare_pdb", "AnalyticSystem",
              "HarmonicFastModes", "DoubleWell2D", "MuellerBrown", "TorusDoubleWells",
              "make_analytic",
              "benchmark_energy", "format_energy_table"],
             ("ccg.systems",)),
    ApiGroup("maps", "CG maps",
             "CG maps and the exact split x <-> (z, r, log|J|).",
             ["CGMap", "TorsionMap", "torsion_map_for", "backbone_contact_pairs",
              "peptide_torsion_map", "peptide_torsions", "resolve_torsions", "AtomSubsetMap",
              "CoordinateSplitMap", "ZMatrix", "find_chiral_centers", "chirality_signs"],
             ("ccg.mapping",)),
    ApiGroup("flows", "Flows",
             "The conditional flow q(r | z, T): `sample`, `log_prob`, `sample_and_log_prob` "
             "with one context row per sample.",
             ["ConditionalFlow", "build_flow", "make_context"],
             ("ccg.flows",)),
    ApiGroup("free-energy", "Free energies",
             "Importance-sampling estimates of F(z, T) and its derivatives through a trained "
             "flow, surfaces, the CG model F_theta(z, T), its fit and CG Langevin dynamics.",
             ["estimate_free_energy", "PointEstimates", "free_energy_surface", "Surface",
              "grid_points", "free_energy_arrays", "cg_model_arrays", "save_free_energy",
              "plot_free_energy", "FreeEnergyModel", "ObservableSet", "fit_free_energy_model",
              "simulate", "LangevinResult", "default_start", "grid_centers",
              "histogram_free_energy", "rmse_after_shift", "shifted_difference",
              "kl_divergence", "state_populations", "held_out_scores", "HeldOutScore",
              "predicts_within_noise", "worst_chi2", "sample_joint", "JointSamples",
              "ais_sample", "AISSamples",
              "pilot_proposal", "state_mixture_proposal", "StateMixtureProposal",
              "fit_state_mixture", "joint_ess", "joint_ess_parts", "pareto_k",
              "project_free_energy",
              "Projection", "resolve_dims", "plot_projections",
              "group_populations", "region_populations", "StateGroup", "StateTable", "Region",
              "ramachandran_groups", "halves_groups", "default_groups", "save_state_table"],
             ("ccg.free_energy",)),
    ApiGroup("cycle", "The cycle",
             "CG model -> CG samples -> flow -> free energies -> CG model, until F_theta stops "
             "changing.",
             ["run_cycle", "Cycle"],
             ("ccg.cycle",)),
    ApiGroup("files", "Backmapping and files",
             "CG frames to atomistic frames; model files, CG model files, trajectories and CG "
             "tables in and out.",
             ["backmap", "backmap_to_file", "BackmapResult", "minimize_keeping_cg", "load_model",
              "save_model", "load_cg_model", "save_cg_model", "file_kind", "load_trajectory",
              "read_cg_frames", "read_cg_input", "write_cg_frames", "TrajectoryWriter"],
             ("ccg.backmapping", "ccg.io")),
    ApiGroup("registries", "Registries",
             "Name -> part registries for the pluggable pieces; a configuration names its "
             "parts by these names, and a new part joins with one decorator.",
             ["Registry", "SYSTEMS", "CG_MAPS", "FLOW_BACKENDS", "Z_PROPOSALS"],
             ("ccg.registry",)),
    ApiGroup("errors", "Errors",
             "The exceptions ccg raises for a problem the user can fix; the `ccg` command turns "
             "them into a one-paragraph message and exit code 2.",
             ["CCGError", "ConfigError", "ModelFileError", "TrainingError", "Interrupted"],
             ("ccg.errors",)),
]

OTHER = "other"
"""Names no group takes are listed on the API index page (api/index.md)."""


def _defining_module(obj: object) -> str | None:
    """The module that defines a class or function (None for instances and constants)."""
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return getattr(obj, "__module__", None)
    return None


def api_assignment() -> dict[str, str]:
    """Every name of `ccg.__all__` -> the slug of its API page (or OTHER)."""
    public = list(ccg.__all__)
    listed = {name: g.slug for g in API_GROUPS for name in g.names}
    stale = sorted(set(listed) - set(public))
    if stale:
        raise PluginError(f"docs/hooks.py API_GROUPS lists {stale}, which ccg.__all__ does not "
                          "have: remove or rename them there.")
    out = {}
    for name in public:
        if name in listed:
            out[name] = listed[name]
            continue
        module = _defining_module(getattr(ccg, name)) or ""
        best, slug = 0, OTHER
        for group in API_GROUPS:
            for prefix in group.prefixes:
                if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                    best, slug = len(prefix), group.slug
        out[name] = slug
    return out


def _ordered(slug: str, assignment: dict[str, str]) -> list[str]:
    """The names of one page: the group's own list first, then later additions."""
    group = {g.slug: g for g in API_GROUPS}.get(slug)
    first = list(group.names) if group else []
    rest = sorted(n for n, s in assignment.items() if s == slug and n not in first)
    return first + rest


def api_page(slug: str) -> str:
    """The body of one API page: its introduction and one mkdocstrings block per name."""
    groups = {g.slug: g for g in API_GROUPS}
    if slug not in groups:
        raise PluginError(f'Unknown API group "{slug}"; docs/hooks.py has {sorted(groups)}.')
    names = _ordered(slug, api_assignment())
    blocks = [groups[slug].intro, ""]
    registries = [n for n in names if isinstance(getattr(ccg, n), ccg.Registry)]
    if registries:  # what is registered now, for configurations and flags to name
        blocks += ["| registry | names registered now |", "|---|---|"]
        blocks += [f"| [`ccg.{n}`](#ccg.{n}) | "
                   + ", ".join(f"`{k}`" for k in getattr(ccg, n).names()) + " |"
                   for n in registries]
        blocks.append("")
    for name in names:
        blocks.append(f"::: ccg.{name}\n")
    return "\n".join(blocks)


def _summary(name: str) -> str:
    """One line describing a public name (its docstring's first paragraph, or its value)."""
    obj = getattr(ccg, name)
    if isinstance(obj, ccg.Registry):
        return f"registry of {obj.kind}s: " + ", ".join(f"`{n}`" for n in obj.names())
    if inspect.isclass(obj) or inspect.isroutine(obj):
        doc = inspect.getdoc(obj) or ""
        return doc.strip().split("\n\n")[0].replace("\n", " ")
    return f"`{obj!r}`"


def _kind(name: str) -> str:
    obj = getattr(ccg, name)
    if isinstance(obj, ccg.Registry):
        return "registry"
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return "exception"
        return "dataclass" if dataclasses.is_dataclass(obj) else "class"
    if inspect.isroutine(obj):
        return "function"
    return "constant"


def api_index() -> str:
    """A table of every name of `ccg.__all__`: its page, kind and summary."""
    assignment = api_assignment()
    lines = []
    for group in [*API_GROUPS, ApiGroup(OTHER, "Other names", "", [])]:
        names = _ordered(group.slug, assignment)
        if not names:
            continue
        lines += [f"## {group.title}", ""]
        if group.slug == OTHER:
            lines += ["Names that no page of the reference takes yet.", ""]
            lines += [f"::: ccg.{name}\n" for name in names]
            continue
        lines += ["| name | kind | summary |", "|---|---|---|"]
        for name in names:
            link = f"[`{name}`]({group.slug}.md#ccg.{name})"
            lines.append(f"| {link} | {_kind(name)} | {_cell(_summary(name))} |")
        lines.append("")
    return "\n".join(lines)


# --- the configuration reference -----------------------------------------------------------


@dataclass
class ConfigTable:
    """One configuration class on the configuration page."""

    cls: type
    heading: str
    anchor: str
    """Prefix of each key's anchor: `{anchor}-{key}`."""
    toml: bool
    """Keys of a TOML table (defaults in TOML syntax) or Python-only settings."""
    intro: str
    flags: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Field name -> (the command-line flag that sets it, the flag's help)."""


def attribute_docstrings(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of a dataclass (a string after `name: type`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    out = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            out[node.target.id] = inspect.cleandoc(after.value.value)
    return out


def default_of(f: dataclasses.Field) -> object:
    """A field's current default value (calling its default_factory)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def toml_value(value: object) -> str:
    """A value in TOML syntax ("unset" for None: the key is left out)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def format_default(value: object, toml: bool) -> str:
    """How the configuration page shows a default."""
    if value is dataclasses.MISSING:
        return "required"
    return toml_value(value) if toml else repr(value)


def _flag_map(function, kind: str) -> dict[tuple[str, str] | str, str]:
    """Which `args.<dest>` sets which config field, read from a command's source.

    kind "overrides": a dict {("section", "key"): args.dest, ...} (`ccg train`);
    kind "keywords": keyword arguments key=...args.dest... of a call (`ccg cycle`).
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    out: dict = {}

    def dest(node) -> str | None:
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                    and sub.value.id == "args"):
                return sub.attr
        return None

    for node in ast.walk(tree):
        if kind == "overrides" and isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Tuple) and all(isinstance(e, ast.Constant)
                                                      for e in key.elts):
                    name = dest(value)
                    if name:
                        out[tuple(e.value for e in key.elts)] = name
        if kind == "keywords" and isinstance(node, ast.Call):
            for keyword in node.keywords:
                name = dest(keyword.value) if keyword.arg else None
                if name:
                    out[keyword.arg] = name
    return out


def _options(command: str) -> dict[str, tuple[str, str]]:
    """dest -> (`ccg COMMAND --flag`, the flag's help) of every option of a subcommand."""
    parser = _subcommands()[command][0]
    return {a.dest: (f"ccg {command} {max(a.option_strings, key=len)}",
                     argparse.HelpFormatter(parser.prog)._expand_help(a) if a.help else "")
            for a in parser._actions if a.option_strings}


def config_tables() -> list[ConfigTable]:
    """The configuration classes the configuration page documents, with their flags."""
    train_flags = _options("train")
    overrides = _flag_map(train_command.config_from_args, "overrides")
    cycle_flags = _options("cycle")
    keywords = _flag_map(cycle_command._cycle_config, "keywords")

    def run_flags(section: str) -> dict[str, tuple[str, str]]:
        return {key: train_flags[d] for (s, key), d in overrides.items()
                if s == section and d in train_flags}

    return [
        ConfigTable(ccg.SystemConfig, "`[system]`: the system", "system", True,
                    "What U(x) is: a registered system by `name`, a peptide `sequence`, or a "
                    "`pdb`, with `forcefield` files and an `implicit_solvent` model (see "
                    "[Your own molecule](your-own-molecule.md)).",
                    run_flags("system")),
        ConfigTable(ccg.MapConfig, "`[map]`: the CG map", "map", True,
                    "Which CG coordinates z the flow is conditioned on.", run_flags("map")),
        ConfigTable(ccg.FlowConfig, "`[flow]`: the conditional flow", "flow", True,
                    "The architecture of q(r | z, T) and how its base is initialized.",
                    run_flags("flow")),
        ConfigTable(ccg.TrainConfig, "`[train]`: the optimization", "train", True,
                    "Temperatures in K, times in minutes. A run needs `steps` or `minutes` "
                    "(`ccg train` uses 20 minutes when neither is given).",
                    run_flags("train")),
        ConfigTable(ccg.CycleConfig, "`CycleConfig`: the cycle", "cycle", False,
                    "The settings of `ccg cycle` and `ccg.run_cycle` (Python, or the flags of "
                    "`ccg cycle`; not a TOML table). Temperatures in K, times in minutes.",
                    {key: cycle_flags[d] for key, d in keywords.items() if d in cycle_flags}),
        ConfigTable(ccg.FitConfig, "`FitConfig`: fitting F_theta", "fit", False,
                    "The optimization of `ccg.fit_free_energy_model` (Python only; the cycle "
                    "sets its own steps, learning rate and seed per iteration)."),
    ]


def _cell(text: str) -> str:
    """Plain text for one markdown table cell: one line, tag-like `<` escaped, and pipes
    escaped outside code spans (inside them the table reads them as text)."""
    text = escape_line(" ".join(text.split()))
    parts = re.split(r"(`+[^`]*`+)", text)
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def config_reference() -> str:
    """The configuration page's tables, from the dataclasses as they are now."""
    lines = []
    for table in config_tables():
        docs = attribute_docstrings(table.cls)
        lines += [f"## {table.heading}", "", table.intro, "",
                  "| key | default | type | description |", "|---|---|---|---|"]
        for f in dataclasses.fields(table.cls):
            default = format_default(default_of(f), table.toml)
            text = docs.get(f.name, "")
            if f.name in table.flags:
                flag, help_text = table.flags[f.name]
                if not text:  # no docstring: the flag's help says what the field is
                    text = f"{help_text[:1].upper()}{help_text[1:].rstrip('.')}."
                text += f" Command line: `{flag}`."
            key = f'<span id="{table.anchor}-{f.name}"></span>`{f.name}`'
            lines.append(f"| {key} | `{default}` | `{f.type}` | "
                         f"{_cell(text.strip()) or '—'} |")
        lines.append("")
    return "\n".join(lines)


# --- the command line ----------------------------------------------------------------------


def _subcommands() -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """name -> (parser, one-line help) of every `ccg` subcommand, in help order."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    return {name: (p, helps.get(name, "")) for name, p in sub.choices.items()}


def _argument_row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            name += " " + formatter._format_args(action, action.dest.upper())
    else:
        name = formatter._format_args(action, action.dest)
    # the plain formatter: the defaults have their own column (not "(default: ...)" again)
    help_text = argparse.HelpFormatter(parser.prog)._expand_help(action) if action.help else ""
    default = ""
    if action.option_strings and action.nargs != 0 and action.default is not None \
            and action.default is not argparse.SUPPRESS:
        value = action.default
        default = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        default = f"`{default}`"
    if action.required:
        default = "required"
    return f"| `{_cell(name)}` | {default} | {_cell(help_text)} |"


def cli_reference() -> str:
    """Every subcommand: its help line, description, usage and a table of its arguments."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "82"  # argparse wraps usage lines to the terminal width
    try:
        parser = build_parser()
        lines = [parser.description or "", "", "```text", parser.format_usage().strip(), "```",
                 "", "Examples (`ccg --help`):", "", "```text",
                 (parser.epilog or "").replace("examples:\n", "").rstrip(), "```", ""]
        for name, (sub, help_line) in _subcommands().items():
            lines += [f"## ccg {name}", "", f"*{help_line}*", ""]
            if sub.description:
                lines += [escape_line(sub.description), ""]
            lines += ["```text", sub.format_usage().strip(), "```", "",
                      "| argument | default | description |", "|---|---|---|"]
            lines += [_argument_row(sub, a) for a in sub._actions
                      if not isinstance(a, argparse._HelpAction)]
            lines.append("")
        return "\n".join(lines)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


# --- the hook ------------------------------------------------------------------------------


def render(what: str, arg: str | None) -> str:
    """The generated markdown for one marker."""
    if what == "config":
        return config_reference()
    if what == "cli":
        return cli_reference()
    if what == "api" and arg:
        return api_page(arg)
    if what == "api-index":
        return api_index()
    raise PluginError(f"Unknown docs marker <!-- ccg:{what} {arg or ''} -->.")


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    """Replace the `<!-- ccg:... -->` markers of a page by generated markdown."""
    return MARKER.sub(lambda m: render(m["what"], m["arg"]), markdown)


def on_config(config, **kwargs):
    """Check, before any page is built, that every public name has a place."""
    api_assignment()
    pages = {Path(p).stem for p in (ROOT / "docs" / "api").glob("*.md")}
    missing = [g.slug for g in API_GROUPS if g.slug not in pages]
    if missing:
        raise PluginError(f"docs/api/ lacks the pages {missing} of API_GROUPS in docs/hooks.py.")
    return config

