// Fused FastGRNN sweeps for RNNPool2d on the CPU (see rnnpool/nn/_native.py).
//
// Sweep b of a family reads row idx[t * B + b] of the projected inputs src (P, 2H: gate half,
// then update half) at step t and keeps only its running state; one call runs every sweep of
// one or more families, spread over OpenMP threads. The cell is the one of
// rnnpool.nn.functional._scan_forward:
//     z = gate(x_z + Uz h),  c = update(x_h + Uh h),  h' = z h + (zeta (1 - z) + nu) c.
//
// Backward: each sweep's T states are recomputed (a few KB, in cache) instead of stored. Input
// gradients are added straight into dsrc; to do that without atomics the sweeps come in groups
// (runs of consecutive sweeps) such that sweeps of different groups never read the same src
// row, and a thread owns whole groups; families run one after the other. dUz, dUh are
// accumulated per thread as a small matrix product over each block's steps, then summed.
//
// Matrices arrive row-major (H, H) together with their transposes, so that both the forward
// product (columns of U) and the backward one (rows of U) read contiguous memory. Hidden sizes
// 8, 16 and 32 are compiled with a fixed H (unrolled, state in registers), and several sweeps
// run interleaved to hide the latency of the multiply-add chains.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

enum Gate { GATE_SIGMOID = 0, GATE_HARD_SIGMOID = 1 };
enum Update { UPDATE_TANH = 0, UPDATE_HARD_TANH = 1, UPDATE_SIGMOID = 2 };

// exp for float: Cody-Waite reduction and a degree-6 polynomial (Cephes' expf coefficients),
// within 2 ulp, branch-free so that loops over it vectorize without library calls. Double keeps
// the libm exp: it is the reference-precision path.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_approx(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T a) { return T(1) / (T(1) + exp_approx(-a)); }
inline float tanh_(float a) { return 2.0f * sigmoid(2.0f * a) - 1.0f; }
inline double tanh_(double a) { return std::tanh(a); }

template <typename T, int G>
inline T gate_fn(T a) {
  if (G == GATE_SIGMOID) return sigmoid(a);
  T v = (a + T(1)) * T(0.5);
  return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
}

template <typename T, int U>
inline T update_fn(T a) {
  if (U == UPDATE_TANH) return tanh_(a);
  if (U == UPDATE_SIGMOID) return sigmoid(a);
  return a < T(-1) ? T(-1) : (a > T(1) ? T(1) : a);
}

// Derivatives from the activation's output value.
template <typename T, int G>
inline T gate_grad(T z) {
  if (G == GATE_SIGMOID) return z * (T(1) - z);
  return (z > T(0) && z < T(1)) ? T(0.5) : T(0);
}

template <typename T, int U>
inline T update_grad(T c) {
  if (U == UPDATE_TANH) return T(1) - c * c;
  if (U == UPDATE_SIGMOID) return c * (T(1) - c);
  return (c > T(-1) && c < T(1)) ? T(1) : T(0);
}

template <typename T>
struct Cell {
  const T* src;
  const int64_t* idx;  // (steps, B), set per family
  int64_t steps, B, H;
  const T* uz;   // (H, H) row-major
  const T* uh;
  const T* uzt;  // transposes
  const T* uht;
  const T* h0;   // (H,)
  const T* bias;  // (2H,): added to every projected input row (the cell's b_z, b_h)
  const T* wt;    // (C, 2H): the input matrix W transposed, when src holds raw inputs (C > 0)
  int64_t C;      // 0: src rows are projections (2H wide); else raw inputs (C wide)
  const T* k0;    // (2H,): bias + [Uz h0, Uh h0], the first step's constant, shared by all sweeps
  T zeta, nu;
  T out_scale, out_shift;  // the result is out_scale h_T + out_shift
  bool grad_zeta_nu;
};

// Largest hidden size of the generic (runtime H) kernels: their per-sweep temporaries are
// fixed-size local arrays, which the compiler keeps in registers or on the stack.
constexpr int kMaxH = 512;

