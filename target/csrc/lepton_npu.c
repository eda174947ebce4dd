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
    !defined(LEPTON_DMA_FIXED_CYCLES) || !defined(LEPTON_VECTOR_MUL_ADD) || \
    !defined(LEPTON_VECTOR_DIV_CYCLES)
#error "compile with the spec's -D flags (see lepton_compiler.target.npu_codegen)"
#endif

enum { LEPTON_MODE_FAST = 0, LEPTON_MODE_SIM = 1 };

/* Counters of the sim mode; indices are part of the runtime ABI (see npu_counters). */
enum {
  C_GEMM_CALLS, C_MACS_ISSUED, C_COMPUTE_CYCLES, C_VECTOR_CYCLES, C_DMA_CYCLES, C_DRAM_BYTES,
  C_DMA_TRANSFERS, C_VECTOR_LANES, C_ONCHIP_BYTES, C_COUNT
};

static int g_mode = LEPTON_MODE_FAST;
static int64_t g_counters[C_COUNT];

/* Cascading (sim mode): address ranges of tensors that stay in SRAM between two NPU layers
 * (the runtime marks them around the producer's and the consumer's calls). A DMA transfer
 * that reads or writes such a range moves nothing through DRAM: its bytes are counted as
 * on-chip bytes, not as DRAM bytes, and it costs no DMA cycles. Conv line buffers
 * (lepton_line_buffer) mark their gathered windows the same way. */
enum { MAX_RESIDENT = 8 };
static uintptr_t g_resident_lo[MAX_RESIDENT], g_resident_hi[MAX_RESIDENT];
static int g_resident_count;

static int is_resident(const void* p) {
  const uintptr_t a = (uintptr_t)p;
  for (int i = 0; i < g_resident_count; ++i)
    if (a >= g_resident_lo[i] && a < g_resident_hi[i]) return 1;
  return 0;
}

/* Count one DMA transfer of `bytes` touching `where` (NULL: constants, never resident). */
static void count_dma(const void* src, const void* dst, int64_t bytes) {
  if (bytes <= 0) return;
  if ((src != NULL && is_resident(src)) || (dst != NULL && is_resident(dst))) {
    __atomic_fetch_add(&g_counters[C_ONCHIP_BYTES], bytes, __ATOMIC_RELAXED);
    return;
  }
  __atomic_fetch_add(&g_counters[C_DMA_CYCLES], LEPTON_DMA_FIXED_CYCLES +
                     (bytes + LEPTON_DMA_BYTES_PER_CYCLE - 1) / LEPTON_DMA_BYTES_PER_CYCLE,
                     __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_counters[C_DRAM_BYTES], bytes, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_counters[C_DMA_TRANSFERS], 1, __ATOMIC_RELAXED);
}

/* The GEMM's requantize instruction: add (bias), mul, shift_right_round, add (zero point),
 * max (lo), min (hi), cast_int8_saturate, on `lanes` accumulators per op. The instruction
 * always runs all seven, so a GEMM layer's cycles do not depend on its requantize terms (a
 * tuner's measurement is the layer's cost). Counts `elems` accumulators in `vectors` ops. */
enum { REQUANT_OPS = 7 };
static void count_requant(int64_t vectors, int64_t elems) {
  __atomic_fetch_add(&g_counters[C_VECTOR_CYCLES], vectors * REQUANT_OPS, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_counters[C_VECTOR_LANES], elems * REQUANT_OPS, __ATOMIC_RELAXED);
}

/* The clamps a vector-unit layer's own instruction stream performs (depthwise conv, mean,
 * add): the compiler, which emits that stream per layer, leaves out a max at lo = -128 and a
 * min at hi = 127 (the saturating cast clamps there already, so the result is the same). */
static inline int64_t clamp_ops(int64_t lo, int64_t hi) { return (lo > -128) + (hi < 127); }

/* Vector ops of such a stream's requantize: add, mul, shift_right_round, add, the clamps,
 * cast_int8_saturate. */
static inline int64_t requant_ops(int64_t lo, int64_t hi) { return 5 + clamp_ops(lo, hi); }

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
    /* one vector op per cycle on `lanes` elements */
    count_requant(((int64_t)m * n + LEPTON_VECTOR_LANES - 1) / LEPTON_VECTOR_LANES,
                  (int64_t)m * n);
    /* the int8 tile leaves the NPU: one strided store descriptor (none when cascaded) */
    count_dma(NULL, OUT, (int64_t)m * n);
  }
  return 0;
}

/* Sim accounting of a requantize epilogue that the emulation runs as a host loop (an output
 * with a ragged edge, which the tensorized epilogue does not cover): the vector unit
 * requantizes `tiles` whole padded blocks of `tile_elems` accumulators each, with the same
 * instruction (REQUANT_OPS), and each block's valid part leaves in one store descriptor
 * (`bytes` in all, into OUT). Nothing is computed here; fast mode returns at once. */
int lepton_requant_count(const int8_t* OUT, int32_t tiles, int32_t tile_elems,
                         int64_t bytes) {
  if (g_mode != LEPTON_MODE_SIM || tiles <= 0) return 0;
  count_requant((int64_t)tiles *
                    (((int64_t)tile_elems + LEPTON_VECTOR_LANES - 1) / LEPTON_VECTOR_LANES),
                (int64_t)tiles * tile_elems);
  const int64_t each = bytes / tiles;
  for (int32_t t = 0; t < tiles; ++t) count_dma(NULL, OUT, t + 1 < tiles ? each
                                                                  : bytes - each * (tiles - 1));
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
  if (g_mode == LEPTON_MODE_SIM) count_dma(src, dst, (int64_t)rows * row_bytes);
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
  if (g_mode == LEPTON_MODE_SIM) {
    __atomic_fetch_add(&g_counters[C_VECTOR_CYCLES], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_counters[C_VECTOR_LANES], LEPTON_VECTOR_LANES, __ATOMIC_RELAXED);
  }
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

/* lepton_npu_resident(address: int, bytes: int) -> int: mark [address, address + bytes) as
 * held in SRAM (cascading, sim mode); bytes < 0 clears every mark. Returns the marks held. */
int __tvm_ffi_lepton_npu_resident(void* self, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result) {
  (void)self;
  int64_t address, bytes;
  if (num_args != 2 || read_int(&args[0], &address) != 0 || read_int(&args[1], &bytes) != 0 ||
      (bytes >= 0 && (address <= 0 || g_resident_count >= MAX_RESIDENT))) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "lepton_npu_resident: bad range or too many");
    return -1;
  }
  if (bytes < 0) {
    g_resident_count = 0;
  } else {
    g_resident_lo[g_resident_count] = (uintptr_t)address;
    g_resident_hi[g_resident_count] = (uintptr_t)address + (uintptr_t)bytes;
    ++g_resident_count;
  }
  set_int(result, g_resident_count);
  return 0;
}

/* ---- fast mode: a whole GEMM layer per call ----------------------------------------------
 *
 * In fast mode a conv2d/dense kernel hands its whole layer to lepton_layer_i8 instead of
 * running the tiled instruction stream (sim mode still runs that stream and counts it). The
 * result is the same integer arithmetic — exact int32 products summed in any order, then the
 * requantize instruction's formula — so fast and sim agree bit for bit.
 *
 * Weights are packed at compile time (npu_fast.pack_weights): for each block of 16 output
 * columns, [ceil(K/4)][16][4] bytes holding w + 128 as uint8 (padding: 0). A row of A (int8)
 * times such a block is 16 int32 lanes of vpdpbusd (four u8 x s8 products per lane), and
 * sum_k a*(w+128) = sum_k a*w + 128*sum_k a: each row's sum is subtracted before requantizing.
 * The im2col window gather happens while packing a chunk of A rows (never a whole window
 * matrix), and the output rows and columns are split into work items across the threads.
 */
#include <stdlib.h>

typedef struct {
  void* sync_handle;
  int32_t num_task;
} LeptonParallelEnv;
typedef int (*LeptonParallelLambda)(int task_id, LeptonParallelEnv* penv, void* cdata);
extern void* __TVMBackendParallelLaunch __attribute__((weak));

enum { FAST_NB = 16, FAST_MR = 12, FAST_A_BYTES = 96 * 1024 };

typedef struct layer {
  const int8_t* x;
  const uint8_t* wp;
  const int32_t *bias, *mult, *shift;
  int64_t zp, lo, hi;
  int8_t* out;
  int32_t n, h, w, cin, cout, kh, kw, sh, sw, dh, dw, top, left, oh, ow, in_zp;
  int64_t m, k, k4;
  int32_t nblocks;          /* 16-column blocks of the packed weights */
  int32_t direct;           /* A rows are X rows as they are (1x1, stride 1, no padding) */
  int32_t rows_per_item, blocks_per_item, row_items, col_items;
  const int64_t* col64;     /* per 16 columns: COL_TERMS int64 (see the packed layout) */
  int32_t narrow;           /* requantize mode: see requant_mode */
  int32_t fold;             /* every shift <= 54: mode 2 folds the zero point into rounding */
  const int32_t* w32;       /* depthwise: the weights as (w, 0) int16 pairs [taps][cpad] */
  int32_t cpad;             /* cout rounded up to whole 16-column blocks */
  int (*item)(struct layer* L, int64_t item);  /* runs one work item: 0, or -1 on failure */
  int next_item;            /* work items handed out so far (atomic) */
  int failed;
} layer_t;

/* A contiguous scratch buffer per thread, grown on demand and kept between calls. */
static int8_t* scratch(int64_t bytes) {
  static __thread int8_t* buf = NULL;
  static __thread int64_t have = 0;
  if (bytes > have) {
    free(buf);
    buf = NULL;
    have = 0;
    if (posix_memalign((void**)&buf, 64, (size_t)bytes) != 0) return NULL;
    have = bytes;
  }
  return buf;
}

