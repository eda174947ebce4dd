/* This machine's compute peak, per core: independent chains of the widest fp32 FMA and int8
 * dot-product instructions the compiler flags enable (see benchmarks/peak.py). */
#include <stdint.h>
#include <immintrin.h>

#define CHAINS 12

/* Returns the multiply-accumulates performed: iterations x chains x MACs per instruction. */
int64_t fma_f32(int64_t iters) {
#if defined(__AVX512F__)
  __m512 acc[CHAINS];
  const __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_ps((float)i);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  float sink = 0;
  for (int i = 0; i < CHAINS; ++i) sink += _mm512_reduce_add_ps(acc[i]);
  __asm__ volatile("" : : "x"(sink));
  return iters * CHAINS * 16;
#elif defined(__FMA__)
  __m256 acc[CHAINS];
  const __m256 a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(0.9999999f);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_set1_ps((float)i);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm256_add_ps(s, acc[i]);
  __asm__ volatile("" : : "x"(s));
  return iters * CHAINS * 8;
#else
  return 0;
#endif
}

int64_t dot_i8(int64_t iters) {
#if defined(__AVX512VNNI__)
  __m512i acc[CHAINS];
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-5);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_epi32(i);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  __m512i s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm512_add_epi32(s, acc[i]);
  __asm__ volatile("" : : "x"(s));
  return iters * CHAINS * 64;
#elif defined(__AVX2__)
  __m256i acc[CHAINS];
  const __m256i a = _mm256_set1_epi16(3), b = _mm256_set1_epi16(-5);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_set1_epi32(i);
  __m256i av = a;
  for (int64_t it = 0; it < iters; ++it) {
    __asm__ volatile("" : "+x"(av)); /* keep the multiply inside the loop */
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(av, b));
  }
  __m256i s = acc[0];
  for (int i = 1; i < CHAINS; ++i) s = _mm256_add_epi32(s, acc[i]);
  __asm__ volatile("" : : "x"(s));
  return iters * CHAINS * 16;
#else
  return 0;
#endif
}
