// Fused FastGRNN sweeps for RNNPool2d on the CPU (see rnnpool/nn/_native.py).
//
// Sweep b of a family reads row idx[t * B + b] of the projected inputs src (P, H) at step t and
// keeps only its running state; one call runs every sweep of one or more families, spread over
// OpenMP threads. The cell comes as written (U, b_z, b_h, zeta, nu, zero initial state), and
// FastGRNN shares one pre-activation between its gate and its update, so a step runs as
//     a = x + bias + u h,  z = gate(a),  c = update(kappa a + ubias),
//     h' = z h + (zeta (1 - z) + nu) c
// with u = U, bias = b_z, kappa = 1, ubias = b_h - b_z. The paper's cell (sigmoid, tanh,
// zeta = 1, nu = 0; sigmoid_form) runs on g = (h + 1) / 2 instead: with tanh(x) =
// 2 sigmoid(2x) - 1, g' = c + z (g - c) for c = sigmoid(2 a + ubias) and u = 2 U,
// bias = b_z - U 1, ubias = 2 (b_h - b_z), g_0 = 1/2, and the result is 2 g - 1: both
// non-linearities are sigmoids, which share one exponential (see activate_one_exp). run() makes
// these matrices and takes the gradients back to U, b_z and b_h
// (rnnpool.nn.functional._cell_matrices is the same change of variables for the torch path).
//
// Layout: sweeps run in blocks of L (one SIMD register: 8 floats or 4 doubles), one sweep per
// lane. Every per-sweep quantity is stored as (units, L), so a step is a small matrix product
// (H, H) x (H, L) of independent multiply-add chains, and the activations run on whole
// registers. Input rows are transposed into that layout as they are read (8 x 8 register
// transposes on AVX), and input gradients transposed back as they are added.
//
// Backward: a forward run for training saves every step's pre-activation a (H values a step;
// one contiguous (T, H, L) piece per block, where the steps compute it), and the backward
// recomputes the states and gates from them: activations only, no recurrent products or input
// loads (f+b 1.1-1.2x over recomputing whole steps). With the one-exponential activation the
// forward keeps exp(-a) there instead, so that the backward's activations skip the exponential
// (same values bit for bit; layer f+b 0.96-0.98x the time). Input gradients are added straight
// into dsrc; to do that without atomics the sweeps come in groups (runs of consecutive sweeps) such
// that sweeps of different groups never read the same src row, and a thread owns whole groups;
// families run one after the other. dU, dbias and dubias are accumulated per lane over a slot
// (a fixed range of groups), then summed in a fixed order, so results do not depend on the
// number of threads.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace {

using namespace rnnpool_simd;

enum Gate { GATE_SIGMOID = 0, GATE_HARD_SIGMOID = 1 };
enum Update { UPDATE_TANH = 0, UPDATE_HARD_TANH = 1, UPDATE_SIGMOID = 2 };
// What an activation reads from its first buffer: the pre-activation a (and leaves it), a
// that it replaces with what the backward recomputes from (exp(-a) for activate_one_exp, a
// itself otherwise), or that.
enum Source { FROM_PRE = 0, FROM_PRE_KEEP = 1, FROM_KEPT = 2 };

// exp for float, as 2^y with y = x log2(e) = n + f (n the nearest integer, |f| <= 1/2): a
// degree-5 polynomial for 2^f (fitted here for relative error; 1.8e-7 at most, about 1.5 ulp)
// and n added to its exponent bits. The rounding of y costs up to |x| 6e-8 of relative error:
// where that is largest (large |x|), sigmoids are saturated and their error is below 1e-8.
// One definition for a float (in loops that GCC vectorizes) and for a register of floats (the
// hand-vectorized activation); double keeps the libm exp (the reference-precision path).
inline float round_(float x) { return std::rint(x); }
inline float scale_(float p, float n) {  // p 2^n, n integral, for a normal result
  int32_t bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += (int32_t)((uint32_t)(int32_t)n << 23);  // n < 0 too: shifted as unsigned
  std::memcpy(&p, &bits, sizeof p);
  return p;
}
#if defined(__AVX2__)
inline Vec<float> round_(Vec<float> x) {
  return (Vec<float>)_mm256_round_ps((__m256)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline Vec<float> scale_(Vec<float> p, Vec<float> n) {
  const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32((__m256)n), 23);
  return (Vec<float>)_mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256((__m256)p), e));
}
#endif
template <typename V>
inline V exp_core(V x) {  // for x in [-86, 88], where the result and 2^n are normal
  const V y = x * 1.44269504088896341f;
  const V n = round_(y);
  const V f = y - n;
  V p = f * 1.3269969495013356e-3f + 9.671510197222233e-3f;
  p = p * f + 5.550715699791908e-2f;
  p = p * f + 2.4022242426872253e-1f;
  p = p * f + 6.931470036506653e-1f;
  p = p * f + 1.0f;
  return scale_(p, n);
}
inline float exp_approx(float x) { return exp_core(x < -86.0f ? -86.0f : (x > 88.0f ? 88.0f : x)); }
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
  const T* u;      // (H, H) row-major
  const T* upk;    // U in panels of 8 rows, each column-major (H / 8, H, 8); fixed H only
  const T* h0;     // (H,)
  const T* bias;   // (H,): added to every projected input row
  const T* ubl;    // (H, L): ubias, repeated over the lanes
  const T* eub;    // (H, L): exp(-s ubias) for the one-exponential activation, or null
  const T* wt;     // (C, H): the input matrix W transposed, when src holds raw inputs (C > 0)
  int64_t C;       // 0: src rows are projections (H wide); else raw inputs (C wide)
  const T* k0;     // (H,): bias + U h0, the first step's constant, shared by all sweeps
  T kappa, zeta, nu;
  T out_scale, out_shift;  // the result is out_scale h_T + out_shift
  bool grad_zeta_nu;
  int64_t skip_row;  // a src row whose gradient is not wanted (shared padding), or -1
};

