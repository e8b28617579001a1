"""A z proposal that scales with the number of torsions: a product of adaptive histograms over
small blocks of torsions (one torsion each, or each residue's (phi, psi) pair).

The adaptive grid (`AdaptiveTorusProposal`) keeps n_bins ** d cells, which stops at d = 3. This
proposal splits the d torsions into blocks b of k_b <= 3 torsions and keeps, for each of
`n_bands` temperature bands, one histogram of n_bins ** k_b cells per block (n_bands · sum_b
n_bins ** k_b numbers); the blocks are drawn independently:

    rho(z | T) = prod_b [ (1 - explore) q_b(z_b | band(T)) + explore / (2 pi) ** k_b ],
    q_b(cell) ∝ p_b(cell) ** sharpness,   uniform inside a cell,

where p_b is the running estimate of the marginal of exp(-beta F) over the torsions of block b
(a 1-D marginal for one-torsion blocks, the product proposal proper; a residue's Ramachandran
surface for (phi, psi) blocks, which keeps the strong phi-psi coupling of a residue that a
product of 1-D marginals loses). It is learned from the trainer's per-(z, T) estimates log w
(`observe`) by importance sampling with the proposal itself: cell c of block b gets mass
sum_k exp(l_k - log rho(z_k | T_k)) over the rows with z_k,b in c,
l_k = log mean_j w_kj = -beta F(z_k, T_k), exponentially averaged over
steps (`decay`). The temperature-dependent constant of beta F (entropy of the fast coordinates)
is removed inside a band by a running least-squares slope of l on log T (z and T are drawn
independently within a band, so the slope holds no z dependence). The density is normalized
and known (`log_prob`), so joint samples z ~ rho, r ~ q(r | z, T) are importance weights of the
joint model (`ccg.free_energy.joint`). For an F that separates over the blocks the proposal at
sharpness 1 is exact up to the histogram's resolution; correlations between blocks are not
modelled (that is what the importance weights correct).
"""

from __future__ import annotations

import math

import torch

from ccg._checks import check_temperature
from ccg.mapping.peptide import residue_blocks
from ccg.model import BackmappingModel
from ccg.training.proposals import (
    MAX_ADAPTIVE_DIMS,
    Z_PROPOSALS,
    AdaptiveTorusProposal,
    ZProposal,
    draw_cells,
    uniform_proposal,
)

__all__ = ["ProductTorusProposal", "adaptive_proposal", "model_blocks", "product_proposal",
           "residue_pairs_proposal"]

TWO_PI = 2 * math.pi
MAX_BLOCK_CELLS = 50_000
"""Most histogram cells (n_bins ** k) one block may have."""
MIN_SLOPE_ROWS = 32.0
"""Least (decayed) number of rows a band must hold before its slope of l on log T is used;
with fewer, or with their log T spread over less than half the band's width (standard
deviation under half a uniform spread's), the slope is 0. Two rows at nearly the same
temperature would otherwise give a slope of (l_1 - l_2) / (x_1 - x_2), hundreds of thousands
for two z whose l differ by hundreds (a clash), and a cell mass e^{10^4} above the rest."""
SLOPE_WINDOW = 100.0
"""Only rows whose l is within this many nats of the best of their band in the same batch enter
the slope's sums: the others carry no weight in the histograms (e^-100), and a z where every
r sample is a clash has l ~ -10^13, which would make the least-squares slope (and with it every
row's v) garbage."""
COOPERATIVE_SPREAD = 2
"""Cooperative draws (`cooperative`): each torsion lies at most this many bins from the shared
cell's (uniformly over the 2 * spread + 1 choices), so the joint state is a region (about the
width of a Ramachandran basin at 24 bins), not one cell."""
MAX_JUMP = 20.0
"""Most nats one observation may put a cell above its band's whole accumulated mass; larger
values are capped there (and counted, `n_capped`). The real l of a z never jumps by this much
from one step to the next (e^20 = 5e8 times everything seen so far), while an uncapped outlier
would hold its cell's mass above the rest for ~ its size / -log(decay) steps (forever, for a
clash-sized one)."""


