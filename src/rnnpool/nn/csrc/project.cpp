// The input side of RNNPool's fused projections on the CPU (see rnnpool/nn/_native.py).
//
// scan.cpp projects raw inputs of few channels as it reads them: it reads pixels as rows of C
// features (pixel_rows makes those rows from an (N, C, H, W) map), and returns dy, the
// projected rows' gradient. For out (P, H) = x W^T + b over P rows of C features, backward
// gives dx = dy W, dW = dy^T x and db = the sum of dy's rows. At these shapes (P up to 10^5, C of
// at most 8, H of 8 or 16) BLAS libraries run far below the machine's multiply-add rate, and
// torch's copies between the two layouts take several times a plain copy. Here each block of L
// rows (one SIMD register of lanes) is transposed into registers once and multiplied by the
// whole of W; x and dx can be the (N, C, H, W) maps themselves, where L consecutive pixels of a
// channel already form a register. Maps of more channels are projected here too
// (pixel_projection, lanes over outputs: 1.2x BLAS's speed for 16 outputs, 7x for 8), and
// their dx (map_grad: 1.25-1.3x BLAS's speed at 32 channels); their dW stays with BLAS, which
// is as fast or faster there.
//
// dW and db are summed per slot (a fixed range of blocks) and then over the slots in order, so
// they do not depend on the number of threads.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace {

using namespace rnnpool_simd;

// Where feature c of row r of a (P, width) matrix lives: at r * width + c for rows (hw = 0), or
// at ((r / hw) * width + c) * hw + r % hw in maps (P / hw, width, hw) whose rows are the pixels.
inline int64_t offset(int64_t r, int64_t c, int64_t width, int64_t hw) {
  return hw ? ((r / hw) * width + c) * hw + r % hw : r * width + c;
}

// xb (width, L) = rows r0 .. r0 + n - 1 of x, transposed; zero in unused lanes.
template <typename T>
inline void gather(const T* x, int64_t width, int64_t hw, int64_t r0, int n, T* xb) {
  constexpr int L = kLanes<T>;
  if (hw && n == L && r0 % hw + L <= hw) {  // L pixels of one map: already lanes
    for (int64_t c = 0; c < width; ++c) store(xb + c * L, load(x + offset(r0, c, width, hw)));
    return;
  }
  int64_t c0 = 0;
#if defined(__AVX__)
  if constexpr (sizeof(T) == 4) {
    if (n == L && !hw)
      for (const float* xr = (const float*)x + r0 * width; c0 + 8 <= width; c0 += 8) {
        __m256 r[8];
        for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(xr + l * width + c0);
        transpose8(r);
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps((float*)xb + (c0 + k) * 8, r[k]);
      }
  }
#endif
  for (int64_t c = c0; c < width; ++c)
    for (int l = 0; l < L; ++l) xb[c * L + l] = l < n ? x[offset(r0 + l, c, width, hw)] : T(0);
}

// The inverse of gather: rows r0 .. r0 + n - 1 of x = the lanes of xb (width, L).
template <typename T>
inline void scatter(const T* xb, int64_t width, int64_t hw, int64_t r0, int n, T* x) {
  constexpr int L = kLanes<T>;
  if (hw && n == L && r0 % hw + L <= hw) {
    for (int64_t c = 0; c < width; ++c) store(x + offset(r0, c, width, hw), load(xb + c * L));
    return;
  }
  int64_t c0 = 0;
#if defined(__AVX__)
  if constexpr (sizeof(T) == 4) {
    if (n == L && !hw)
      for (float* xr = (float*)x + r0 * width; c0 + 8 <= width; c0 += 8) {
        __m256 r[8];
        for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps((const float*)xb + (c0 + k) * 8);
        transpose8(r);
        for (int l = 0; l < 8; ++l) _mm256_storeu_ps(xr + l * width + c0, r[l]);
      }
  }
#endif
  for (int64_t c = c0; c < width; ++c)
    for (int l = 0; l < n; ++l) x[offset(r0 + l, c, width, hw)] = xb[c * L + l];
}

