/* kiln CPU prelude: helpers every generated kernel shares. The renderer defines
 * KILN_VECTOR_BYTES, KILN_F16C and KILN_X86 before including this text.
 *
 * Semantics follow kiln's interpreter: f16 and bf16 values are held as float already rounded
 * to their dtype (round to nearest, ties to even; a NaN stays NaN, quiet, with the top payload
 * bits), integers wrap, and float -> int conversions saturate with NaN giving 0. */
#include <string.h>
#include <math.h>
#if KILN_F16C || KILN_X86
#include <immintrin.h>
#endif

#define KILN_UNUSED __attribute__((unused))
#define KILN_VL (KILN_VECTOR_BYTES / 4)

typedef float kiln_f32v __attribute__((vector_size(KILN_VECTOR_BYTES)));
typedef int32_t kiln_i32v __attribute__((vector_size(KILN_VECTOR_BYTES)));

/* Unaligned vector access through memcpy: tiles are 64-byte aligned, but row starts need not be
 * multiples of the vector width, and memcpy keeps the compiler's aliasing analysis honest. */
static inline KILN_UNUSED kiln_f32v kiln_loadv(const float *p) { kiln_f32v v; memcpy(&v, p, sizeof v); return v; }
static inline KILN_UNUSED void kiln_storev(float *p, kiln_f32v v) { memcpy(p, &v, sizeof v); }

/* KILN_VL lanes of the other held types, for elementwise loops rendered a vector at a time
 * (`render/vector.rs`): loads read KILN_VL elements, splats repeat one (through GCC's scalar
 * broadcast in a vector op; x - 0 is x for every float, -0 and NaN included). */
typedef uint32_t kiln_u32v __attribute__((vector_size(KILN_VECTOR_BYTES)));
typedef uint8_t kiln_u8v __attribute__((vector_size(KILN_VECTOR_BYTES / 4)));
typedef int8_t kiln_i8v __attribute__((vector_size(KILN_VECTOR_BYTES / 4)));
#define KILN_VECTOR_HELPERS(T, V)                                                                   \
    static inline KILN_UNUSED V V##_load(const T *p) { V v; memcpy(&v, p, sizeof v); return v; }    \
    static inline KILN_UNUSED V V##_splat(T x) { return x - (V){0}; /* x in every lane, exactly */ }
KILN_VECTOR_HELPERS(float, kiln_f32v)
KILN_VECTOR_HELPERS(int32_t, kiln_i32v)
KILN_VECTOR_HELPERS(uint32_t, kiln_u32v)
KILN_VECTOR_HELPERS(uint8_t, kiln_u8v)
KILN_VECTOR_HELPERS(int8_t, kiln_i8v)
/* Bytes zero-extended to i32 lanes: one instruction on x86, where GCC 12 converts a loaded byte
 * vector lane by lane through general registers. */
static inline KILN_UNUSED kiln_i32v kiln_u8v_widen(kiln_u8v b) {
#if KILN_X86 && KILN_VECTOR_BYTES == 64
    __m128i x; memcpy(&x, &b, 16);
    __m512i y = _mm512_cvtepu8_epi32(x);
    kiln_i32v r; memcpy(&r, &y, 64); return r;
#elif KILN_X86 && KILN_VECTOR_BYTES == 32
    __m128i x = _mm_setzero_si128(); memcpy(&x, &b, 8);
    __m256i y = _mm256_cvtepu8_epi32(x);
    kiln_i32v r; memcpy(&r, &y, 32); return r;
#else
    return __builtin_convertvector(b, kiln_i32v);
#endif
}

/* The IR's saturating float -> int conversions a vector at a time, lane by lane what the scalar
 * `kiln_f2i32` / `kiln_f2i8` / `kiln_f2u8` below compute: NaN gives 0, out-of-range values the
 * nearest bound, others truncate. Masks pick lanes (GCC vector compares give -1 / 0 lanes). */