// Largest hidden size; sizes 8, 16 and 32 are compiled with a fixed H (HC), others at run time.
constexpr int kMaxH = 512;

// Rows read at step t by the block of n <= L sweeps starting at b0, as pointers into base
// (rows of `width`). Idle lanes repeat the block's first sweep, so that every lane reads valid
// memory; their results are dropped.
template <typename T, typename P>
inline void row_pointers(const Cell<T>& p, int64_t t, int64_t b0, int n, P* base, int64_t width,
                         P** rows) {
  const int64_t* ix = p.idx + t * p.B + b0;
  for (int l = 0; l < kLanes<T>; ++l) rows[l] = base + ix[l < n ? l : 0] * width;
}


// x[c] (lane l) = rows[l][c0 + c] for c < NC: 4 or 8 floats of each of 8 rows, loaded whole
// and transposed in registers (element by element, it takes 4 to 8 times the instructions).
template <int NC>
inline void gather_lanes(const float* const* rows, int64_t c0, Vec<float>* x) {
#if defined(__AVX__)
  if constexpr (NC == 8) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(rows[l] + c0);
    transpose8(r);
    for (int c = 0; c < 8; ++c) x[c] = (Vec<float>)r[c];
  } else {
    __m256 r[4];  // r[l] = (lane l, lane l + 4), 4 channels each
    for (int l = 0; l < 4; ++l)
      r[l] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows[l] + c0)),
                                  _mm_loadu_ps(rows[l + 4] + c0), 1);
    transpose4x2(r);
    for (int c = 0; c < 4; ++c) x[c] = (Vec<float>)r[c];
  }
#else
  for (int c = 0; c < NC; ++c) {
    float v[8];
    for (int l = 0; l < 8; ++l) v[l] = rows[l][c0 + c];
    x[c] = load(v);
  }
#endif
}

// a (H, L) = (add, or a when add is null) + W[:, c0:c0+NC] x[c0:c0+NC] for the raw rows of a
// step: the NC input channels of the L lanes stay in registers.
template <typename T, int HC, int NC>
inline void project(const Cell<T>& p, const T* const* rows, int64_t c0, const T* add, T* a) {
  constexpr int L = kLanes<T>;
  const int H = HC ? HC : (int)p.H;
  Vec<T> x[NC];
  if constexpr (sizeof(T) == 4 && (NC == 4 || NC == 8)) {
    gather_lanes<NC>(rows, c0, x);
  } else {
    for (int c = 0; c < NC; ++c) {
      T v[L];
      for (int l = 0; l < L; ++l) v[l] = rows[l][c0 + c];
      x[c] = load(v);
    }
  }
  const T* w = p.wt + c0 * H;
  for (int i = 0; i < H; ++i) {
    Vec<T> acc = add ? Vec<T>{} + add[i] : load(a + i * L);
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) acc += w[c * H + i] * x[c];
    store(a + i * L, acc);
  }
}

// a (H, L) = add + the projected input rows of one step.
template <typename T, int HC>
inline void load_inputs(const Cell<T>& p, const T* const* rows, const T* add, T* a) {
  constexpr int L = kLanes<T>;
  const int H = HC ? HC : (int)p.H;
  if (p.C == 0) {
    int i0 = 0;
#if defined(__AVX__)
    if constexpr (sizeof(T) == 4) {
      for (; i0 + 8 <= H; i0 += 8) {
        __m256 r[8];
        for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps((const float*)rows[l] + i0);
        transpose8(r);
        for (int k = 0; k < 8; ++k)
          _mm256_storeu_ps((float*)a + (i0 + k) * 8,
                           _mm256_add_ps(r[k], _mm256_set1_ps(add[i0 + k])));
      }
    }
#endif
    for (int i = i0; i < H; ++i)  // what the transposes left (all of it without AVX)
      for (int l = 0; l < L; ++l) a[i * L + l] = rows[l][i] + add[i];
    return;
  }
  // Raw input rows: a = add + W x, in chunks of up to 8 channels.
  for (int64_t c0 = 0; c0 < p.C; c0 += 8) {
    const T* add_c = c0 ? nullptr : add;
    switch (p.C - c0 < 8 ? p.C - c0 : 8) {
      case 1: project<T, HC, 1>(p, rows, c0, add_c, a); break;
      case 2: project<T, HC, 2>(p, rows, c0, add_c, a); break;
      case 3: project<T, HC, 3>(p, rows, c0, add_c, a); break;
      case 4: project<T, HC, 4>(p, rows, c0, add_c, a); break;
      case 5: project<T, HC, 5>(p, rows, c0, add_c, a); break;
      case 6: project<T, HC, 6>(p, rows, c0, add_c, a); break;
      case 7: project<T, HC, 7>(p, rows, c0, add_c, a); break;
      default: project<T, HC, 8>(p, rows, c0, add_c, a); break;
    }
  }
}

// a (H, L) += U h for h (H, L). Fixed H: tiles of 8 output rows stay in registers and read
// their 8 weights of column j from one place (p.upk).
template <typename T, int HC>
inline void recurrent(const Cell<T>& p, const T* h, T* a) {
  constexpr int L = kLanes<T>, IT = 8;
  if constexpr (HC > 0) {
    static_assert(HC % IT == 0, "fixed hidden sizes are multiples of 8");
    for (int q = 0; q < HC / IT; ++q) {
      T* aq = a + q * IT * L;
      const T* u = p.upk + q * HC * IT;
      Vec<T> acc[IT];
      for (int ii = 0; ii < IT; ++ii) acc[ii] = load(aq + ii * L);
      for (int j = 0; j < HC; ++j) {
        const Vec<T> hj = load(h + j * L);
#pragma GCC unroll 8
        for (int ii = 0; ii < IT; ++ii) acc[ii] += u[j * IT + ii] * hj;
      }
      for (int ii = 0; ii < IT; ++ii) store(aq + ii * L, acc[ii]);
    }
  } else {
    const int H = (int)p.H;
    for (int i = 0; i < H; ++i) {
      Vec<T> acc = load(a + i * L);
      for (int j = 0; j < H; ++j) acc += p.u[i * H + j] * load(h + j * L);
      store(a + i * L, acc);
    }
  }
}

