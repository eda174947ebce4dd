/*
 * Lepton NPU instructions as host code, linked into artifacts that use the NPU.
 *
 * Two execution modes with bit-identical results, chosen at load time:
 *   fast (0): the instruction's arithmetic as vectorisable host code;
 *   sim  (1): the same arithmetic plus cycle and byte accounting from the spec.
 *
 * Every hardware number comes from the spec through -D flags set by the compiler
 * (LEPTON_TILE_M/N/K, LEPTON_VECTOR_LANES, LEPTON_DMA_*); none is spelled here.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <tvm/ffi/c_api.h>

#if !defined(LEPTON_TILE_M) || !defined(LEPTON_TILE_N) || !defined(LEPTON_TILE_K) || \
    !defined(LEPTON_VECTOR_LANES) || !defined(LEPTON_DMA_BYTES_PER_CYCLE) || \
    !defined(LEPTON_DMA_FIXED_CYCLES)
#error "compile with the spec's -D flags (see lepton_compiler.target.npu_codegen)"
#endif

enum { LEPTON_MODE_FAST = 0, LEPTON_MODE_SIM = 1 };

/* Counters of the sim mode; indices are part of the runtime ABI (see npu_counters). */
enum {
  C_GEMM_CALLS, C_MACS_ISSUED, C_COMPUTE_CYCLES, C_VECTOR_CYCLES, C_DMA_CYCLES, C_DRAM_BYTES,
  C_DMA_TRANSFERS, C_COUNT
};

static int g_mode = LEPTON_MODE_FAST;
static int64_t g_counters[C_COUNT];

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && LEPTON_TILE_N == 16
#include <immintrin.h>
/* A full tile with AVX-512 VNNI: vpdpbusd sums four u8 x s8 products per int32 lane. A is
   made unsigned by flipping its sign bit (a + 128); the 128 * column sums of B this adds are
   subtracted at the end, so the result is the exact int8 x int8 product. */
static void gemm_full_tile(const int8_t* A, const int8_t* B, int32_t* C, int32_t lda,
                           int32_t ldb, int32_t ldc, int32_t k) {
  __m512i acc[LEPTON_TILE_M];
  for (int i = 0; i < LEPTON_TILE_M; ++i) acc[i] = _mm512_loadu_si512(C + (int64_t)i * ldc);
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i flip = _mm512_set1_epi32((int)0x80808080u);
  __m512i colsum = _mm512_setzero_si512();
  int32_t kk = 0;
  for (; kk + 3 < k; kk += 4) {
    const int8_t* b = B + (int64_t)kk * ldb;
    __m128i r0 = _mm_loadu_si128((const __m128i*)b);
    __m128i r1 = _mm_loadu_si128((const __m128i*)(b + ldb));
    __m128i r2 = _mm_loadu_si128((const __m128i*)(b + 2 * (int64_t)ldb));
    __m128i r3 = _mm_loadu_si128((const __m128i*)(b + 3 * (int64_t)ldb));
    __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
    __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
    /* lane j holds B[kk..kk+3][j] */
    __m512i quads = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_set_m128i(_mm_unpackhi_epi16(t0, t2),
                                                _mm_unpacklo_epi16(t0, t2))),
        _mm256_set_m128i(_mm_unpackhi_epi16(t1, t3), _mm_unpacklo_epi16(t1, t3)), 1);
    colsum = _mm512_dpbusd_epi32(colsum, ones, quads);
    for (int i = 0; i < LEPTON_TILE_M; ++i) {
      int32_t a4;
      memcpy(&a4, A + (int64_t)i * lda + kk, sizeof(a4));
      acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_xor_si512(_mm512_set1_epi32(a4), flip),
                                   quads);
    }
  }
  const __m512i correction = _mm512_slli_epi32(colsum, 7);
  for (int i = 0; i < LEPTON_TILE_M; ++i) acc[i] = _mm512_sub_epi32(acc[i], correction);
  for (; kk < k; ++kk) { /* k not a multiple of 4: the last steps one at a time */
    __m512i b = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(B + (int64_t)kk * ldb)));
    for (int i = 0; i < LEPTON_TILE_M; ++i)
      acc[i] = _mm512_add_epi32(
          acc[i], _mm512_mullo_epi32(_mm512_set1_epi32(A[(int64_t)i * lda + kk]), b));
  }
  for (int i = 0; i < LEPTON_TILE_M; ++i) _mm512_storeu_si512(C + (int64_t)i * ldc, acc[i]);
}
#elif defined(__AVX512BW__) && LEPTON_TILE_N == 16
#include <immintrin.h>
/* A full tile with AVX-512: 16 output columns are one zmm of int32 per row, two k steps per
   vpmaddwd. Exact: int8 x int8 products and the sum of two fit in int32. */
