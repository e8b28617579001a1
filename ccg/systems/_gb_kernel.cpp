// Generalized Born energy and forces in three passes over the atom pairs, vectorized over the
// batch: the C++ form of `_GBTerm._evaluate` (ccg/systems/_gb_terms.py), which stays the
// reference it is tested against (1e-12 in float64) and the fallback.
//
// The torch path makes about eight passes over [pairs, batch] arrays in memory (each
// index_add ends a fused loop); here one SIMD vector of configurations at a time goes
// through all pairs three times (Born sums; pair energy and dE/dB; forces) with the
// per-atom sums and the few per-pair values carried between passes in cache.
//
// Layout: xt [3, N, B] (batch innermost, as the torch terms use). pair [K, P] rows:
// or_i, sr_i, sr2_i, or_j, sr_j, sr2_j, qq, then (GBn2's neck) neck_cut,
// m0_ij, d0_ij, m0_ji, d0_ji, then (fused nonbonded) coulomb, a12, a6. atom [9, N] rows:
// half_or, inv_or, inv_rho, alpha, beta, gamma, q2, ace_coef, ace_rho.
// Formulas: ccg/systems/_gb_math.py.

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

#include <vector>

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <sleef.h>
#endif

namespace {

using at::vec::Vectorized;

template <typename T>
using Vec = Vectorized<T>;

// log with Sleef's 3.5-ulp variant where the build has one (ATen's Vectorized::log is the
// 1-ulp variant; in float64 3.5 ulp is ~1e-15 relative): 15% of the kernel's time.
#if defined(CPU_CAPABILITY_AVX512)
inline Vec<float> fast_log(const Vec<float>& v) { return Sleef_logf16_u35(v); }
inline Vec<double> fast_log(const Vec<double>& v) { return Sleef_logd8_u35(v); }
#elif defined(CPU_CAPABILITY_AVX2)
inline Vec<float> fast_log(const Vec<float>& v) { return Sleef_logf8_u35(v); }
inline Vec<double> fast_log(const Vec<double>& v) { return Sleef_logd4_u35(v); }
#else
template <typename T>
inline Vec<T> fast_log(const Vec<T>& v) { return v.log(); }
#endif

template <typename T>
inline Vec<T> where(const Vec<T>& mask, const Vec<T>& a, const Vec<T>& b) {
  return Vec<T>::blendv(b, a, mask);  // a where mask is set, else b
}

// H_ij and dH_ij/dr of atom j on atom i (`hct_integral`).
template <typename T>
inline void hct(const Vec<T>& r, const Vec<T>& inv_r, T or_i, T sr_j, T sr2_j, bool engulf,
                Vec<T>& h, Vec<T>& dh) {
  const Vec<T> vor(or_i), vsr(sr_j), vsr2(sr2_j), zero(T(0)), one(T(1)), quarter(T(0.25)),
      half(T(0.5)), two(T(2));
  const Vec<T> upper = r + vsr;
  const Vec<T> lower = at::vec::maximum((r - vsr).abs(), vor);
  const Vec<T> inv_ul = one / (upper * lower);
  const Vec<T> inv_u = lower * inv_ul;
  const Vec<T> inv_l = upper * inv_ul;
  const Vec<T> diff2 = inv_u * inv_u - inv_l * inv_l;
  const Vec<T> log_term = fast_log(lower * inv_u) * inv_r;
  h = inv_l - inv_u + quarter * (r - vsr2 * inv_r) * diff2 + half * log_term;
  dh = quarter * (one + vsr2 * inv_r * inv_r) * diff2 - half * log_term * inv_r;
  const Vec<T> inside_j = vor < (vsr - r);
  if (engulf) {
    h = h + where(inside_j, two * (one / vor - inv_l), zero);
  } else {
    dh = dh + where(inside_j, two * inv_l * inv_l, zero);
  }
  const Vec<T> overlaps = vor < upper;
  h = where(overlaps, h, zero);
  dh = where(overlaps, dh, zero);
}

// GBn2's neck term and its slope (`neck_integral`), scaled by `scale`, added to h and dh.
template <typename T>
inline void neck(const Vec<T>& r, T cut, T m0, T d0, T scale, Vec<T>& h, Vec<T>& dh) {
  const Vec<T> zero(T(0)), one(T(1));
  const Vec<T> dr = r - Vec<T>(d0);
  const Vec<T> dr2 = dr * dr;
  const Vec<T> dr4 = dr2 * dr2;
  const Vec<T> inv_den = one / (one + Vec<T>(T(100)) * dr2 + Vec<T>(T(300000)) * dr4 * dr2);
  const Vec<T> near = r <= Vec<T>(cut);
  const Vec<T> value = where(near, Vec<T>(m0) * inv_den, zero);
  const Vec<T> slope = where(
      near, zero - value * inv_den * (Vec<T>(T(200)) * dr + Vec<T>(T(1800000)) * dr4 * dr), zero);
  h = h + Vec<T>(scale) * value;
  dh = dh + Vec<T>(scale) * slope;
}

template <typename T>
void gb_chunk(const T* x, int64_t n_atoms, int64_t batch, int64_t b0, const int64_t* ii,
              const int64_t* jj, const T* pair, int64_t n_pairs, const T* atom, bool engulf,
              bool ace, bool ace_positive_only, bool has_neck, T neck_scale, bool fused,
              T* energy_out, T* grad_out, std::vector<T>& scratch) {
  constexpr int64_t V = Vec<T>::size();
  const int64_t N = n_atoms, P = n_pairs;
  const T* or_i = pair;
  const T* sr_i = pair + P;
  const T* sr2_i = pair + 2 * P;
  const T* or_j = pair + 3 * P;
  const T* sr_j = pair + 4 * P;
  const T* sr2_j = pair + 5 * P;
  const T* qq = pair + 6 * P;
  const T* neck_rows = pair + 7 * P;
  const T* nb_rows = pair + (has_neck ? 12 : 7) * P;
  const T *half_or = atom, *inv_or = atom + N, *inv_rho = atom + 2 * N, *alpha = atom + 3 * N,
          *beta = atom + 4 * N, *gamma = atom + 5 * N, *q2 = atom + 6 * N,
          *ace_coef = atom + 7 * N, *ace_rho = atom + 8 * N;

  // Scratch: per pair r^2, 1/r, dt_ij, dt_ji, the force factor's pair part; per atom the
  // sums (of t, then of dE/dB, then q), psi, tanh, B, 1/B, dE_atom/dB and the gradient.
  scratch.resize(static_cast<size_t>(V) * (5 * P + 9 * N));
  T* r2_v = scratch.data();
  T* inv_r_v = r2_v + P * V;
  T* dt_ij = inv_r_v + P * V;
  T* dt_ji = dt_ij + P * V;
  T* part = dt_ji + P * V;
  T* sum = part + P * V;
  T* born = sum + N * V;
  T* inv_born = born + N * V;
  T* tanh_v = inv_born + N * V;
  T* psi_v = tanh_v + N * V;
  T* d_atom = psi_v + N * V;
  T* grad = d_atom + N * V;  // [3, N, V]

  const T* xs[3] = {x + b0, x + N * batch + b0, x + 2 * N * batch + b0};
  auto load_x = [&](int c, int64_t a) { return Vec<T>::loadu(xs[c] + a * batch); };
  const Vec<T> zero(T(0)), one(T(1));

  // Pass 1: Born sums.
  for (int64_t a = 0; a < N; ++a) zero.store(sum + a * V);
  for (int64_t p = 0; p < P; ++p) {
    const int64_t i = ii[p], j = jj[p];
    const Vec<T> dx = load_x(0, i) - load_x(0, j), dy = load_x(1, i) - load_x(1, j),
                 dz = load_x(2, i) - load_x(2, j);
    const Vec<T> r2 = dx * dx + dy * dy + dz * dz;
    const Vec<T> inv_r = r2.rsqrt();
    const Vec<T> r = r2 * inv_r;
    r2.store(r2_v + p * V);
    inv_r.store(inv_r_v + p * V);
    Vec<T> t1, d1, t2, d2;
    hct(r, inv_r, or_i[p], sr_j[p], sr2_j[p], engulf, t1, d1);
    hct(r, inv_r, or_j[p], sr_i[p], sr2_i[p], engulf, t2, d2);
    if (has_neck) {
      const T scale = T(2) * neck_scale;
      neck(r, neck_rows[p], neck_rows[P + p], neck_rows[2 * P + p], scale, t1, d1);
      neck(r, neck_rows[p], neck_rows[3 * P + p], neck_rows[4 * P + p], scale, t2, d2);
    }
    d1.store(dt_ij + p * V);
    d2.store(dt_ji + p * V);
    (Vec<T>::loadu(sum + i * V) + t1).store(sum + i * V);
    (Vec<T>::loadu(sum + j * V) + t2).store(sum + j * V);
  }

  // Atoms: Born radii, self and surface energies, their derivatives in B.
  Vec<T> e_atom = zero;
  for (int64_t a = 0; a < N; ++a) {
    const Vec<T> psi = Vec<T>(half_or[a]) * Vec<T>::loadu(sum + a * V);
    const Vec<T> va(alpha[a]), vb(beta[a]), vg(gamma[a]), vir(inv_rho[a]);
    const Vec<T> th = (psi * (va - psi * (vb - vg * psi))).tanh();
    const Vec<T> b = one / (Vec<T>(inv_or[a]) - th * vir);
    const Vec<T> ib = one / b;
    Vec<T> e = Vec<T>(q2[a]) * ib;
    Vec<T> de = zero - e * ib;
    if (ace) {
      const Vec<T> ratio = Vec<T>(ace_rho[a]) * ib;
      const Vec<T> ratio3 = ratio * ratio * ratio;
      Vec<T> surface = Vec<T>(ace_coef[a]) * ratio3 * ratio3;
      if (ace_positive_only) surface = where(b > zero, surface, zero);
      e = e + surface;
      de = de - Vec<T>(T(6)) * surface * ib;
    }
    e_atom = e_atom + e;
    psi.store(psi_v + a * V);
    th.store(tanh_v + a * V);
    b.store(born + a * V);
    ib.store(inv_born + a * V);
    de.store(d_atom + a * V);
    zero.store(sum + a * V);
  }

  // Pass 2: pair energies; dE/dB summed per atom; the pair part of the force factor.
  // Pair energies summed in blocks of 32 (like torch's cascade sums): a float32 running sum
  // over the thousands of large, cancelling pair terms would lose ~1e-5 of the total.
  Vec<T> e_pair = zero, e_block = zero;
  const Vec<T> quarter(T(0.25)), half(T(0.5));
  for (int64_t p = 0; p < P; ++p) {
    const int64_t i = ii[p], j = jj[p];
    const Vec<T> r2 = Vec<T>::loadu(r2_v + p * V);
    const Vec<T> b_i = Vec<T>::loadu(born + i * V), b_j = Vec<T>::loadu(born + j * V);
    const Vec<T> big_d =
        quarter * r2 * (Vec<T>::loadu(inv_born + i * V) * Vec<T>::loadu(inv_born + j * V));
    const Vec<T> expo = (zero - big_d).exp();
    const Vec<T> inv_f = (r2 + b_i * b_j * expo).rsqrt();
    Vec<T> pe = Vec<T>(qq[p]) * inv_f;
    const Vec<T> d_pair = zero - pe * inv_f;
    Vec<T> s = d_pair * (one - quarter * expo) * inv_f;
    if (fused) {
      const Vec<T> inv_r = Vec<T>::loadu(inv_r_v + p * V);
      const Vec<T> inv_r2 = inv_r * inv_r;
      const Vec<T> inv_r6 = inv_r2 * inv_r2 * inv_r2;
      const Vec<T> coul = Vec<T>(nb_rows[p]) * inv_r;
      const Vec<T> lj12 = Vec<T>(nb_rows[P + p]) * inv_r6 * inv_r6;
      const Vec<T> lj6 = Vec<T>(nb_rows[2 * P + p]) * inv_r6;
      pe = pe + coul + lj12 - lj6;
      s = s - (coul + Vec<T>(T(12)) * lj12 - Vec<T>(T(6)) * lj6) * inv_r2;
    }
    e_block = e_block + pe;
    if ((p & 31) == 31) {
      e_pair = e_pair + e_block;
      e_block = zero;
    }
    const Vec<T> d_born = d_pair * expo * (one + big_d) * half * inv_f;
    (Vec<T>::loadu(sum + i * V) + d_born * b_j).store(sum + i * V);
    (Vec<T>::loadu(sum + j * V) + d_born * b_i).store(sum + j * V);
    s.store(part + p * V);
  }
  (e_atom + (e_pair + e_block)).store(energy_out + b0);

  // Atoms: q = dE/d(sum of t) = (dE/dB) (dB/dpsi) or/2.
  for (int64_t a = 0; a < N; ++a) {
    const Vec<T> psi = Vec<T>::loadu(psi_v + a * V), th = Vec<T>::loadu(tanh_v + a * V),
                 b = Vec<T>::loadu(born + a * V);
    const Vec<T> dedb = Vec<T>::loadu(d_atom + a * V) + Vec<T>::loadu(sum + a * V);
    const Vec<T> dbdpsi =
        b * b * (one - th * th) *
        (Vec<T>(alpha[a]) - psi * (Vec<T>(T(2) * beta[a]) - Vec<T>(T(3) * gamma[a]) * psi)) *
        Vec<T>(inv_rho[a]);
    (dedb * dbdpsi * Vec<T>(half_or[a])).store(sum + a * V);
    for (int c = 0; c < 3; ++c) zero.store(grad + (c * N + a) * V);
  }

  // Pass 3: forces.
  for (int64_t p = 0; p < P; ++p) {
    const int64_t i = ii[p], j = jj[p];
    const Vec<T> dx = load_x(0, i) - load_x(0, j), dy = load_x(1, i) - load_x(1, j),
                 dz = load_x(2, i) - load_x(2, j);
    const Vec<T> inv_r = Vec<T>::loadu(inv_r_v + p * V);
    const Vec<T> born_part = Vec<T>::loadu(sum + i * V) * Vec<T>::loadu(dt_ij + p * V) +
                             Vec<T>::loadu(sum + j * V) * Vec<T>::loadu(dt_ji + p * V);
    const Vec<T> s = Vec<T>::loadu(part + p * V) + born_part * inv_r;
    const Vec<T> d[3] = {dx, dy, dz};
    for (int c = 0; c < 3; ++c) {
      T* gi = grad + (c * N + i) * V;
      T* gj = grad + (c * N + j) * V;
      (Vec<T>::loadu(gi) + d[c] * s).store(gi);
      (Vec<T>::loadu(gj) - d[c] * s).store(gj);
    }
  }
  for (int c = 0; c < 3; ++c)
    for (int64_t a = 0; a < N; ++a)
      Vec<T>::loadu(grad + (c * N + a) * V).store(grad_out + (c * N + a) * batch + b0);
}

template <typename T>
void gb_run(const torch::Tensor& xt, const torch::Tensor& i, const torch::Tensor& j,
            const torch::Tensor& pair, const torch::Tensor& atom, bool engulf, bool ace,
            bool ace_positive_only, bool has_neck, double neck_scale, bool fused,
            torch::Tensor& energy, torch::Tensor& grad) {
  constexpr int64_t V = Vec<T>::size();
  const int64_t n_atoms = xt.size(1), batch = xt.size(2), n_pairs = i.size(0);
  const T* x = xt.data_ptr<T>();
  const int64_t* ii = i.data_ptr<int64_t>();
  const int64_t* jj = j.data_ptr<int64_t>();
  const T* pp = pair.data_ptr<T>();
  const T* ap = atom.data_ptr<T>();
  T* e = energy.data_ptr<T>();
  T* g = grad.data_ptr<T>();
  at::parallel_for(0, batch / V, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    for (int64_t k = begin; k < end; ++k) {
      gb_chunk<T>(x, n_atoms, batch, k * V, ii, jj, pp, n_pairs, ap, engulf, ace,
                  ace_positive_only, has_neck, static_cast<T>(neck_scale), fused, e, g, scratch);
    }
  });
}

}  // namespace