// One exponential per unit (float, sigmoid gate): with E = exp(-a), the update's sigmoid
// argument s (kappa a + ubias) (s = 2 for tanh = 2 sigmoid(2x) - 1, else 1; s kappa = 2) has
// exp(-..) = E^2 exp(-s ubias). run() enables this only for |s ubias| <= 20, and a is clamped to
// [-30, 30]: E^2 exp(-s ubias) stays finite, and where the clamp acts the gate and the update
// are both within e^-30 of their limits, as are the true values. Plain: zeta = 1, nu = 0 (the
// paper's cell), where h' = c + z (h - c). S (a Source): FROM_PRE_KEEP stores E over a,
// FROM_KEPT reads E from there.
template <typename T, int U, bool Plain, int S>
inline void activate_one_exp(const Cell<T>& p, int n, T* a, const T* h, T* z, T* c,
                             T* h_new) {
  const T zeta = p.zeta, nu = p.nu;
  const T* eu = p.eub;
  int k0 = 0;
#if defined(__AVX2__)
  // By hand: GCC's vectorization of the loop below divides (vdivps, several cycles a register)
  // and clamps with compares and blends; here 1 / x is a reciprocal estimate with one Newton
  // step (relative error below 2^-22 for the finite, >= 1 denominators here) and the clamp is
  // max/min, in the operand order that returns a NaN input unchanged.
  if constexpr (sizeof(T) == 4) {
    using V = Vec<float>;
    const __m256 lo = _mm256_set1_ps(-30.0f), hi = _mm256_set1_ps(30.0f);
    auto reciprocal = [](V d) {
      const V r = (V)_mm256_rcp_ps((__m256)d);
      return r * (2.0f - d * r);
    };
    // Four registers at a time, stage by stage: their dependency chains (about 60 cycles each)
    // then sit side by side in the out-of-order window (forward kernel 1.07-1.26x with one
    // thread per core). The same steps one register at a time follow, for what is left
    // (generic hidden sizes; one lambda for both loops measured up to 1.2x slower on Face-M4).
    constexpr int R = 4;
    for (; k0 + 8 * R <= n; k0 += 8 * R) {
      V e[R], zk[R], su[R];
      if constexpr (S == FROM_KEPT) {
        for (int r = 0; r < R; ++r) e[r] = load(a + k0 + 8 * r);
      } else {
        for (int r = 0; r < R; ++r)
          e[r] = -(V)_mm256_min_ps(hi, _mm256_max_ps(lo, (__m256)load(a + k0 + 8 * r)));
        for (int r = 0; r < R; ++r) e[r] = exp_core(e[r]);
        if constexpr (S == FROM_PRE_KEEP)
          for (int r = 0; r < R; ++r) store(a + k0 + 8 * r, e[r]);
      }
      for (int r = 0; r < R; ++r) {
        zk[r] = 1.0f + e[r];
        su[r] = 1.0f + e[r] * e[r] * load(eu + k0 + 8 * r);
      }
      for (int r = 0; r < R; ++r) {
        zk[r] = reciprocal(zk[r]);
        su[r] = reciprocal(su[r]);
      }
      for (int r = 0; r < R; ++r) {
        const V ck = U == UPDATE_SIGMOID ? su[r] : 2.0f * su[r] - 1.0f;
        const V hk = load(h + k0 + 8 * r);
        store(z + k0 + 8 * r, zk[r]);
        store(c + k0 + 8 * r, ck);
        store(h_new + k0 + 8 * r,
              Plain ? ck + zk[r] * (hk - ck) : zk[r] * hk + (zeta * (1.0f - zk[r]) + nu) * ck);
      }
    }
    for (; k0 + 8 <= n; k0 += 8) {
      V e;
      if constexpr (S == FROM_KEPT) {
        e = load(a + k0);
      } else {
        e = exp_core(-(V)_mm256_min_ps(hi, _mm256_max_ps(lo, (__m256)load(a + k0))));
        if constexpr (S == FROM_PRE_KEEP) store(a + k0, e);
      }
      const V zk = reciprocal(1.0f + e);
      const V su = reciprocal(1.0f + e * e * load(eu + k0));
      const V ck = U == UPDATE_SIGMOID ? su : 2.0f * su - 1.0f;
      const V hk = load(h + k0);
      store(z + k0, zk);
      store(c + k0, ck);
      store(h_new + k0, Plain ? ck + zk * (hk - ck) : zk * hk + (zeta * (1.0f - zk) + nu) * ck);
    }
  }
#endif
#pragma omp simd
  for (int k = k0; k < n; ++k) {
    const T ak = a[k] < T(-30) ? T(-30) : (a[k] > T(30) ? T(30) : a[k]);
    const T e = S == FROM_KEPT ? a[k] : exp_core(-ak);
    if (S == FROM_PRE_KEEP) a[k] = e;
    const T zk = T(1) / (T(1) + e);
    const T su = T(1) / (T(1) + e * e * eu[k]);
    const T ck = U == UPDATE_SIGMOID ? su : T(2) * su - T(1);
    z[k] = zk;
    c[k] = ck;
    h_new[k] = Plain ? ck + zk * (h[k] - ck) : zk * h[k] + (zeta * (T(1) - zk) + nu) * ck;
  }
}