// fn(i, p0, n) for every run of n <= `block` pixels p0 .. p0 + n - 1 of map i of N maps of hw
// pixels (n = block but at a map's end), spread over threads.
template <typename F>
inline void for_pixel_blocks(int64_t N, int64_t hw, int block, int threads, F fn) {
  const int64_t nb = (hw + block - 1) / block;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < N * nb; ++b) {
    const int64_t i = b / nb, p0 = (b % nb) * block;
    fn(i, p0, hw - p0 < block ? (int)(hw - p0) : block);
  }
}

// out (N hw + 1, C) = the pixels of the maps x (N, C, hw) as rows of C, then a zero row.
template <typename T>
int pixel_rows(const T* x, int64_t N, int64_t C, int64_t hw, T* out, int threads) {
  constexpr int L = kLanes<T>;
  for_pixel_blocks(N, hw, L, threads, [&](int64_t i, int64_t p0, int n) {
    const T* xi = x + i * C * hw + p0;
    T* o = out + (i * hw + p0) * C;
    int64_t c0 = 0;
#if defined(__AVX__)
    if constexpr (sizeof(T) == 4) {
      if (n == L) {
        for (; c0 + 8 <= C; c0 += 8) {  // 8 channels of 8 pixels
          __m256 r[8];
          for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps((const float*)xi + (c0 + k) * hw);
          transpose8(r);
          for (int l = 0; l < 8; ++l) _mm256_storeu_ps((float*)o + l * C + c0, r[l]);
        }
        if (c0 + 4 <= C) {  // 4 channels of 8 pixels
          __m256 r[4];
          for (int k = 0; k < 4; ++k) r[k] = _mm256_loadu_ps((const float*)xi + (c0 + k) * hw);
          transpose4x2(r);  // r[l] = pixels l and l + 4
          for (int l = 0; l < 4; ++l) {
            _mm_storeu_ps((float*)o + l * C + c0, _mm256_castps256_ps128(r[l]));
            _mm_storeu_ps((float*)o + (l + 4) * C + c0, _mm256_extractf128_ps(r[l], 1));
          }
          c0 += 4;
        }
      }
    }
#endif
    for (int l = 0; l < n; ++l)
      for (int64_t c = c0; c < C; ++c) o[l * C + c] = xi[c * hw + l];
  });
  std::fill(out + N * hw * C, out + (N * hw + 1) * C, T(0));
  return 0;
}

// out[j] (L lanes) = sum_u m[u * ld + j0 + j] v_u for j < NJ and v_u = v + u * L: NJ sums in
// registers.
template <typename T, int NJ>
inline void tile_product(const T* m, int64_t ld, int64_t j0, const T* v, int64_t n, T* out) {
  constexpr int L = kLanes<T>;
  Vec<T> a[NJ] = {};
  for (int64_t u = 0; u < n; ++u) {
    const Vec<T> d = load(v + u * L);
    const T* mu = m + u * ld + j0;
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j) a[j] += mu[j] * d;
  }
  for (int j = 0; j < NJ; ++j) store(out + j * L, a[j]);
}

// out (width, L) = m^T v for m (n, width) row-major and v (n, L), in tiles of 8 columns.
template <typename T>
inline void product(const T* m, int64_t width, const T* v, int64_t n, T* out) {
  constexpr int L = kLanes<T>;
  for (int64_t j0 = 0; j0 < width; j0 += 8) {
    T* o = out + j0 * L;
    switch (width - j0 < 8 ? width - j0 : 8) {
      case 1: tile_product<T, 1>(m, width, j0, v, n, o); break;
      case 2: tile_product<T, 2>(m, width, j0, v, n, o); break;
      case 3: tile_product<T, 3>(m, width, j0, v, n, o); break;
      case 4: tile_product<T, 4>(m, width, j0, v, n, o); break;
      case 5: tile_product<T, 5>(m, width, j0, v, n, o); break;
      case 6: tile_product<T, 6>(m, width, j0, v, n, o); break;
      case 7: tile_product<T, 7>(m, width, j0, v, n, o); break;
      default: tile_product<T, 8>(m, width, j0, v, n, o); break;
    }
  }
}

