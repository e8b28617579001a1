"""The bad-input matrix: every way a user can get a command wrong, run through the real command
line (`ccg.cli.main`).

Each case must exit with status 2, print one paragraph on stderr that starts with
`ccg <command>: error:`, names the flag (or config key) at fault and how to fix it, show no
traceback, and leave the output folder exactly as it was (names, sizes and modification times).
The README's reliability section lists these cases; `CASES` is the source.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

import ccg
from ccg.cli import main

TINY_FLOW = {"n_layers": 2, "hidden": 8, "n_blocks": 1, "n_bins": 4}
H5 = str(Path(ccg.__file__).parent / "data" / "mdtraj_example_ala2.h5")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs shared by the cases (in their own folder, never written by a case)."""
    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    config = ccg.RunConfig.from_dict({"flow": TINY_FLOW, "train": {"steps": 1}})
    model = ccg.build_model(config)
    out = {"model": ccg.save_model(folder / "model.pt", model, run_config=config.to_dict())}
    data = out["model"].read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    (folder / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    out["truncated"], out["random"] = folder / "truncated.pt", folder / "random.pt"
    # a training checkpoint and a CG model: real files of the wrong kind
    assert main(["train", "--system", "double-well", "--steps", "2", "--n-z", "4",
                 "--samples-per-z", "2", "--out", str(folder / "run"), "--no-progress"]) == 0
    out["run"] = folder / "run"
    out["checkpoint"] = folder / "run" / "checkpoint.pt"
    cg_model = ccg.FreeEnergyModel(model.cg_map, t_ref=300.0, t_range=(300.0, 600.0),
                                   hidden=8, n_layers=1, n_members=2, system=model.system)
    out["cg_model"] = ccg.save_cg_model(folder / "cg_model.pt", cg_model.double())
    # a model whose CG space has 4 dimensions (phi, psi and both peptide omegas)
    cg_map = ccg.TorsionMap(model.system.topology,
                            {"phi": (4, 6, 8, 14), "psi": (6, 8, 14, 16),
                             "omega1": (1, 4, 6, 8), "omega2": (8, 14, 16, 18)},
                            model.system.reference_positions)
    flow = ccg.build_flow(cg_map.n_r, cg_map.cg_feature_dim + 1,
                          cg_map.r_circular | cg_map.r_chiral, cg_map.r_reference,
                          torch.ones(cg_map.n_r), **TINY_FLOW)
    four = ccg.BackmappingModel(model.system, cg_map, flow, t_ref=300.0, t_range=(300.0, 600.0))
    out["model_4d"] = ccg.save_model(folder / "model_4d.pt", four)
    # CG inputs: a trajectory of another molecule, a table with NaN
    other = mdtraj.load(H5)[:3].atom_slice(range(10))
    other.save_pdb(str(folder / "other.pdb"))
    out["other"] = folder / "other.pdb"
    (folder / "nan.csv").write_text("0.1,0.2\nnan,0.3\n")
    out["nan"] = folder / "nan.csv"
    (folder / "bad_key.toml").write_text("[train]\nsteps = 3\nlr_max = 0.1\n")
    (folder / "bad_type.toml").write_text('[train]\nminutes = "3"\n')
    out["bad_key"], out["bad_type"] = folder / "bad_key.toml", folder / "bad_type.toml"
    (folder / "a_file").write_text("not a folder")
    out["a_file"] = folder / "a_file"
    # a PDB of heavy atoms only (the bundled Ace-(Ala)3-Nme without its hydrogens)
    heavy = mdtraj.load(str(ccg.systems.bundled_pdb_path("ala3")))
    heavy.atom_slice(heavy.topology.select("not element H")).save_pdb(str(folder / "heavy.pdb"))
    out["heavy_pdb"] = folder / "heavy.pdb"
    return out


@dataclass
class Case:
    """argv(files, out_folder) -> the command line; `needs` are fragments of the message (the
    flag or key and the fix); `prepare(out_folder)` sets up the output folder first."""

    name: str
    argv: Callable[[dict, Path], list[str]]
    needs: tuple[str, ...]
    prepare: Callable[[Path, dict, pytest.MonkeyPatch], None] | None = None


def _fe(f, o, *extra, model="model", out="fes.npz"):
    return ["free-energy", str(f[model]), "--temperature", "300", "--grid", "4",
            "--samples", "4", "--out", str(o / out), *extra]


def _bm(f, o, *extra, model="model", cg=H5, out="atoms.pdb"):
    return ["backmap", str(f[model]), "--cg", str(cg), "--temperature", "300",
            "--out", str(o / out), *extra]


def _train(f, o, *extra, out="run"):
    return ["train", "--system", "double-well", "--steps", "2", "--n-z", "4",
            "--samples-per-z", "2", "--out", str(o / out), "--no-progress", *extra]


def _peptide(f, o, *extra, sequence="AA"):
    """Train on a peptide from its sequence (vacuum: the fastest build)."""
    return ["train", "--sequence", sequence, "--implicit-solvent", "none", "--steps", "1",
            "--n-z", "2", "--samples-per-z", "2", "--out", str(o / "run"), "--no-progress",
            *extra]


def _touch(*names):
    def prepare(o: Path, f: dict, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in names:
            (o / name).parent.mkdir(parents=True, exist_ok=True)
            (o / name).write_text("a finished result")
    return prepare


def _copy_run(o: Path, f: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    (o / "run").mkdir()
    for name in ("checkpoint.pt", "model.pt"):
        (o / "run" / name).write_bytes((f["run"] / name).read_bytes())


def _no_compiler(o: Path, f: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile on the CPU finds no C++ compiler (as torch reports it)."""
    from torch._inductor import cpp_builder, exc

    def search() -> str:
        raise exc.InvalidCxxCompiler()

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", search)


def _read_only(o: Path, f: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read-only folder does to a write, also for root (who may write anywhere)."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


CASES = [
    # temperatures
    Case("T = 0", lambda f, o: _fe(f, o, "--temperature", "0"), ("--temperature", "> 0 K")),
    Case("T = NaN", lambda f, o: _fe(f, o, "--temperature", "nan"), ("--temperature", "> 0 K")),
    Case("T < 0 (backmap)", lambda f, o: _bm(f, o, "--temperature", "-5"), ("--temperature",)),
    Case("T = inf (simulate)", lambda f, o: ["simulate", str(f["cg_model"]), "--temperature",
                                              "inf", "--steps", "10", "--out", str(o / "cg.csv")],
         ("--temperature",)),
    Case("t_min > t_max", lambda f, o: _train(f, o, "--t-min", "600", "--t-max", "300"),
         ("t_min", "swap them")),
    Case("t_min = 0", lambda f, o: _train(f, o, "--t-min", "0"), ("t_min", "> 0 K")),
    # model files
    Case("missing model file", lambda f, o: _fe(f, o, model="missing"),
         ("Model file not found", "ccg train")),
    Case("truncated model file", lambda f, o: _fe(f, o, model="truncated"),
         ("truncated or corrupt",)),
    Case("random bytes as model file", lambda f, o: _bm(f, o, model="random"),
         ("not a readable ccg model file",)),
    Case("checkpoint given as model", lambda f, o: _fe(f, o, model="checkpoint"),
         ("not a model", "model.pt")),
    Case("CG model given to backmap", lambda f, o: _bm(f, o, model="cg_model"),
         ("CG model file", "flow model")),
    # CG inputs
    Case("wrong atom count", lambda f, o: _bm(f, o, cg=f["other"]),
         ("10 atoms", "22")),
    Case("NaN coordinates", lambda f, o: _bm(f, o, cg=f["nan"]), ("NaN",)),
    Case("missing CG input", lambda f, o: _bm(f, o, cg=o / "none.h5"), ("not found",)),
    # configuration
    Case("unknown config key", lambda f, o: _train(f, o, "--config", str(f["bad_key"])),
         ("Unknown key(s) ['lr_max']", "Valid keys")),
    Case("config value of the wrong type", lambda f, o: _train(f, o, "--config",
                                                                str(f["bad_type"])),
         ("[train] minutes must be a number", "without quotes")),
    Case("--threads 0", lambda f, o: _fe(f, o, "--threads", "0"), ("--threads", ">= 1")),
    # outputs
    Case("missing output folder", lambda f, o: _fe(f, o, out="no/such/fes.npz"),
         ("does not exist", "mkdir -p")),
    Case("read-only output folder", lambda f, o: _fe(f, o), ("cannot write in", "--out"),
         _read_only),
    Case("output file is a folder", lambda f, o: _fe(f, o, out="folder"),
         ("is a folder", "--out"), _touch("folder/x")),
    Case("output folder is a file", lambda f, o: _train(f, o, out="file"),
         ("is a file, not a folder", "--out"), _touch("file")),
    Case("existing npz", lambda f, o: _fe(f, o), ("exists already", "--overwrite"),
         _touch("fes.npz")),
    Case("existing plot", lambda f, o: _fe(f, o, "--plot", str(o / "fes.png")),
         ("--plot", "--overwrite"), _touch("fes.png")),
    Case("existing trajectory", lambda f, o: _bm(f, o), ("exists already", "--overwrite"),
         _touch("atoms.pdb")),
    Case("existing backmap sidecar", lambda f, o: _bm(f, o), ("sidecar", "--overwrite"),
         _touch("atoms.pdb.csv")),
    Case("existing CG frames", lambda f, o: ["simulate", str(f["cg_model"]), "--temperature",
                                             "300", "--steps", "10", "--out", str(o / "cg.csv")],
         ("exists already", "--overwrite"), _touch("cg.csv")),
    Case("finished training run", lambda f, o: _train(f, o), ("--resume", "--overwrite"),
         _copy_run),
    Case("finished cycle", lambda f, o: ["cycle", "--init", str(f["model"]), "--out",
                                         str(o / "cycle")],
         ("--resume", "--overwrite"), _touch("cycle/flow.pt", "cycle/cg_model.pt")),
    Case("nothing to resume", lambda f, o: _train(f, o, "--resume"),
         ("nothing to resume", "without --resume")),
    Case("--resume with --overwrite", lambda f, o: _train(f, o, "--resume", "--overwrite"),
         ("--resume", "--overwrite")),
    Case("resume with another temperature range",
         lambda f, o: _train(f, o, "--resume", "--t-max", "700"),
         ("[train] t_max", "600.0 in the run", "700.0 now"), _copy_run),
    # values
    Case("--samples 0", lambda f, o: _fe(f, o, "--samples", "0"), ("--samples", ">= 2")),
    Case("--grid 1", lambda f, o: _fe(f, o, "--grid", "1"), ("--grid", ">= 2")),
    Case("--samples-per-frame 0", lambda f, o: _bm(f, o, "--samples-per-frame", "0"),
         ("--samples-per-frame",)),
    Case("--steps 0 (simulate)", lambda f, o: ["simulate", str(f["cg_model"]), "--temperature",
                                               "300", "--steps", "0", "--out",
                                               str(o / "cg.csv")], ("--steps", ">= 1")),
    # formats
    Case("npz under another name", lambda f, o: _fe(f, o, out="fes.txt"),
         ("unsupported extension", ".npz")),
    Case("unsupported trajectory format", lambda f, o: _bm(f, o, out="atoms.xyz"),
         ("unsupported extension", ".dcd")),
    Case("unsupported plot format", lambda f, o: _fe(f, o, "--plot", str(o / "fes.xyz")),
         ("--plot", "unsupported extension")),
    Case("trajectory from a torsion CG model", lambda f, o: ["simulate", str(f["cg_model"]),
                                                             "--temperature", "300", "--steps",
                                                             "10", "--out", str(o / "cg.dcd")],
         ("--out", "table")),
    # the CG space
    Case("grid over 4 CG dimensions", lambda f, o: _fe(f, o, model="model_4d"),
         ("4 CG coordinates", "--frames")),
    Case("--plot with --frames", lambda f, o: _fe(f, o, "--frames", H5, "--plot",
                                                  str(o / "f.png")), ("--plot", "--frames")),
    # molecules and CG maps
    Case("unknown residue letter", lambda f, o: _peptide(f, o, sequence="AXA"),
         ("--sequence", "Unknown residue letter 'X' at position 2", "Fix: replace it")),
    Case("PDB without hydrogens", lambda f, o: ["train", "--pdb", str(f["heavy_pdb"]),
                                                "--steps", "1", "--out", str(o / "run")],
         ("no hydrogen atoms", "--add-hydrogens")),
    Case("force field that does not cover the molecule",
         lambda f, o: _peptide(f, o, "--forcefield", "tip3p.xml"),
         ("No template found", "['tip3p.xml']", "--forcefield")),
    Case("unknown force-field file", lambda f, o: _peptide(f, o, "--forcefield", "amber99X.xml"),
         ("amber99X.xml", "--forcefield")),
    Case("torsion name that does not exist",
         lambda f, o: _peptide(f, o, "--cg", "torsions", "--torsions", "phi2", "phi9"),
         ('"phi9"', "no residue number 9", "ACE1, ALA2, ALA3, NME4", "--torsions")),
    Case("torsion the residue does not have",
         lambda f, o: _peptide(f, o, "--cg", "torsions", "--torsions", "chi1:2"),
         ("residue 2 has no chi1", "--torsions")),
    Case("unreadable torsion name", lambda f, o: _peptide(f, o, "--cg", "torsions",
                                                         "--torsions", "chi12"),
         ('cannot read "chi12"', "KIND:RES", "--torsions")),
    Case("--torsions without --cg torsions", lambda f, o: _peptide(f, o, "--torsions", "phi2"),
         ("--cg torsions", "drop --torsions")),
    Case("C-alpha beads for a dipeptide", lambda f, o: _train(f, o, "--system",
                                                              "alanine-dipeptide", "--cg", "ca"),
         ("at least 3 residues", "heavy-atoms")),
    # devices
    Case("--device cuda without CUDA", lambda f, o: _fe(f, o, "--device", "cuda"),
         ("--device", "no CUDA device", "cpu")),
    Case("unknown --device", lambda f, o: _fe(f, o, "--device", "tpu"), ("--device", "auto")),
    Case("--compile without a C++ compiler", lambda f, o: _train(f, o, "--compile", "all"),
         ("--compile", "no working C++", 'compile = "none"'), prepare=_no_compiler),
]


def _snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_clear_error_that_changes_nothing(case, files, tmp_path, capsys,
                                                         monkeypatch):
    if case.name.startswith("--device cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out_folder = tmp_path / "work"
    out_folder.mkdir()
    if case.prepare is not None:
        case.prepare(out_folder, files, monkeypatch)
    files = {**files, "missing": out_folder / "missing.pt"}
    before = _snapshot(out_folder)
    code = main(case.argv(files, out_folder))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    command = case.argv(files, out_folder)[0]
    assert lines and lines[-1].startswith(f"ccg {command}: error: "), err
    message = lines[-1]
    assert "Traceback" not in err, err
    for fragment in case.needs:
        assert fragment in message, (fragment, message)
    assert _snapshot(out_folder) == before


def test_the_matrix_covers_the_issue(capsys):
    """Every kind of bad input the reliability issue names has a case."""
    names = " | ".join(c.name for c in CASES)
    for kind in ("T = 0", "NaN", "missing model", "truncated", "random bytes", "checkpoint",
                 "wrong atom count", "unknown config key", "wrong type", "t_min > t_max",
                 "missing output folder", "read-only", "is a file", "--samples 0",
                 "unsupported", "--device cuda", "4 CG dimensions"):
        assert kind in names, kind
    assert len(CASES) >= 40


def test_info_says_whether_torch_compile_can_build_cpu_code(tmp_path, capsys, monkeypatch):
    assert main(["info"]) == 0
    assert "torch.compile on the CPU: a C++ compiler works" in capsys.readouterr().out
    _no_compiler(tmp_path, {}, monkeypatch)
    assert main(["info"]) == 0
    assert "torch.compile on the CPU: no working C++ compiler" in capsys.readouterr().out