// z = gate(a), c = update(kappa a + ubias), h_new = z h + (zeta (1 - z) + nu) c, all (H, L).
template <typename T, int HC, int G, int U, int S = FROM_PRE>
inline void activate(const Cell<T>& p, T* a, const T* h, T* z, T* c, T* h_new) {
  constexpr int L = kLanes<T>;
  const int n = (HC ? HC : (int)p.H) * L;
  const T kappa = p.kappa, zeta = p.zeta, nu = p.nu;
  if constexpr (sizeof(T) == 4 && G == GATE_SIGMOID && (U == UPDATE_SIGMOID || U == UPDATE_TANH)) {
    if (p.eub) {
      if (zeta == T(1) && nu == T(0))
        activate_one_exp<T, U, true, S>(p, n, a, h, z, c, h_new);
      else
        activate_one_exp<T, U, false, S>(p, n, a, h, z, c, h_new);
      return;
    }
  }
  const T* ub = p.ubl;
#pragma omp simd
  for (int k = 0; k < n; ++k) {
    const T zk = gate_fn<T, G>(a[k]), ck = update_fn<T, U>(kappa * a[k] + ub[k]);
    z[k] = zk;
    c[k] = ck;
    h_new[k] = zk * h[k] + (zeta * (T(1) - zk) + nu) * ck;
  }
}

template <typename T, int HC>
inline void init_state(const Cell<T>& p, T* h) {
  constexpr int L = kLanes<T>;
  const int H = HC ? HC : (int)p.H;
  for (int i = 0; i < H; ++i)
    for (int l = 0; l < L; ++l) h[i * L + l] = p.h0[i];
}

// One step of a block: a, z, c scratch (H by L each), h -> h_new. Save: a is kept for the
// backward, which recomputes from it (see activate).
template <typename T, int HC, int G, int U, bool Save>
inline void step(const Cell<T>& p, int64_t t, int64_t b0, int n, const T* h, T* a, T* z, T* c,
                 T* h_new) {
  constexpr int L = kLanes<T>;
  const T* rows[L];
  const int64_t width = p.C ? p.C : p.H;
  row_pointers(p, t, b0, n, p.src, width, rows);
  // The rows of step t + 1 (their indices were fetched a step ago) and the indices of t + 2.
  if (t + 1 < p.steps) {
    const T* next[L];
    row_pointers(p, t + 1, b0, n, p.src, width, next);
    for (int l = 0; l < L; ++l) __builtin_prefetch(next[l]);
    if (t + 2 < p.steps) __builtin_prefetch(p.idx + (t + 2) * p.B + b0);
  }
  load_inputs<T, HC>(p, rows, t == 0 ? p.k0 : p.bias, a);
  if (t > 0) recurrent<T, HC>(p, h, a);  // at t = 0, h = h0 and U h0 is in k0
  activate<T, HC, G, U, Save ? FROM_PRE_KEEP : FROM_PRE>(p, a, h, z, c, h_new);
}

// Forward of the n <= L sweeps starting at b0; work holds 4 H L values. Save: pre receives
// every step's pre-activation a (or what activate keeps of it), (steps, H, L), idle lanes
// included. (A template argument: a pointer chosen at run time made the forward without saving
// 4-19 % slower.)
template <typename T, int HC, int G, int U, bool Save>
void forward_block(const Cell<T>& p, int64_t b0, int n, T* out, T* work, T* pre) {
  constexpr int L = kLanes<T>;
  const int H = HC ? HC : (int)p.H;
  T* h = work;
  T* a = h + H * L;
  T* z = a + H * L;
  T* c = z + H * L;
  init_state<T, HC>(p, h);
  for (int64_t t = 0; t < p.steps; ++t)
    step<T, HC, G, U, Save>(p, t, b0, n, h, Save ? pre + t * H * L : a, z, c, h);
  const T s = p.out_scale, b = p.out_shift;
  for (int l = 0; l < n; ++l)
    for (int i = 0; i < H; ++i) out[(b0 + l) * H + i] = s * h[i * L + l] + b;
}

// Per-thread sums over one slot, per lane: dU (H x H) from steps t >= 1, dbias (H), dubias (H),
// the first steps' da (H; dU gets h0 da_0^T from it once, as h0 is the same for every sweep),
// dzeta, dnu.
constexpr int64_t kSlotSums = 3;  // H-long sums after dU: dbias, dubias, da_0
template <typename T>
inline int64_t lane_acc_size(int64_t H) { return (H * H + kSlotSums * H + 2) * kLanes<T>; }

// Work of backward_block, in H L units: hs (T + 1), zs (T), cs (T), da (T), g, gn.
inline int64_t backward_work(int64_t steps) { return 4 * steps + 3; }

// dsrc rows of the block's lanes += the columns of da (H, L); lanes whose row is null skip.
template <typename T, int HC>
inline void scatter_add(const Cell<T>& p, T* const* rows, const T* da) {
  constexpr int L = kLanes<T>;
  const int H = HC ? HC : (int)p.H;
  int i0 = 0;
#if defined(__AVX__)
  if constexpr (sizeof(T) == 4) {
    for (; i0 + 8 <= H; i0 += 8) {
      __m256 r[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps((const float*)da + (i0 + k) * 8);
      transpose8(r);
      for (int l = 0; l < L; ++l) {
        if (!rows[l]) continue;
        float* d = (float*)rows[l] + i0;
        _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), r[l]));
      }
    }
  }
#endif
  for (int l = 0; l < L; ++l)
    if (rows[l])
      for (int i = i0; i < H; ++i) rows[l][i] += da[i * L + l];
}