// o[q K + k0 ...] for PT pixels q (xi + q, channels hw apart) and KV registers of outputs from
// k0: each channel's PT values broadcast against W^T's row (wt (C, K)), sums in registers. Six
// pixels (12 sums for 16 outputs) rather than 4: 1.4-1.5x faster, as 8 sums barely cover the
// multiply-add latency.
template <typename T, int KV, int PT>
inline void project_pixels(const T* xi, int64_t C, int64_t hw, const T* wt, int64_t K,
                           int64_t k0, T* o) {
  constexpr int L = kLanes<T>;
  Vec<T> a[PT][KV] = {};
  for (int64_t c = 0; c < C; ++c) {
    Vec<T> wv[KV];
    for (int v = 0; v < KV; ++v) wv[v] = load(wt + c * K + k0 + v * L);
    const T* xc = xi + c * hw;
#pragma GCC unroll 8
    for (int q = 0; q < PT; ++q)
      for (int v = 0; v < KV; ++v) a[q][v] += xc[q] * wv[v];
  }
  for (int q = 0; q < PT; ++q)
    for (int v = 0; v < KV; ++v) store(o + q * K + k0 + v * L, a[q][v]);
}

// out (N hw + 1, K) = W x for each pixel of the maps x (N, C, hw), then a zero row; wt = W^T
// (C, K). Lanes run over outputs, so x is read in place and the rows are written whole.
template <typename T>
int pixel_projection(const T* x, int64_t N, int64_t C, int64_t hw, const T* wt, int64_t K,
                     T* out, int threads) {
  constexpr int L = kLanes<T>, PT = 6;
  for_pixel_blocks(N, hw, PT, threads, [&](int64_t i, int64_t p0, int np) {
    const T* xi = x + i * C * hw + p0;
    T* o = out + (i * hw + p0) * K;
    int64_t k0 = 0;
    // Each channel's line 8 lines ahead, once per line: the map comes from memory in a layer
    // (its C streams are more than the hardware prefetchers follow; layer forward 0.93-0.98x
    // at MobileNetV2's 32 channels, no change when the map is in cache).
    const int64_t ahead = 512 / sizeof(T);
    if (p0 + ahead < hw && (p0 * sizeof(T)) / 64 != ((p0 + PT) * sizeof(T)) / 64)
      for (int64_t c = 0; c < C; ++c) __builtin_prefetch(xi + c * hw + ahead);
    if (np == PT) {
      for (; k0 + 2 * L <= K; k0 += 2 * L) project_pixels<T, 2, PT>(xi, C, hw, wt, K, k0, o);
      for (; k0 + L <= K; k0 += L) project_pixels<T, 1, PT>(xi, C, hw, wt, K, k0, o);
    }
    for (int q = 0; q < np; ++q)  // what the register tiles left
      for (int64_t k = k0; k < K; ++k) {
        T v = T(0);
        for (int64_t c = 0; c < C; ++c) v += xi[c * hw + q] * wt[c * K + k];
        o[q * K + k] = v;
      }
  });
  std::fill(out + N * hw * K, out + (N * hw + 1) * K, T(0));
  return 0;
}

// Between rows and a map: rows (S plane, H) and map (S, H, plane), where cell q of slab s is
// row order[s plane + q]. Place: map[s][:, q] = that row; take (place's backward): that row =
// map[s][:, q]. Blocks of 8 cells are transposed in registers, so the map side is read or written
// 8 cells at a time (the rows side is whole rows either way). False on an order outside the rows.
template <typename T>
bool place_rows(bool take, T* rows, const int64_t* order, int64_t S, int64_t H, int64_t plane,
                T* map, int threads) {
  const int64_t P = S * plane;
  for (int64_t k = 0; k < P; ++k)
    if (order[k] < 0 || order[k] >= P) return false;
  for_pixel_blocks(S, plane, 8, threads, [&](int64_t s, int64_t q0, int n) {
    T* m = map + s * H * plane + q0;
    const int64_t* ord = order + s * plane + q0;
    int64_t i0 = 0;
#if defined(__AVX__)
    if constexpr (sizeof(T) == 4) {
      if (n == 8) {
        for (; i0 + 8 <= H; i0 += 8) {
          __m256 r[8];
          if (take) {
            for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps((float*)m + (i0 + k) * plane);
            transpose8(r);
            for (int l = 0; l < 8; ++l) _mm256_storeu_ps((float*)rows + ord[l] * H + i0, r[l]);
          } else {
            for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps((float*)rows + ord[l] * H + i0);
            transpose8(r);
            for (int k = 0; k < 8; ++k) _mm256_storeu_ps((float*)m + (i0 + k) * plane, r[k]);
          }
        }
      }
    }
#endif
    for (int64_t i = i0; i < H; ++i)
      for (int l = 0; l < n; ++l) {
        T& v = m[i * plane + l];
        T& r = rows[ord[l] * H + i];
        if (take) r = v; else v = r;
      }
  });
  return true;
}