def _check_blocks(blocks, cg_dim: int, n_bins: int) -> list[tuple[int, ...]]:
    """`blocks` as a list of index tuples that partition range(cg_dim); None: one per torsion."""
    if blocks is None:
        return [(i,) for i in range(cg_dim)]
    out = [tuple(int(i) for i in block) for block in blocks]
    flat = sorted(i for block in out for i in block)
    if flat != list(range(cg_dim)) or any(len(block) == 0 for block in out):
        raise ValueError(f"Expected blocks that hold each torsion index 0..{cg_dim - 1} exactly "
                         f"once; got {out}.")
    big = [block for block in out if n_bins ** len(block) > MAX_BLOCK_CELLS]
    if big:
        raise ValueError(f"Blocks {big} would need n_bins ** {len(big[0])} = "
                         f"{n_bins ** len(big[0])} cells (at most {MAX_BLOCK_CELLS}); use "
                         "smaller blocks or fewer n_bins.")
    return out


def model_blocks(model: BackmappingModel, kind: str) -> list[tuple[int, ...]] | None:
    """Blocks of a model's torsions by name: "torsion" -> None (one per torsion), "residue" ->
    `residue_blocks` of its map (paired by the shared C-alpha where the map has atoms)."""
    if kind == "torsion":
        return None
    if kind == "residue":
        return residue_blocks(model.cg_map.cg_names, getattr(model.cg_map, "torsion_atoms", None))
    raise ValueError(f'Expected blocks "torsion" or "residue"; got "{kind}".')