// One step of S interleaved sweeps: z = gate(x_z + Uz h), c = update(x_h + Uh h).
// x[s] is sweep s's projected input row (bias not included); h, z, c are (S, H).
// first: h = h0, whose recurrent term is in k0.
template <typename T, int HC, int S, int G, int U>
inline void step(const Cell<T>& p, const T* const* x, const T* h, T* z, T* c, bool first) {
  constexpr int HM = HC ? HC : kMaxH;
  const int H = HC ? HC : (int)p.H;
  T az[S * HM], ah[S * HM];
  const T* add = first ? p.k0 : p.bias;
  if (p.C == 0) {
    for (int s = 0; s < S; ++s)
      for (int i = 0; i < H; ++i) {
        az[s * H + i] = x[s][i] + add[i];
        ah[s * H + i] = x[s][H + i] + add[H + i];
      }
  } else {  // project the raw input row: W x
    for (int s = 0; s < S; ++s)
      for (int i = 0; i < H; ++i) {
        az[s * H + i] = add[i];
        ah[s * H + i] = add[H + i];
      }
    for (int64_t ci = 0; ci < p.C; ++ci) {
      const T* wc = p.wt + ci * 2 * H;
      for (int s = 0; s < S; ++s) {
        const T xc = x[s][ci];
#pragma omp simd
        for (int i = 0; i < H; ++i) {
          az[s * H + i] += wc[i] * xc;
          ah[s * H + i] += wc[H + i] * xc;
        }
      }
    }
  }
  if (!first) {
    for (int j = 0; j < H; ++j) {
      const T* uzj = p.uzt + (int64_t)j * H;
      const T* uhj = p.uht + (int64_t)j * H;
      for (int s = 0; s < S; ++s) {
        const T hj = h[s * H + j];
#pragma omp simd
        for (int i = 0; i < H; ++i) {
          az[s * H + i] += uzj[i] * hj;
          ah[s * H + i] += uhj[i] * hj;
        }
      }
    }
  }
#pragma omp simd
  for (int k = 0; k < S * H; ++k) {
    z[k] = gate_fn<T, G>(az[k]);
    c[k] = update_fn<T, U>(ah[k]);
  }
}

// h_new = z h_prev + (zeta (1 - z) + nu) c
template <typename T>
inline void mix(const Cell<T>& p, int n, const T* hp, const T* z, const T* c, T* h) {
  const T zeta = p.zeta, nu = p.nu;
#pragma omp simd
  for (int k = 0; k < n; ++k) h[k] = z[k] * hp[k] + (zeta * (T(1) - z[k]) + nu) * c[k];
}

template <typename T, int S>
inline void load_rows(const Cell<T>& p, int64_t t, int64_t b0, const T** x) {
  const int64_t width = p.C ? p.C : 2 * p.H;
  for (int s = 0; s < S; ++s) x[s] = p.src + p.idx[t * p.B + b0 + s] * width;
}

template <typename T, int HC, int S, int G, int U>
void forward_block(const Cell<T>& p, int64_t b0, T* out, T* work) {
  const int H = HC ? HC : (int)p.H;
  T* h = work;
  T* z = h + S * H;
  T* c = z + S * H;
  for (int s = 0; s < S; ++s) std::memcpy(h + s * H, p.h0, sizeof(T) * H);
  const T* x[S];
  for (int64_t t = 0; t < p.steps; ++t) {
    load_rows<T, S>(p, t, b0, x);
    step<T, HC, S, G, U>(p, x, h, z, c, t == 0);
    mix(p, S * H, h, z, c, h);
  }
  const T a = p.out_scale, b = p.out_shift;
  T* o = out + b0 * H;
#pragma omp simd
  for (int k = 0; k < S * H; ++k) o[k] = a * h[k] + b;
}

// Work layout of backward_block (in units of S*H): hs (T+1), zs (T), cs (T), da (2T: the
// pre-activation gradients of every step, gate half then update half per sweep).
inline int64_t backward_work(int64_t steps) { return 5 * steps + 1; }