/* Packed layer constants (npu_fast.pack_layer / pack_depthwise, made at compile time): first
 * the per-column requantize terms of every block of 16 columns (padding columns: zero), per
 * block COL_TERMS int64: bias as 16 int32; as 8 int64 lanes each for the even and the odd
 * columns: mult, 2^(shift-1) and shift; then as 16 int32 2^(shift-33) and shift-32 (zero
 * where shift < 33; used when every shift is at least 33, see requant16). Then the weights:
 * GEMM blocks of [ceil(K/4)][16][4] bytes of w + 128, or the depthwise taps as int32. */
enum { COL_TERMS = 72 };

static inline const uint8_t* packed_weights(const uint8_t* packed, int32_t nblocks) {
  return packed + (int64_t)nblocks * COL_TERMS * sizeof(int64_t);
}

static int64_t max_abs(const int32_t* v, int32_t n) {
  int64_t m = 0;
  for (int32_t i = 0; i < n; ++i) m = v[i] < 0 ? (-(int64_t)v[i] > m ? -(int64_t)v[i] : m)
                                              : (v[i] > m ? v[i] : m);
  return m;
}

/* How requant16 computes (all exact): 2 when acc + bias fits int32 (|acc| <= k * 2^14) and
 * every shift >= 33: only the high halves of the 64-bit products matter; 1 when the sum fits
 * int32: 32 x 32 -> 64-bit products; 0 otherwise: the sum is formed in int64. */
static int32_t requant_mode(int64_t k, const int32_t* bias, const int32_t* shift, int32_t n) {
  if (k * 128 * 128 + max_abs(bias, n) >= ((int64_t)1 << 31)) return 0;
  for (int32_t c = 0; c < n; ++c)
    if (shift[c] < 33) return 1;
  return 2;
}

/* L's requantize variant from its terms (L->k, bias, shift and cout set): the mode, and
 * whether mode 2 may fold the zero point into the rounding term (every shift <= 54, see
 * epilogue_of). */
static void choose_requant(layer_t* L) {
  L->narrow = requant_mode(L->k, L->bias, L->shift, L->cout);
  L->fold = max_abs(L->shift, L->cout) <= 54;
}

/* Rows [r0, r0 + rows) of the im2col matrix into a (rows x lda) buffer (k tail zeroed).
 * With dilation 1 along x, the taps of one kernel row are one contiguous run of NHWC input
 * (kw * cin bytes), copied at once where it lies wholly inside the image. */
static void gather_rows(const layer_t* L, int64_t r0, int32_t rows, int8_t* a, int64_t lda) {
  const int64_t hw = (int64_t)L->oh * L->ow;
  const size_t run = (size_t)L->kw * L->cin;
  for (int32_t i = 0; i < rows; ++i) {
    const int64_t r = r0 + i;
    const int64_t b = r / hw, oy = (r % hw) / L->ow, ox = r % L->ow;
    const int64_t ix0 = ox * L->sw - L->left;
    const int whole = L->dw == 1 && ix0 >= 0 && ix0 + L->kw <= L->w;
    int8_t* dst = a + (int64_t)i * lda;
    for (int32_t ky = 0; ky < L->kh; ++ky) {
      const int64_t iy = oy * L->sh + (int64_t)ky * L->dh - L->top;
      if (iy < 0 || iy >= L->h) {
        memset(dst, (int)(int8_t)L->in_zp, run);
        dst += run;
        continue;
      }
      const int8_t* src = L->x + ((b * L->h + iy) * L->w) * L->cin;
      if (whole) {
        memcpy(dst, src + ix0 * L->cin, run);
        dst += run;
        continue;
      }
      for (int32_t kx = 0; kx < L->kw; ++kx, dst += L->cin) {
        const int64_t ix = ix0 + (int64_t)kx * L->dw;
        if (ix < 0 || ix >= L->w)
          memset(dst, (int)(int8_t)L->in_zp, (size_t)L->cin);
        else
          memcpy(dst, src + ix * L->cin, (size_t)L->cin);
      }
    }
    memset(a + (int64_t)i * lda + L->k, 0, (size_t)(lda - L->k));
  }
}

static int32_t row_sum(const int8_t* a, int64_t k) {
  int64_t i = 0;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  /* 64 bytes per vpdpbusd against ones (u8 1 x s8 a) */
  __m512i acc = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi8(1);
  for (; i + 64 <= k; i += 64)
    acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(a + i));
  if (i < k)
    acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(
        (__mmask64)(~0ULL >> (64 - (k - i))), a + i));
  return _mm512_reduce_add_epi32(acc);
#else
  int32_t s = 0;
  for (; i < k; ++i) s += a[i];
  return s;
#endif
}

/* The requantize instruction's arithmetic on one row of 16 (or `cols`) accumulators. */
static inline void requant_row(const layer_t* L, const int32_t* acc, int32_t col0, int32_t cols,
                               int8_t* o) {
  for (int32_t j = 0; j < cols; ++j) {
    const int32_t c = col0 + j;
    int64_t v = ((((int64_t)acc[j] + L->bias[c]) * L->mult[c]) +
                 ((int64_t)1 << (L->shift[c] - 1))) >> L->shift[c];
    v += L->zp;
    v = v < L->lo ? L->lo : (v > L->hi ? L->hi : v);
    o[j] = (int8_t)v;
  }
}

/* One row of a block's accumulators (sum a*(w+128)) to int8: the 128 * row-sum correction,
 * then the requantize arithmetic; the AVX2 and portable micro-kernels end with this. */
static inline void finish_row(const layer_t* L, int32_t* acc, int32_t sum, int32_t col0,
                              int32_t cols, int64_t row) {
  for (int32_t j = 0; j < FAST_NB; ++j) acc[j] -= 128 * sum;
  requant_row(L, acc, col0, cols, L->out + row * L->cout + col0);
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
/* 16 accumulators (minus 128 * row sum) requantized and stored; `cols` < 16 masks the store.
 * The per-column terms come pre-arranged per 16-column block (layer_t.col64, see
 * column_terms): even and odd lanes are multiplied, rounded and shifted as int64 separately
 * and meet again before the store. When acc + bias cannot leave int32 (layer_t.narrow) the
 * products are vpmuldq's 32 x 32 -> 64-bit ones; otherwise the sum is formed in int64
 * first. Both are the requantize formula exactly. */
typedef struct { /* one block's requantize terms and the layer's constants, in registers */
  __m512i bias, mult_even, mult_odd, round_even, round_odd, shift_even, shift_odd;
  __m512i round32, shift32;
  __m512i lo, hi, zp;   /* lo - zp, hi - zp (int64), zp (int32) */
  __m512i lo32, hi32;   /* lo, hi (int32) */
  __m512i round32z;     /* mode 2: round32 + zp * 2^(shift-32), the zero point folded in */
  __m512i lo8, hi8;     /* lo, hi (int8 lanes) */
  int mode;             /* requant_mode */
  int fold;             /* round32z holds the zero point (see epilogue_of) */
} epilogue_t;

/* Loaded into locals once per micro-kernel call: stores through int8_t pointers may alias
 * anything, so terms read through L would be reloaded after every store. */
static inline __attribute__((always_inline)) epilogue_t epilogue_of(const layer_t* L,
                                                                    int32_t block) {
  const int64_t* p = L->col64 + (int64_t)block * COL_TERMS;
  epilogue_t e = {_mm512_loadu_si512(p), _mm512_loadu_si512(p + 8), _mm512_loadu_si512(p + 16),
                  _mm512_loadu_si512(p + 24), _mm512_loadu_si512(p + 32),
                  _mm512_loadu_si512(p + 40), _mm512_loadu_si512(p + 48),
                  _mm512_loadu_si512(p + 56), _mm512_loadu_si512(p + 64),
                  _mm512_set1_epi64(L->lo - L->zp), _mm512_set1_epi64(L->hi - L->zp),
                  _mm512_set1_epi32((int)L->zp), _mm512_set1_epi32((int)L->lo),
                  _mm512_set1_epi32((int)L->hi), _mm512_setzero_si512(),
                  _mm512_set1_epi8((char)L->lo), _mm512_set1_epi8((char)L->hi), L->narrow,
                  L->fold};
  /* |hi32(P)| <= 2^30, so hi32(P) + 2^(s-33) + zp * 2^(s-32) stays in int32 when s <= 54
   * (L->fold) and the shifted sum is the shifted hi32 plus zp exactly. */
  e.round32z = e.fold ? _mm512_add_epi32(e.round32, _mm512_sllv_epi32(e.zp, e.shift32))
                      : e.round32;
  return e;
}

/* Mode 2 from an accumulator that already holds acc + bias (see micro_vnni): the int32
 * result with the zero point added, before the clamp. */
static inline __attribute__((always_inline)) __m512i requant_hi32(const epilogue_t* e,
                                                                   __m512i v) {
  const __m512i even = _mm512_mul_epi32(v, e->mult_even);
  const __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(v, 32), e->mult_odd);
  const __m512i h = _mm512_mask_shuffle_epi32(odd, (__mmask16)0x5555, even, _MM_PERM_CDAB);
  const __m512i r = _mm512_srav_epi32(_mm512_add_epi32(h, e->round32z), e->shift32);
  return e->fold ? r : _mm512_add_epi32(r, e->zp);
}

/* Four vectors of int32 results narrowed together to 64 bytes, h0's 16 first: saturating
 * packs (int32 -> int16 -> int8 is the clamp to [-128, 127]), the layer's clamp on the
 * bytes, then one permute puts each vector's 16 bytes back in order (the packs interleave
 * them per 128-bit lane). store_rows4 stores them as four rows of an output matrix; rows
 * from `rows` on are not stored, `cols` < 16 masks the stores. */