// dx (N, C, hw) = dy W for the rows dy (N hw, H) of a map's pixels and W (H, C): a block of
// 16 pixels' rows is transposed into registers' worth of (H, 16) once, then tiles of 6
// channels x 16 pixels (12 sums) run over H with each weight broadcast against two registers:
// 0.77-0.80x BLAS's time at MobileNetV2's 32-channel map, where tiles of 8 channels by one
// register of pixels (as backward() runs dx) take 1.2x BLAS's.
constexpr int64_t kMaxMapGradH = 64;

// yt: the 16 pixels' rows transposed, as two (H, 8) halves.
template <int NCH>
inline void map_grad_tile(const float* yt, const float* w, int64_t H, int64_t C, int64_t c0,
                          float* dxc, int64_t hw) {
  using V = Vec<float>;
  V a[NCH][2] = {};
  for (int64_t u = 0; u < H; ++u) {
    const V y0 = load(yt + u * 8), y1 = load(yt + (H + u) * 8);
    const float* wu = w + u * C + c0;
#pragma GCC unroll 6
    for (int c = 0; c < NCH; ++c) {
      a[c][0] += wu[c] * y0;
      a[c][1] += wu[c] * y1;
    }
  }
  for (int c = 0; c < NCH; ++c) {
    store(dxc + c * hw, a[c][0]);
    store(dxc + c * hw + 8, a[c][1]);
  }
}

template <typename T>
bool map_grad(const T* dy, int64_t N, int64_t hw, const T* w, int64_t H, int64_t C, T* dx,
              int threads) {
#if defined(__AVX__)
  if constexpr (sizeof(T) == 4) {
    if (H % 8) return false;
    for_pixel_blocks(N, hw, 16, threads, [&](int64_t i, int64_t p0, int np) {
      const float* d = (const float*)dy + (i * hw + p0) * H;
      float* o = (float*)dx + i * C * hw + p0;
      if (np < 16) {  // a map's last pixels
        for (int64_t c = 0; c < C; ++c)
          for (int q = 0; q < np; ++q) {
            float v = 0.f;
            for (int64_t u = 0; u < H; ++u) v += d[q * H + u] * w[u * C + c];
            o[c * hw + q] = v;
          }
        return;
      }
      float yt[kMaxMapGradH * 16];
      for (int half = 0; half < 2; ++half)
        gather((const float*)dy, H, 0, i * hw + p0 + half * 8, 8, yt + half * H * 8);
      const float* wf = (const float*)w;
      int64_t c0 = 0;
      for (; c0 + 6 <= C; c0 += 6) map_grad_tile<6>(yt, wf, H, C, c0, o + c0 * hw, hw);
      switch (C - c0) {
        case 1: map_grad_tile<1>(yt, wf, H, C, c0, o + c0 * hw, hw); break;
        case 2: map_grad_tile<2>(yt, wf, H, C, c0, o + c0 * hw, hw); break;
        case 3: map_grad_tile<3>(yt, wf, H, C, c0, o + c0 * hw, hw); break;
        case 4: map_grad_tile<4>(yt, wf, H, C, c0, o + c0 * hw, hw); break;
        case 5: map_grad_tile<5>(yt, wf, H, C, c0, o + c0 * hw, hw); break;
        default: break;
      }
    });
    return true;
  }
#endif
  return false;
}