// Parameter-gradient accumulator layout: dUz (H*H), dUh (H*H), dbias (2H).
template <typename T>
inline int64_t slot_size(const Cell<T>& p) { return 2 * p.H * p.H + 2 * p.H; }

// Backward of S sweeps starting at b0: adds into dsrc, the accumulators in slot, and dzn.
template <typename T, int HC, int S, int G, int U>
void backward_block(const Cell<T>& p, int64_t b0, const T* gout, T* dsrc, T* slot,
                    double* dzn, T* work) {
  T* duz = slot;
  T* duh = slot + p.H * p.H;
  T* dbias = duh + p.H * p.H;
  constexpr int HM = HC ? HC : kMaxH;
  const int H = HC ? HC : (int)p.H;
  const int64_t SH = (int64_t)S * H, TT = p.steps;
  T* hs = work;
  T* zs = hs + (TT + 1) * SH;
  T* cs = zs + TT * SH;
  T* da = cs + TT * SH;
  for (int s = 0; s < S; ++s) std::memcpy(hs + s * H, p.h0, sizeof(T) * H);
  const T* x[S];
  for (int64_t t = 0; t < TT; ++t) {
    load_rows<T, S>(p, t, b0, x);
    step<T, HC, S, G, U>(p, x, hs + t * SH, zs + t * SH, cs + t * SH, t == 0);
    mix(p, (int)SH, hs + t * SH, zs + t * SH, cs + t * SH, hs + (t + 1) * SH);
  }
  // The state gradient and its next value (in registers when H is fixed).
  T g_[S * HM], gn_[S * HM];
  for (int k = 0; k < S * H; ++k) g_[k] = p.out_scale * gout[b0 * H + k];
  const T zeta = p.zeta, nu = p.nu;
  T dzeta = 0, dnu = 0;
  for (int64_t t = TT - 1; t >= 0; --t) {
    const T* hp = hs + t * SH;
    const T* z = zs + t * SH;
    const T* c = cs + t * SH;
    T* __restrict dat = da + t * 2 * SH;
    for (int s = 0; s < S; ++s) {
      T* __restrict das = dat + 2 * s * H;
#pragma omp simd
      for (int i = 0; i < H; ++i) {
        const int k = s * H + i;
        const T g = g_[k];
        das[i] = g * (hp[k] - zeta * c[k]) * gate_grad<T, G>(z[k]);
        das[H + i] = g * (zeta * (T(1) - z[k]) + nu) * update_grad<T, U>(c[k]);
        gn_[k] = g * z[k];
      }
      if (p.grad_zeta_nu) {
        for (int i = 0; i < H; ++i) {
          const int k = s * H + i;
          dzeta += g_[k] * (T(1) - z[k]) * c[k];
          dnu += g_[k] * c[k];
        }
      }
      T* __restrict dx = dsrc + p.idx[t * p.B + b0 + s] * 2 * H;
#pragma omp simd
      for (int i = 0; i < 2 * H; ++i) dx[i] += das[i];
    }
    if (t == 0) break;  // h_prev = h0 is constant: no gradient flows further
    // dh_prev = z g + Uz^T da_z + Uh^T da_h
    for (int i = 0; i < H; ++i) {
      const T* uzi = p.uz + (int64_t)i * H;
      const T* uhi = p.uh + (int64_t)i * H;
      for (int s = 0; s < S; ++s) {
        const T dzi = dat[2 * s * H + i], dhi = dat[2 * s * H + H + i];
#pragma omp simd
        for (int j = 0; j < H; ++j) {
          gn_[s * H + j] += uzi[j] * dzi;
          gn_[s * H + j] += uhi[j] * dhi;
        }
      }
    }
    std::memcpy(g_, gn_, sizeof(T) * SH);
  }
  // dU += sum over steps and sweeps of da h_prev^T: all T*S rows at once, IB rows of dUz and
  // dUh in registers while they accumulate, so each h_prev load serves 2 IB products.
  constexpr int IB = (HC % 2 == 0 && HC > 0) ? 2 : 1;
  for (int i0 = 0; i0 < H; i0 += IB) {
    T az[IB][HM], ah[IB][HM];
    for (int ib = 0; ib < IB; ++ib)
      for (int j = 0; j < H; ++j) az[ib][j] = ah[ib][j] = T(0);
    for (int64_t t = 0; t < TT; ++t)
      for (int s = 0; s < S; ++s) {
        const T* hps = hs + t * SH + s * H;
        const T* das = da + t * 2 * SH + 2 * s * H;
        for (int ib = 0; ib < IB; ++ib) {
          const T dzi = das[i0 + ib], dhi = das[H + i0 + ib];
#pragma omp simd
          for (int j = 0; j < H; ++j) {
            az[ib][j] += dzi * hps[j];
            ah[ib][j] += dhi * hps[j];
          }
        }
      }
    for (int ib = 0; ib < IB; ++ib)
      for (int j = 0; j < H; ++j) {
        duz[(int64_t)(i0 + ib) * H + j] += az[ib][j];
        duh[(int64_t)(i0 + ib) * H + j] += ah[ib][j];
      }
  }
  // dbias += da
  for (int64_t t = 0; t < TT; ++t)
    for (int s = 0; s < S; ++s) {
      const T* das = da + t * 2 * SH + 2 * s * H;
#pragma omp simd
      for (int i = 0; i < 2 * H; ++i) dbias[i] += das[i];
    }
  dzn[0] += (double)dzeta;
  dzn[1] += (double)dnu;
}