static inline __attribute__((always_inline)) __m512i narrow4(const epilogue_t* e, __m512i h0,
                                                             __m512i h1, __m512i h2,
                                                             __m512i h3) {
  const __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(h0, h1), _mm512_packs_epi32(h2, h3));
  return _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
      _mm512_min_epi8(_mm512_max_epi8(b, e->lo8), e->hi8));
}

static inline __attribute__((always_inline)) void store_rows4(const epilogue_t* e, __m512i h0,
                                                              __m512i h1, __m512i h2,
                                                              __m512i h3, int32_t rows,
                                                              int32_t cols, int8_t* o,
                                                              int64_t ldo) {
  const __m512i b = narrow4(e, h0, h1, h2, h3);
  const __mmask16 keep = (__mmask16)(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
  _mm_mask_storeu_epi8(o, keep, _mm512_castsi512_si128(b));
  if (rows > 1) _mm_mask_storeu_epi8(o + ldo, keep, _mm512_extracti32x4_epi32(b, 1));
  if (rows > 2) _mm_mask_storeu_epi8(o + 2 * ldo, keep, _mm512_extracti32x4_epi32(b, 2));
  if (rows > 3) _mm_mask_storeu_epi8(o + 3 * ldo, keep, _mm512_extracti32x4_epi32(b, 3));
}

static inline __attribute__((always_inline)) void requant16(const epilogue_t* e, __m512i acc,
                                                            int32_t cols, int8_t* o) {
  __m512i even, odd; /* the products of lanes 0, 2, .. 14 and 1, 3, .. 15 as int64 */
  if (e->mode == 2) {
    /* floor((P + 2^(s-1)) / 2^s) == floor((hi32(P) + 2^(s-33)) / 2^(s-32)) for s >= 33 */
    const __m512i v = _mm512_add_epi32(acc, e->bias);
    even = _mm512_mul_epi32(v, e->mult_even);
    odd = _mm512_mul_epi32(_mm512_srli_epi64(v, 32), e->mult_odd);
    __m512i h = _mm512_mask_shuffle_epi32(odd, (__mmask16)0x5555, even, _MM_PERM_CDAB);
    h = _mm512_add_epi32(_mm512_srav_epi32(_mm512_add_epi32(h, e->round32), e->shift32), e->zp);
    h = _mm512_min_epi32(_mm512_max_epi32(h, e->lo32), e->hi32);
    const __m128i bytes = _mm512_cvtepi32_epi8(h);
    if (cols >= 16)
      _mm_storeu_si128((__m128i*)o, bytes);
    else
      _mm_mask_storeu_epi8(o, (__mmask16)((1u << cols) - 1), bytes);
    return;
  }
  if (e->mode == 1) {
    const __m512i v = _mm512_add_epi32(acc, e->bias);
    even = _mm512_mul_epi32(v, e->mult_even);
    odd = _mm512_mul_epi32(_mm512_srli_epi64(v, 32), e->mult_odd);
  } else {
    even = _mm512_add_epi64(_mm512_srai_epi64(_mm512_slli_epi64(acc, 32), 32),
                            _mm512_srai_epi64(_mm512_slli_epi64(e->bias, 32), 32));
    odd = _mm512_add_epi64(_mm512_srai_epi64(acc, 32), _mm512_srai_epi64(e->bias, 32));
    even = _mm512_mullo_epi64(even, e->mult_even);
    odd = _mm512_mullo_epi64(odd, e->mult_odd);
  }
  even = _mm512_srav_epi64(_mm512_add_epi64(even, e->round_even), e->shift_even);
  odd = _mm512_srav_epi64(_mm512_add_epi64(odd, e->round_odd), e->shift_odd);
  even = _mm512_min_epi64(_mm512_max_epi64(even, e->lo), e->hi);
  odd = _mm512_min_epi64(_mm512_max_epi64(odd, e->lo), e->hi);
  /* the odd lanes' low halves into the odd int32 positions */
  const __m512i both = _mm512_mask_shuffle_epi32(even, (__mmask16)0xAAAA, odd, _MM_PERM_CDAB);
  /* narrowed in a register: vpmovdb with a memory operand is microcoded on some cores */
  const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(both, e->zp));
  if (cols >= 16)
    _mm_storeu_si128((__m128i*)o, bytes);
  else
    _mm_mask_storeu_epi8(o, (__mmask16)((1u << cols) - 1), bytes);
}

#if defined(__GNUC__) && !defined(__clang__)
/* acc += w (u8) . 4 bytes at p (s8), broadcast from memory. Inline asm: GCC 12 copies the
 * accumulators between registers around the intrinsic, doubling the micro-kernel's uops. */
#define DPBUSD_BCAST(acc, w, p) \
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(p)))
#else
#define DPBUSD_BCAST(acc, w, p) \
  acc = _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(*(p)))
#endif
#define ROWS_DO(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define GROUPS_DO(X) X(0, 1, 2, 3) X(4, 5, 6, 7) X(8, 9, 10, 11)
/* HI32 (requant mode 2, a constant per instantiation): the accumulators start at
 * bias - 128 * row sum, so the epilogue is requant_hi32 and four-row stores; otherwise they
 * start at 0 and each row goes through requant16. */