// Backward of the n <= L sweeps starting at b0: adds into dsrc and the lane sums acc. pre:
// what forward_block saved for the same sweeps.
template <typename T, int HC, int G, int U>
void backward_block(const Cell<T>& p, int64_t b0, int n, const T* gout, T* dsrc, T* acc,
                    T* work, const T* pre) {
  constexpr int L = kLanes<T>;
  const int H = HC ? HC : (int)p.H;
  const int64_t HL = (int64_t)H * L, TT = p.steps;
  T* hs = work;
  T* zs = hs + (TT + 1) * HL;
  T* cs = zs + TT * HL;
  T* da = cs + TT * HL;
  T* g = da + TT * HL;
  T* gn = g + HL;
  T* du = acc;
  T* db = acc + (int64_t)H * HL;
  T* dub = db + HL;
  T* d0 = dub + HL;
  T* zn = d0 + HL;
  // The rows of dsrc this block adds into (cold: zeroed at the start, touched by other blocks
  // since) are fetched while its states are recomputed (when those were recomputed from the
  // inputs: backward 1.07-1.15x at 2 threads for Face-M4, MobileNetV2 and VWW).
  for (int64_t t = 0; t < TT; ++t) {
    T* rows[L];
    row_pointers(p, t, b0, n, dsrc, H, rows);
    for (int l = 0; l < L; ++l)
      for (int64_t i = 0; i < H; i += 64 / (int64_t)sizeof(T))  // each 64-byte line
        __builtin_prefetch(rows[l] + i, 1);
    if (b0 + 2 * L <= p.B) __builtin_prefetch(p.idx + t * p.B + b0 + L);  // the next block's
  }
  // The states and gates again, from the saved pre-activations (no recurrent products).
  init_state<T, HC>(p, hs);
  for (int64_t t = 0; t < TT; ++t)
    activate<T, HC, G, U, FROM_KEPT>(p, const_cast<T*>(pre) + t * HL, hs + t * HL, zs + t * HL,
                                     cs + t * HL, hs + (t + 1) * HL);
  for (int i = 0; i < H; ++i)
    for (int l = 0; l < L; ++l) g[i * L + l] = l < n ? p.out_scale * gout[(b0 + l) * H + i] : T(0);
  const T kappa = p.kappa, zeta = p.zeta, nu = p.nu;
  Vec<T> dzeta{}, dnu{};
  for (int64_t t = TT - 1; t >= 0; --t) {
    const T* hp = hs + t * HL;
    const T* z = zs + t * HL;
    const T* c = cs + t * HL;
    T* __restrict dat = da + t * HL;
    T* __restrict dubt = dub;
    T* __restrict dbt = db;
#pragma omp simd
    for (int64_t k = 0; k < HL; ++k) {
      const T gk = g[k];
      const T daz = gk * (hp[k] - zeta * c[k]) * gate_grad<T, G>(z[k]);
      const T dah = gk * (zeta * (T(1) - z[k]) + nu) * update_grad<T, U>(c[k]);
      dat[k] = daz + kappa * dah;  // the shared pre-activation's gradient
      dubt[k] += dah;
      dbt[k] += dat[k];
      gn[k] = gk * z[k];
    }
    if (p.grad_zeta_nu)
      for (int64_t k = 0; k < HL; k += L) {
        const Vec<T> gk = load(g + k), ck = load(c + k);
        dzeta += gk * (T(1) - load(z + k)) * ck;
        dnu += gk * ck;
      }
    T* rows[L];
    row_pointers(p, t, b0, n, dsrc, H, rows);
    const int64_t* ix = p.idx + t * p.B + b0;
    for (int l = 0; l < L; ++l)
      if (l >= n || ix[l] == p.skip_row) rows[l] = nullptr;
    scatter_add<T, HC>(p, rows, dat);
    if (t == 0) break;  // h_prev = h0 is constant: no gradient flows further
    // g = gn + U^T da, the previous state's gradient: tiles of 8 state rows in registers.
    constexpr int JT = 8;
    if constexpr (HC > 0) {
      for (int j0 = 0; j0 < HC; j0 += JT) {
        Vec<T> s[JT];
        for (int jj = 0; jj < JT; ++jj) s[jj] = load(gn + (j0 + jj) * L);
        for (int k = 0; k < HC; ++k) {
          const Vec<T> dk = load(dat + k * L);
          const T* u = p.u + k * HC + j0;
#pragma GCC unroll 8
          for (int jj = 0; jj < JT; ++jj) s[jj] += u[jj] * dk;
        }
        for (int jj = 0; jj < JT; ++jj) store(g + (j0 + jj) * L, s[jj]);
      }
    } else {
      for (int j = 0; j < H; ++j) {
        Vec<T> s = load(gn + j * L);
        for (int k = 0; k < H; ++k) s += p.u[k * H + j] * load(dat + k * L);
        store(g + j * L, s);
      }
    }
  }
  // Lane sums: dU[i][j] += sum_{t >= 1} da_t[i] h_{t-1}[j] (step 0 is in d0).
  lane_outer_sums(da + HL, HL, hs + HL, HL, TT - 1, H, H, du);
  for (int64_t k = 0; k < HL; k += L) store(d0 + k, load(d0 + k) + load(da + k));
  store(zn, load(zn) + dzeta);
  store(zn + L, load(zn + L) + dnu);
}

// A family of sweeps: B sweeps of `steps` steps; sweep b reads row idx[t * B + b] at step t.
struct Family {
  const int64_t* idx;
  int64_t steps, B;
  const int64_t* groups;  // ngroups + 1 offsets: group g is sweeps [groups[g], groups[g + 1])
  int64_t ngroups;
  int64_t pre_offset;       // where its blocks' saved pre-activations start
  const int64_t* slot_blk;  // slots + 1 offsets: the blocks before each slot
};

// The backward runs a family's groups in slots (a fixed range of groups each; at most kSlots),
// and each slot in blocks of L sweeps from its first; a forward that saves pre-activations for
// it runs the same blocks, so that each block's are one contiguous (steps, H, L) piece.
constexpr int64_t kSlots = 64;
inline int64_t slot_count(const Family& f) { return f.ngroups < kSlots ? f.ngroups : kSlots; }
inline int64_t slot_start(const Family& f, int64_t sl) {
  return f.groups[sl * f.ngroups / slot_count(f)];
}