static void gemm_full_tile(const int8_t* A, const int8_t* B, int32_t* C, int32_t lda,
                           int32_t ldb, int32_t ldc, int32_t k) {
  __m512i acc[LEPTON_TILE_M];
  for (int i = 0; i < LEPTON_TILE_M; ++i) acc[i] = _mm512_loadu_si512(C + (int64_t)i * ldc);
  int32_t kk = 0;
  for (; kk + 1 < k; kk += 2) {
    __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(B + (int64_t)kk * ldb)));
    __m256i b1 = _mm256_cvtepi8_epi16(
        _mm_loadu_si128((const __m128i*)(B + (int64_t)(kk + 1) * ldb)));
    __m256i lo = _mm256_unpacklo_epi16(b0, b1); /* columns 0-3 | 8-11 */
    __m256i hi = _mm256_unpackhi_epi16(b0, b1); /* columns 4-7 | 12-15 */
    __m512i pairs = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
        _mm256_permute2x128_si256(lo, hi, 0x31), 1);
    for (int i = 0; i < LEPTON_TILE_M; ++i) {
      const int8_t* a = A + (int64_t)i * lda + kk;
      uint32_t packed = (uint16_t)(int16_t)a[0] | ((uint32_t)(uint16_t)(int16_t)a[1] << 16);
      acc[i] = _mm512_add_epi32(acc[i],
                                _mm512_madd_epi16(_mm512_set1_epi32((int)packed), pairs));
    }
  }
  if (kk < k) { /* odd k: the last step alone */
    __m512i b = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(B + (int64_t)kk * ldb)));
    for (int i = 0; i < LEPTON_TILE_M; ++i)
      acc[i] = _mm512_add_epi32(
          acc[i], _mm512_mullo_epi32(_mm512_set1_epi32(A[(int64_t)i * lda + kk]), b));
  }
  for (int i = 0; i < LEPTON_TILE_M; ++i) _mm512_storeu_si512(C + (int64_t)i * ldc, acc[i]);
}
#elif defined(__AVX2__) && LEPTON_TILE_N == 16 && LEPTON_TILE_M % 8 == 0
#include <immintrin.h>
/* A full tile with AVX2 (16 ymm registers): four 8x8 quadrants, each with 8 accumulators of
   8 int32 columns; two k steps per vpmaddwd, exact as in the AVX-512 version. */