static inline __attribute__((always_inline)) void micro_vnni(
    const layer_t* L, const int8_t* a, int64_t lda, const int32_t* sums, int32_t rows,
    int32_t nb, int32_t block, int64_t row0, int HI32) {
  const int64_t* terms = L->col64 + (int64_t)block * COL_TERMS;
  const __m512i bias0 = HI32 ? _mm512_loadu_si512(terms) : _mm512_setzero_si512();
  const __m512i bias1 = HI32 && nb == 2 ? _mm512_loadu_si512(terms + COL_TERMS)
                                        : _mm512_setzero_si512();
#define DECL(i)                                                                      \
  __m512i c0_##i = bias0, c1_##i = bias1;                                            \
  if (HI32 && rows > i) {                                                            \
    const __m512i s = _mm512_set1_epi32(sums[i] * 128);                              \
    c0_##i = _mm512_sub_epi32(c0_##i, s);                                            \
    c1_##i = _mm512_sub_epi32(c1_##i, s);                                            \
  }
  ROWS_DO(DECL)
#undef DECL
  const uint8_t* b0 = L->wp + (int64_t)block * L->k4 * 64;
  const uint8_t* b1 = b0 + L->k4 * 64;
  const int8_t* ar = a;
  for (int64_t q = 0; q < L->k4; ++q, ar += 4) {
    const __m512i w0 = _mm512_loadu_si512(b0 + q * 64);
    const __m512i w1 = nb == 2 ? _mm512_loadu_si512(b1 + q * 64) : w0;
#define STEP(i)                                                                  \
    if (rows > i) {                                                              \
      const int32_t* a4 = (const int32_t*)(ar + i * lda);                        \
      DPBUSD_BCAST(c0_##i, w0, a4);                                              \
      if (nb == 2) DPBUSD_BCAST(c1_##i, w1, a4);                                 \
    }
    ROWS_DO(STEP)
#undef STEP
  }
  const int32_t col0 = block * FAST_NB;
  const int32_t cols = L->cout - col0;
  int8_t* const out = L->out + row0 * L->cout + col0;
  const int64_t ldo = L->cout;
  if (HI32) {
    /* rows i..l of block half c (c0 or c1) with its terms e, `n` columns from column `off` */
#define GROUP(c, e, n, off, i, j, k, l)                                                   \
    if (rows > i)                                                                         \
      store_rows4(&e, requant_hi32(&e, c##_##i), requant_hi32(&e, c##_##j),               \
                  requant_hi32(&e, c##_##k), requant_hi32(&e, c##_##l), rows - i, n,      \
                  out + i * ldo + off, ldo);
#define GROUP0(i, j, k, l) GROUP(c0, e0, cols, 0, i, j, k, l)
#define GROUP1(i, j, k, l) GROUP(c1, e1, cols - 16, 16, i, j, k, l)
    const epilogue_t e0 = epilogue_of(L, block);
    GROUPS_DO(GROUP0)
    if (nb == 2) {
      const epilogue_t e1 = epilogue_of(L, block + 1);
      GROUPS_DO(GROUP1)
    }
#undef GROUP1
#undef GROUP0
#undef GROUP
    return;
  }
  const epilogue_t e0 = epilogue_of(L, block);
#define STORE0(i)                                                                       \
  if (rows > i)                                                                         \
    requant16(&e0, _mm512_sub_epi32(c0_##i, _mm512_set1_epi32(sums[i] * 128)),          \
              cols < 16 ? cols : 16, out + i * ldo);
  ROWS_DO(STORE0)
#undef STORE0
  if (nb == 2) {
    const epilogue_t e1 = epilogue_of(L, block + 1);
#define STORE1(i)                                                                       \
    if (rows > i)                                                                       \
      requant16(&e1, _mm512_sub_epi32(c1_##i, _mm512_set1_epi32(sums[i] * 128)),        \
                cols - 16 < 16 ? cols - 16 : 16, out + i * ldo + 16);
    ROWS_DO(STORE1)
#undef STORE1
  }
}

#define MICRO_CASE(R)                                                          \
  case R:                                                                      \
    if (L->narrow == 2) {                                                      \
      if (nb == 2) micro_vnni(L, a, lda, sums, R, 2, block, row0, 1);          \
      else micro_vnni(L, a, lda, sums, R, 1, block, row0, 1);                  \
    } else if (nb == 2) {                                                      \
      micro_vnni(L, a, lda, sums, R, 2, block, row0, 0);                       \
    } else {                                                                   \
      micro_vnni(L, a, lda, sums, R, 1, block, row0, 0);                       \
    }                                                                          \
    break;

static void micro(const layer_t* L, const int8_t* a, int64_t lda, const int32_t* sums,
                  int32_t rows, int32_t nb, int32_t block, int64_t row0) {
  switch (rows) {
    MICRO_CASE(1) MICRO_CASE(2) MICRO_CASE(3) MICRO_CASE(4) MICRO_CASE(5) MICRO_CASE(6)
    MICRO_CASE(7) MICRO_CASE(8) MICRO_CASE(9) MICRO_CASE(10) MICRO_CASE(11) MICRO_CASE(12)
    default: break;
  }
}
#elif defined(__AVX2__)
/* AVX2 without VNNI: vpmaddwd on 16-bit operands (exact; vpmaddubsw would saturate). Per
 * reduction step of four, each 16-byte quarter of a packed block (4 columns x 4 k) widens to
 * 16 u16 lanes and meets the row's four A values (s16, repeated): 8 int32 lanes holding two
 * partial sums per column, added pairwise at the end. Two rows x 16 columns per pass. */
static inline __m256i widen_a4(const int8_t* p) {
  int32_t a4;
  memcpy(&a4, p, 4);
  return _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(a4)));
}

static inline __m256i pair_sums(__m256i lo, __m256i hi) { /* columns 0-3 | 4-7 -> 0..7 */
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
}

static void micro(const layer_t* L, const int8_t* a, int64_t lda, const int32_t* sums,
                  int32_t rows, int32_t nb, int32_t block, int64_t row0) {
  for (int32_t bi = 0; bi < nb; ++bi) {
    const int32_t col0 = (block + bi) * FAST_NB;
    const uint8_t* b = L->wp + (int64_t)(block + bi) * L->k4 * 64;
    int32_t cols = L->cout - col0;
    if (cols > FAST_NB) cols = FAST_NB;
    for (int32_t i = 0; i < rows; i += 2) {
      const int two = i + 1 < rows;
      const int8_t* a0 = a + i * lda;
      const int8_t* a1 = two ? a0 + lda : a0;
      __m256i p00 = _mm256_setzero_si256(), p01 = p00, p02 = p00, p03 = p00;
      __m256i p10 = p00, p11 = p00, p12 = p00, p13 = p00;
      for (int64_t q = 0; q < L->k4; ++q) {
        const uint8_t* bq = b + q * 64;
        const __m256i w0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)bq));
        const __m256i w1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(bq + 16)));
        const __m256i w2 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(bq + 32)));
        const __m256i w3 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(bq + 48)));
        const __m256i x0 = widen_a4(a0 + 4 * q), x1 = widen_a4(a1 + 4 * q);
        p00 = _mm256_add_epi32(p00, _mm256_madd_epi16(w0, x0));
        p01 = _mm256_add_epi32(p01, _mm256_madd_epi16(w1, x0));
        p02 = _mm256_add_epi32(p02, _mm256_madd_epi16(w2, x0));
        p03 = _mm256_add_epi32(p03, _mm256_madd_epi16(w3, x0));
        p10 = _mm256_add_epi32(p10, _mm256_madd_epi16(w0, x1));
        p11 = _mm256_add_epi32(p11, _mm256_madd_epi16(w1, x1));
        p12 = _mm256_add_epi32(p12, _mm256_madd_epi16(w2, x1));
        p13 = _mm256_add_epi32(p13, _mm256_madd_epi16(w3, x1));
      }
      int32_t acc[2][FAST_NB];
      _mm256_storeu_si256((__m256i*)acc[0], pair_sums(p00, p01));
      _mm256_storeu_si256((__m256i*)(acc[0] + 8), pair_sums(p02, p03));
      _mm256_storeu_si256((__m256i*)acc[1], pair_sums(p10, p11));
      _mm256_storeu_si256((__m256i*)(acc[1] + 8), pair_sums(p12, p13));
      for (int r = 0; r < 1 + two; ++r)
        finish_row(L, acc[r], sums[i + r], col0, cols, row0 + i + r);
    }
  }
}
#else
/* Portable micro-kernel over the same packed layout. */
static void micro(const layer_t* L, const int8_t* a, int64_t lda, const int32_t* sums,
                  int32_t rows, int32_t nb, int32_t block, int64_t row0) {
  for (int32_t bi = 0; bi < nb; ++bi) {
    const int32_t col0 = (block + bi) * FAST_NB;
    const uint8_t* b = L->wp + (int64_t)(block + bi) * L->k4 * 64;
    int32_t cols = L->cout - col0;
    if (cols > FAST_NB) cols = FAST_NB;
    for (int32_t i = 0; i < rows; ++i) {
      int32_t acc[FAST_NB] = {0};
      const int8_t* ar = a + i * lda;
      for (int64_t q = 0; q < L->k4; ++q) {
        const uint8_t* bq = b + q * 64;
        const int32_t a0 = ar[4 * q], a1 = ar[4 * q + 1], a2 = ar[4 * q + 2],
                      a3 = ar[4 * q + 3];
        for (int32_t j = 0; j < FAST_NB; ++j)
          acc[j] += a0 * bq[4 * j] + a1 * bq[4 * j + 1] + a2 * bq[4 * j + 2] +
                    a3 * bq[4 * j + 3];
      }
      finish_row(L, acc, sums[i], col0, cols, row0 + i);
    }
  }
}
#endif

/* One work item: a chunk of output rows times a range of 16-column blocks. */
static int layer_item(layer_t* L, int64_t item) {
  const int64_t ri = item / L->col_items, ci = item % L->col_items;
  const int64_t r0 = ri * L->rows_per_item;
  int64_t rows = L->m - r0;
  if (rows > L->rows_per_item) rows = L->rows_per_item;
  const int32_t blk0 = (int32_t)(ci * L->blocks_per_item);
  int32_t blk1 = blk0 + L->blocks_per_item;
  if (blk1 > L->nblocks) blk1 = L->nblocks;
  const int8_t* a;
  int64_t lda;
  int32_t sums[1024];
  int8_t* buf = NULL;
  if (L->direct) {
    a = L->x + r0 * L->k;
    lda = L->k;
  } else {
    lda = L->k4 * 4;
    buf = scratch(rows * lda);
    if (buf == NULL) return -1;
    gather_rows(L, r0, (int32_t)rows, buf, lda);
    a = buf;
  }
  for (int64_t i = 0; i < rows; ++i) sums[i] = row_sum(a + i * lda, L->k);
  for (int32_t blk = blk0; blk < blk1; blk += 2) {
    const int32_t nb = blk + 1 < blk1 ? 2 : 1;
    for (int64_t i = 0; i < rows; i += FAST_MR) {
      const int32_t mr = (int32_t)(rows - i < FAST_MR ? rows - i : FAST_MR);
      micro(L, a + i * lda, lda, sums + i, mr, nb, blk, r0 + i);
    }
  }
  return 0;
}

/* Every thread takes work items (L->item) until none is left. */
static int items_task(int task_id, LeptonParallelEnv* penv, void* cdata) {
  (void)task_id; (void)penv;
  layer_t* L = (layer_t*)cdata;
  const int64_t items = (int64_t)L->row_items * L->col_items;
  for (;;) {
    const int64_t item = __atomic_fetch_add(&L->next_item, 1, __ATOMIC_RELAXED);
    if (item >= items) break;
    if (L->item(L, item) != 0) {
      __atomic_store_n(&L->failed, 1, __ATOMIC_RELAXED);
      return -1;
    }
  }
  return 0;
}

/* L's work items over the artifact's thread pool (one thread without one): 1 when all are
 * done, -1 if any failed. */
static int run_items(layer_t* L) {
  int rc;
  if (&__TVMBackendParallelLaunch && __TVMBackendParallelLaunch) {
    rc = ((int (*)(LeptonParallelLambda, void*, int))__TVMBackendParallelLaunch)(items_task, L,
                                                                                   0);
  } else {
    LeptonParallelEnv one = {NULL, 1};
    rc = items_task(0, &one, L);
  }
  return rc != 0 || L->failed ? -1 : 1;
}

/* A whole int8 conv2d (NHWC input, groups 1) or dense layer (n = M rows of 1x1x K) with its
 * requantization, in fast mode. Returns 0 without touching anything in sim mode (the kernel
 * then runs its instruction stream), 1 when the layer is done, -1 on allocation failure. */
int lepton_layer_i8(const int8_t* X, const uint8_t* WP, const int32_t* bias,
                    const int32_t* mult, const int32_t* shift, const int32_t* qp, int8_t* OUT,
                    int32_t n, int32_t h, int32_t w, int32_t cin, int32_t cout, int32_t kh,
                    int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t top,
                    int32_t left, int32_t oh, int32_t ow, int32_t in_zp) {
  if (g_mode != LEPTON_MODE_FAST) return 0;
  layer_t L = {.x = X, .bias = bias, .mult = mult, .shift = shift, .zp = qp[0],
               .lo = qp[1], .hi = qp[2], .out = OUT, .n = n, .h = h, .w = w, .cin = cin,
               .cout = cout, .kh = kh, .kw = kw, .sh = sh, .sw = sw, .dh = dh, .dw = dw,
               .top = top, .left = left, .oh = oh, .ow = ow, .in_zp = in_zp};
  L.m = (int64_t)n * oh * ow;
  L.k = (int64_t)kh * kw * cin;
  L.k4 = (L.k + 3) / 4;
  L.nblocks = (cout + FAST_NB - 1) / FAST_NB;
  L.direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && top == 0 && left == 0 &&
             oh == h && ow == w && L.k % 4 == 0;
  /* Row chunks whose A panel stays in L2; a multiple of the micro-tile height. */
  int64_t rows = FAST_A_BYTES / (L.k4 * 4);
  rows = rows < FAST_MR ? FAST_MR : rows / FAST_MR * FAST_MR;
  if (rows > 1020) rows = 1020;
  if (rows > L.m) rows = L.m;
  /* Enough work items for every thread several times over: split columns when rows are few. */
  L.rows_per_item = (int32_t)rows;
  L.row_items = (int32_t)((L.m + rows - 1) / rows);
  L.blocks_per_item = L.nblocks;
  L.col_items = 1;
  while (L.row_items * L.col_items < 8 && L.blocks_per_item > 2) {
    L.blocks_per_item = (L.blocks_per_item + 1) / 2;
    L.blocks_per_item += L.blocks_per_item % 2; /* pairs of blocks for the micro-kernel */
    L.col_items = (L.nblocks + L.blocks_per_item - 1) / L.blocks_per_item;
  }
  L.col64 = (const int64_t*)WP;
  L.wp = packed_weights(WP, L.nblocks);
  choose_requant(&L);
  L.item = layer_item;
  return run_items(&L);
}