static inline KILN_UNUSED kiln_i32v kiln_pick_i32v(kiln_i32v m, kiln_i32v a, kiln_i32v b) { return (m & a) | (~m & b); }
static inline KILN_UNUSED kiln_i32v kiln_f2i32v(kiln_f32v x) {
    const kiln_i32v big = x >= kiln_f32v_splat(2147483648.0f);
    const kiln_i32v small = x <= kiln_f32v_splat(-2147483648.0f);
    const kiln_i32v inside = (x == x) & ~big & ~small;
    kiln_f32v safe; /* 0.0f outside the range and for NaN, so the conversion below is defined */
    { const kiln_i32v bits = (kiln_i32v)x & inside; memcpy(&safe, &bits, sizeof safe); }
    const kiln_i32v t = __builtin_convertvector(safe, kiln_i32v);
    return kiln_pick_i32v(big, kiln_i32v_splat(INT32_MAX), kiln_pick_i32v(small, kiln_i32v_splat(INT32_MIN), t));
}
static inline KILN_UNUSED kiln_i32v kiln_clamp_i32v(kiln_i32v t, int32_t lo, int32_t hi) {
    t = kiln_pick_i32v(t < kiln_i32v_splat(lo), kiln_i32v_splat(lo), t);
    return kiln_pick_i32v(t > kiln_i32v_splat(hi), kiln_i32v_splat(hi), t);
}
static inline KILN_UNUSED kiln_i8v kiln_f2i8v(kiln_f32v x) {
    return __builtin_convertvector(kiln_clamp_i32v(kiln_f2i32v(x), -128, 127), kiln_i8v);
}
static inline KILN_UNUSED kiln_u8v kiln_f2u8v(kiln_f32v x) {
    return __builtin_convertvector(kiln_clamp_i32v(kiln_f2i32v(x), 0, 255), kiln_u8v);
}

static inline KILN_UNUSED uint32_t kiln_f32_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline KILN_UNUSED float kiln_bits_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* ---- f16 ---- */

/* f32 -> f16 bits, round to nearest even; overflow gives inf; NaN keeps sign and top payload. */
static inline KILN_UNUSED uint16_t kiln_f16_bits_soft(float f) {
    uint32_t x = kiln_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) { /* normal f16: rebias the exponent, round the dropped 13 bits */
        uint32_t r = ax - 0x38000000u;
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    /* Subnormal or zero: adding 0.5 puts the f16 quantum 2^-24 at the last float bit, so the
     * float addition does the round to nearest even. */
    return (uint16_t)(sign | (kiln_f32_bits(kiln_bits_f32(ax) + 0.5f) - 0x3f000000u));
}

static inline KILN_UNUSED float kiln_f16_value_soft(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) return kiln_bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) return kiln_bits_f32(sign | kiln_f32_bits((float)m * 0x1p-24f));
    return kiln_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

#if KILN_F16C
static inline KILN_UNUSED uint16_t kiln_f16_bits(float x) { return (uint16_t)_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT); }
static inline KILN_UNUSED float kiln_f16_value(uint16_t h) { return _cvtsh_ss(h); }
#else
static inline KILN_UNUSED uint16_t kiln_f16_bits(float x) { return kiln_f16_bits_soft(x); }
static inline KILN_UNUSED float kiln_f16_value(uint16_t h) { return kiln_f16_value_soft(h); }
#endif
static inline KILN_UNUSED float kiln_round_f16(float x) { return kiln_f16_value(kiln_f16_bits(x)); }

/* Row conversions: eight lanes at a time through F16C where the target has it. */
static inline KILN_UNUSED void kiln_f16_load_n(float *dst, const uint16_t *src, int n) {
    int i = 0;
    /* Eight lanes a conversion even on AVX-512: a sixteen-lane loop made paged_kv_gather ~9%
     * slower (median 7.3 against 6.7 ms over six interleaved runs) and left attention, whose V
     * rows a dot now reads in place, unchanged (2.79 against 2.78 ms). */
#if KILN_F16C
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(dst + i, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(src + i))));
    /* Pairs too: a row of two groups' scales is one conversion, not two. */
    for (; i + 2 <= n; i += 2) {
        int32_t pair;
        memcpy(&pair, src + i, sizeof pair);
        _mm_storel_pi((__m64 *)(dst + i), _mm_cvtph_ps(_mm_cvtsi32_si128(pair)));
    }
#endif
    for (; i < n; i++) dst[i] = kiln_f16_value(src[i]);
}

/* KILN_VL halves from p as one vector of floats: a dot reading f16 rows where they lie. */
static inline KILN_UNUSED kiln_f32v kiln_f16_loadv(const uint16_t *p) {
#if KILN_X86 && KILN_VECTOR_BYTES == 64
    __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    kiln_f32v r; memcpy(&r, &v, sizeof r); return r;
#elif KILN_F16C && KILN_VECTOR_BYTES == 32
    __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    kiln_f32v r; memcpy(&r, &v, sizeof r); return r;
#else
    kiln_f32v r;
    for (int i = 0; i < KILN_VL; i++) r[i] = kiln_f16_value(p[i]);
    return r;
#endif
}