template <typename T>
int backward(const T* dy, const T* x, int64_t P, int64_t C, int64_t hw, const T* w, int64_t H,
             T* dx, T* dw, T* db, int threads) {
  constexpr int L = kLanes<T>;
  constexpr int64_t G = 16;  // blocks whose dW products are summed together in registers
  const int64_t nb = (P + L - 1) / L, nslot = nb < 64 ? nb : 64, SZ = H * C + H;
  const bool params = dw || db;
  if (!dx && !params) return 0;
  // dx alone into a map: its own kernel (with dW, the loop below shares dy's loads between
  // them, which is faster for maps of few channels).
  if (dx && !params && hw && H <= kMaxMapGradH && map_grad(dy, P / hw, hw, w, H, C, dx, threads))
    return 0;
  std::vector<T> slots(nslot * SZ, T(0));
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> xb(G * C * L), yb(G * H * L), gb(C * L), acc(params ? SZ * L : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < nslot; ++s) {
      std::fill(acc.begin(), acc.end(), T(0));
      const int64_t b_end = (s + 1) * nb / nslot;
      for (int64_t b0 = s * nb / nslot; b0 < b_end; b0 += G) {
        const int64_t ng = b_end - b0 < G ? b_end - b0 : G;
        for (int64_t g = 0; g < ng; ++g) {
          const int64_t r0 = (b0 + g) * L;
          const int n = P - r0 < L ? (int)(P - r0) : L;
          T* y = yb.data() + g * H * L;
          gather(dy, H, 0, r0, n, y);  // unused lanes read as zero
          if (dx) {  // gb (C, L) = W^T y
            product(w, C, y, H, gb.data());
            scatter(gb.data(), C, hw, r0, n, dx);
          }
          if (params) gather(x, C, hw, r0, n, xb.data() + g * C * L);
        }
        if (!params) continue;
        // Lane sums: dW[u][c] += sum_g dy_u x_c, db[u] += sum_g dy_u.
        lane_outer_sums(yb.data(), H * L, xb.data(), C * L, ng, (int)H, (int)C, acc.data());
        for (int64_t u = 0; u < H; ++u) {
          Vec<T> v = load(acc.data() + (H * C + u) * L);
          for (int64_t g = 0; g < ng; ++g) v += load(yb.data() + (g * H + u) * L);
          store(acc.data() + (H * C + u) * L, v);
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
// writes dx (P, C) when not null and adds into dW (H, C) and db (H) when not null; with hw > 0,
// x and dx are maps (P / hw, C, hw) whose rows are the pixels. pixel_rows: x (N, C, hw) ->
// out (N hw + 1, C); pixel_projection: the same rows times W, from wt = W^T (C, K), into
// out (N hw + 1, K). place_rows (take = 0; see place_rows above) writes the map (S, H, plane)
// from the rows (S plane, H), take = 1 the rows from the map. Status: 0, -2 for bad sizes, -4
// for an order outside the rows.
#define RNNPOOL_PROJECT_API(SUFFIX, T)                                                          \
  extern "C" int rnnpool_project_backward_##SUFFIX(const T* dy, const T* x, int64_t P,         \
                                                   int64_t C, int64_t hw, const T* w,          \
                                                   int64_t H, T* dx, T* dw, T* db,             \
                                                   int threads) {                              \
    if (P < 0 || C <= 0 || H <= 0 || hw < 0 || (hw && P % hw) || threads <= 0) return -2;     \
    return backward<T>(dy, x, P, C, hw, w, H, dx, dw, db, threads);                            \
  }                                                                                             \
  extern "C" int rnnpool_pixel_rows_##SUFFIX(const T* x, int64_t N, int64_t C, int64_t hw,     \
                                             T* out, int threads) {                            \
    if (N < 0 || C <= 0 || hw < 0 || threads <= 0) return -2;                                  \
    return pixel_rows<T>(x, N, C, hw, out, threads);                                           \
  }                                                                                             \
  extern "C" int rnnpool_pixel_projection_##SUFFIX(const T* x, int64_t N, int64_t C,           \
                                                   int64_t hw, const T* wt, int64_t K, T* out, \
                                                   int threads) {                              \
    if (N < 0 || C <= 0 || hw <= 0 || K <= 0 || threads <= 0) return -2;                      \
    return pixel_projection<T>(x, N, C, hw, wt, K, out, threads);                              \
  }                                                                                             \
  extern "C" int rnnpool_place_rows_##SUFFIX(int take, T* rows, const int64_t* order,          \
                                             int64_t S, int64_t H, int64_t plane, T* map,      \
                                             int threads) {                                    \
    if (S < 0 || H <= 0 || plane <= 0 || threads <= 0) return -2;                              \
    return place_rows<T>(take != 0, rows, order, S, H, plane, map, threads) ? 0 : -4;          \
  }

RNNPOOL_PROJECT_API(f32, float)
RNNPOOL_PROJECT_API(f64, double)
