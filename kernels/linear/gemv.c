/* A few rows through a linear layer whose weight is held in fp16 (CPU): y [T, out] = x [T, in] W^T, W [out, in]
 * row-major, fp32 arithmetic. A decode step multiplies one row by every weight of the model, so it is bound by
 * the bytes it reads: fp16 weights halve them (the model's 43 MB of fp32 weights do not fit a 32 MB L3; its
 * 22 MB of fp16 ones do). Rows of outputs are split across threads. The reference is F.linear on W.float(). */
#include <stdint.h>
#include <string.h>

#include "gemv.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline float hsum(__m256 x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}

/* the four sums of a0..a3 at once: a tree of horizontal adds, not four hsums (at 64 numbers a row, the memory's
 * keys, four hsums cost as much as the products) */
static inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

static inline __m256 half8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* rows o..o+3 of W against row x: in % 8 == 0 */
static inline void four(const float *x, const uint16_t *w, int in, float *y) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < in; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(half8(w + i), xv, a0);
        a1 = _mm256_fmadd_ps(half8(w + in + i), xv, a1);
        a2 = _mm256_fmadd_ps(half8(w + 2L * in + i), xv, a2);
        a3 = _mm256_fmadd_ps(half8(w + 3L * in + i), xv, a3);
    }
    _mm_storeu_ps(y, hsum4(a0, a1, a2, a3));
}

static inline float one(const float *x, const uint16_t *w, int in);

/* rows 0..3 of W, already in fp32 [4][in], against two rows x0, x1: in % 8 == 0 */
static inline void four_by_two(const float *x0, const float *x1, const float *w, int in, float *y0, float *y1) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int i = 0; i < in; i += 8) {
        const __m256 u = _mm256_loadu_ps(x0 + i), v = _mm256_loadu_ps(x1 + i);
        const __m256 w0 = _mm256_load_ps(w + i), w1 = _mm256_load_ps(w + in + i);
        const __m256 w2 = _mm256_load_ps(w + 2L * in + i), w3 = _mm256_load_ps(w + 3L * in + i);
        a0 = _mm256_fmadd_ps(w0, u, a0), b0 = _mm256_fmadd_ps(w0, v, b0);
        a1 = _mm256_fmadd_ps(w1, u, a1), b1 = _mm256_fmadd_ps(w1, v, b1);
        a2 = _mm256_fmadd_ps(w2, u, a2), b2 = _mm256_fmadd_ps(w2, v, b2);
        a3 = _mm256_fmadd_ps(w3, u, a3), b3 = _mm256_fmadd_ps(w3, v, b3);
    }
    _mm_storeu_ps(y0, hsum4(a0, a1, a2, a3));
    _mm_storeu_ps(y1, hsum4(b0, b1, b2, b3));
}

#define CONVERTED 2048      /* widths up to which a quad of weight rows is converted once for many rows */

/* Several rows: each quad of weight rows converted to fp32 once, then two rows of x at a time against it. */
static int many_rows(const float *x, const uint16_t *w, int T, int in, int out, int o0, int o1, float *y) {
    if (T < 2 || in % 8 || in > CONVERTED) return 0;
    float wf[4 * CONVERTED] __attribute__((aligned(32)));
    int o = o0;
    for (; o + 4 <= o1; o += 4) {
        for (int i = 0; i < 4 * in; i += 8) _mm256_store_ps(wf + i, half8(w + (long)o * in + i));
        int t = 0;
        for (; t + 2 <= T; t += 2)
            four_by_two(x + (long)t * in, x + (long)(t + 1) * in, wf, in, y + (long)t * out + o,
                        y + (long)(t + 1) * out + o);
        if (t < T) four(x + (long)t * in, w + (long)o * in, in, y + (long)t * out + o);
    }
    for (; o < o1; o++)
        for (int t = 0; t < T; t++) y[(long)t * out + o] = one(x + (long)t * in, w + (long)o * in, in);
    return 1;
}

static inline float one(const float *x, const uint16_t *w, int in) {
    __m256 a = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= in; i += 8) a = _mm256_fmadd_ps(half8(w + i), _mm256_loadu_ps(x + i), a);
    float s = hsum(a);
    for (; i < in; i++) s += _cvtsh_ss(w[i]) * x[i];
    return s;
}
#else
static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) bits = sign | 0x7f800000 | (man << 13);                       /* inf, nan */
    else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);                 /* normal */
    else if (!man) bits = sign;                                                     /* zero */
    else {                                                                          /* subnormal */
        int e = -1;
        uint32_t m = man;
        do { e++; m <<= 1; } while (!(m & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float one(const float *x, const uint16_t *w, int in) {
    float s = 0.0f;
    for (int i = 0; i < in; i++) s += half_to_float(w[i]) * x[i];
    return s;
}

static inline void four(const float *x, const uint16_t *w, int in, float *y) {
    for (int r = 0; r < 4; r++) y[r] = one(x, w + (long)r * in, in);
}

static int many_rows(const float *x, const uint16_t *w, int T, int in, int out, int o0, int o1, float *y) {
    return 0;
}
#endif

void gemv_f16_range(const float *x, const uint16_t *w, int T, int in, int out, int o0, int o1, float *y) {
    if (many_rows(x, w, T, in, out, o0, o1, y)) return;
    int o = o0;
    for (; o + 4 <= o1; o += 4)
        for (int t = 0; t < T; t++) {
            const float *row = x + (long)t * in;
            if (in % 8 == 0) four(row, w + (long)o * in, in, y + (long)t * out + o);
            else for (int r = 0; r < 4; r++) y[(long)t * out + o + r] = one(row, w + (long)(o + r) * in, in);
        }
    for (; o < o1; o++)
        for (int t = 0; t < T; t++) y[(long)t * out + o] = one(x + (long)t * in, w + (long)o * in, in);
}

void gemv_f16(const float *x, const uint16_t *w, int T, int in, int out, float *y, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int o0, o1;
        split_quads(out, &o0, &o1);
        gemv_f16_range(x, w, T, in, out, o0, o1, y);
    }
}