/* `rows` (a multiple of 16) rows of two halves each, `stride_bytes` apart from `src`, to `2 · rows`
 * floats in row order: one 32-bit gather per 16 rows and two 16-lane conversions, where copying
 * row by row converts 2 halves at a time (a GEMV's per-group scales and mins, [16, 2] per step,
 * cost ~60 instructions that way). The caller checked that every row is in bounds and that
 * `(rows - 1) · stride_bytes` fits an i32 index. */
#if KILN_X86 && KILN_VECTOR_BYTES == 64
static inline KILN_UNUSED void kiln_f16_gather_pairs(float *dst, const uint16_t *src, int32_t stride_bytes, int rows) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i step = _mm512_set1_epi32(stride_bytes);
    for (int r = 0; r < rows; r += 16) {
        const __m512i at = _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(r)), step);
        const __m512i raw = _mm512_i32gather_epi32(at, (const void *)src, 1);
        _mm512_storeu_ps(dst + 2 * r, _mm512_cvtph_ps(_mm512_castsi512_si256(raw)));
        _mm512_storeu_ps(dst + 2 * r + 16, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(raw, 1)));
    }
}
#endif

/* 16 floats at a stride of 2 from `src` (lanes src[0], src[2], ..., src[30]) to `dst`: two
 * loads and one two-source permute, where a scalar copy moved a lane at a time (the int8
 * quantize launch's de-interleaving read). The second load stops at src[30]: its last lane is
 * masked off, so nothing past the row's last lane is touched. */
#if KILN_X86 && KILN_VECTOR_BYTES == 64
static inline KILN_UNUSED void kiln_f32_load_stride2(float *dst, const float *src) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512 a = _mm512_loadu_ps(src), b = _mm512_maskz_loadu_ps((__mmask16)0x7fff, src + 16);
    _mm512_storeu_ps(dst, _mm512_permutex2var_ps(a, even, b));
}
#endif

/* Small tiles of short rows, assembled in a vector register and stored whole. Copied row by
 * row, such a tile is many narrow stores that the wide loads reading it next cannot take from
 * the store buffer (a load must lie within one store), so each waits for the stores to reach
 * L1: on Zen 5 that stall dominated an int8 GEMV step. The callers checked that every row is in
 * bounds; `len` and `rows` are constants at every call, so the switches fold. */
#if KILN_X86 && KILN_VECTOR_BYTES == 64
static inline KILN_UNUSED uint32_t kiln_ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline KILN_UNUSED uint64_t kiln_ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Row `r` of a tile of rows `(r / n1, r % n1)`, `s0` and `s1` bytes apart along the two. */
static inline KILN_UNUSED const uint8_t *kiln_row_at(const uint8_t *src, int r, int64_t s0, int n1, int64_t s1) {
    return src + (int64_t)(r / n1) * s0 + (int64_t)(r % n1) * s1;
}

/* 32 bytes from rows `r, r + 1, ...` of `len` bytes (4, 8, 16 or 32), see `kiln_row_at`. */
static inline KILN_UNUSED __m256i kiln_pack_rows32(const uint8_t *s, int r, int64_t s0, int n1, int64_t s1, int len) {
#define KILN_ROW(i) kiln_row_at(s, r + (i), s0, n1, s1)
    switch (len) {
    case 4:
        return _mm256_set_epi32((int)kiln_ld32(KILN_ROW(7)), (int)kiln_ld32(KILN_ROW(6)), (int)kiln_ld32(KILN_ROW(5)),
                                (int)kiln_ld32(KILN_ROW(4)), (int)kiln_ld32(KILN_ROW(3)), (int)kiln_ld32(KILN_ROW(2)),
                                (int)kiln_ld32(KILN_ROW(1)), (int)kiln_ld32(KILN_ROW(0)));
    case 8:
        return _mm256_set_epi64x((long long)kiln_ld64(KILN_ROW(3)), (long long)kiln_ld64(KILN_ROW(2)),
                                 (long long)kiln_ld64(KILN_ROW(1)), (long long)kiln_ld64(KILN_ROW(0)));
    case 16:
        return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)KILN_ROW(0))),
                                       _mm_loadu_si128((const __m128i *)KILN_ROW(1)), 1);
    default:
        return _mm256_loadu_si256((const __m256i *)KILN_ROW(0));
    }
#undef KILN_ROW
}

/* `rows` rows of `len` bytes (4, 8, 16 or 32; `rows · len` a multiple of 32) to `dst` in row
 * order, 64 bytes per store where the tile allows; row `r` starts at `kiln_row_at(src, r, ...)`
 * (a tile `[rows / n1, n1, len]`; `n1 = 1` for one lead dim). */