// Energy [B] and its gradient [3, N, B]; B must be a multiple of `vector_width()`.
std::vector<torch::Tensor> gb_energy_gradient(torch::Tensor xt, torch::Tensor i, torch::Tensor j,
                                              torch::Tensor pair, torch::Tensor atom,
                                              bool engulf, bool ace, bool ace_positive_only,
                                              bool has_neck, double neck_scale, bool fused) {
  TORCH_CHECK(xt.dim() == 3 && xt.size(0) == 3, "xt must be [3, n_atoms, B]");
  TORCH_CHECK(xt.is_contiguous() && pair.is_contiguous() && atom.is_contiguous() &&
                  i.is_contiguous() && j.is_contiguous(),
              "inputs must be contiguous");
  TORCH_CHECK(pair.scalar_type() == xt.scalar_type() && atom.scalar_type() == xt.scalar_type(),
              "parameters must have the dtype of xt");
  auto energy = torch::empty({xt.size(2)}, xt.options());
  auto grad = torch::empty_like(xt);
  AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "gb_energy_gradient", [&] {
    TORCH_CHECK(xt.size(2) % Vec<scalar_t>::size() == 0, "B must be a multiple of ",
                Vec<scalar_t>::size());
    gb_run<scalar_t>(xt, i, j, pair, atom, engulf, ace, ace_positive_only, has_neck, neck_scale,
                     fused, energy, grad);
  });
  return {energy, grad};
}

int64_t vector_width(bool float64) {
  return float64 ? Vec<double>::size() : Vec<float>::size();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gb_energy_gradient", &gb_energy_gradient);
  m.def("vector_width", &vector_width);
}