/* ---- depthwise conv2d, a whole layer per call ----------------------------------------------
 *
 * The host's int8 depthwise kernel (channels innermost, NHWC) hands its layer to
 * lepton_dwconv_i8 in both modes (it is host work; sim mode counts NPU instructions only).
 * Per output pixel, each tap's 16 channels are a contiguous run of the input; padding taps
 * read a row of the input zero point. The requantize epilogue is the GEMM layers' one.
 */
enum { DW_MAX_TAPS = 64, DW_REG_TAPS = 9, DW_REG_ROW = 256 };

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
/* Blocks blk .. blk + NB - 1 (all full) of one pixel: NB independent accumulators, so the
 * taps' vpdpwssd chains overlap. */
static inline __attribute__((always_inline)) void dw_blocks(
    const layer_t* L, const int8_t* const* p, int32_t taps, int32_t blk, int NB, int8_t* o) {
  const int32_t off = blk * FAST_NB;
  const int32_t* wt = L->w32 + off;
  __m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
  for (int32_t t = 0; t < taps; ++t) {
    const int8_t* x = p[t] + off;
    const int32_t* wv = wt + (int64_t)t * L->cpad;
    for (int j = 0; j < NB; ++j)
      acc[j] = _mm512_dpwssd_epi32(
          acc[j], _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(x + 16 * j))),
          _mm512_load_si512(wv + 16 * j));
  }
  for (int j = 0; j < NB; ++j) {
    const epilogue_t e = epilogue_of(L, blk + j);
    requant16(&e, acc[j], FAST_NB, o + off + 16 * j);
  }
}

/* Up to DW_REG_TAPS taps (3x3): one full 16-channel block along a whole output row, the
 * taps' weights held in registers for every pixel, four pixels narrowed together in
 * requantize mode 2. pix[ox * DW_REG_TAPS + t]: tap t's input pixel for output column ox. */
static void dw_row_block(const layer_t* L, const int8_t* const* pix, int32_t taps, int32_t ow,
                         int32_t blk, int8_t* out) {
  const int32_t off = blk * FAST_NB;
  __m512i w[DW_REG_TAPS];
  for (int32_t t = 0; t < DW_REG_TAPS; ++t)
    w[t] = t < taps ? _mm512_loadu_si512(L->w32 + (int64_t)t * L->cpad + off)
                    : _mm512_setzero_si512();
  const epilogue_t e = epilogue_of(L, blk);
  const int64_t ldo = L->cout;
  int8_t* o = out + off;
#define DW_ACC(acc, q)                                                                  \
  __m512i acc = e.mode == 2 ? e.bias : _mm512_setzero_si512();                          \
  for (int32_t t = 0; t < taps; ++t)                                                    \
    acc = _mm512_dpwssd_epi32(                                                          \
        acc, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)((q)[t] + off))), w[t]);
  int32_t ox = 0;
  if (e.mode == 2) {
    for (; ox + 4 <= ow; ox += 4) {
      const int8_t* const* q = pix + (int64_t)ox * DW_REG_TAPS;
      DW_ACC(a0, q)
      DW_ACC(a1, q + DW_REG_TAPS)
      DW_ACC(a2, q + 2 * DW_REG_TAPS)
      DW_ACC(a3, q + 3 * DW_REG_TAPS)
      store_rows4(&e, requant_hi32(&e, a0), requant_hi32(&e, a1), requant_hi32(&e, a2),
                  requant_hi32(&e, a3), 4, FAST_NB, o + ox * ldo, ldo);
    }
  }
  for (; ox < ow; ++ox) {
    const int8_t* const* q = pix + (int64_t)ox * DW_REG_TAPS;
    DW_ACC(a, q)
    if (e.mode == 2)
      store_rows4(&e, requant_hi32(&e, a), a, a, a, 1, FAST_NB, o + ox * ldo, ldo);
    else
      requant16(&e, a, FAST_NB, o + ox * ldo);
  }
#undef DW_ACC
}
#endif

static inline __attribute__((always_inline)) void dw_pixel(const layer_t* L, const int8_t* const* p, int32_t taps, int32_t blk0,
                     int32_t blk1, int8_t* o) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
  const int32_t full = L->cout / FAST_NB;  /* blocks with all 16 channels */
  int32_t blk = blk0;
  const int32_t end = blk1 < full ? blk1 : full;
  for (; blk + 4 <= end; blk += 4) dw_blocks(L, p, taps, blk, 4, o);
  if (end - blk == 3) dw_blocks(L, p, taps, blk, 3, o);
  else if (end - blk == 2) dw_blocks(L, p, taps, blk, 2, o);
  else if (end - blk == 1) dw_blocks(L, p, taps, blk, 1, o);
  if (blk1 > full) { /* the last block: only cout % 16 channels are there to read */
    const int32_t off = full * FAST_NB, cols = L->cout - off;
    const __mmask16 keep = (__mmask16)((1u << cols) - 1);
    const int32_t* wt = L->w32 + off;
    __m512i acc = _mm512_setzero_si512();
    for (int32_t t = 0; t < taps; ++t)
      acc = _mm512_dpwssd_epi32(
          acc, _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, p[t] + off)),
          _mm512_load_si512(wt + (int64_t)t * L->cpad));
    const epilogue_t e = epilogue_of(L, full);
    requant16(&e, acc, cols, o + off);
  }
#else
  for (int32_t blk = blk0; blk < blk1; ++blk) {
    const int32_t off = blk * FAST_NB;
    const int32_t cols = L->cout - off < FAST_NB ? L->cout - off : FAST_NB;
    int32_t acc[FAST_NB] = {0};
    for (int32_t t = 0; t < taps; ++t) {
      const int8_t* x = p[t] + off;
      const int32_t* wt = L->w32 + (int64_t)t * L->cpad + off;
      for (int32_t j = 0; j < cols; ++j) acc[j] += (int32_t)x[j] * (int16_t)wt[j];
    }
    requant_row(L, acc, off, cols, o + off);
  }
#endif
}

/* Output column ox's tap pointers into q: prev's (the previous column's; may be q itself)
 * stepped along when ox and the column before it are both interior (every column tap inside
 * the image: `stepped`), else computed, with padding taps reading zprow. Returns whether ox
 * is interior. row[t]: tap t's input row (NULL above or below the image); dx[t]: its column
 * offset; step[t]: how far it moves per output column. */
static inline int tap_pointers(const layer_t* L, int32_t ox, int32_t taps,
                               const int8_t* const* row, const int32_t* dx,
                               const int64_t* step, const int8_t* zprow,
                               const int8_t* const* prev, int stepped, const int8_t** q) {
  const int64_t ix0 = (int64_t)ox * L->sw - L->left;
  const int interior = ix0 >= 0 && ix0 + (int64_t)(L->kw - 1) * L->dw < L->w;
  if (interior && stepped) {
    for (int32_t t = 0; t < taps; ++t) q[t] = prev[t] + step[t];
  } else {
    for (int32_t t = 0; t < taps; ++t) {
      const int64_t ix = ix0 + dx[t];
      q[t] = row[t] != NULL && ix >= 0 && ix < L->w ? row[t] + ix * L->cout : zprow;
    }
  }
  return interior;
}

/* One work item: one output row, a range of 16-channel blocks. */
static int dw_item(layer_t* L, int64_t item) {
  const int64_t ri = item / L->col_items, ci = item % L->col_items;
  const int64_t b = ri / L->oh, oy = ri % L->oh;
  const int32_t blk0 = (int32_t)(ci * L->blocks_per_item);
  const int32_t blk1 = blk0 + L->blocks_per_item < L->nblocks ? blk0 + L->blocks_per_item
                                                              : L->nblocks;
  const int32_t taps = L->kh * L->kw;
  int8_t* zprow = scratch(L->cpad);  /* what padding taps read */
  if (zprow == NULL) return -1;
  memset(zprow, (int)(int8_t)L->in_zp, (size_t)L->cpad);
  const int8_t* row[DW_MAX_TAPS];  /* per tap: its input row, NULL above or below the image */
  int32_t dx[DW_MAX_TAPS];         /* per tap: its column offset from the window's left */
  for (int32_t ky = 0; ky < L->kh; ++ky) {
    const int64_t iy = oy * L->sh + (int64_t)ky * L->dh - L->top;
    const int8_t* base = iy >= 0 && iy < L->h ? L->x + ((b * L->h + iy) * L->w) * L->cout
                                              : NULL;
    for (int32_t kx = 0; kx < L->kw; ++kx) {
      row[ky * L->kw + kx] = base;
      dx[ky * L->kw + kx] = kx * L->dw;
    }
  }
  /* A private copy: int8 stores may alias *L, which would reload its terms every block */
  const layer_t local = *L;
  /* Interior pixels (every column tap inside the image) step each tap's pointer along. */
  int64_t step[DW_MAX_TAPS];
  for (int32_t t = 0; t < taps; ++t) step[t] = row[t] != NULL ? (int64_t)L->sw * L->cout : 0;
  int8_t* out = L->out + ri * L->ow * L->cout;
  const int8_t* p[DW_MAX_TAPS];
  int stepped = 0;  /* the previous pixel was interior */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
  if (taps <= DW_REG_TAPS && L->ow <= DW_REG_ROW) {
    /* every pixel's tap pointers first, then each full block along the row */
    const int8_t* pix[DW_REG_ROW * DW_REG_TAPS];
    for (int32_t ox = 0; ox < L->ow; ++ox) {
      const int8_t** q = pix + (int64_t)ox * DW_REG_TAPS;
      stepped = tap_pointers(L, ox, taps, row, dx, step, zprow, ox ? q - DW_REG_TAPS : q,
                             stepped, q);
    }
    const int32_t full = L->cout / FAST_NB;
    const int32_t end = blk1 < full ? blk1 : full;
    for (int32_t blk = blk0; blk < end; ++blk)
      dw_row_block(&local, pix, taps, L->ow, blk, out);
    if (blk1 > full)  /* the channel tail: per pixel, masked */
      for (int32_t ox = 0; ox < L->ow; ++ox)
        dw_pixel(&local, pix + (int64_t)ox * DW_REG_TAPS, taps, full, blk1,
                 out + (int64_t)ox * L->cout);
    return 0;
  }
#endif
  for (int32_t ox = 0; ox < L->ow; ++ox) {
    stepped = tap_pointers(L, ox, taps, row, dx, step, zprow, p, stepped, p);
    dw_pixel(&local, p, taps, blk0, blk1, out + (int64_t)ox * L->cout);
  }
  return 0;
}