static inline KILN_UNUSED void kiln_pack_rows(uint8_t *dst, const uint8_t *src, int64_t s0, int n1, int64_t s1, int len,
                                              int rows) {
    const int per = 32 / len;
    int r = 0;
    for (; r + 2 * per <= rows; r += 2 * per) {
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(kiln_pack_rows32(src, r, s0, n1, s1, len)),
                                             kiln_pack_rows32(src, r + per, s0, n1, s1, len), 1);
        _mm512_storeu_si512((void *)(dst + r * len), v);
    }
    if (r < rows) _mm256_storeu_si256((__m256i *)(dst + r * len), kiln_pack_rows32(src, r, s0, n1, s1, len));
}

/* `rows` rows of `len` halves (2 or 4; `rows · len` a multiple of 16), laid out as for
 * `kiln_pack_rows` with steps in halves, to `rows · len` floats in row order: 16 halves
 * assembled, one conversion, one store. */
static inline KILN_UNUSED void kiln_f16_pack_rows(float *dst, const uint16_t *src, int64_t s0, int n1, int64_t s1, int len,
                                                  int rows) {
    for (int r = 0; r < rows; r += 16 / len) {
        const __m256i h = kiln_pack_rows32((const uint8_t *)src, r, 2 * s0, n1, 2 * s1, 2 * len);
        _mm512_storeu_ps(dst + r * len, _mm512_cvtph_ps(h));
    }
}
#endif

static inline KILN_UNUSED void kiln_f16_store_n(uint16_t *dst, const float *src, int n) {
    int i = 0;
#if KILN_F16C
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = kiln_f16_bits(src[i]);
}

static inline KILN_UNUSED void kiln_round_f16_n(float *x, int n) {
    int i = 0;
#if KILN_F16C
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
#endif
    for (; i < n; i++) x[i] = kiln_round_f16(x[i]);
}

/* ---- prefetch ----
 *
 * Every cache line that overlaps [p, p + bytes): a row that does not start on a line boundary
 * covers one line more than bytes / 64, and that last line would otherwise be a demand miss on
 * every row. A hint: it never faults, whatever the address. `kiln_prefetch_bytes` is for rows
 * read within a few iterations (into L1); `kiln_prefetch_bytes_far` for rows read a whole tile
 * later (the IR's `prefetch`): low locality keeps them out of L1 until they are used, where the
 * tile's own working set would evict them (on a shared Zen 5 host, paged attention with the
 * low-locality hint ran a steady 7.5 ms where the L1 hint ranged 7.5-16 ms). The loop over
 * lines issues 4 hints for a 256-byte row on a line boundary: a branch-free form that always
 * issues bytes / 64 + 1 (one repeated) made paged attention ~10% slower, each hint being a
 * load-port slot and a miss-buffer lookup. */
static inline KILN_UNUSED void kiln_prefetch_bytes(uintptr_t p, int64_t bytes) {
    for (uintptr_t l = p & ~(uintptr_t)63; l < p + (uintptr_t)bytes; l += 64) __builtin_prefetch((const void *)l, 0, 3);
}
static inline KILN_UNUSED void kiln_prefetch_bytes_far(uintptr_t p, int64_t bytes) {
    for (uintptr_t l = p & ~(uintptr_t)63; l < p + (uintptr_t)bytes; l += 64) __builtin_prefetch((const void *)l, 0, 1);
}

/* ---- streaming stores ----
 *
 * A row written to a buffer far larger than the last-level cache will be evicted before anyone
 * reads it, so fetching its lines first (the read-for-ownership of an ordinary store) wastes as
 * much DRAM bandwidth as the write itself. Non-temporal stores write whole lines without that
 * read. They are weakly ordered: every entry point ends with kiln_store_fence(). */
#define KILN_STREAM_MIN_BYTES (32ll << 20)
static inline KILN_UNUSED int kiln_streams(int64_t buffer_elems, int64_t elem_bytes) {
    return buffer_elems * elem_bytes >= KILN_STREAM_MIN_BYTES;
}
static inline KILN_UNUSED void kiln_store_fence(void) {
#if KILN_X86
    _mm_sfence();
#endif
}
/* `bytes` bytes from `src` to `dst`: plain stores up to the first 16-byte boundary of `dst`, then
 * 16-byte non-temporal stores, then the tail. */