class ProductTorusProposal(ZProposal):
    """rho(z | T) = product over blocks of torsions of adaptive histograms mixed with the
    uniform.

    Args:
        cg_dim: number of torsions d (rad, [-pi, pi)).
        blocks: a partition of the torsion indices 0..d-1 into blocks (sequences of indices);
            None: one block per torsion (a product of 1-D histograms). See `residue_blocks`.
        t_min, t_max: temperature range in K; bands are uniform in beta.
        n_bins: histogram bins per torsion (a block of k torsions has n_bins ** k cells).
        n_bands: temperature bands (each has its own histograms).
        explore: per-block weight of the uniform density, in (0, 1] (keeps rho > 0).
        decay: weight of the past in the running bin masses, in [0, 1).
        warmup: observations before the histograms are used (uniform until then).
        sharpness: q_i ∝ p_i ** sharpness, in (0, 1] (1: the marginal itself).
        cooperative: share c in [0, 1) of z drawn cooperatively: one cell, drawn from the
            normalized geometric mean of the blocks' sharpened histograms, shared by every
            block (all residues' (phi, psi) in one region: a helix, a strand), each torsion
            then moved by a uniform offset of at most `COOPERATIVE_SPREAD` bins and drawn
            uniformly inside its bin. rho = (1 - c) rho_product + c rho_shared, still
            normalized. Needs blocks of one size.
    """

    def __init__(self, cg_dim: int, t_min: float, t_max: float, *, n_bins: int = 24,
                 n_bands: int = 4, explore: float = 0.1, decay: float = 0.9, warmup: int = 100,
                 sharpness: float = 0.5, blocks=None, cooperative: float = 0.0):
        check_temperature(t_min, "t_min")
        check_temperature(t_max, "t_max")
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min} K) is above t_max ({t_max} K); swap them.")
        if isinstance(cg_dim, bool) or not isinstance(cg_dim, int) or cg_dim < 1:
            raise ValueError(f"Expected cg_dim as a positive int; got {cg_dim!r}.")
        if not 0.0 < explore <= 1.0:
            raise ValueError(f"explore must be in (0, 1] (the uniform part keeps rho > 0); got "
                             f"{explore}.")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got {decay}.")
        if not 0.0 < sharpness <= 1.0:
            raise ValueError(f"sharpness must be in (0, 1] (1: the marginal); got {sharpness}.")
        if not 0.0 <= cooperative < 1.0:
            raise ValueError(f"cooperative must be in [0, 1) (the share of z drawn with one "
                             f"cell shared by every block); got {cooperative}.")
        if n_bins < 2 or n_bands < 1:
            raise ValueError(f"Expected n_bins >= 2 and n_bands >= 1; got {n_bins}, {n_bands}.")
        self.cg_dim, self.n_bins, self.explore = int(cg_dim), int(n_bins), float(explore)
        self.decay, self.warmup, self.sharpness = float(decay), int(warmup), float(sharpness)
        inv = torch.linspace(1.0 / t_max, 1.0 / t_min, int(n_bands) + 1, dtype=torch.float64)
        self.inner_edges = 1.0 / inv[1:-1]  # descending temperatures; band 0 is the hottest
        self.log_t_center = torch.log(2.0 / (inv[1:] + inv[:-1]))  # [n_bands]
        self._log_t_width = torch.log(inv[1:] / inv[:-1])  # [n_bands]: log T_hi - log T_lo
        self.blocks = _check_blocks(blocks, self.cg_dim, self.n_bins)
        sizes = [len(block) for block in self.blocks]
        if cooperative > 0 and len(set(sizes)) > 1:
            raise ValueError(f"cooperative > 0 shares one cell between blocks, which needs "
                             f"blocks of one size; got sizes {sizes}.")
        if cooperative > 0 and n_bins < 2 * COOPERATIVE_SPREAD + 1:
            raise ValueError(f"cooperative > 0 needs n_bins >= {2 * COOPERATIVE_SPREAD + 1}; "
                             f"got {n_bins}.")
        self.cooperative = float(cooperative)
        self.n_cells = self.n_bins ** max(sizes)
        self._block_of = torch.empty(self.cg_dim, dtype=torch.long)  # [d] block of torsion i
        self._place = torch.empty(self.cg_dim, dtype=torch.long)  # [d] n_bins ** position
        for b, block in enumerate(self.blocks):
            for j, i in enumerate(block):
                self._block_of[i], self._place[i] = b, self.n_bins ** j
        self._log_width = torch.tensor(sizes, dtype=torch.float64) * math.log(TWO_PI / n_bins)
        self._log_volume = torch.tensor(sizes, dtype=torch.float64) * math.log(TWO_PI)
        cells = torch.arange(self.n_cells)
        self._valid = cells[None, :] < torch.tensor([self.n_bins ** k for k in sizes])[:, None]
        shape = (int(n_bands), len(self.blocks), self.n_cells)
        self.log_mass = torch.full(shape, -math.inf, dtype=torch.float64)
        self.seen = torch.zeros(shape, dtype=torch.float64)
        self.t_stats = torch.zeros(int(n_bands), 5, dtype=torch.float64)  # 1, x, x², y, xy
        self.n_observed = 0
        self._n_capped = torch.zeros((), dtype=torch.float64)  # on the device: no host sync

    # ---- bookkeeping ----------------------------------------------------------------------

    @property
    def n_bands(self) -> int:
        return self.log_mass.shape[0]

    def _to(self, device: torch.device) -> None:
        for name in ("log_mass", "seen", "t_stats", "inner_edges", "log_t_center",
                     "_log_t_width", "_block_of",
                     "_place", "_log_width", "_log_volume", "_valid"):
            value = getattr(self, name)
            if value.device != device:
                setattr(self, name, value.to(device))

    def _band_index(self, temperature_k: torch.Tensor) -> torch.Tensor:
        t = temperature_k.double()
        return (t[:, None] < self.inner_edges.to(t.device)[None, :]).sum(1)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def _cells(self, z: torch.Tensor) -> torch.Tensor:
        """The cell of each block [n, n_blocks] holding z [n, d]: sum_j bin(z_{b_j}) n_bins ** j."""
        wrapped = torch.remainder(z.double() + math.pi, TWO_PI)
        bins = torch.clamp((wrapped / (TWO_PI / self.n_bins)).long(), 0, self.n_bins - 1)
        cells = torch.zeros(z.shape[0], self.n_blocks, dtype=torch.long, device=z.device)
        return cells.index_add_(1, self._block_of, bins * self._place)

    def marginal_log_probs(self) -> torch.Tensor:
        """log p_b(cell) [n_bands, n_blocks, n_cells]: the learned block marginals, each
        normalized over its cells (cell sum_j bin_j n_bins ** j for the block's torsions in
        order; -inf past a smaller block's n_bins ** k). Cells never observed count as the
        band's most probable one; a band with no observation is uniform."""
        seen = (self.seen > 0) & self._valid
        best = torch.where(seen, self.log_mass, -math.inf).amax(2, keepdim=True)
        best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
        filled = torch.where(seen, self.log_mass, best)
        return torch.log_softmax(torch.where(self._valid, filled, -math.inf), dim=2)

    def marginal_free_energy(self) -> torch.Tensor:
        """The learned marginals as F_b / k_B T per cell [n_bands, n_blocks, n_cells]: -log of
        the normalized density (per rad ** k_b) averaged over the cell (+inf past a block's
        cells). One-torsion blocks: [n_bands, d, n_bins], the 1-D marginals."""
        return -(self.marginal_log_probs() - self._log_width[:, None])

    def _bin_log_q(self) -> torch.Tensor:
        """log q_b(cell) [n_bands, n_blocks, n_cells] of the sharpened histograms."""
        return torch.log_softmax(self.sharpness * self.marginal_log_probs(), dim=2)

    def _band_table(self, temperature_k: torch.Tensor | None, n: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log q_b(cell) per band [n_rows, n_blocks, n_cells], each row's band [n]): the
        bands' histograms, or without temperatures their average as the one band. Rows index
        the table instead of copying it (n x n_blocks x n_cells would be 2.7M numbers for
        4,096 rows of two 18 x 18 blocks)."""
        log_q = self._bin_log_q()
        if temperature_k is None:
            average = torch.logsumexp(log_q, 0) - math.log(self.n_bands)
            return average[None], torch.zeros(n, dtype=torch.long, device=log_q.device)
        if temperature_k.shape != (n,):
            raise ValueError(f"Expected temperature_k of shape [{n}] (K); got "
                             f"{list(temperature_k.shape)}.")
        return log_q, self._band_index(temperature_k.to(log_q.device))

    # ---- the density ----------------------------------------------------------------------

    def log_prob(self, z: torch.Tensor, temperature_k: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """log rho(z | T) [n] (per rad^d) of z [n, d] (rad) at the rows' temperatures [n] (K)."""
        if z.ndim != 2 or z.shape[1] != self.cg_dim:
            raise ValueError(f"Expected z of shape [n, {self.cg_dim}] (rad); got "
                             f"{list(z.shape)}.")
        if self.n_observed < self.warmup:
            return torch.full((z.shape[0],), -self.cg_dim * math.log(TWO_PI),
                              dtype=torch.float64, device=z.device)
        self._to(z.device)
        table, band = self._band_table(temperature_k, z.shape[0])
        blocks = torch.arange(self.n_blocks, device=z.device)
        per_cell = table[band[:, None], blocks[None, :], self._cells(z)]  # [n, n_blocks]
        keep = math.log(1.0 - self.explore) if self.explore < 1 else -math.inf
        dens = torch.logaddexp(keep + per_cell - self._log_width,
                               (math.log(self.explore) - self._log_volume).expand_as(per_cell))
        if not self.cooperative:
            return dens.sum(1)
        return torch.logaddexp(math.log1p(-self.cooperative) + dens.sum(1),
                               math.log(self.cooperative)
                               + self._shared_log_prob(z, table, band))

    def _shared_log_prob(self, z: torch.Tensor, table: torch.Tensor, band: torch.Tensor
                         ) -> torch.Tensor:
        """log rho_shared(z) [n]: the sum over shared cells c within `COOPERATIVE_SPREAD` bins
        of every block's cell (per torsion, on the periodic grid) of pi(c) (2 s + 1) ** -d /
        prod_b width_b."""
        spread, n_bins = COOPERATIVE_SPREAD, self.n_bins
        block_idx = torch.tensor(self.blocks, device=z.device)  # [n_blocks, k]
        k = block_idx.shape[1]
        wrapped = torch.remainder(z.double() + math.pi, TWO_PI)
        bins = torch.clamp((wrapped / (TWO_PI / n_bins)).long(), 0, n_bins - 1)[:, block_idx]
        steps = torch.arange(-spread, spread + 1, device=z.device)
        delta = torch.cartesian_prod(*([steps] * k)).reshape(-1, k)  # [M, k]
        cand = torch.remainder(bins[:, :1, :] - delta[None], n_bins)  # [n, M, k] from block 0
        diff = torch.remainder(bins[:, None, :, :] - cand[:, :, None, :] + spread, n_bins)
        ok = (diff <= 2 * spread).all(3).all(2)  # [n, M]: every block near the candidate
        place = n_bins ** torch.arange(k, device=z.device)
        cell = (cand * place).sum(2)  # [n, M]
        log_pi = self._shared_log_q(table)[band[:, None], cell]
        log_pi = torch.where(ok, log_pi, torch.full_like(log_pi, -math.inf))
        norm = self.cg_dim * math.log(2 * spread + 1) + self._log_width.sum()
        return torch.logsumexp(log_pi, 1) - norm

    @staticmethod
    def _shared_log_q(log_q: torch.Tensor) -> torch.Tensor:
        """log of the shared-cell distribution [n_rows, n_cells] of block histograms
        log_q [n_rows, n_blocks, n_cells]: the normalized geometric mean over blocks."""
        return torch.log_softmax(log_q.mean(1), dim=1)

    def sample(self, n: int, generator: torch.Generator, dtype, device,
               temperature_k: torch.Tensor | None = None) -> torch.Tensor:
        """[n, cg_dim] in rad; with `temperature_k` [n] (K) row i is drawn for its own band.
        Drawn on the generator's device."""
        where = generator.device
        kw = {"generator": generator, "dtype": torch.float64, "device": where}
        if self.n_observed < self.warmup:
            u = torch.rand(n, self.cg_dim, **kw)
            return (TWO_PI * u - math.pi).to(dtype=dtype, device=device)
        self._to(where)
        temps = None if temperature_k is None else temperature_k.to(where)
        table, band = self._band_table(temps, n)
        blocks = torch.arange(self.n_blocks, device=where)
        rows = band[:, None] * self.n_blocks + blocks  # [n, n_blocks] rows of the flat table
        cells = draw_cells(table.reshape(-1, self.n_cells), rows,
                           torch.rand(n, self.n_blocks, **kw))  # [n, n_blocks]
        bins = (cells[:, self._block_of] // self._place) % self.n_bins  # [n, d]
        inside = -math.pi + (bins + torch.rand(n, self.cg_dim, **kw)) * (TWO_PI / self.n_bins)
        uniform = TWO_PI * torch.rand(n, self.cg_dim, **kw) - math.pi
        explore = (torch.rand(n, self.n_blocks, **kw) < self.explore)[:, self._block_of]
        z = torch.where(explore, uniform, inside)
        if self.cooperative:
            shared = draw_cells(self._shared_log_q(table), band[:, None],
                                torch.rand(n, 1, **kw))  # [n, 1]
            bins = (shared // self._place[None, :]) % self.n_bins  # [n, d]
            offset = torch.randint(-COOPERATIVE_SPREAD, COOPERATIVE_SPREAD + 1,
                                   (n, self.cg_dim), generator=generator, device=where)
            bins = torch.remainder(bins + offset, self.n_bins)
            joint = -math.pi + (bins + torch.rand(n, self.cg_dim, **kw)) * (TWO_PI / self.n_bins)
            pick = torch.rand(n, 1, **kw) < self.cooperative
            z = torch.where(pick, joint, z)
        return z.to(dtype=dtype, device=device)

    # ---- learning -------------------------------------------------------------------------

    def observe(self, z: torch.Tensor, temperature_k: torch.Tensor, log_w: torch.Tensor) -> None:
        """Record estimates: z [n, d] (rad, drawn from this proposal), T [n] (K), log_w [n, K]
        of each (z, T)'s flow samples. Sums go through `reduce` (an all-reduce under DDP)."""
        self._to(z.device)
        n_bands = self.n_bands
        ell = (torch.logsumexp(log_w.double(), 1) - math.log(log_w.shape[1]))
        ok = torch.isfinite(ell)
        band = self._band_index(temperature_k)
        x = torch.log(temperature_k.double()) - self.log_t_center[band]
        log_rho = self.log_prob(z, temperature_k)
        # Once a band holds MIN_SLOPE_ROWS rows, an estimate more than MAX_JUMP above all
        # its mass is capped there, before it enters the slope's sums too (one outlier would
        # tilt every row's v).
        level = torch.logsumexp(self.log_mass[:, 0], dim=1)  # [n_bands] all mass so far
        held = torch.isfinite(level) & (self.t_stats[:, 0] >= MIN_SLOPE_ROWS)
        cap = torch.where(held, level + MAX_JUMP, torch.full_like(level, math.inf))[band]
        excess = (ell - self._slope()[band] * x - log_rho - cap).clamp_min(0.0)
        capped = ok & (excess > 0)
        ell = torch.where(capped, ell - excess, ell)
        finite_ell = torch.where(ok, ell, torch.full_like(ell, -math.inf))
        band_top = torch.full((n_bands,), -math.inf, dtype=ell.dtype, device=ell.device)
        band_top = band_top.scatter_reduce(0, band, finite_ell, "amax")
        fit = ok & (ell >= band_top[band] - SLOPE_WINDOW)
        y = torch.where(fit, ell, torch.zeros_like(ell))
        rows = torch.stack([torch.ones_like(x), x, x * x, y, x * y], 1) * fit[:, None]
        batch_stats = torch.zeros_like(self.t_stats).index_add_(0, band, rows)
        batch_stats = self.reduce(batch_stats)
        hit = batch_stats[:, 0] > 0
        self.t_stats = torch.where(hit[:, None], self.decay * self.t_stats + batch_stats,
                                   self.t_stats)
        v = torch.minimum(ell - self._slope()[band] * x - log_rho, cap)
        v = torch.where(ok, v, torch.full_like(v, -math.inf))
        top = torch.where(ok.any(), v.max(), v.new_zeros(()))  # no host sync
        shift_sum = self.reduce(torch.stack([top, ok.any().double()]))
        shift = shift_sum[0] / shift_sum[1].clamp_min(1.0)
        weight = torch.exp(torch.clamp(v - shift, max=700.0))  # 0 where not finite
        nb = self.n_blocks
        cells = (band[:, None] * nb + torch.arange(nb, device=z.device)) * self.n_cells \
            + self._cells(z)
        mass = torch.zeros(self.log_mass.numel(), dtype=torch.float64, device=z.device)
        mass.index_add_(0, cells.reshape(-1), weight[:, None].expand(-1, nb).reshape(-1))
        count = torch.zeros_like(mass).index_add_(
            0, cells.reshape(-1), ok[:, None].expand(-1, nb).reshape(-1).double())
        mass = self.reduce(mass).reshape(self.log_mass.shape)
        count = self.reduce(count).reshape(self.log_mass.shape)
        with torch.no_grad():
            log_batch = torch.log(mass) + shift
            band_hit = (count.sum((1, 2)) > 0).reshape(n_bands, 1, 1)
            updated = torch.logaddexp(self.log_mass + math.log(self.decay) if self.decay > 0
                                      else torch.full_like(self.log_mass, -math.inf), log_batch)
            self.log_mass = torch.where(band_hit, updated, self.log_mass)
            self.seen = self.seen + count
        self.n_observed += 1
        self._n_capped = self._n_capped.to(z.device) + self.reduce(capped.sum().double())

    @property
    def n_capped(self) -> int:
        """Observations capped at `MAX_JUMP` above their band's accumulated mass (so far)."""
        return int(self._n_capped)

    def _slope(self) -> torch.Tensor:
        """d l / d log T in each band [n_bands] from the running sums; 0 where the band holds
        fewer than `MIN_SLOPE_ROWS` rows or their log T spread is too narrow to fit it."""
        s1, sx, sxx, sy, sxy = self.t_stats.unbind(1)
        var = sxx * s1 - sx * sx  # s1² Var(x)
        uniform = self._log_t_width.to(var.device) ** 2 / 12.0  # Var(x) of a uniform spread
        usable = (s1 >= MIN_SLOPE_ROWS) & (var > 0.25 * uniform * s1 * s1) & (uniform > 0)
        return torch.where(usable, (sxy * s1 - sx * sy) / var.clamp_min(1e-300),
                           torch.zeros_like(var))

    def state_dict(self) -> dict:
        return {"log_mass": self.log_mass.cpu().clone(), "seen": self.seen.cpu().clone(),
                "t_stats": self.t_stats.cpu().clone(), "n_observed": self.n_observed,
                "n_capped": self.n_capped, "blocks": [list(block) for block in self.blocks]}

    def load_state_dict(self, state: dict) -> None:
        saved = [tuple(block) for block in state.get("blocks", [(i,) for i in range(
            state["log_mass"].shape[1])])]  # states saved before blocks: one per torsion
        if saved != self.blocks:
            raise ValueError(f"The saved product proposal has blocks {saved}; this one "
                             f"{self.blocks}. It was saved for another cg_dim or z_proposal.")
        for name in ("log_mass", "seen", "t_stats"):
            value = state[name]
            if tuple(value.shape) != tuple(getattr(self, name).shape):
                raise ValueError(f"The saved product proposal has {name} of shape "
                                 f"{list(value.shape)}; this one {list(getattr(self, name).shape)}"
                                 ". It was saved for another cg_dim, n_bins or n_bands.")
            setattr(self, name, value.clone().to(getattr(self, name).device))
        self.n_observed = int(state["n_observed"])
        self._n_capped = torch.tensor(float(state.get("n_capped", 0)),  # 0: saved before
                                      dtype=torch.float64, device=self.log_mass.device)


@Z_PROPOSALS.register("product")
def product_proposal(model: BackmappingModel, *, t_min: float, t_max: float,
                     sharpness: float = 0.5, cg_frames=None, seed: int = 0,
                     cooperative: float = 0.0) -> ZProposal:
    """Torsion maps: `ProductTorusProposal` over [t_min, t_max] K (per-torsion adaptive
    histograms; any number of torsions); other CG spaces: as `uniform_proposal`."""
    if not bool(model.cg_map.z_circular.all()):
        return uniform_proposal(model, t_min=t_min, t_max=t_max, cg_frames=cg_frames, seed=seed)
    return ProductTorusProposal(model.cg_dim, t_min, t_max, sharpness=sharpness,
                                cooperative=cooperative)


@Z_PROPOSALS.register("residue-pairs")
def residue_pairs_proposal(model: BackmappingModel, *, t_min: float, t_max: float,
                           sharpness: float = 0.5, cg_frames=None, seed: int = 0,
                           cooperative: float = 0.0) -> ZProposal:
    """Backbone torsion maps: `ProductTorusProposal` with one 2-D histogram per residue's
    (phi, psi) pair (`residue_blocks`; other torsions 1-D); other CG spaces: as
    `product_proposal`."""
    if not bool(model.cg_map.z_circular.all()):
        return uniform_proposal(model, t_min=t_min, t_max=t_max, cg_frames=cg_frames, seed=seed)
    return ProductTorusProposal(model.cg_dim, t_min, t_max, sharpness=sharpness,
                                blocks=model_blocks(model, "residue"), cooperative=cooperative)


@Z_PROPOSALS.register("adaptive")
def adaptive_proposal(model: BackmappingModel, *, t_min: float, t_max: float,
                      sharpness: float = 0.5, cg_frames=None, seed: int = 0) -> ZProposal:
    """The default. Torsion maps of at most `MAX_ADAPTIVE_DIMS` torsions:
    `AdaptiveTorusProposal` over [t_min, t_max] K (z | T on the joint grid where the flow finds
    F low, z ~ exp(-sharpness beta F)); more torsions (the joint grid would need
    n_bins ** cg_dim cells per band): `ProductTorusProposal` (per-torsion histograms); other
    CG spaces: as `uniform_proposal`."""
    if not bool(model.cg_map.z_circular.all()):
        return uniform_proposal(model, t_min=t_min, t_max=t_max, cg_frames=cg_frames, seed=seed)
    if model.cg_dim > MAX_ADAPTIVE_DIMS:
        return ProductTorusProposal(model.cg_dim, t_min, t_max, sharpness=sharpness)
    return AdaptiveTorusProposal(model.cg_dim, t_min, t_max, sharpness=sharpness)