/* A whole int8 depthwise conv2d (NHWC, one input channel per output channel) with its
 * requantization; the arguments are lepton_layer_i8's (cin == cout; WP packed by
 * npu_fast.pack_depthwise). Returns 1 when the layer is done, 0 when it declines (more than
 * DW_MAX_TAPS taps: the kernel's own loops run instead), -1 on allocation failure. */
int lepton_dwconv_i8(const int8_t* X, const uint8_t* WP, const int32_t* bias,
                     const int32_t* mult, const int32_t* shift, const int32_t* qp, int8_t* OUT,
                     int32_t n, int32_t h, int32_t w, int32_t cin, int32_t cout, int32_t kh,
                     int32_t kw, int32_t sh, int32_t sw, int32_t dh, int32_t dw, int32_t top,
                     int32_t left, int32_t oh, int32_t ow, int32_t in_zp) {
  if (cin != cout || (int64_t)kh * kw > DW_MAX_TAPS) return 0;
  layer_t L = {.x = X, .bias = bias, .mult = mult, .shift = shift, .zp = qp[0],
               .lo = qp[1], .hi = qp[2], .out = OUT, .n = n, .h = h, .w = w, .cin = cin,
               .cout = cout, .kh = kh, .kw = kw, .sh = sh, .sw = sw, .dh = dh, .dw = dw,
               .top = top, .left = left, .oh = oh, .ow = ow, .in_zp = in_zp};
  L.k = (int64_t)kh * kw;
  L.nblocks = (cout + FAST_NB - 1) / FAST_NB;
  L.cpad = L.nblocks * FAST_NB;
  L.row_items = n * oh;
  L.blocks_per_item = L.nblocks;
  L.col_items = 1;
  while (L.row_items * L.col_items < 16 && L.blocks_per_item > 1) {
    L.blocks_per_item = (L.blocks_per_item + 1) / 2;
    L.col_items = (L.nblocks + L.blocks_per_item - 1) / L.blocks_per_item;
  }
  L.col64 = (const int64_t*)WP;
  L.w32 = (const int32_t*)packed_weights(WP, L.nblocks);
  choose_requant(&L);
  L.item = dw_item;
  return run_items(&L);
}

/* The depthwise kernel's fallback view of its packed weights: W[taps][c] (int8). */
int lepton_unpack_depthwise(const uint8_t* WP, int8_t* W, int32_t taps, int32_t c) {
  const int32_t nblocks = (c + FAST_NB - 1) / FAST_NB;
  const int32_t* w32 = (const int32_t*)packed_weights(WP, nblocks);
  for (int32_t t = 0; t < taps; ++t)
    for (int32_t ch = 0; ch < c; ++ch)
      W[(int64_t)t * c + ch] = (int8_t)w32[(int64_t)t * nblocks * FAST_NB + ch];
  return 0;
}

/* Sim mode's view of packed weights: W[k][n] (int8) from the fast layout. */
int lepton_unpack_weights(const uint8_t* WP, int8_t* W, int32_t k, int32_t n) {
  const int64_t k4 = (k + 3) / 4;
  WP = packed_weights(WP, (n + FAST_NB - 1) / FAST_NB);
  for (int32_t kk = 0; kk < k; ++kk)
    for (int32_t j = 0; j < n; ++j)
      W[(int64_t)kk * n + j] = (int8_t)(WP[((int64_t)(j / FAST_NB) * k4 + kk / 4) * 64 +
                                           (j % FAST_NB) * 4 + kk % 4] ^ 0x80);
  return 0;
}

/* ---- the vector unit's layers (sim mode) --------------------------------------------------
 *
 * Depthwise and grouped conv2d, max pooling, means, residual adds and clamps placed on the
 * NPU run on the vector unit: LEPTON_VECTOR_LANES int32 lanes, one op per cycle (add, mul,
 * shift_right_round, min, max, cast_int8_saturate; a mul's product is exact, as in the
 * requantize sequence). int8 operands widen as they load, and the DMA engine's address
 * generation supplies padding values. In sim mode each function below executes that
 * instruction stream lane by lane and counts every vector op (and the lanes it uses) and every
 * DMA descriptor; in fast mode it declines (returns 0) and the kernel's host code computes the
 * same integers. How many rows one DMA descriptor moves (`band`) is the compiler's choice
 * (npu_vector.py): half the input SRAM, so the next band loads while this one computes.
 */
/* One DMA descriptor of `bytes` reading or writing the tensor at `where` (NULL: constants). */
static void sim_dma(const void* where, int64_t bytes) { count_dma(where, NULL, bytes); }

static void sim_vec(int64_t ops, int32_t lanes) {
  __atomic_fetch_add(&g_counters[C_VECTOR_CYCLES], ops, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_counters[C_VECTOR_LANES], ops * lanes, __ATOMIC_RELAXED);
}

static inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* What is left of `total` from `done` on, at most `step`: a band, chunk or block of lanes. */
static inline int64_t step_of(int64_t total, int64_t done, int64_t step) {
  return total - done < step ? total - done : step;
}

/* Input rows [first, last] a band of output rows [y0, y0 + rows) reads, clipped to the image:
 * their count (0 when the band reads padding only). */
static int64_t band_input_rows(int32_t y0, int32_t rows, int32_t stride, int32_t pad,
                               int32_t dil, int32_t k, int32_t h) {
  int64_t first = (int64_t)y0 * stride - pad;
  int64_t last = (int64_t)(y0 + rows - 1) * stride - pad + (int64_t)dil * (k - 1);
  if (first < 0) first = 0;
  if (last > h - 1) last = h - 1;
  return last >= first ? last - first + 1 : 0;
}

/* Depthwise / grouped conv2d with its requantization (lepton_dwconv_i8's arguments, plus
 * `packed` (W is npu_fast.pack_depthwise's layout) or HWIO int8 [KH, KW, Cin/groups, Cout],
 * `groups` and `band`). Per block of `lanes` output channels: its weights and requantize
 * terms load once; per band of output rows the input rows it reads (those channels) load in
 * one descriptor; per output pixel, per tap and input channel of a group, one mul_add (a mul
 * and an add on a spec without it);
 * then the requantize sequence (requant_ops); the band's output stores in one descriptor. */
int lepton_vconv_i8(const int8_t* X, const uint8_t* W, const int32_t* bias,
                    const int32_t* mult, const int32_t* shift, const int32_t* qp, int8_t* OUT,
                    int32_t packed, int32_t groups, int32_t band, int32_t n, int32_t h,
                    int32_t w, int32_t cin, int32_t cout, int32_t kh, int32_t kw, int32_t sh,
                    int32_t sw, int32_t dh, int32_t dw, int32_t top, int32_t left, int32_t oh,
                    int32_t ow, int32_t in_zp) {
  enum { LANES = LEPTON_VECTOR_LANES, TAP_OPS = LEPTON_VECTOR_MUL_ADD ? 1 : 2 };
  if (g_mode != LEPTON_MODE_SIM) return 0;
  if (groups <= 0 || cin % groups || cout % groups || band <= 0) return 0;
  const int32_t cin_g = cin / groups, cout_g = cout / groups;
  const int32_t nb16 = (cout + FAST_NB - 1) / FAST_NB;
  const int32_t* w32 = packed ? (const int32_t*)packed_weights(W, nb16) : NULL;
  const int8_t* w8 = (const int8_t*)W;
  const int64_t zp = qp[0], lo = qp[1], hi = qp[2];
  int32_t acc[LANES];
  for (int32_t c0 = 0; c0 < cout; c0 += LANES) {
    const int32_t cols = (int32_t)step_of(cout, c0, LANES);
    const int64_t chans = (int64_t)((c0 + cols - 1) / cout_g - c0 / cout_g + 1) * cin_g;
    sim_dma(NULL, (int64_t)kh * kw * cin_g * cols + 3 * 4 * cols);
    for (int32_t b = 0; b < n; ++b) {
      for (int32_t y0 = 0; y0 < oh; y0 += band) {
        const int32_t rows = (int32_t)step_of(oh, y0, band);
        sim_dma(X, band_input_rows(y0, rows, sh, top, dh, kh, h) * w * chans);
        for (int32_t y = y0; y < y0 + rows; ++y) {
          for (int32_t x = 0; x < ow; ++x) {
            memset(acc, 0, sizeof(acc));
            for (int32_t ky = 0; ky < kh; ++ky) {
              for (int32_t kx = 0; kx < kw; ++kx) {
                const int64_t iy = (int64_t)y * sh - top + (int64_t)ky * dh;
                const int64_t ix = (int64_t)x * sw - left + (int64_t)kx * dw;
                const int inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
                const int64_t t = (int64_t)ky * kw + kx;
                for (int32_t i = 0; i < cin_g; ++i) {
                  for (int32_t j = 0; j < cols; ++j) {
                    const int32_t o = c0 + j;
                    const int32_t c = o / cout_g * cin_g + i;
                    const int32_t v = inside ? X[(((int64_t)b * h + iy) * w + ix) * cin + c]
                                             : in_zp;
                    const int32_t wt = packed ? (int8_t)w32[t * nb16 * FAST_NB + o]
                                              : w8[(t * cin_g + i) * cout + o];
                    acc[j] += v * wt;
                  }
                  sim_vec(TAP_OPS, cols); /* mul_add, or mul then add */
                }
              }
            }
            int8_t* out = OUT + (((int64_t)b * oh + y) * ow + x) * cout + c0;
            for (int32_t j = 0; j < cols; ++j) {
              const int32_t o = c0 + j;
              const int64_t v = ((((int64_t)acc[j] + bias[o]) * mult[o]) +
                                 ((int64_t)1 << (shift[o] - 1))) >> shift[o];
              out[j] = (int8_t)clamp64(v + zp, lo, hi);
            }
            sim_vec(requant_ops(lo, hi), cols);
          }
        }
        sim_dma(OUT, (int64_t)rows * ow * cols);
      }
    }
  }
  return 1;
}