static inline KILN_UNUSED void kiln_copy_nt(void *dst, const void *src, int64_t bytes) {
#if KILN_X86
    char *d = (char *)dst;
    const char *s = (const char *)src;
    int64_t head = (int64_t)((16 - ((uintptr_t)d & 15)) & 15);
    if (head > bytes) head = bytes;
    memcpy(d, s, (size_t)head);
    int64_t i = head;
    for (; i + 16 <= bytes; i += 16) _mm_stream_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
    memcpy(d + i, s + i, (size_t)(bytes - i));
#else
    memcpy(dst, src, (size_t)bytes);
#endif
}
static inline KILN_UNUSED void kiln_f16_store_n_nt(uint16_t *dst, const float *src, int n) {
#if KILN_F16C
    int i = 0;
    for (; i < n && ((uintptr_t)(dst + i) & 15) != 0; i++) dst[i] = kiln_f16_bits(src[i]);
    for (; i + 8 <= n; i += 8)
        _mm_stream_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = kiln_f16_bits(src[i]);
#else
    kiln_f16_store_n(dst, src, n);
#endif
}

/* ---- transposes ---- */

/* dst[c * rows + r] = src[r * cols + c]: 8x8 blocks through registers where both sides are
 * multiples of 8 (a tile loaded column by column is turned row-major here). */
static inline KILN_UNUSED void kiln_transpose_f32(float *dst, const float *src, int rows, int cols) {
#if KILN_X86
    if (rows % 8 == 0 && cols % 8 == 0) {
        for (int r = 0; r < rows; r += 8) {
            for (int c = 0; c < cols; c += 8) {
                const float *s = src + (int64_t)r * cols + c;
                __m256 a0 = _mm256_loadu_ps(s + 0 * cols), a1 = _mm256_loadu_ps(s + 1 * cols);
                __m256 a2 = _mm256_loadu_ps(s + 2 * cols), a3 = _mm256_loadu_ps(s + 3 * cols);
                __m256 a4 = _mm256_loadu_ps(s + 4 * cols), a5 = _mm256_loadu_ps(s + 5 * cols);
                __m256 a6 = _mm256_loadu_ps(s + 6 * cols), a7 = _mm256_loadu_ps(s + 7 * cols);
                __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
                __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
                __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
                __m256 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
                __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
                __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
                __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
                __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
                float *d = dst + (int64_t)c * rows + r;
                _mm256_storeu_ps(d + 0 * rows, _mm256_permute2f128_ps(u0, u4, 0x20));
                _mm256_storeu_ps(d + 1 * rows, _mm256_permute2f128_ps(u1, u5, 0x20));
                _mm256_storeu_ps(d + 2 * rows, _mm256_permute2f128_ps(u2, u6, 0x20));
                _mm256_storeu_ps(d + 3 * rows, _mm256_permute2f128_ps(u3, u7, 0x20));
                _mm256_storeu_ps(d + 4 * rows, _mm256_permute2f128_ps(u0, u4, 0x31));
                _mm256_storeu_ps(d + 5 * rows, _mm256_permute2f128_ps(u1, u5, 0x31));
                _mm256_storeu_ps(d + 6 * rows, _mm256_permute2f128_ps(u2, u6, 0x31));
                _mm256_storeu_ps(d + 7 * rows, _mm256_permute2f128_ps(u3, u7, 0x31));
            }
        }
        return;
    }
#endif
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(int64_t)c * rows + r] = src[(int64_t)r * cols + c];
}

/* ---- bf16 ---- */

static inline KILN_UNUSED uint16_t kiln_bf16_bits(float f) {
    uint32_t x = kiln_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
static inline KILN_UNUSED float kiln_bf16_value(uint16_t h) { return kiln_bits_f32((uint32_t)h << 16); }
static inline KILN_UNUSED float kiln_round_bf16(float x) { return kiln_bf16_value(kiln_bf16_bits(x)); }

static inline KILN_UNUSED void kiln_bf16_load_n(float *dst, const uint16_t *src, int n) {
    for (int i = 0; i < n; i++) dst[i] = kiln_bf16_value(src[i]);
}
static inline KILN_UNUSED void kiln_bf16_store_n(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i++) dst[i] = kiln_bf16_bits(src[i]);
}
static inline KILN_UNUSED void kiln_round_bf16_n(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = kiln_round_bf16(x[i]);
}

/* ---- conversions ---- */

/* |m| rounded to `bits` significant bits (to nearest even), exactly, as a float: integer -> f16
 * and -> bf16 casts round once from the exact integer, never through f32 first. */