// fn(b0, n, piece) for each block of slot sl (n <= L sweeps from b0), with piece the block's
// saved pre-activations in pre: the one walk that both the saving forward and the backward use.
template <typename T, typename P, typename F>
inline void for_slot_blocks(const Family& f, int64_t sl, int64_t H, P* pre, F fn) {
  constexpr int L = kLanes<T>;
  const int64_t s1 = slot_start(f, sl + 1), size = f.steps * H * L;
  P* piece = pre + f.pre_offset + f.slot_blk[sl] * size;
  for (int64_t b0 = slot_start(f, sl); b0 < s1; b0 += L, piece += size)
    fn(b0, s1 - b0 < L ? (int)(s1 - b0) : L, piece);
}

template <typename T>
inline Cell<T> for_family(const Cell<T>& p, const Family& f) {
  Cell<T> q = p;
  q.idx = f.idx;
  q.steps = f.steps;
  q.B = f.B;
  return q;
}

// Forward of every family; out holds the families' (B, H) results one after the other.
template <typename T, int HC, int G, int U>
void forward_all(const Cell<T>& p, const Family* fam, int nfam, T* out, T* pre, int threads) {
  constexpr int L = kLanes<T>;
  const int64_t H = p.H;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> work(4 * H * L);
    T* o = out;
    for (int f = 0; f < nfam; ++f) {
      const Cell<T> q = for_family(p, fam[f]);
      if (pre) {  // the backward's blocks (see Family)
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t sl = 0; sl < slot_count(fam[f]); ++sl)
          for_slot_blocks<T>(fam[f], sl, H, pre, [&](int64_t b0, int n, T* piece) {
            forward_block<T, HC, G, U, true>(q, b0, n, o, work.data(), piece);
          });
      } else {
        const int64_t nblk = (q.B + L - 1) / L;
#pragma omp for schedule(dynamic, 8) nowait
        for (int64_t blk = 0; blk < nblk; ++blk) {
          const int64_t b0 = blk * L;
          const int n = q.B - b0 < L ? (int)(q.B - b0) : L;
          forward_block<T, HC, G, U, false>(q, b0, n, o, work.data(), nullptr);
        }
      }
      o += q.B * H;
    }
  }
}

// Backward of every family into one dsrc (P rows of H, zeroed here by the threads that
// then write it). Families run one after the other; within a family, groups in parallel.
// The parameter gradients are summed per slot (a fixed range of groups) and the slots in
// order, so the result does not depend on the number of threads or on scheduling.
template <typename T, int HC, int G, int U>
void backward_all(const Cell<T>& p, const Family* fam, int nfam, int64_t rows, const T* gout,
                  T* dsrc, T* dparams, double* dzn, const T* pre, int threads) {
  constexpr int L = kLanes<T>;
  const int64_t H = p.H, SZ = H * H + kSlotSums * H, AZ = lane_acc_size<T>(H);
  int64_t max_steps = 0;
  for (int f = 0; f < nfam; ++f) max_steps = fam[f].steps > max_steps ? fam[f].steps : max_steps;
  std::vector<T> slots(kSlots * SZ, T(0));
  std::vector<double> slot_zn(kSlots * 2, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int64_t chunk = 4096;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r += chunk)
      std::memset(dsrc + r * H, 0, sizeof(T) * H * (rows - r < chunk ? rows - r : chunk));
    std::vector<T> work(backward_work(max_steps) * H * L);
    std::vector<T> acc(AZ);
    const T* g = gout;
    for (int f = 0; f < nfam; ++f) {
      const Cell<T> q = for_family(p, fam[f]);
      const Family& fm = fam[f];
#pragma omp for schedule(dynamic, 1)
      for (int64_t sl = 0; sl < slot_count(fm); ++sl) {
        std::fill(acc.begin(), acc.end(), T(0));
        // The slot's groups are this thread's alone, so a block may span groups: only the
        // slot's last block can have idle lanes (blocks of one group each left 4 of 32 lanes
        // idle in MobileNetV2's and VWW's row segments).
        for_slot_blocks<T>(fm, sl, H, pre, [&](int64_t b0, int n, const T* piece) {
          backward_block<T, HC, G, U>(q, b0, n, g, dsrc, acc.data(), work.data(), piece);
        });
        T* slot = slots.data() + sl * SZ;  // lanes summed in order
        for (int64_t k = 0; k < SZ; ++k) {
          T s = T(0);
          for (int l = 0; l < L; ++l) s += acc[k * L + l];
          slot[k] += s;
        }
        for (int v = 0; v < 2; ++v) {
          double s = 0.0;
          for (int l = 0; l < L; ++l) s += (double)acc[(SZ + v) * L + l];
          slot_zn[2 * sl + v] += s;
        }
      }  // implicit barrier: the next family may read the same rows
      g += q.B * H;
    }
  }
  std::vector<T> sums(SZ, T(0));
  for (int64_t sl = 0; sl < kSlots; ++sl) {
    for (int64_t k = 0; k < SZ; ++k) sums[k] += slots[sl * SZ + k];
    dzn[0] += slot_zn[2 * sl];
    dzn[1] += slot_zn[2 * sl + 1];
  }
  const T* d0 = sums.data() + H * H + 2 * H;
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < H; ++j) sums[i * H + j] += d0[i] * p.h0[j];
  for (int64_t k = 0; k < H * H + 2 * H; ++k) dparams[k] += sums[k];
}

template <typename T, int G, int U>
int dispatch(const Cell<T>& p, const Family* fam, int nfam, bool fwd, T* out, int64_t rows,
             const T* gout, T* dsrc, T* dparams, double* dzn, T* pre, int threads) {
#define RNNPOOL_RUN(HC)                                                                      \
  do {                                                                                       \
    if (fwd)                                                                                 \
      forward_all<T, HC, G, U>(p, fam, nfam, out, pre, threads);                             \
    else                                                                                     \
      backward_all<T, HC, G, U>(p, fam, nfam, rows, gout, dsrc, dparams, dzn, pre, threads); \
    return 0;                                                                                \
  } while (0)
  switch (p.H) {
    case 8: RNNPOOL_RUN(8);
    case 16: RNNPOOL_RUN(16);
    case 32: RNNPOOL_RUN(32);
    default: RNNPOOL_RUN(0);
  }
#undef RNNPOOL_RUN
}

