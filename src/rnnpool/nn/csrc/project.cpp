// The backward of RNNPool's input projections on the CPU (see rnnpool/nn/_native.py).
//
// For out (P, H) = x W^T + b over P rows of C features: dx = dy W, dW = dy^T x, db = the sum of
// dy's rows. scan.cpp projects raw inputs of few channels as it reads them and returns dy, the
// projected rows' gradient; at those shapes (P up to 10^5, C of at most 8, H of 8 or 16) BLAS
// libraries run far below the machine's multiply-add rate. Here each block of L rows (one SIMD
// register of lanes) is transposed into registers once and multiplied by the whole of W. (With
// 16 or more channels BLAS is faster, and the projections stay with it.)
//
// dW and db are summed per slot (a fixed range of blocks) and then over the slots in order, so
// they do not depend on the number of threads.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace {

using namespace rnnpool_simd;

// xb (width, L) = rows r0 .. r0 + n - 1 of x (rows of `width`), transposed; zero in unused lanes.
template <typename T>
inline void gather(const T* x, int64_t width, int64_t r0, int n, T* xb) {
  constexpr int L = kLanes<T>;
  const T* xr = x + r0 * width;
  int64_t c0 = 0;
#if defined(__AVX__)
  if constexpr (sizeof(T) == 4) {
    if (n == L)
      for (; c0 + 8 <= width; c0 += 8) {
        __m256 r[8];
        for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps((const float*)xr + l * width + c0);
        transpose8(r);
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps((float*)xb + (c0 + k) * 8, r[k]);
      }
  }
#endif
  for (int64_t c = c0; c < width; ++c)
    for (int l = 0; l < L; ++l) xb[c * L + l] = l < n ? xr[l * width + c] : T(0);
}

// The inverse of gather: rows r0 .. r0 + n - 1 of x = the lanes of xb (width, L).
template <typename T>
inline void scatter(const T* xb, int64_t width, int64_t r0, int n, T* x) {
  constexpr int L = kLanes<T>;
  T* xr = x + r0 * width;
  int64_t c0 = 0;
#if defined(__AVX__)
  if constexpr (sizeof(T) == 4) {
    if (n == L)
      for (; c0 + 8 <= width; c0 += 8) {
        __m256 r[8];
        for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps((const float*)xb + (c0 + k) * 8);
        transpose8(r);
        for (int l = 0; l < 8; ++l) _mm256_storeu_ps((float*)xr + l * width + c0, r[l]);
      }
  }
#endif
  for (int64_t c = c0; c < width; ++c)
    for (int l = 0; l < n; ++l) xr[l * width + c] = xb[c * L + l];
}

template <typename T>
int backward(const T* dy, const T* x, int64_t P, int64_t C, const T* w, int64_t H, T* dx, T* dw,
             T* db, int threads) {
  constexpr int L = kLanes<T>, CT = 8;
  const int64_t nb = (P + L - 1) / L, nslot = nb < 64 ? nb : 64, SZ = H * C + H;
  const bool params = dw || db;
  if (!dx && !params) return 0;
  std::vector<T> slots(nslot * SZ, T(0));
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> xb(C * L), yb(H * L), gb(C * L), acc(params ? SZ * L : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < nslot; ++s) {
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t b = s * nb / nslot; b < (s + 1) * nb / nslot; ++b) {
        const int64_t r0 = b * L;
        const int n = P - r0 < L ? (int)(P - r0) : L;
        gather(dy, H, r0, n, yb.data());  // unused lanes read as zero
        if (dx) {  // gb (C, L) = W^T yb: tiles of 8 features in registers
          for (int64_t c0 = 0; c0 < C; c0 += CT) {
            const int nc = C - c0 < CT ? (int)(C - c0) : CT;
            Vec<T> a[CT] = {};
            for (int64_t u = 0; u < H; ++u) {
              const Vec<T> d = load(yb.data() + u * L);
              for (int cc = 0; cc < nc; ++cc) a[cc] += w[u * C + c0 + cc] * d;
            }
            for (int cc = 0; cc < nc; ++cc) store(gb.data() + (c0 + cc) * L, a[cc]);
          }
          scatter(gb.data(), C, r0, n, dx);
        }
        if (!params) continue;
        gather(x, C, r0, n, xb.data());
        for (int64_t u = 0; u < H; ++u) {  // lane sums: dW[u][c] += dy_u x_c, db[u] += dy_u
          const Vec<T> d = load(yb.data() + u * L);
          T* a = acc.data() + u * C * L;
          for (int64_t c = 0; c < C; ++c)
            store(a + c * L, load(a + c * L) + d * load(xb.data() + c * L));
          T* ab = acc.data() + (H * C + u) * L;
          store(ab, load(ab) + d);
        }
      }
      for (int64_t k = 0; k < (params ? SZ : 0); ++k) {  // lanes summed in order
        T v = T(0);
        for (int l = 0; l < L; ++l) v += acc[k * L + l];
        slots[s * SZ + k] = v;
      }
    }
  }
  for (int64_t s = 0; s < nslot; ++s) {
    if (dw)
      for (int64_t k = 0; k < H * C; ++k) dw[k] += slots[s * SZ + k];
    if (db)
      for (int64_t u = 0; u < H; ++u) db[u] += slots[s * SZ + H * C + u];
  }
  return 0;
}

}  // namespace

// The C interface (loaded with ctypes). For x (P, C), W (H, C) and dy (P, H), all row-major:
// writes dx (P, C) when not null and adds into dW (H, C) and db (H) when not null. Status: 0,
// or -2 for bad sizes.
#define RNNPOOL_PROJECT_API(SUFFIX, T)                                                          \
  extern "C" int rnnpool_project_backward_##SUFFIX(const T* dy, const T* x, int64_t P,         \
                                                   int64_t C, const T* w, int64_t H, T* dx,    \
                                                   T* dw, T* db, int threads) {                \
    if (P < 0 || C <= 0 || H <= 0 || threads <= 0) return -2;                                  \
    return backward<T>(dy, x, P, C, w, H, dx, dw, db, threads);                                \
  }

RNNPOOL_PROJECT_API(f32, float)
RNNPOOL_PROJECT_API(f64, double)