static inline KILN_UNUSED float kiln_round_mag(uint32_t m, int bits) {
    if ((m >> bits) == 0) return (float)m;
    int shift = (32 - __builtin_clz(m)) - bits;
    uint32_t q = m >> shift, rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (q & 1u))) q++;
    return (float)q * kiln_bits_f32((uint32_t)(127 + shift) << 23);
}
static inline KILN_UNUSED float kiln_int_to_f16(int64_t v) {
    float r = kiln_round_mag((uint32_t)(v < 0 ? -v : v), 11);
    return kiln_round_f16(v < 0 ? -r : r); /* only overflow to inf is left to round */
}
static inline KILN_UNUSED float kiln_int_to_bf16(int64_t v) {
    float r = kiln_round_mag((uint32_t)(v < 0 ? -v : v), 8);
    return v < 0 ? -r : r;
}

/* float -> int: truncation toward zero, saturating, NaN -> 0 (a plain C cast is UB out of range). */
static inline KILN_UNUSED int32_t kiln_f2i32(float x) {
    if (x != x) return 0;
    if (x >= 2147483648.0f) return INT32_MAX;
    if (x <= -2147483648.0f) return INT32_MIN;
    return (int32_t)x;
}
static inline KILN_UNUSED uint32_t kiln_f2u32(float x) {
    if (x != x || x <= 0.0f) return 0;
    if (x >= 4294967296.0f) return UINT32_MAX;
    return (uint32_t)x;
}
static inline KILN_UNUSED int8_t kiln_f2i8(float x) {
    int32_t t = kiln_f2i32(x);
    return (int8_t)(t < -128 ? -128 : t > 127 ? 127 : t);
}
static inline KILN_UNUSED uint8_t kiln_f2u8(float x) {
    int32_t t = kiln_f2i32(x);
    return (uint8_t)(t < 0 ? 0 : t > 255 ? 255 : t);
}

/* ---- float min / max: IEEE minNum / maxNum, a NaN operand loses, -0 < +0 ---- */

static inline KILN_UNUSED float kiln_maxf(float a, float b) {
    if (a != a) return b;
    if (b != b) return a;
    if (a == b) return kiln_bits_f32(kiln_f32_bits(a) & kiln_f32_bits(b));
    return a > b ? a : b;
}
static inline KILN_UNUSED float kiln_minf(float a, float b) {
    if (a != a) return b;
    if (b != b) return a;
    if (a == b) return kiln_bits_f32(kiln_f32_bits(a) | kiln_f32_bits(b));
    return a < b ? a : b;
}
/* The same on whole vectors, by bit blends (GCC C has no vector ?:). */
static inline KILN_UNUSED kiln_f32v kiln_maxv(kiln_f32v a, kiln_f32v b) {
    kiln_i32v ai = (kiln_i32v)a, bi = (kiln_i32v)b;
    kiln_i32v take_b = (b > a) | (a != a);
    kiln_i32v eq = (a == b);
    kiln_i32v r = (ai & ~take_b) | (bi & take_b);
    return (kiln_f32v)((r & ~eq) | (ai & bi & eq));
}
static inline KILN_UNUSED kiln_f32v kiln_minv(kiln_f32v a, kiln_f32v b) {
    kiln_i32v ai = (kiln_i32v)a, bi = (kiln_i32v)b;
    kiln_i32v take_b = (b < a) | (a != a);
    kiln_i32v eq = (a == b);
    kiln_i32v r = (ai & ~take_b) | (bi & take_b);
    return (kiln_f32v)((r & ~eq) | ((ai | bi) & eq));
}
/* Pairwise in registers (log2(VL) shuffle steps rather than VL dependent scalar adds through
 * memory). */
static inline KILN_UNUSED float kiln_hsumv(kiln_f32v v) {
#if KILN_X86 && KILN_VECTOR_BYTES == 64
    return _mm512_reduce_add_ps((__m512)v);
#elif KILN_X86 && KILN_VECTOR_BYTES == 32
    __m128 h = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
#else
    float s = 0.0f;
    for (int i = 0; i < KILN_VL; i++) s += v[i];
    return s;
#endif
}
/* out[0] += sum of a's lanes, out[stride] += b's, out[2 * stride] += c's, out[3 * stride] += d's:
 * the four reductions share their shuffle steps (8 shuffles and 5 adds on 16 lanes instead of
 * four separate trees). */