// The families of a call, checked (status -2 bad sizes, -3 bad groups; groups may be null when
// only the forward runs, unsaved). With groups, blk receives each family's slot_blk, and
// *saved the size of all their blocks' pre-activations (H units).
template <typename T>
int make_families(const int64_t* const* idx, const int64_t* steps, const int64_t* B,
                  const int64_t* const* groups, const int64_t* ngroups, int nfam, int64_t H,
                  std::vector<Family>& fam, std::vector<std::vector<int64_t>>& blk,
                  int64_t* saved) {
  constexpr int L = kLanes<T>;
  if (H <= 0 || H > kMaxH || nfam <= 0) return -2;
  fam.assign(nfam, Family{});
  blk.assign(nfam, {});
  *saved = 0;
  for (int f = 0; f < nfam; ++f) {
    if (steps[f] <= 0 || B[f] < 0) return -2;
    fam[f] = Family{idx ? idx[f] : nullptr, steps[f], B[f], nullptr, 0, 0, nullptr};
    if (!groups) continue;
    const int64_t* g = groups[f];
    if (ngroups[f] < 0 || g[0] != 0 || g[ngroups[f]] != B[f]) return -3;
    for (int64_t k = 0; k < ngroups[f]; ++k)
      if (g[k + 1] < g[k]) return -3;
    fam[f].groups = g;
    fam[f].ngroups = ngroups[f];
    const int64_t nslot = slot_count(fam[f]);
    blk[f].assign(nslot + 1, 0);
    for (int64_t sl = 0; sl < nslot; ++sl) {
      const int64_t sweeps = slot_start(fam[f], sl + 1) - slot_start(fam[f], sl);
      blk[f][sl + 1] = blk[f][sl] + (sweeps + L - 1) / L;
    }
    fam[f].slot_blk = blk[f].data();
    fam[f].pre_offset = *saved;
    *saved += blk[f][nslot] * steps[f] * H * L;
  }
  return 0;
}

// p.u is the cell's U, as written; see the top for what runs.
template <typename T>
int run(Cell<T> p, const T* bias_gate, const T* bias_update, bool sigmoid_form,
        const int64_t* const* idx, const int64_t* steps, const int64_t* B,
        const int64_t* const* groups, const int64_t* ngroups, int nfam, int gate, int update,
        bool fwd, T* out, int64_t rows, const T* gout, T* dsrc, T* dparams, double* dzn, T* pre,
        int threads) {
  constexpr int L = kLanes<T>;
  const bool slotted = !fwd || pre;  // runs the backward's blocks: needs the groups
  if (p.C < 0 || threads <= 0 || (slotted && !groups)) return -2;
  if (sigmoid_form && (gate != GATE_SIGMOID || update != UPDATE_TANH)) return -1;
  std::vector<Family> fam;
  std::vector<std::vector<int64_t>> blk;
  int64_t saved = 0;
  const int rc = make_families<T>(idx, steps, B, slotted ? groups : nullptr, ngroups, nfam,
                                  p.H, fam, blk, &saved);
  if (rc) return rc;
  if (!fwd && !pre && saved > 0) return -2;  // (an empty tensor's data may be null)
  const int64_t H = p.H;
  // The matrices the sweeps run (see the top).
  const T* U = p.u;
  const T s2 = sigmoid_form ? T(2) : T(1);
  std::vector<T> u(H * H), bias(H), ubias(H), h0(H, sigmoid_form ? T(0.5) : T(0));
  for (int64_t i = 0; i < H; ++i) {
    double row_sum = 0.0;
    for (int64_t j = 0; j < H; ++j) {
      u[i * H + j] = s2 * U[i * H + j];
      row_sum += U[i * H + j];
    }
    bias[i] = sigmoid_form ? (T)(bias_gate[i] - row_sum) : bias_gate[i];
    ubias[i] = s2 * (bias_update[i] - bias_gate[i]);
  }
  p.u = u.data();
  p.bias = bias.data();
  p.h0 = h0.data();
  p.kappa = s2;
  p.out_scale = s2;
  p.out_shift = sigmoid_form ? T(-1) : T(0);
  if (sigmoid_form) {
    p.zeta = T(1), p.nu = T(0);
    update = UPDATE_SIGMOID;
  }
  auto over_lanes = [&](auto unit_value) {  // (H, L): a value per unit, repeated over the lanes
    std::vector<T> v(H * L);
    for (int64_t i = 0; i < H; ++i)
      for (int l = 0; l < L; ++l) v[i * L + l] = unit_value(i);
    return v;
  };
  std::vector<T> upk(H * H), k0(p.bias, p.bias + H);
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < H; ++j) k0[i] += p.u[i * H + j] * p.h0[j];
  p.k0 = k0.data();
  if (H % 8 == 0)
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < H; ++j) upk[((i / 8) * H + j) * 8 + i % 8] = p.u[i * H + j];
  p.upk = upk.data();
  const std::vector<T> ubl = over_lanes([&](int64_t i) { return ubias[i]; });
  p.ubl = ubl.data();
  // The one-exponential activation (see activate): float, sigmoid gate, s kappa = 2.
  const T s = update == UPDATE_TANH ? T(2) : T(1);
  bool one_exp = sizeof(T) == 4 && gate == GATE_SIGMOID &&
                 (update == UPDATE_TANH || update == UPDATE_SIGMOID) && s * p.kappa == T(2);
  for (int64_t i = 0; i < H; ++i) one_exp = one_exp && std::fabs(s * ubias[i]) <= T(20);
  const std::vector<T> eub =
      one_exp ? over_lanes([&](int64_t i) { return std::exp(-s * ubias[i]); }) : std::vector<T>();
  p.eub = one_exp ? eub.data() : nullptr;
  // The backward's gradients of u, bias and ubias, taken back to U, b_z and b_h below.
  std::vector<T> d(fwd ? 0 : H * H + 2 * H, T(0));
  int status = -1;