/* NHWC int8 max pooling: per block of lanes channels and band of output rows, the input rows
 * load in one descriptor; one max per window tap (padding reads as -128, which never wins). */
int lepton_vmaxpool_i8(const int8_t* X, int8_t* OUT, int32_t band, int32_t n, int32_t h,
                       int32_t w, int32_t c, int32_t ph, int32_t pw, int32_t sh, int32_t sw,
                       int32_t top, int32_t left, int32_t oh, int32_t ow) {
  enum { LANES = LEPTON_VECTOR_LANES };
  if (g_mode != LEPTON_MODE_SIM) return 0;
  if (band <= 0) return 0;
  int32_t m[LANES];
  for (int32_t c0 = 0; c0 < c; c0 += LANES) {
    const int32_t cols = (int32_t)step_of(c, c0, LANES);
    for (int32_t b = 0; b < n; ++b) {
      for (int32_t y0 = 0; y0 < oh; y0 += band) {
        const int32_t rows = (int32_t)step_of(oh, y0, band);
        sim_dma(X, band_input_rows(y0, rows, sh, top, 1, ph, h) * w * cols);
        for (int32_t y = y0; y < y0 + rows; ++y) {
          for (int32_t x = 0; x < ow; ++x) {
            for (int32_t j = 0; j < cols; ++j) m[j] = -128;
            for (int32_t ky = 0; ky < ph; ++ky) {
              for (int32_t kx = 0; kx < pw; ++kx) {
                const int64_t iy = (int64_t)y * sh - top + ky, ix = (int64_t)x * sw - left + kx;
                const int inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
                for (int32_t j = 0; j < cols; ++j) {
                  const int32_t v = inside ? X[(((int64_t)b * h + iy) * w + ix) * c + c0 + j]
                                           : -128;
                  m[j] = v > m[j] ? v : m[j];
                }
                sim_vec(1, cols);
              }
            }
            int8_t* out = OUT + (((int64_t)b * oh + y) * ow + x) * c + c0;
            for (int32_t j = 0; j < cols; ++j) out[j] = (int8_t)m[j];
          }
        }
        sim_dma(OUT, (int64_t)rows * ow * cols);
      }
    }
  }
  return 1;
}

/* The int8 mean of X viewed as [outer, count, inner] over its middle axis, rescaled:
 * clamp(((sum - count * zi) * mult + 2^(shift-1)) >> shift) + zo). Per outer index, `band`
 * rows of inner values load per descriptor, one add per row and block of lanes (the sums stay
 * in the accumulator SRAM), then the rescale (requant_ops) and one store of the inner values. */
int lepton_vmean_i8(const int8_t* X, int8_t* OUT, int32_t band, int32_t outer, int32_t count,
                    int32_t inner, int32_t zi, int32_t mult, int32_t shift, int32_t zo) {
  if (g_mode != LEPTON_MODE_SIM) return 0;
  if (band <= 0 || shift < 1) return 0;
  int32_t* acc = (int32_t*)malloc(sizeof(int32_t) * (size_t)(inner > 0 ? inner : 1));
  if (acc == NULL) return -1;
  for (int32_t o = 0; o < outer; ++o) {
    memset(acc, 0, sizeof(int32_t) * (size_t)inner);
    for (int32_t r0 = 0; r0 < count; r0 += band) {
      const int32_t rows = (int32_t)step_of(count, r0, band);
      sim_dma(X, (int64_t)rows * inner);
      for (int32_t r = r0; r < r0 + rows; ++r) {
        const int8_t* x = X + ((int64_t)o * count + r) * inner;
        for (int32_t c0 = 0; c0 < inner; c0 += LEPTON_VECTOR_LANES) {
          const int32_t cols = (int32_t)step_of(inner, c0, LEPTON_VECTOR_LANES);
          for (int32_t j = 0; j < cols; ++j) acc[c0 + j] += x[c0 + j];
          sim_vec(1, cols);
        }
      }
    }
    for (int32_t c0 = 0; c0 < inner; c0 += LEPTON_VECTOR_LANES) {
      const int32_t cols = (int32_t)step_of(inner, c0, LEPTON_VECTOR_LANES);
      for (int32_t j = 0; j < cols; ++j) {
        const int64_t wide = ((int64_t)acc[c0 + j] - (int64_t)count * zi) * mult +
                             ((int64_t)1 << (shift - 1));
        OUT[(int64_t)o * inner + c0 + j] = (int8_t)clamp64((wide >> shift) + zo, -128, 127);
      }
      sim_vec(requant_ops(-128, 127), cols);
    }
    sim_dma(OUT, inner);
  }
  free(acc);
  return 1;
}

/* Residual add of two int8 tensors into a third quantization (reference.add):
 * clamp((((a - za) ma + (b - zb) mb + 2^(shift-1)) >> shift) + zo, lo, hi), `chunk` elements
 * of each operand per descriptor; up to 7 ops per vector (mul, mul_add, add, shift, max, min,
 * cast; a mul and an add for the mul_add on a spec without it). */
enum { ADD_OPS = LEPTON_VECTOR_MUL_ADD ? 5 : 6 }; /* and the clamps (clamp_ops) */
int lepton_vadd_i8(const int8_t* A, const int8_t* B, int8_t* OUT, int32_t chunk, int64_t size,
                   int32_t za, int32_t ma, int32_t zb, int32_t mb, int32_t shift, int32_t zo,
                   int32_t lo, int32_t hi) {
  if (g_mode != LEPTON_MODE_SIM) return 0;
  if (chunk <= 0 || shift < 1 || shift > 62) return 0;
  /* The zero points, the rounding and the output zero point fold into one constant:
   * (a - za) ma + (b - zb) mb + 2^(shift-1) + zo 2^shift = a ma + b mb + c, and adding
   * zo 2^shift before the shift adds exactly zo after it. */
  const int64_t c = ((int64_t)1 << (shift - 1)) - (int64_t)za * ma - (int64_t)zb * mb +
                    (int64_t)zo * ((int64_t)1 << shift);
  for (int64_t s0 = 0; s0 < size; s0 += chunk) {
    const int64_t len = step_of(size, s0, chunk);
    sim_dma(A, len);
    sim_dma(B, len);
    for (int64_t v0 = 0; v0 < len; v0 += LEPTON_VECTOR_LANES) {
      const int32_t cols = (int32_t)step_of(len, v0, LEPTON_VECTOR_LANES);
      for (int32_t j = 0; j < cols; ++j) {
        const int64_t e = s0 + v0 + j;
        const int64_t acc = (int64_t)A[e] * ma + (int64_t)B[e] * mb + c;
        OUT[e] = (int8_t)clamp64(acc >> shift, lo, hi);
      }
      sim_vec(ADD_OPS + clamp_ops(lo, hi), cols);
    }
    sim_dma(OUT, len);
  }
  return 1;
}

/* int8 clamp to [lo, hi] (ReLU, ReLU6 in the tensor's quantization): max, min per vector. */
int lepton_vclamp_i8(const int8_t* A, int8_t* OUT, int32_t chunk, int64_t size, int32_t lo,
                     int32_t hi) {
  if (g_mode != LEPTON_MODE_SIM) return 0;
  if (chunk <= 0) return 0;
  for (int64_t s0 = 0; s0 < size; s0 += chunk) {
    const int64_t len = step_of(size, s0, chunk);
    sim_dma(A, len);
    for (int64_t v0 = 0; v0 < len; v0 += LEPTON_VECTOR_LANES) {
      const int32_t cols = (int32_t)step_of(len, v0, LEPTON_VECTOR_LANES);
      for (int32_t j = 0; j < cols; ++j)
        OUT[s0 + v0 + j] = (int8_t)clamp64(A[s0 + v0 + j], lo, hi);
      sim_vec(2, cols);
    }
    sim_dma(OUT, len);
  }
  return 1;
}

/* ---- transformer ops on the vector unit (both modes) ---------------------------------------
 *
 * A 256-entry lookup (GELU, any int8 -> int8 function), softmax and layer norm over rows of
 * the last axis. The same C computes both modes (there is no host kernel to fall back on); sim
 * mode also counts. Rows run `lanes` at a time, one row per lane: the DMA engine's strided
 * descriptor loads a [lanes x len] block, and every op below works on one element of each of
 * those rows. The integer semantics are reference.lut / softmax / layer_norm. */