// A family of sweeps: B sweeps of `steps` steps; sweep b reads row idx[t * B + b] at step t.
struct Family {
  const int64_t* idx;
  int64_t steps, B;
  const int64_t* groups;  // ngroups + 1 offsets: group g is sweeps [groups[g], groups[g + 1])
  int64_t ngroups;
};

template <typename T>
inline Cell<T> for_family(const Cell<T>& p, const Family& f) {
  Cell<T> q = p;
  q.idx = f.idx;
  q.steps = f.steps;
  q.B = f.B;
  return q;
}

// Forward of every family; out holds the families' (B, H) results one after the other.
template <typename T, int HC, int S, int G, int U>
void forward_all(const Cell<T>& p, const Family* fam, int nfam, T* out, int threads) {
  const int64_t H = p.H;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> work(3 * S * H);
    T* o = out;
    for (int f = 0; f < nfam; ++f) {
      const Cell<T> q = for_family(p, fam[f]);
      const int64_t full = q.B / S;
#pragma omp for schedule(dynamic, 16) nowait
      for (int64_t blk = 0; blk < full; ++blk)
        forward_block<T, HC, S, G, U>(q, blk * S, o, work.data());
#pragma omp for schedule(dynamic, 16) nowait
      for (int64_t b = full * S; b < q.B; ++b) forward_block<T, HC, 1, G, U>(q, b, o, work.data());
      o += q.B * H;
    }
  }
}