static void gemm_full_tile(const int8_t* A, const int8_t* B, int32_t* C, int32_t lda,
                           int32_t ldb, int32_t ldc, int32_t k) {
  for (int r0 = 0; r0 < LEPTON_TILE_M; r0 += 8) {
    for (int c0 = 0; c0 < LEPTON_TILE_N; c0 += 8) {
      __m256i acc[8];
      for (int i = 0; i < 8; ++i)
        acc[i] = _mm256_loadu_si256((const __m256i*)(C + (int64_t)(r0 + i) * ldc + c0));
      int32_t kk = 0;
      for (; kk + 1 < k; kk += 2) {
        __m128i b0 = _mm_cvtepi8_epi16(
            _mm_loadl_epi64((const __m128i*)(B + (int64_t)kk * ldb + c0)));
        __m128i b1 = _mm_cvtepi8_epi16(
            _mm_loadl_epi64((const __m128i*)(B + (int64_t)(kk + 1) * ldb + c0)));
        __m256i pairs = _mm256_set_m128i(_mm_unpackhi_epi16(b0, b1), _mm_unpacklo_epi16(b0, b1));
        for (int i = 0; i < 8; ++i) {
          const int8_t* a = A + (int64_t)(r0 + i) * lda + kk;
          uint32_t packed = (uint16_t)(int16_t)a[0] | ((uint32_t)(uint16_t)(int16_t)a[1] << 16);
          acc[i] = _mm256_add_epi32(acc[i],
                                    _mm256_madd_epi16(_mm256_set1_epi32((int)packed), pairs));
        }
      }
      if (kk < k) {
        __m256i b = _mm256_cvtepi8_epi32(
            _mm_loadl_epi64((const __m128i*)(B + (int64_t)kk * ldb + c0)));
        for (int i = 0; i < 8; ++i)
          acc[i] = _mm256_add_epi32(acc[i], _mm256_mullo_epi32(
              _mm256_set1_epi32(A[(int64_t)(r0 + i) * lda + kk]), b));
      }
      for (int i = 0; i < 8; ++i)
        _mm256_storeu_si256((__m256i*)(C + (int64_t)(r0 + i) * ldc + c0), acc[i]);
    }
  }
}
#else
/* Portable full tile: each B row is widened once and reused by every A row. */
static void gemm_full_tile(const int8_t* A, const int8_t* B, int32_t* C, int32_t lda,
                           int32_t ldb, int32_t ldc, int32_t k) {
  int32_t acc[LEPTON_TILE_M][LEPTON_TILE_N];
  for (int32_t i = 0; i < LEPTON_TILE_M; ++i)
    memcpy(acc[i], C + (int64_t)i * ldc, sizeof(acc[i]));
  for (int32_t kk = 0; kk < k; ++kk) {
    int32_t b[LEPTON_TILE_N];
    const int8_t* brow = B + (int64_t)kk * ldb;
    for (int32_t j = 0; j < LEPTON_TILE_N; ++j) b[j] = brow[j];
    for (int32_t i = 0; i < LEPTON_TILE_M; ++i) {
      const int32_t a = A[(int64_t)i * lda + kk];
      for (int32_t j = 0; j < LEPTON_TILE_N; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int32_t i = 0; i < LEPTON_TILE_M; ++i)
    memcpy(C + (int64_t)i * ldc, acc[i], sizeof(acc[i]));
}
#endif

/* C[m x n] (int32, row stride ldc) += A[m x k] (int8, lda) * B[k x n] (int8, ldb).
 * m <= tile_m, n <= tile_n: one output tile of the matrix engine, streamed over k. */
int lepton_gemm_i8(const int8_t* A, const int8_t* B, int32_t* C, int32_t lda, int32_t ldb,
                   int32_t ldc, int32_t m, int32_t n, int32_t k) {
  if (m == LEPTON_TILE_M && n == LEPTON_TILE_N) {
    gemm_full_tile(A, B, C, lda, ldb, ldc, k);
  } else {
    for (int32_t i = 0; i < m; ++i) {
      int32_t* c = C + (int64_t)i * ldc;
      const int8_t* a = A + (int64_t)i * lda;
      for (int32_t kk = 0; kk < k; ++kk) {
        const int32_t av = a[kk];
        const int8_t* b = B + (int64_t)kk * ldb;
        for (int32_t j = 0; j < n; ++j) c[j] += av * (int32_t)b[j];
      }
    }
  }
  if (g_mode == LEPTON_MODE_SIM) {
    /* The engine retires one tile_m x tile_n x 1 slice per cycle whatever m, n: padding
       rows and columns are issued but not useful (useful MACs are the compiler's to know).
       DMA is to be accounted by the DMA instructions. */
    /* Kernels run tiles in parallel: count atomically so sim totals are deterministic. */
    __atomic_fetch_add(&g_counters[C_GEMM_CALLS], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_counters[C_MACS_ISSUED], (int64_t)LEPTON_TILE_M * LEPTON_TILE_N * k,
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_counters[C_COMPUTE_CYCLES], (int64_t)k, __ATOMIC_RELAXED);
  }
  return 0;
}

/* OUT[m x n] (int8, row stride ldo) = requantized ACC[m x n] (int32, row stride lda):
 *   clamp(((((int64)acc + bias[j]) * mult[j] + 2^(shift[j]-1)) >> shift[j]) + zp, lo, hi)
 * per output channel j; qp = {zp, lo, hi}. The vector unit's add/mul/shift-with-rounding/
 * min/max/saturating-cast sequence, lanes at a time. */
int lepton_requant_i32_i8(const int32_t* ACC, const int32_t* bias, const int32_t* mult,
                          const int32_t* shift, const int32_t* qp, int8_t* OUT, int32_t lda,
                          int32_t ldo, int32_t m, int32_t n) {
  const int64_t zp = qp[0], lo = qp[1], hi = qp[2];
  for (int32_t i = 0; i < m; ++i) {
    const int32_t* a = ACC + (int64_t)i * lda;
    int8_t* o = OUT + (int64_t)i * ldo;
    int32_t j = 0;
#if defined(__AVX512DQ__) && defined(__AVX512F__)
    /* Eight int64 lanes at a time: the same arithmetic, exactly. */
    const __m512i vzp = _mm512_set1_epi64(zp), vlo = _mm512_set1_epi64(lo),
                  vhi = _mm512_set1_epi64(hi), one = _mm512_set1_epi64(1);
    for (; j + 8 <= n; j += 8) {
      __m512i v = _mm512_add_epi64(
          _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(a + j))),
          _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(bias + j))));
      __m512i sh = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(shift + j)));
      v = _mm512_mullo_epi64(
          v, _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i*)(mult + j))));
      v = _mm512_add_epi64(v, _mm512_sllv_epi64(one, _mm512_sub_epi64(sh, one)));
      v = _mm512_add_epi64(_mm512_srav_epi64(v, sh), vzp);
      v = _mm512_min_epi64(_mm512_max_epi64(v, vlo), vhi);
      _mm_storel_epi64((__m128i*)(o + j), _mm512_cvtepi64_epi8(v));
    }