static inline KILN_UNUSED void kiln_hsum4v_add(float *out, int stride, kiln_f32v a, kiln_f32v b, kiln_f32v c,
                                               kiln_f32v d) {
#if KILN_VL == 16
    kiln_f32v x = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
                + __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    kiln_f32v y = __builtin_shufflevector(c, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
                + __builtin_shufflevector(c, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    kiln_f32v z = __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
                + __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    z = z + __builtin_shufflevector(z, z, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    z = z + __builtin_shufflevector(z, z, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    out[0] += z[0];
    out[stride] += z[4];
    out[2 * stride] += z[8];
    out[3 * stride] += z[12];
#elif KILN_VL == 8
    kiln_f32v x = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11)
                + __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
    kiln_f32v y = __builtin_shufflevector(c, d, 0, 1, 2, 3, 8, 9, 10, 11)
                + __builtin_shufflevector(c, d, 4, 5, 6, 7, 12, 13, 14, 15);
    kiln_f32v z = __builtin_shufflevector(x, y, 0, 1, 4, 5, 8, 9, 12, 13)
                + __builtin_shufflevector(x, y, 2, 3, 6, 7, 10, 11, 14, 15);
    z = z + __builtin_shufflevector(z, z, 1, 0, 3, 2, 5, 4, 7, 6);
    out[0] += z[0];
    out[stride] += z[2];
    out[2 * stride] += z[4];
    out[3 * stride] += z[6];
#else
    out[0] += kiln_hsumv(a);
    out[stride] += kiln_hsumv(b);
    out[2 * stride] += kiln_hsumv(c);
    out[3 * stride] += kiln_hsumv(d);
#endif
}

/* The max of the lanes by halving: each step takes the max of the lower half and the upper half,
 * so an all-NaN vector gives its last lane as the scalar left-to-right fold does, and the NaN /
 * signed-zero rules are kiln_maxv's. */
static inline KILN_UNUSED float kiln_hmaxv(kiln_f32v v) {
#if KILN_VL == 16
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7));
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3));
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1));
    return v[0];
#elif KILN_VL == 8
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7));
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3));
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1));
    return v[0];
#elif KILN_VL == 4
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 2, 3, 2, 3));
    v = kiln_maxv(v, __builtin_shufflevector(v, v, 1, 1, 1, 1));
    return v[0];
#else
    float s = v[0];
    for (int i = 1; i < KILN_VL; i++) s = kiln_maxf(s, v[i]);
    return s;
#endif
}

/* ---- exp2 ----
 *
 * 2^x without a libm call, so that a vector of them is a few FMAs: x = n + f with n the nearest
 * integer and |f| <= 1/2, 2^f by Cephes' exp2f polynomial (relative error below 2e-7, about two
 * ulps), 2^n put into exponent bits. n is split into two halves so that every result from
 * 2^-149 to 2^128 comes out of two exact power-of-two scalings; x is clamped to [-160, 160]
 * first, which sends -inf and everything below 2^-150 to 0 and everything from 128 up to inf.
 * NaN gives NaN. The scalar and the vector form are the same arithmetic, lane by lane. */
#define KILN_EXP2_C5 1.535336188319500e-4f
#define KILN_EXP2_C4 1.339887440266574e-3f
#define KILN_EXP2_C3 9.618437357674640e-3f
#define KILN_EXP2_C2 5.550332471162809e-2f
#define KILN_EXP2_C1 2.402264791363012e-1f
#define KILN_EXP2_C0 6.931472028550421e-1f
#define KILN_EXP2_ROUND 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
static inline KILN_UNUSED float kiln_exp2f(float x) {
    float c = x < -160.0f ? -160.0f : x > 160.0f ? 160.0f : x;
    float t = c + KILN_EXP2_ROUND;
    float f = c - (t - KILN_EXP2_ROUND);
    int32_t n = (int32_t)(kiln_f32_bits(t) - kiln_f32_bits(KILN_EXP2_ROUND));
    float p = KILN_EXP2_C5;
    p = p * f + KILN_EXP2_C4;
    p = p * f + KILN_EXP2_C3;
    p = p * f + KILN_EXP2_C2;
    p = p * f + KILN_EXP2_C1;
    p = p * f + KILN_EXP2_C0;
    p = p * f + 1.0f;
    int32_t n1 = n >> 1, n2 = n - n1;
    float r = p * kiln_bits_f32((uint32_t)(n1 + 127) << 23) * kiln_bits_f32((uint32_t)(n2 + 127) << 23);
    return x != x ? x : r;
}
static inline KILN_UNUSED kiln_f32v kiln_exp2v(kiln_f32v x) {
    const kiln_f32v lo = kiln_f32v_splat(-160.0f), hi = kiln_f32v_splat(160.0f);
    const kiln_f32v round = kiln_f32v_splat(KILN_EXP2_ROUND);
    kiln_i32v below = x < lo, above = x > hi;
    kiln_f32v c = (kiln_f32v)(((kiln_i32v)x & ~(below | above)) | ((kiln_i32v)lo & below) | ((kiln_i32v)hi & above));
    kiln_f32v t = c + round;
    kiln_f32v f = c - (t - round);
    kiln_i32v n = (kiln_i32v)t - (kiln_i32v)round;
    kiln_f32v p = kiln_f32v_splat(KILN_EXP2_C5);
    p = p * f + KILN_EXP2_C4;
    p = p * f + KILN_EXP2_C3;
    p = p * f + KILN_EXP2_C2;
    p = p * f + KILN_EXP2_C1;
    p = p * f + KILN_EXP2_C0;
    p = p * f + 1.0f;
    kiln_i32v n1 = n >> 1, n2 = n - n1;
    kiln_f32v r = p * (kiln_f32v)((n1 + 127) << 23) * (kiln_f32v)((n2 + 127) << 23);
    kiln_i32v nan = x != x;
    return (kiln_f32v)(((kiln_i32v)r & ~nan) | ((kiln_i32v)x & nan));
}