// Backward of every family into one dsrc (P rows of 2H, zeroed here by the threads that
// then write it). Families run one after the other; within a family, groups in parallel.
// The parameter gradients are summed per slot (a fixed range of groups) and the slots in
// order, so the result does not depend on the number of threads or on scheduling.
template <typename T, int HC, int S, int G, int U>
void backward_all(const Cell<T>& p, const Family* fam, int nfam, int64_t rows, const T* gout,
                  T* dsrc, T* dparams, double* dzn, int threads) {
  const int64_t H = p.H, kSlots = 64, SZ = slot_size(p);
  int64_t max_steps = 0;
  for (int f = 0; f < nfam; ++f) max_steps = fam[f].steps > max_steps ? fam[f].steps : max_steps;
  std::vector<T> slots(kSlots * SZ, T(0));
  std::vector<double> slot_zn(kSlots * 2, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int64_t chunk = 4096;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r += chunk)
      std::memset(dsrc + r * 2 * H, 0, sizeof(T) * 2 * H * (rows - r < chunk ? rows - r : chunk));
    std::vector<T> work(backward_work(max_steps) * S * H);
    const T* g = gout;
    for (int f = 0; f < nfam; ++f) {
      const Cell<T> q = for_family(p, fam[f]);
      const int64_t* goff = fam[f].groups;
      const int64_t ng = fam[f].ngroups, nslot = ng < kSlots ? ng : kSlots;
#pragma omp for schedule(dynamic, 1)
      for (int64_t sl = 0; sl < nslot; ++sl) {
        T* slot = slots.data() + sl * SZ;
        double* zn_s = slot_zn.data() + 2 * sl;
        for (int64_t gi = sl * ng / nslot; gi < (sl + 1) * ng / nslot; ++gi) {
          const int64_t b0 = goff[gi], b1 = goff[gi + 1], full = (b1 - b0) / S;
          for (int64_t blk = 0; blk < full; ++blk)
            backward_block<T, HC, S, G, U>(q, b0 + blk * S, g, dsrc, slot, zn_s, work.data());
          for (int64_t b = b0 + full * S; b < b1; ++b)
            backward_block<T, HC, 1, G, U>(q, b, g, dsrc, slot, zn_s, work.data());
        }
      }  // implicit barrier: the next family may read the same rows
      g += q.B * H;
    }
  }
  for (int64_t sl = 0; sl < kSlots; ++sl) {
    for (int64_t k = 0; k < SZ; ++k) dparams[k] += slots[sl * SZ + k];
    dzn[0] += slot_zn[2 * sl];
    dzn[1] += slot_zn[2 * sl + 1];
  }
}

template <typename T, int G, int U>
int dispatch(const Cell<T>& p, const Family* fam, int nfam, bool fwd, T* out, int64_t rows,
             const T* gout, T* dsrc, T* dparams, double* dzn, int threads) {
// S sweeps run interleaved in the forward, SB in the backward (measured best on AMD Zen: the
// backward's products hold fewer accumulators per sweep, so more sweeps share each U row).
#define RNNPOOL_RUN(HC, S, SB)                                                               \
  do {                                                                                       \
    if (fwd)                                                                                 \
      forward_all<T, HC, S, G, U>(p, fam, nfam, out, threads);                               \
    else                                                                                     \
      backward_all<T, HC, SB, G, U>(p, fam, nfam, rows, gout, dsrc, dparams, dzn, threads);  \
    return 0;                                                                                \
  } while (0)
  switch (p.H) {
    case 8: RNNPOOL_RUN(8, 4, 4);
    case 16: RNNPOOL_RUN(16, 2, 4);
    case 32: RNNPOOL_RUN(32, 1, 1);
    default: RNNPOOL_RUN(0, 1, 1);
  }
#undef RNNPOOL_RUN
}

template <typename T>
int run(Cell<T> p, const int64_t* const* idx, const int64_t* steps, const int64_t* B,
        const int64_t* const* groups, const int64_t* ngroups, int nfam, int gate, int update,
        bool fwd, T* out, int64_t rows, const T* gout, T* dsrc, T* dparams, double* dzn,
        int threads) {
  if (p.H <= 0 || p.H > kMaxH || p.C < 0 || nfam <= 0 || threads <= 0) return -2;
  std::vector<Family> fam(nfam);
  for (int f = 0; f < nfam; ++f) {
    if (steps[f] <= 0 || B[f] < 0) return -2;
    fam[f] = Family{idx[f], steps[f], B[f], nullptr, 0};
    if (fwd) continue;
    fam[f].groups = groups[f];
    fam[f].ngroups = ngroups[f];
    const int64_t* g = groups[f];
    if (ngroups[f] < 0 || g[0] != 0 || g[ngroups[f]] != B[f]) return -3;
    for (int64_t k = 0; k < ngroups[f]; ++k)
      if (g[k + 1] < g[k]) return -3;
  }
  std::vector<T> k0(p.bias, p.bias + 2 * p.H);
  for (int64_t i = 0; i < p.H; ++i)
    for (int64_t j = 0; j < p.H; ++j) {
      k0[i] += p.uz[i * p.H + j] * p.h0[j];
      k0[p.H + i] += p.uh[i * p.H + j] * p.h0[j];
    }
  p.k0 = k0.data();
#define RNNPOOL_CASE(GV, UV)                                                                 \
  if (gate == GV && update == UV)                                                           \
    return dispatch<T, GV, UV>(p, fam.data(), nfam, fwd, out, rows, gout, dsrc, dparams, dzn,   \
                               threads);
  RNNPOOL_CASE(GATE_SIGMOID, UPDATE_TANH)
  RNNPOOL_CASE(GATE_SIGMOID, UPDATE_HARD_TANH)
  RNNPOOL_CASE(GATE_SIGMOID, UPDATE_SIGMOID)
  RNNPOOL_CASE(GATE_HARD_SIGMOID, UPDATE_TANH)
  RNNPOOL_CASE(GATE_HARD_SIGMOID, UPDATE_HARD_TANH)
#undef RNNPOOL_CASE
  return -1;
}

}  // namespace

