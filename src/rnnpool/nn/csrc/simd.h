// SIMD helpers shared by the compiled kernels (scan.cpp, project.cpp): one register of lanes as
// a GCC vector type, and float register transposes.
#pragma once

#include <cstdint>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace rnnpool_simd {

// One SIMD register of lanes; GCC vector extensions lower it to AVX (or SSE pairs).
template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(32))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(32))); };
template <typename T> using Vec = typename VecOf<T>::type;
template <typename T> constexpr int kLanes = (int)(sizeof(Vec<T>) / sizeof(T));

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void store(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof v); }

// Lane-wise sums of outer products: acc[i][j] (M x N registers, row-major) += sum over
// t < n of a_t[i] b_t[j], for a_t = a + t * sa and b_t = b + t * sb, both (rows, lanes). Tiles of
// 4 x 2 sums stay in registers over t. Left alone, GCC reads b's two registers from memory again
// for each of the 4 rows (12 loads per 8 multiply-adds); kept in registers, the loop alone on
// data in cache is 1.5x faster (best times; 1.2-2.0x in five paired runs).
template <typename T>
inline void lane_outer_sums(const T* a, int64_t sa, const T* b, int64_t sb, int64_t n, int M,
                            int N, T* acc) {
  constexpr int L = kLanes<T>, IT = 4, JT = 2;
  for (int i0 = 0; i0 < M; i0 += IT) {
    const int ni = M - i0 < IT ? M - i0 : IT;
    for (int j0 = 0; j0 < N; j0 += JT) {
      const int nj = N - j0 < JT ? N - j0 : JT;
      if (ni == IT && nj == JT) {
        Vec<T> s[IT][JT] = {};
        for (int64_t t = 0; t < n; ++t) {
          const T* at = a + t * sa;
          const T* bt = b + t * sb;
          Vec<T> b0 = load(bt + j0 * L), b1 = load(bt + (j0 + 1) * L);
#if defined(__AVX__)
          asm("" : "+x"(b0), "+x"(b1));  // opaque to the optimizer: stay in registers
#endif
#pragma GCC unroll 4
          for (int ii = 0; ii < IT; ++ii) {
            const Vec<T> d = load(at + (i0 + ii) * L);
            s[ii][0] += d * b0;
            s[ii][1] += d * b1;
          }
        }
        for (int ii = 0; ii < IT; ++ii)
          for (int jj = 0; jj < JT; ++jj) {
            T* q = acc + ((int64_t)(i0 + ii) * N + j0 + jj) * L;
            store(q, load(q) + s[ii][jj]);
          }
      } else {
        for (int ii = 0; ii < ni; ++ii)
          for (int jj = 0; jj < nj; ++jj) {
            Vec<T> s{};
            for (int64_t t = 0; t < n; ++t)
              s += load(a + t * sa + (i0 + ii) * L) * load(b + t * sb + (j0 + jj) * L);
            T* q = acc + ((int64_t)(i0 + ii) * N + j0 + jj) * L;
            store(q, load(q) + s);
          }
      }
    }
  }
}

#if defined(__AVX__)
// 8 x 8 float transpose: out[k] (a register) = element k of each of in[0..7].
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Two 4 x 4 float transposes, one in each 128-bit half: element c of half h of out[k] = element
// k of half h of in[c]. Turns 8 rows of 4 (row l in half 0 of r[l], row l + 4 in half 1) into 4
// registers of 8 (one per column), and back.
inline void transpose4x2(__m256 r[4]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  r[0] = _mm256_shuffle_ps(t0, t2, 0x44);
  r[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
  r[2] = _mm256_shuffle_ps(t1, t3, 0x44);
  r[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}
#endif

}  // namespace rnnpool_simd
