"""The committed REMD summaries (experiments/peptide_reference/summary.py) reproduce exactly what
the raw torsion samples give through ccg's own estimators: projections, state populations and
their batch-means standard errors, joint states; and they load back as written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import ccg

FOLDER = Path(__file__).resolve().parents[1] / "experiments" / "peptide_reference"


@pytest.fixture(scope="module")
def summary():
    sys.path.insert(0, str(FOLDER))
    try:
        import summary as module
    finally:
        sys.path.remove(str(FOLDER))
    return module


def _run(seed: int, n: int = 3000) -> dict:
    """A fake run_remd.py output: 3 residues' (phi, psi) at a 3-temperature ladder, samples
    drawn around the alpha-R and beta basins (and everywhere), some exactly on +-pi."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-1.1, -0.7], [-2.2, 2.4], [1.0, 0.8]])
    which = rng.choice(3, size=(3, n, 3), p=[0.55, 0.35, 0.10])
    z = centres[which] + 0.5 * rng.standard_normal((3, n, 3, 2))
    z = np.remainder(z + np.pi, 2 * np.pi) - np.pi
    z[0, :5, 0, 0] = np.pi
    z[0, 5:10, 1, 1] = -np.pi
    return {"torsion_names": np.array(["phi2", "psi2", "phi3", "psi3", "phi4", "psi4"]),
            "torsions": z.reshape(3, n, 6).astype(np.float32),
            "temperatures_k": np.array([300.0, 450.0, 600.0]), "sample_ps": np.array(0.1),
            "samples_per_exchange": np.array(10), "n_samples": np.array(n // 10),
            "replica_steps_per_sample": np.array(3000),
            "accepted": np.array([50, 60]), "attempted": np.array([100, 100]),
            "system": np.array("fake"), "seed": np.array(seed), "ns": np.array(1.0),
            "complete": np.array(True)}


def _samples(run: dict, t: int, skip: int) -> ccg.JointSamples:
    z = np.asarray(run["torsions"][t, skip:], np.float64)
    names = [f"{n[:3]}_{n[3:]}" for n in run["torsion_names"]]
    return ccg.JointSamples(z, np.zeros(len(z)), float(run["temperatures_k"][t]), names)


def test_summary_populations_and_errors_equal_ccg_batch_means(summary):
    run = _run(1)
    s = summary.summarize(run, [450.0, 300.0], discard_ns=0.05)   # 500 samples dropped
    samples = _samples(run, 1, 500)
    groups = ccg.ramachandran_groups(samples.cg_names)
    table = ccg.group_populations(samples, groups, n_batches=20, top=125)
    labels = [str(x) for x in s["states"]]
    assert labels == groups[0].all_labels
    for k, g in enumerate(groups):
        p, se = summary.populations(s["state_counts"][0, k])
        rows = {label: (q, e) for name, label, q, e in table.rows("group") if name == g.name}
        np.testing.assert_allclose(p, [rows[x][0] for x in labels], rtol=0, atol=1e-12)
        np.testing.assert_allclose(se, [rows[x][1] for x in labels], rtol=0, atol=1e-12)
    p, se = summary.populations(s["joint_counts"][0])
    for _, state, q, e in table.rows("joint"):
        code = [summary.joint_name(c, labels, 3) for c in range(len(p))].index(state)
        assert p[code] == pytest.approx(q, abs=1e-12)
        assert se[code] == pytest.approx(e, abs=1e-12)
    assert s["hist"].shape == (2, 3, 20, 36, 36)
    assert int(s["hist"][1].sum()) == 3 * 2500           # every sample in one bin per residue
    assert float(s["ns"]) == pytest.approx(0.3)
    assert float(s["ladder_steps_per_sample"]) == 300 and int(s["discarded_samples"]) == 500


def test_summary_surfaces_equal_ccg_projections_single_and_merged(summary):
    runs = [_run(1), _run(2, n=2000)]
    sums = [summary.summarize(r, [600.0], discard_ns=0.0) for r in runs]
    parts = [_samples(r, 2, 0) for r in runs]
    for k, dims in enumerate([(0, 1), (2, 3), (4, 5)]):
        f = ccg.project_free_energy(parts[0], dims).shifted
        np.testing.assert_allclose(summary.free_energy(sums[0]["hist"][0, k]), f, atol=1e-12)
        # seeds pooled with equal total weight, as ccg would weigh them
        pooled = ccg.JointSamples(np.concatenate([p.z for p in parts]),
                                  np.concatenate([np.full(len(p), -np.log(len(p)))
                                                  for p in parts]), 600.0, parts[0].cg_names)
        f = ccg.project_free_energy(pooled, dims).shifted
        merged = summary.merged_free_energy([s["hist"][0, k] for s in sums])
        np.testing.assert_allclose(merged, f, atol=1e-12)


def test_summary_surface_errors_equal_ccg_batch_means(summary):
    run = _run(1)
    s = summary.summarize(run, [450.0], discard_ns=0.0)
    samples = _samples(run, 1, 0)
    for k, dims in enumerate([(0, 1), (2, 3), (4, 5)]):
        ours = summary.merged_free_energy_error([s["hist"][0, k]])
        theirs = ccg.project_free_energy(samples, dims, n_batches=20).f_kt_err
        visited = np.isfinite(theirs)
        assert visited.sum() > 300 and np.array_equal(np.isfinite(ours), visited)
        np.testing.assert_allclose(ours[visited], theirs[visited], rtol=1e-10, atol=0)
    # two equal seeds: the error of their mean is that of one over sqrt(2)
    one = summary.merged_free_energy_error([s["hist"][0, 0]])
    two = summary.merged_free_energy_error([s["hist"][0, 0]] * 2)
    np.testing.assert_allclose(two, one / np.sqrt(2), rtol=1e-12)


def test_summary_saves_loads_and_picks_temperatures(summary, tmp_path):
    run = _run(3)
    np.savez(tmp_path / "raw.npz", **run)
    s = summary.load(tmp_path / "raw.npz", [300.0, 450.0, 600.0], discard_ns=0.1)
    summary.save(s, tmp_path / "summary.npz")
    back = summary.load(tmp_path / "summary.npz", [600.0, 300.0])
    np.testing.assert_array_equal(back["hist"], s["hist"][[2, 0]])
    np.testing.assert_array_equal(back["joint_counts"], s["joint_counts"][[2, 0]])
    np.testing.assert_allclose(back["acceptance"], [0.5, 0.6])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.npz", "summary.npz"]
    with pytest.raises(SystemExit, match="not on the ladder"):
        summary.load(tmp_path / "summary.npz", [500.0])
    with pytest.raises(SystemExit, match="lower --discard-ns"):
        summary.load(tmp_path / "raw.npz", [300.0], discard_ns=10.0)
