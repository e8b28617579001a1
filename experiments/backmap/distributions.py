"""Backmapped held-out MD frames against the MD frames: energies, bond lengths and angles.

Usage:
    python experiments/backmap/distributions.py MODEL experiments/ala2_reference/data/md_300K.npz \
        --temperature 300 -k 1 16 --out-prefix experiments/backmap/torsion

Works for torsion maps (z = (phi, psi) of each MD frame) and bead maps (z = the MD frame's CG
atoms, `cg_map.coarse_grain`). For each K the CG projection of every MD frame is backmapped
once (weighted selection among K flow samples, `ccg.backmap`), and:

- potential energy U (float64): mean and sd for MD and backmapped frames, the mean difference
  with its standard error (paired: the frames share z, s.e. = sd(U_bm - U_md) / sqrt(n); and
  the unpaired sqrt(var_bm / n + var_md / n) of energies.py), per-term mean differences;
- geometry: every bond of the topology and every bonded angle triple (i-j-k with i-j and j-k
  bonds). For each term a 1-D Jensen-Shannon divergence (natural log, in [0, ln 2]) between
  the MD and backmapped histograms on common bins: 50 equal bins over the MD range (min to
  max of the MD frames) widened by 10 % on each side, values outside falling into the end
  bins. Summaries: mean and max over bonds and over angles, over all terms and over the
  "generated" terms (those with an atom the flow places: all terms for a torsion map, terms
  touching a non-CG atom for a bead map; terms among CG atoms only are copied from the input).
  The noise floor is the same divergence between the first and second halves of the MD frames
  (2500 vs 2500 frames; histogram JS has a positive bias ~ (bins - 1) / (8 n) per sample set,
  so the floor for 5000 vs 5000 is about half of it).

Writes PREFIX_energy.png (overlaid U histograms), PREFIX_geometry.png (worst, median and best
generated bond and angle), PREFIX.json (all numbers), and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import ccg

N_BINS = 50
WIDEN = 0.10


def bonded_terms(topology) -> tuple[np.ndarray, np.ndarray]:
    """Bonds [n_b, 2] and bonded angle triples [n_a, 3] (i, j, k with j the vertex)."""
    bonds = np.array(sorted(tuple(sorted((a.index, b.index))) for a, b in topology.bonds))
    neighbours: dict[int, list[int]] = {i: [] for i in range(topology.n_atoms)}
    for i, j in bonds:
        neighbours[int(i)].append(int(j))
        neighbours[int(j)].append(int(i))
    angles = [(i, j, k) for j in range(topology.n_atoms)
              for a, i in enumerate(sorted(neighbours[j])) for k in sorted(neighbours[j])[a + 1:]]
    return bonds, np.array(angles)


def term_label(topology, atoms) -> str:
    """Atom names joined by '-', with the residue of the middle (vertex) atom."""
    residue = topology.atom(int(atoms[len(atoms) // 2])).residue
    names = "-".join(topology.atom(int(a)).name for a in atoms)
    return f"{names} ({residue.name}{residue.resSeq})"


def bond_lengths(x: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """[N, n_b] in nm."""
    return np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)


def bond_angles(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """[N, n_a] in degrees."""
    u = x[:, angles[:, 0]] - x[:, angles[:, 1]]
    v = x[:, angles[:, 2]] - x[:, angles[:, 1]]
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def common_edges(reference: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Per-column bin edges [n_terms, n_bins + 1]: the reference range widened by WIDEN."""
    lo, hi = reference.min(0), reference.max(0)
    pad = WIDEN * np.maximum(hi - lo, 1e-12)
    return np.linspace(lo - pad, hi + pad, n_bins + 1, axis=1)