#define RNNPOOL_CASE(GV, UV)                                                                 \
  if (gate == GV && update == UV)                                                           \
    status = dispatch<T, GV, UV>(p, fam.data(), nfam, fwd, out, rows, gout, dsrc, d.data(),  \
                                 dzn, pre, threads);
  RNNPOOL_CASE(GATE_SIGMOID, UPDATE_TANH)
  RNNPOOL_CASE(GATE_SIGMOID, UPDATE_HARD_TANH)
  RNNPOOL_CASE(GATE_SIGMOID, UPDATE_SIGMOID)
  RNNPOOL_CASE(GATE_HARD_SIGMOID, UPDATE_TANH)
  RNNPOOL_CASE(GATE_HARD_SIGMOID, UPDATE_HARD_TANH)
#undef RNNPOOL_CASE
  if (status == 0 && !fwd) {
    const T* du = d.data();
    const T* db = du + H * H;
    const T* dub = db + H;
    for (int64_t i = 0; i < H; ++i) {
      for (int64_t j = 0; j < H; ++j)  // (d bias / d U = -1 along the row in the sigmoid form)
        dparams[i * H + j] += s2 * du[i * H + j] - (sigmoid_form ? db[i] : T(0));
      dparams[H * H + i] += db[i] - s2 * dub[i];
      dparams[H * H + H + i] += s2 * dub[i];
    }
  }
  return status;
}

}  // namespace

// The C interface (loaded with ctypes). src holds either projections without the bias
// (P, H; C = 0) or raw inputs (P, C) that the kernel projects with wt = W^T (C, H). The cell:
// u = U (H, H), bias_gate b_z and bias_update b_h (H), zeta, nu, and sigmoid_form for the
// paper's cell (see the top). Families f < nfam: idx[f] is (steps[f], B[f]) row
// indices into src; groups[f] holds ngroups[f] + 1 offsets (0 ... B[f]) of the runs of sweeps
// described at the top. The backward writes dsrc (P, H), the gradient of the projected rows
// (W and the raw inputs get theirs from it outside), and adds into dparams: dU (H, H),
// db_z (H), db_h (H). Sweeps of any group may read row skip_row (a shared padding row, or -1
// for none): its gradient is left at zero. A forward for training gets the groups and pre, of
// rnnpool_scan_saved_size elements, and saves the pre-activations there; the backward needs
// them (pre) and the same groups. A forward for inference passes null groups and pre. Status:
// 0, -1 unknown activations, -2 bad sizes, -3 bad groups.
#define RNNPOOL_API(SUFFIX, T)                                                                  \
  extern "C" int rnnpool_scan_forward_##SUFFIX(                                                 \
      const T* src, int nfam, const int64_t* const* idx, const int64_t* steps,                 \
      const int64_t* B, int64_t H, const T* u, const T* bias_gate, const T* bias_update,       \
      const T* wt, int64_t C, int gate, int update, int sigmoid_form, T zeta, T nu,            \
      const int64_t* const* groups, const int64_t* ngroups, T* out, T* pre, int threads) {     \
    Cell<T> p{src, nullptr, 0, 0, H, u, nullptr, nullptr, nullptr, nullptr, nullptr, wt, C,    \
              nullptr, T(1), zeta, nu, T(1), T(0), false, -1};                                 \
    return run<T>(p, bias_gate, bias_update, sigmoid_form != 0, idx, steps, B, groups, ngroups, \
                  nfam, gate, update, true, out, 0, nullptr, nullptr, nullptr, nullptr, pre,   \
                  threads);                                                                     \
  }                                                                                             \
  extern "C" int rnnpool_scan_backward_##SUFFIX(                                                \
      const T* src, int nfam, const int64_t* const* idx, const int64_t* steps,                 \
      const int64_t* B, int64_t H, const T* u, const T* bias_gate, const T* bias_update,       \
      const T* wt, int64_t C, int gate, int update, int sigmoid_form, T zeta, T nu,            \
      const int64_t* const* groups, const int64_t* ngroups, int64_t rows, const T* gout,       \
      T* dsrc, T* dparams, double* dzeta_nu, int grad_zeta_nu, int64_t skip_row, const T* pre, \
      int threads) {                                                                            \
    Cell<T> p{src, nullptr, 0, 0, H, u, nullptr, nullptr, nullptr, nullptr, nullptr, wt, C,    \
              nullptr, T(1), zeta, nu, T(1), T(0), grad_zeta_nu != 0, skip_row};               \
    return run<T>(p, bias_gate, bias_update, sigmoid_form != 0, idx, steps, B, groups, ngroups, \
                  nfam, gate, update, false, nullptr, rows, gout, dsrc, dparams, dzeta_nu,     \
                  const_cast<T*>(pre), threads);                                                \
  }                                                                                             \
  extern "C" int64_t rnnpool_scan_saved_size_##SUFFIX(                                          \
      int nfam, const int64_t* steps, const int64_t* B, const int64_t* const* groups,          \
      const int64_t* ngroups, int64_t H) {                                                      \
    std::vector<Family> fam;                                                                    \
    std::vector<std::vector<int64_t>> blk;                                                      \
    int64_t saved = 0;                                                                          \
    const int rc = make_families<T>(nullptr, steps, B, groups, ngroups, nfam, H, fam, blk,     \
                                    &saved);                                                    \
    return rc ? rc : saved;                                                                     \
  }

RNNPOOL_API(f32, float)
RNNPOOL_API(f64, double)