#endif
    for (; j < n; ++j) {
      int64_t v = ((((int64_t)a[j] + bias[j]) * mult[j]) + ((int64_t)1 << (shift[j] - 1))) >>
                  shift[j];
      v += zp;
      v = v < lo ? lo : (v > hi ? hi : v);
      o[j] = (int8_t)v;
    }
  }
  if (g_mode == LEPTON_MODE_SIM) {
    /* One vector op per cycle on `lanes` elements; the sequence is add (bias), mul,
       shift_right_round, add (zero point), max (lo), min (hi), cast_int8_saturate. */
    enum { REQUANT_VECTOR_OPS = 7 };
    int64_t vectors = ((int64_t)m * n + LEPTON_VECTOR_LANES - 1) / LEPTON_VECTOR_LANES;
    __atomic_fetch_add(&g_counters[C_VECTOR_CYCLES], vectors * REQUANT_VECTOR_OPS,
                       __ATOMIC_RELAXED);
  }
  return 0;
}

/* DMA: copy a rows x row_bytes block between DRAM and an SRAM scope (one descriptor).
 * Strides are in bytes. In the emulation the "SRAM" is a host buffer. */
static int dma_copy(const int8_t* src, int8_t* dst, int32_t src_stride, int32_t dst_stride,
                    int32_t rows, int32_t row_bytes) {
  if (row_bytes == 16) { /* a tile-wide int8 column strip: one 16-byte move per row */
    for (int32_t r = 0; r < rows; ++r) {
      uint64_t lo, hi;
      memcpy(&lo, src + (int64_t)r * src_stride, 8);
      memcpy(&hi, src + (int64_t)r * src_stride + 8, 8);
      memcpy(dst + (int64_t)r * dst_stride, &lo, 8);
      memcpy(dst + (int64_t)r * dst_stride + 8, &hi, 8);
    }
  } else if (src_stride == row_bytes && dst_stride == row_bytes) {
    memcpy(dst, src, (size_t)rows * (size_t)row_bytes); /* one contiguous block */
  } else {
    for (int32_t r = 0; r < rows; ++r)
      memcpy(dst + (int64_t)r * dst_stride, src + (int64_t)r * src_stride, (size_t)row_bytes);
  }
  if (g_mode == LEPTON_MODE_SIM) {
    int64_t bytes = (int64_t)rows * row_bytes;
    int64_t cycles = LEPTON_DMA_FIXED_CYCLES +
                     (bytes + LEPTON_DMA_BYTES_PER_CYCLE - 1) / LEPTON_DMA_BYTES_PER_CYCLE;
    __atomic_fetch_add(&g_counters[C_DMA_CYCLES], cycles, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_counters[C_DRAM_BYTES], bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_counters[C_DMA_TRANSFERS], 1, __ATOMIC_RELAXED);
  }
  return 0;
}