/* ---- atomics: programs run on several threads ---- */

static inline KILN_UNUSED void kiln_atomic_add_f32(float *p, float v) {
    float old, sum;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do {
        sum = old + v;
    } while (!__atomic_compare_exchange(p, &old, &sum, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

/* ---- register-blocked f32 dot ----
 *
 * o[m, n] += a[m, k] · b[k, n] (all row-major): MR rows by NV vectors of columns held in
 * registers over the whole k loop, one broadcast of `a` against NV vectors of `b` per step, so
 * every output sums its products in k order. m is a multiple of MR and n of NV · KILN_VL. Each
 * shape is a function of its own: inlined into a program whose loop keeps other vectors live
 * across the dot (a GEMM's dequantization constants), GCC 12 spilled four of the sixteen
 * accumulators of the 4 × 4 block to the stack and reloaded them at every step. */
#define KILN_DOT_F32(MR, NV)                                                                        \
    __attribute__((noinline)) static KILN_UNUSED void kiln_dot_f32_##MR##x##NV(                     \
        float *o, const float *a, const float *b, int m, int k, int n) {                           \
        for (int i = 0; i < m; i += MR) {                                                          \
            for (int j = 0; j < n; j += NV * KILN_VL) {                                            \
                kiln_f32v c[MR][NV];                                                               \
                for (int r = 0; r < MR; r++)                                                       \
                    for (int v = 0; v < NV; v++) c[r][v] = kiln_loadv(&o[(i + r) * n + j + v * KILN_VL]); \
                for (int kk = 0; kk < k; kk++) {                                                   \
                    kiln_f32v bv[NV];                                                              \
                    for (int v = 0; v < NV; v++) bv[v] = kiln_loadv(&b[kk * n + j + v * KILN_VL]); \
                    for (int r = 0; r < MR; r++) {                                                 \
                        const float av = a[(i + r) * k + kk];                                      \
                        for (int v = 0; v < NV; v++) c[r][v] = c[r][v] + av * bv[v];               \
                    }                                                                              \
                }                                                                                  \
                for (int r = 0; r < MR; r++)                                                       \
                    for (int v = 0; v < NV; v++) kiln_storev(&o[(i + r) * n + j + v * KILN_VL], c[r][v]); \
            }                                                                                      \
        }                                                                                          \
    }
KILN_DOT_F32(4, 4)
KILN_DOT_F32(4, 2)
KILN_DOT_F32(4, 1)
KILN_DOT_F32(2, 4)
KILN_DOT_F32(2, 2)
KILN_DOT_F32(2, 1)
KILN_DOT_F32(1, 4)
KILN_DOT_F32(1, 2)
KILN_DOT_F32(1, 1)

/* ---- failures ---- */

static inline KILN_UNUSED int32_t kiln_fail(kiln_error *err, int32_t code, int32_t inst, int32_t param,
                                            int64_t index, int64_t len, int64_t program) {
    err->code = code;
    err->inst = inst;
    err->param = param;
    err->_pad = 0;
    err->index = index;
    err->len = len;
    err->program = program;
    return code;
}

/* Byte vectors of 16, 32 and 64 lanes for the byte dots (`vpdpbusd` operands). */
typedef uint8_t kiln_u8x16 __attribute__((vector_size(16)));
typedef int8_t kiln_i8x16 __attribute__((vector_size(16)));
typedef uint8_t kiln_u8x32 __attribute__((vector_size(32)));
typedef int8_t kiln_i8x32 __attribute__((vector_size(32)));
typedef uint8_t kiln_u8x64 __attribute__((vector_size(64)));
typedef int8_t kiln_i8x64 __attribute__((vector_size(64)));