// The C interface (loaded with ctypes). src holds either projections without the bias
// (P, 2H; C = 0) or raw inputs (P, C) that the kernel projects with wt = W^T (C, 2H); the kernel
// adds bias (2H) to every projected row. Families f < nfam: idx[f] is (steps[f], B[f]) row
// indices into src; groups[f] holds ngroups[f] + 1 offsets (0 ... B[f]) of the runs of sweeps
// described at the top. The backward writes dsrc (P, 2H), the gradient of the projected rows
// (W and the raw inputs get theirs from it outside), and adds into dparams: dUz (H, H),
// dUh (H, H), dbias (2H). Status: 0, -1 unknown activations, -2 bad sizes, -3 bad groups.
#define RNNPOOL_API(SUFFIX, T)                                                                  \
  extern "C" int rnnpool_scan_forward_##SUFFIX(                                                 \
      const T* src, int nfam, const int64_t* const* idx, const int64_t* steps,                 \
      const int64_t* B, int64_t H, const T* uz, const T* uh, const T* uzt, const T* uht,       \
      const T* h0, const T* bias, const T* wt, int64_t C, int gate, int update, T zeta, T nu,  \
      T out_scale, T out_shift, T* out, int threads) {                                          \
    Cell<T> p{src, nullptr, 0,    0,  H,         uz,        uh,    uzt, uht, h0,                \
              bias, wt,     C,    nullptr, zeta, nu,        out_scale, out_shift, false};        \
    return run<T>(p, idx, steps, B, nullptr, nullptr, nfam, gate, update, true, out, 0,        \
                  nullptr, nullptr, nullptr, nullptr, threads);                                 \
  }                                                                                             \
  extern "C" int rnnpool_scan_backward_##SUFFIX(                                                \
      const T* src, int nfam, const int64_t* const* idx, const int64_t* steps,                 \
      const int64_t* B, int64_t H, const T* uz, const T* uh, const T* uzt, const T* uht,       \
      const T* h0, const T* bias, const T* wt, int64_t C, int gate, int update, T zeta, T nu,  \
      T out_scale, T out_shift, const int64_t* const* groups, const int64_t* ngroups,          \
      int64_t rows, const T* gout, T* dsrc, T* dparams, double* dzeta_nu, int grad_zeta_nu,    \
      int threads) {                                                                            \
    Cell<T> p{src, nullptr, 0,    0,  H,         uz,        uh,    uzt, uht, h0,                \
              bias, wt,     C,    nullptr, zeta, nu,        out_scale, out_shift,               \
              grad_zeta_nu != 0};                                                               \
    return run<T>(p, idx, steps, B, groups, ngroups, nfam, gate, update, false, nullptr, rows,  \
                  gout, dsrc, dparams, dzeta_nu, threads);                                      \
  }

RNNPOOL_API(f32, float)
RNNPOOL_API(f64, double)