def histograms(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Normalized per-column histograms [n_terms, n_bins]; outside values in the end bins."""
    n_terms, n_bins = edges.shape[0], edges.shape[1] - 1
    width = (edges[:, -1] - edges[:, 0]) / n_bins
    idx = np.clip(np.floor((values - edges[:, 0]) / width).astype(np.int64), 0, n_bins - 1)
    flat = (idx + n_bins * np.arange(n_terms)).reshape(-1)
    counts = np.bincount(flat, minlength=n_terms * n_bins).reshape(n_terms, n_bins)
    return counts / counts.sum(1, keepdims=True)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence (nats) of histograms [n_terms, n_bins]."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        ratio = np.where(a > 0, a / np.where(m > 0, m, 1.0), 1.0)
        return (a * np.log(ratio)).sum(1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def geometry(x: np.ndarray, bonds: np.ndarray, angles: np.ndarray) -> dict[str, np.ndarray]:
    return {"bond": bond_lengths(x, bonds), "angle": bond_angles(x, angles)}


def summarize(js: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    gen = js[generated] if generated.any() else np.zeros(1)
    return {"mean_all": float(js.mean()), "max_all": float(js.max()),
            "mean_generated": float(gen.mean()), "max_generated": float(gen.max())}


def backmap_xyz(model, z: torch.Tensor, temperature: float, k: int, seed: int) -> np.ndarray:
    chunks = ccg.backmap(model, z, temperature, samples_per_frame=k, seed=seed)
    return np.concatenate([c["xyz"] for c in chunks])


def energy_plot(path: Path, u_md: np.ndarray, u_bm: dict[int, np.ndarray], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = np.concatenate([u_md, *u_bm.values()])
    bins = np.linspace(*np.percentile(pooled, [0.2, 99.8]), 61)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(u_md, bins=bins, density=True, color="0.75", label=f"MD (mean {u_md.mean():.1f})")
    for k, u in u_bm.items():
        ax.hist(u, bins=bins, density=True, histtype="step", lw=1.6,
                label=f"backmapped K={k} (mean {u.mean():.1f})")
    ax.set_xlabel("U (kJ/mol)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def geometry_plot(path: Path, md: dict, bm: dict[int, dict], js: dict[int, dict], picks: dict,
                  labels: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(picks)
    ncol = max(len(p) for p in picks.values())
    fig, axes = plt.subplots(len(kinds), ncol, figsize=(4 * ncol, 3.2 * len(kinds)),
                             squeeze=False)
    unit = {"bond": "length (nm)", "angle": "angle (deg)"}
    for row, kind in enumerate(kinds):
        ref = md[kind]
        edges = common_edges(ref)
        for col, (what, t) in enumerate(picks[kind]):
            ax = axes[row, col]
            e = edges[t]
            ax.hist(np.clip(ref[:, t], e[0], e[-1]), bins=e, density=True, color="0.75",
                    label="MD")
            for k, g in bm.items():
                ax.hist(np.clip(g[kind][:, t], e[0], e[-1]), bins=e, density=True,
                        histtype="step", lw=1.5, label=f"K={k} (JS {js[k][kind][t]:.3f})")
            ax.set_title(f"{kind} {labels[kind][t]}: {what}", fontsize=9)
            ax.set_xlabel(unit[kind])
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("md", help="npz from experiments/ala2_reference/run_md.py (key frames)")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("-k", "--samples-per-frame", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-prefix", required=True,
                        help="writes PREFIX_energy.png, PREFIX_geometry.png, PREFIX.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prefix = Path(args.out_prefix)
    model = ccg.load_model(args.model)
    top = model.system.topology
    x_md = np.load(args.md)["frames"]
    x64 = torch.as_tensor(x_md, dtype=torch.float64)
    u_md = model.system.energy(x64).numpy()
    terms_md = {n: t.numpy() for n, t in model.system.energy_terms(x64).items()}
    z = model.cg_map.coarse_grain(x64).float()

    bonds, angles = bonded_terms(top)
    atoms = {"bond": bonds, "angle": angles}
    labels = {kind: [term_label(top, a) for a in atoms[kind]] for kind in atoms}
    cg = getattr(model.cg_map, "cg_atom_indices", None)
    generated = {kind: (np.ones(len(a), bool) if cg is None else ~np.isin(a, cg).all(1))
                 for kind, a in atoms.items()}
    md = geometry(x_md.astype(np.float64), bonds, angles)
    edges = {kind: common_edges(md[kind]) for kind in md}
    hist_md = {kind: histograms(md[kind], edges[kind]) for kind in md}
    half = len(x_md) // 2
    floor = {kind: js_divergence(histograms(md[kind][:half], edges[kind]),
                                 histograms(md[kind][half:], edges[kind])) for kind in md}

    report: dict = {
        "model": args.model, "md": args.md, "temperature_k": args.temperature, "seed": args.seed,
        "n_frames": len(x_md), "map": type(model.cg_map).__name__, "cg_dim": model.cg_dim,
        "divergence": f"Jensen-Shannon (nats), {N_BINS} bins over the MD range widened by "
                      f"{WIDEN:.0%} per side",
        "md_energy": {"mean": float(u_md.mean()), "sd": float(u_md.std())},
        "noise_floor_md_halves": {kind: summarize(floor[kind], generated[kind]) for kind in md},
        "labels": labels, "generated": {kind: g.tolist() for kind, g in generated.items()},
        "per_k": {},
    }
    u_bm, geo_bm, js_bm = {}, {}, {}
    for k in args.samples_per_frame:
        start = time.perf_counter()
        xs = backmap_xyz(model, z, args.temperature, k, args.seed)
        wall = time.perf_counter() - start
        xs64 = torch.as_tensor(xs, dtype=torch.float64)
        u = model.system.energy(xs64).numpy()
        terms = {n: t.numpy() for n, t in model.system.energy_terms(xs64).items()}
        d = u - u_md
        geo_bm[k] = geometry(xs.astype(np.float64), bonds, angles)
        js_bm[k] = {kind: js_divergence(hist_md[kind], histograms(geo_bm[k][kind], edges[kind]))
                    for kind in md}
        u_bm[k] = u
        report["per_k"][str(k)] = {
            "backmap_wall_s": wall,
            "energy": {"mean": float(u.mean()), "sd": float(u.std()),
                       "diff": float(d.mean()), "se_paired": float(d.std() / np.sqrt(len(d))),
                       "se_unpaired": float(np.sqrt(u.var() / len(u) + u_md.var() / len(u_md)))},
            "term_diff": {n: float(terms[n].mean() - terms_md[n].mean()) for n in terms},
            "js": {kind: js_bm[k][kind].tolist() for kind in md},
            "js_summary": {kind: summarize(js_bm[k][kind], generated[kind]) for kind in md},
        }

    title = f"{Path(args.model)} at {args.temperature:g} K, {len(x_md)} held-out MD frames"
    energy_plot(prefix.with_name(prefix.name + "_energy.png"), u_md, u_bm, title)
    score = {kind: np.max([js_bm[k][kind] for k in js_bm], axis=0) for kind in md}
    picks = {}
    for kind in md:
        order = [t for t in np.argsort(score[kind])[::-1] if generated[kind][t]]
        picks[kind] = [("worst", order[0]), ("median", order[len(order) // 2]),
                       ("best", order[-1])]
    geometry_plot(prefix.with_name(prefix.name + "_geometry.png"), md, geo_bm, js_bm, picks,
                  labels, title + " (K = 1 and 16; JS vs MD)")
    report["plotted"] = {kind: [[w, int(t), labels[kind][t]] for w, t in p]
                         for kind, p in picks.items()}
    with open(prefix.with_name(prefix.name + ".json"), "w") as fh:
        json.dump(report, fh, indent=1)

    print(f"{title}; map {report['map']} (cg_dim {model.cg_dim})\n")
    print("| K (weighted) | MD mean U (sd) | backmapped mean U (sd) | difference | s.e. paired "
          "| s.e. unpaired | backmap wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for k, r in report["per_k"].items():
        e = r["energy"]
        print(f"| {k} | {u_md.mean():.2f} ({u_md.std():.2f}) | {e['mean']:.2f} ({e['sd']:.2f}) "
              f"| {e['diff']:+.2f} | {e['se_paired']:.2f} | {e['se_unpaired']:.2f} "
              f"| {r['backmap_wall_s']:.1f} |")
    print("\nper-term mean differences (kJ/mol):")
    for k, r in report["per_k"].items():
        print(f"  K={k}: " + ", ".join(f"{n} {v:+.2f}" for n, v in r["term_diff"].items()))
    print(f"\n{report['divergence']}; 'gen' = terms with an atom placed by the flow")
    print("| K | kind | n (gen) | mean JS all | max JS all | mean JS gen | max JS gen |")
    print("|---|---|---|---|---|---|---|")
    rows = [("MD halves", report["noise_floor_md_halves"])] + [
        (k, r["js_summary"]) for k, r in report["per_k"].items()]
    for k, summary in rows:
        for kind in md:
            s = summary[kind]
            print(f"| {k} | {kind} | {len(atoms[kind])} ({generated[kind].sum()}) "
                  f"| {s['mean_all']:.4f} | {s['max_all']:.4f} | {s['mean_generated']:.4f} "
                  f"| {s['max_generated']:.4f} |")
    for kind in md:
        worst = {k: labels[kind][int(np.argmax(js_bm[k][kind]))] for k in js_bm}
        print(f"worst {kind}: " + ", ".join(f"K={k} {v}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