static uint64_t isqrt_u64(uint64_t v) {
  uint64_t r = 0, bit = (uint64_t)1 << 62;
  while (bit > v) bit >>= 2;
  while (bit) {
    if (v >= r + bit) {
      v -= r + bit;
      r = (r >> 1) + bit;
    } else {
      r >>= 1;
    }
    bit >>= 2;
  }
  return r;
}

/* OUT = T[X + 128] (int8 -> int8 through an int32 table): lut, cast per vector. */
int lepton_vlut_i8(const int8_t* X, const int32_t* T, int8_t* OUT, int32_t chunk,
                   int64_t size) {
  const int sim = g_mode == LEPTON_MODE_SIM;
  if (chunk <= 0) return 0;
  if (sim) sim_dma(NULL, 256 * 4);
  for (int64_t s0 = 0; s0 < size; s0 += chunk) {
    const int64_t len = step_of(size, s0, chunk);
    if (sim) sim_dma(X, len);
    for (int64_t e = s0; e < s0 + len; ++e) OUT[e] = (int8_t)clamp64(T[X[e] + 128], -128, 127);
    if (sim) {
      for (int64_t v0 = 0; v0 < len; v0 += LEPTON_VECTOR_LANES)
        sim_vec(2, (int32_t)step_of(len, v0, LEPTON_VECTOR_LANES));
      sim_dma(OUT, len);
    }
  }
  return 1;
}

/* int8 softmax of `rows` rows of `len` (reference.softmax): per element max, sub, lut, add;
 * one div per row; per element mul, shift_right_round, add, max, min, cast. */
int lepton_vsoftmax_i8(const int8_t* X, const int32_t* T, int8_t* OUT, int64_t rows,
                       int32_t len, int32_t recip_bits) {
  const int sim = g_mode == LEPTON_MODE_SIM;
  if (len <= 0 || recip_bits < 9 || recip_bits > 62) return 0;
  const int32_t out_shift = recip_bits - 8;
  if (sim) sim_dma(NULL, 256 * 4);
  for (int64_t r0 = 0; r0 < rows; r0 += LEPTON_VECTOR_LANES) {
    const int32_t nr = (int32_t)step_of(rows, r0, LEPTON_VECTOR_LANES);
    if (sim) sim_dma(X + r0 * len, (int64_t)nr * len);
    for (int64_t r = r0; r < r0 + nr; ++r) {
      const int8_t* x = X + r * len;
      int8_t* out = OUT + r * len;
      int32_t m = -128;
      for (int32_t i = 0; i < len; ++i) m = x[i] > m ? x[i] : m;
      int64_t sum = 0;
      for (int32_t i = 0; i < len; ++i) sum += T[x[i] - m + 255];
      const int64_t recip = ((int64_t)1 << recip_bits) / sum;
      for (int32_t i = 0; i < len; ++i) {
        const int64_t e = T[x[i] - m + 255];
        out[i] = (int8_t)clamp64(((e * recip + ((int64_t)1 << (out_shift - 1))) >> out_shift)
                                 - 128, -128, 127);
      }
    }
    if (sim) {
      sim_vec(10 * (int64_t)len, nr);
      sim_vec(LEPTON_VECTOR_DIV_CYCLES, nr);
      sim_dma(OUT + r0 * len, (int64_t)nr * len);
    }
  }
  return 1;
}

/* int8 layer norm of `rows` rows of `h` (reference.layer_norm): per element add (sum),
 * mul_add (sum of squares); per row mul, mul, sub, add, a square root and a divide (div), the
 * bit length and shift (2); per element mul, sub, mul, shift_right_round, mul_add,
 * shift_right_round, max, min, cast. */
int lepton_vlayernorm_i8(const int8_t* X, const int32_t* gain, const int64_t* offset,
                         int8_t* OUT, int64_t rows, int32_t h, int64_t eps_term,
                         int32_t shift) {
  const int sim = g_mode == LEPTON_MODE_SIM;
  if (h <= 0 || shift < 1 || shift > 62 || eps_term < 1) return 0;
  if (sim) sim_dma(NULL, (int64_t)h * 12);
  for (int64_t r0 = 0; r0 < rows; r0 += LEPTON_VECTOR_LANES) {
    const int32_t nr = (int32_t)step_of(rows, r0, LEPTON_VECTOR_LANES);
    if (sim) sim_dma(X + r0 * h, (int64_t)nr * h);
    for (int64_t r = r0; r < r0 + nr; ++r) {
      const int8_t* x = X + r * h;
      int8_t* out = OUT + r * h;
      int64_t sx = 0, sxx = 0;
      for (int32_t i = 0; i < h; ++i) {
        sx += x[i];
        sxx += (int64_t)x[i] * x[i];
      }
      const int64_t d = (int64_t)h * sxx - sx * sx + eps_term;
      /* a small variance is scaled by 4^p first, so its square root keeps 15 bits */
      const int32_t dbits = 64 - __builtin_clzll((uint64_t)d);
      const int32_t p = dbits < 31 ? (31 - dbits) / 2 : 0;
      const int64_t sd = (int64_t)isqrt_u64((uint64_t)d << (2 * p));
      const int32_t k = 64 - __builtin_clzll((uint64_t)sd);
      const int64_t recip = ((int64_t)1 << (29 + k)) / sd;
      const int32_t s = 13 + k - p;
      for (int32_t i = 0; i < h; ++i) {
        const int64_t n = (((int64_t)h * x[i] - sx) * recip + ((int64_t)1 << (s - 1))) >> s;
        const int64_t y = (n * gain[i] + offset[i] + ((int64_t)1 << (shift - 1))) >> shift;
        out[i] = (int8_t)clamp64(y, -128, 127);
      }
    }
    if (sim) {
      sim_vec(11 * (int64_t)h + 6, nr);
      sim_vec(2 * (int64_t)LEPTON_VECTOR_DIV_CYCLES, nr);
      sim_dma(OUT + r0 * h, (int64_t)nr * h);
    }
  }
  return 1;
}

/* A permutation of an int8 tensor's axes by the DMA engine (its address generation walks the
 * output order): sim mode counts `chunk`-byte loads into SRAM and strided stores out; the
 * data movement itself is the kernel's own copy loop, which runs in both modes (returns 0). */
int lepton_vtranspose_i8(const int8_t* X, int8_t* OUT, int32_t chunk, int64_t size) {
  (void)X;
  (void)OUT;
  if (g_mode != LEPTON_MODE_SIM || chunk <= 0) return 0;
  for (int64_t s0 = 0; s0 < size; s0 += chunk) {
    const int64_t len = step_of(size, s0, chunk);
    sim_dma(X, len);
    sim_dma(OUT, len);
  }
  return 0;
}

/* A conv2d's line buffer (sim mode): its input rows stream through the input SRAM once, held
 * in a ring of the rows the next output row still needs, and the DMA engine's address
 * generation gathers every A strip's windows from there, so the A-strip loads of the im2col
 * buffer `cols` stay on chip. Counts one descriptor per output row for the input rows it adds
 * and marks `cols` resident until lepton_line_buffer_end. Returns 1 in sim mode, else 0. */
int lepton_line_buffer(const int8_t* X, const int8_t* cols, int64_t cols_bytes, int32_t n,
                       int32_t h, int32_t w, int32_t cin, int32_t kh, int32_t sh, int32_t dh,
                       int32_t top, int32_t oh) {
  if (g_mode != LEPTON_MODE_SIM || g_resident_count >= MAX_RESIDENT) return 0;
  const int64_t row_bytes = (int64_t)w * cin;
  for (int32_t b = 0; b < n; ++b) {
    int64_t loaded = 0; /* input rows [0, loaded) are in (or have passed through) the ring */
    for (int32_t y = 0; y < oh; ++y) {
      int64_t first = (int64_t)y * sh - top, last = first + (int64_t)dh * (kh - 1);
      if (first < loaded) first = loaded;
      if (last > h - 1) last = h - 1;
      if (last >= first) {
        sim_dma(X + ((int64_t)b * h + first) * row_bytes, (last - first + 1) * row_bytes);
        loaded = last + 1;
      }
    }
  }
  g_resident_lo[g_resident_count] = (uintptr_t)cols;
  g_resident_hi[g_resident_count] = (uintptr_t)cols + (uintptr_t)cols_bytes;
  ++g_resident_count;
  return 1;
}

/* Drop the residency range that starts at `lo` (a line buffer's or a padded copy's). */
static int drop_range(const void* lo) {
  for (int i = 0; i < g_resident_count; ++i) {
    if (g_resident_lo[i] == (uintptr_t)lo) {
      g_resident_lo[i] = g_resident_lo[g_resident_count - 1];
      g_resident_hi[i] = g_resident_hi[g_resident_count - 1];
      --g_resident_count;
      return 1;
    }
  }
  return 0;
}

int lepton_line_buffer_end(const int8_t* cols) { return drop_range(cols); }

/* A GEMM whose input the emulation pads to whole tiles (a ragged M or K edge) reads its A
 * strips from the padded copy `copy` (`bytes`), which the NPU does not have: its DMA
 * engine reads `src` and fills the edge with zeros. So in sim mode, while `src` is held in
 * SRAM (a cascade), the copy is too, until lepton_pad_alias_end. Returns 1 when aliased. */
int lepton_pad_alias(const int8_t* src, const int8_t* copy, int64_t bytes) {
  if (g_mode != LEPTON_MODE_SIM || g_resident_count >= MAX_RESIDENT || !is_resident(src))
    return 0;
  g_resident_lo[g_resident_count] = (uintptr_t)copy;
  g_resident_hi[g_resident_count] = (uintptr_t)copy + (uintptr_t)bytes;
  ++g_resident_count;
  return 1;
}

int lepton_pad_alias_end(const int8_t* copy) { return drop_range(copy); }