int lepton_dma_load(const int8_t* src, int8_t* dst, int32_t src_stride, int32_t dst_stride,
                    int32_t rows, int32_t row_bytes, int32_t scope) {
  (void)scope;
  return dma_copy(src, dst, src_stride, dst_stride, rows, row_bytes);
}

int lepton_dma_store(const int8_t* src, int8_t* dst, int32_t src_stride, int32_t dst_stride,
                     int32_t rows, int32_t row_bytes, int32_t scope) {
  (void)scope;
  return dma_copy(src, dst, src_stride, dst_stride, rows, row_bytes);
}

/* Vector unit: one lanes-wide op per cycle. */
static inline void count_vector_op(void) {
  if (g_mode == LEPTON_MODE_SIM) __atomic_fetch_add(&g_counters[C_VECTOR_CYCLES], 1,
                                                    __ATOMIC_RELAXED);
}

int lepton_vmax_i8(const int8_t* a, const int8_t* b, int8_t* out, int32_t lanes) {
  for (int32_t i = 0; i < lanes; ++i) out[i] = a[i] > b[i] ? a[i] : b[i];
  count_vector_op();
  return 0;
}

int lepton_vadd_i32(const int32_t* a, const int32_t* b, int32_t* out, int32_t lanes) {
  /* two's-complement wrap-around, like the int32 reference */
  for (int32_t i = 0; i < lanes; ++i) out[i] = (int32_t)((uint32_t)a[i] + (uint32_t)b[i]);
  count_vector_op();
  return 0;
}

/* ---- tvm-ffi packed functions the runtime calls ------------------------------------------ */

static int read_int(const TVMFFIAny* arg, int64_t* out) {
  if (arg->type_index == kTVMFFIInt || arg->type_index == kTVMFFIBool) {
    *out = arg->v_int64;
    return 0;
  }
  return -1;
}

static void set_int(TVMFFIAny* result, int64_t value) {
  result->type_index = kTVMFFIInt;
  result->zero_padding = 0;
  result->v_int64 = value;
}

/* lepton_npu_set_mode(mode: int) -> previous mode */
int __tvm_ffi_lepton_npu_set_mode(void* self, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result) {
  (void)self;
  int64_t mode;
  if (num_args != 1 || read_int(&args[0], &mode) != 0 ||
      (mode != LEPTON_MODE_FAST && mode != LEPTON_MODE_SIM)) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "lepton_npu_set_mode expects 0 (fast) or 1 (sim)");
    return -1;
  }
  set_int(result, g_mode);
  g_mode = (int)mode;
  return 0;
}

/* lepton_npu_counter(index: int) -> int64; index == -1 resets all and returns their count */
int __tvm_ffi_lepton_npu_counter(void* self, const TVMFFIAny* args, int32_t num_args,
                                 TVMFFIAny* result) {
  (void)self;
  int64_t index;
  if (num_args != 1 || read_int(&args[0], &index) != 0 || index < -1 || index >= C_COUNT) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "lepton_npu_counter: bad counter index");
    return -1;
  }
  if (index == -1) {
    memset(g_counters, 0, sizeof(g_counters));
    set_int(result, C_COUNT);
  } else {
    set_int(result, g_counters[index]);
  }
  return 0;
}
