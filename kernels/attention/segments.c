/* Attention against keys and values held in segments (model/cache.py: branches share their prefix):
   - segment_attention: a few query rows (a decode step, a draft, a line), one pass over the keys, split
     across threads;
   - block_bounds and selected_attention: each row against the blocks of keys chosen for it and its recent
     keys (kernels/attention/select.py).

   segment_attention, for each kv head g: q [R][D] rows (already scaled), keys and values of segment s at k[s*G+g], v[s*G+g],
   len[s] rows of D floats each (rows contiguous); row r sees the first limit[r] keys of all segments
   together (its past and itself). Out: o [G][R][D], lse [G][R].

   The key range is cut into `chunks` equal pieces whatever the segments are, and the pieces' partial softmax
   sums are merged in order: the result depends on the keys and the thread count, not on where segments end
   (a warm run equals a cold one). Compiled with -ffast-math: no infinities are used (a piece with no
   visible key has weight 0). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 64

typedef struct {
    float m, l;                           /* running max and sum of exp(score - m) */
} Sum;

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static inline float hsum(__m256 x) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

/* exp(x) for x <= 0 (scores minus their max): 2^n * p(r), r in [-ln2/2, ln2/2], relative error ~2e-7;
   below -87 it is 0. */
static inline __m256 exp_le0(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(small, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* One block of m keys for one row: its scores, the row's running max and sum, and the weighted values into
   its accumulator `a`. Inlined with D = 64, the loops over D unroll and the accumulator stays in registers. */
static inline __attribute__((always_inline)) void block_avx(const float *qr, const int D, const float *const *kr,
                                                        const float *const *vr, int m, float *s, float *a, Sum *t) {
    int j = 0;
    for (; j + 4 <= m; j += 4) {
        __m256 d0 = _mm256_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
        for (int c = 0; c < D; c += 8) {
            __m256 qc = _mm256_loadu_ps(qr + c);
            d0 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr[j] + c), d0);
            d1 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr[j + 1] + c), d1);
            d2 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr[j + 2] + c), d2);
            d3 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr[j + 3] + c), d3);
        }
        s[j] = hsum(d0), s[j + 1] = hsum(d1), s[j + 2] = hsum(d2), s[j + 3] = hsum(d3);
    }
    for (; j < m; j++) {
        __m256 d0 = _mm256_setzero_ps();
        for (int c = 0; c < D; c += 8)
            d0 = _mm256_fmadd_ps(_mm256_loadu_ps(qr + c), _mm256_loadu_ps(kr[j] + c), d0);
        s[j] = hsum(d0);
    }
    float mx = s[0];
    for (j = 1; j < m; j++) mx = s[j] > mx ? s[j] : mx;
    for (j = m; j < (m + 7) / 8 * 8; j++) s[j] = mx - 1000.0f;   /* weight 0 */
    __m256 out[16];
    for (int c = 0; c < D / 8; c++) out[c] = _mm256_loadu_ps(a + 8 * c);
    if (t->l == 0.0f) {
        t->m = mx;
    } else if (mx > t->m) {
        float scale = expf(t->m - mx);
        t->l *= scale;
        for (int c = 0; c < D / 8; c++) out[c] = _mm256_mul_ps(out[c], _mm256_set1_ps(scale));
        t->m = mx;
    }
    __m256 sum = _mm256_setzero_ps(), top = _mm256_set1_ps(t->m);
    for (j = 0; j < m; j += 8) {
        __m256 e = exp_le0(_mm256_sub_ps(_mm256_load_ps(s + j), top));
        _mm256_store_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    t->l += hsum(sum);
    for (j = 0; j < m; j++) {
        __m256 p = _mm256_set1_ps(s[j]);
        for (int c = 0; c < D / 8; c++)
            out[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr[j] + 8 * c), out[c]);
    }
    for (int c = 0; c < D / 8; c++) _mm256_storeu_ps(a + 8 * c, out[c]);
}
#define VECTOR 1
#endif

/* One block of m keys for one row: block_avx where it applies, else the same in plain C. */
static inline void block(const float *qr, int D, const float *const *kr, const float *const *vr, int m, float *s,
                         float *a, Sum *t) {
#ifdef VECTOR
    if (D % 8 == 0 && D <= 128) {
        if (D == 64)
            block_avx(qr, 64, kr, vr, m, s, a, t);
        else
            block_avx(qr, D, kr, vr, m, s, a, t);
        return;
    }
#endif
    float mx = 0.0f;
    for (int j = 0; j < m; j++) {
        float dot = 0.0f;
        for (int d = 0; d < D; d++) dot += qr[d] * kr[j][d];
        s[j] = dot;
        mx = (j == 0 || dot > mx) ? dot : mx;
    }
    if (t->l == 0.0f) {
        t->m = mx;
    } else if (mx > t->m) {
        float scale = expf(t->m - mx);
        t->l *= scale;
        for (int d = 0; d < D; d++) a[d] *= scale;
        t->m = mx;
    }
    float total = 0.0f;
    for (int j = 0; j < m; j++) total += (s[j] = expf(s[j] - t->m));
    t->l += total;
    for (int j = 0; j < m; j++)
        for (int d = 0; d < D; d++) a[d] += s[j] * vr[j][d];
}

/* One thread's keys [from, to) for every row of head g, a block of keys at a time: scores, their running
   max and sum, then the weighted values into the row's accumulator. */
static void piece(const float *q, int R, int D, const float *const *k, const float *const *v, const long *len,
                  int nseg, int G, int g, const long *limit, long from, long to, Sum *sums, float *acc) {
    const float *kr[BLOCK], *vr[BLOCK];
    float s[BLOCK] __attribute__((aligned(32)));
    int seg = 0;
    long seg_start = 0;
    while (seg < nseg && seg_start + len[seg] <= from) seg_start += len[seg++];
    for (int r = 0; r < R; r++) sums[r].l = 0.0f, sums[r].m = 0.0f;
    memset(acc, 0, sizeof(float) * R * D);
    for (long base = from; base < to; base += BLOCK) {
        int n = (int)(to - base < BLOCK ? to - base : BLOCK);
        for (int j = 0; j < n; j++) {     /* the block's rows, across segment ends */
            while (base + j >= seg_start + len[seg]) seg_start += len[seg++];
            long at = (base + j - seg_start) * D;
            kr[j] = k[seg * G + g] + at;
            vr[j] = v[seg * G + g] + at;
        }
        for (int r = 0; r < R; r++) {
            long visible = limit[r] - base;
            int m = (int)(visible < n ? visible : n);
            if (m <= 0) continue;
            block(q + (long)r * D, D, kr, vr, m, s, acc + (long)r * D, &sums[r]);
        }
    }
}

void segment_attention(const float *q, int G, int R, int D, const float *const *k, const float *const *v,
                       const long *len, int nseg, const long *limit, int chunks, float *o, float *lse) {
    long total = 0;
    for (int s = 0; s < nseg; s++) total += len[s];
    Sum *sums = malloc(sizeof(Sum) * G * chunks * R);
    float *acc = malloc(sizeof(float) * G * chunks * R * D);
    #pragma omp parallel for num_threads(chunks) schedule(static) collapse(2)
    for (int g = 0; g < G; g++)
        for (int c = 0; c < chunks; c++) {
            long from = total * c / chunks, to = total * (c + 1) / chunks;
            long w = (long)g * chunks + c;
            piece(q + (long)g * R * D, R, D, k, v, len, nseg, G, g, limit, from, to, sums + w * R, acc + w * R * D);
        }
    for (int g = 0; g < G; g++)
        for (int r = 0; r < R; r++) {
            float m = 0.0f, l = 0.0f;
            int seen = 0;
            for (int c = 0; c < chunks; c++) {
                Sum t = sums[((long)g * chunks + c) * R + r];
                if (t.l > 0.0f && (!seen || t.m > m)) m = t.m, seen = 1;
            }
            float *out = o + ((long)g * R + r) * D;
            memset(out, 0, sizeof(float) * D);
            for (int c = 0; c < chunks; c++) {
                long w = (long)g * chunks + c;
                Sum t = sums[w * R + r];
                if (t.l == 0.0f) continue;
                float scale = expf(t.m - m);
                l += t.l * scale;
                const float *a = acc + (w * R + r) * D;
                for (int d = 0; d < D; d++) out[d] += a[d] * scale;
            }
            for (int d = 0; d < D; d++) out[d] /= l;
            lse[(long)g * R + r] = m + logf(l);
        }
    free(sums);
    free(acc);
}

/* Pointers to the keys and values of the n positions from `start` on, across segment ends; starts[s] is where
   segment s begins, starts[nseg] the end of the last. */
static void rows_at(const float *const *k, const float *const *v, const long *starts, int nseg, int D, long start,
                    int n, const float **kr, const float **vr) {
    int lo = 0, hi = nseg - 1;                           /* the last segment that begins at or before start */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (starts[mid] <= start) lo = mid; else hi = mid - 1;
    }
    for (int j = 0, seg = lo; j < n; j++) {
        while (start + j >= starts[seg + 1]) seg++;
        long at = (start + j - starts[seg]) * D;
        kr[j] = k[seg] + at;
        vr[j] = v[seg] + at;
    }
}

/* Blocks first..first+nblocks-1 of BLOCK keys: each one's elementwise min and max [nblocks][D] (Quest's
   bounds: a query's score against any key of the block is at most sum_d max(q_d * lo_d, q_d * hi_d)). */
void block_bounds(const float *const *k, const long *starts, int nseg, int D, long first, long nblocks, int threads,
                  float *lo, float *hi) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long b = 0; b < nblocks; b++) {
        const float *kr[BLOCK], *vr[BLOCK];
        rows_at(k, k, starts, nseg, D, (first + b) * BLOCK, BLOCK, kr, vr);
        float *l = lo + b * D, *h = hi + b * D;
        memcpy(l, kr[0], sizeof(float) * D);
        memcpy(h, kr[0], sizeof(float) * D);
        for (int j = 1; j < BLOCK; j++)
            for (int d = 0; d < D; d++) {
                float x = kr[j][d];
                l[d] = x < l[d] ? x : l[d];
                h[d] = x > h[d] ? x : h[d];
            }
    }
}

/* Block-selected attention, one kv head: row (t, h) of q [T][H][D] (already scaled) sees the keys
   local[t]..last[t] and the K blocks of BLOCK keys listed in blocks [T][H][K] (-1 for none). Out: o [T][H][D],
   lse [T][H]. Positions with the same local start (consecutive, at most TILE) read their recent keys together,
   as `piece` reads a cache for a few rows; then each row its own blocks. A row's result does not depend on
   which other rows came in the same call. */
#define TILE 32
void selected_attention(const float *q, int T, int H, int D, const float *const *k, const float *const *v,
                        const long *starts, int nseg, const long *blocks, int K, const long *local, const long *last,
                        int threads, float *o, float *lse) {
    long *len = malloc(sizeof(long) * nseg), *tile = malloc(sizeof(long) * (T + 1));
    long *limit = malloc(sizeof(long) * T * H);
    Sum *sums = malloc(sizeof(Sum) * T * H);
    int tiles = 0;
    for (int s = 0; s < nseg; s++) len[s] = starts[s + 1] - starts[s];
    for (long t = 0; t < T; t++) {
        if (t == 0 || local[t] != local[t - 1] || t - tile[tiles - 1] == TILE) tile[tiles++] = t;
        for (int h = 0; h < H; h++) limit[t * H + h] = last[t] + 1;
    }
    tile[tiles] = T;
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int i = 0; i < tiles; i++) {
        const float *kr[BLOCK], *vr[BLOCK];
        float s[BLOCK] __attribute__((aligned(32)));
        long first = tile[i] * H, rows = (tile[i + 1] - tile[i]) * H;
        piece(q + first * D, (int)rows, D, k, v, len, nseg, 1, 0, limit + first, local[tile[i]],
              last[tile[i + 1] - 1] + 1, sums + first, o + first * D);
        for (long row = first; row < first + rows; row++) {
            for (int j = 0; j < K; j++) {
                long b = blocks[row * K + j];
                if (b < 0) continue;
                rows_at(k, v, starts, nseg, D, b * BLOCK, BLOCK, kr, vr);
                block(q + row * D, D, kr, vr, BLOCK, s, o + row * D, &sums[row]);
            }
            for (int d = 0; d < D; d++) o[row * D + d] /= sums[row].l;
            lse[row] = sums[row].m + logf(sums[row].l);
        }
    }
    free(len), free(tile), free(limit), free(sums);
}

/* For each row of scores [rows][n]: the indices of its K highest among its first valid[row] columns, ascending,
   -1 where it has fewer (blocks [rows][K]). Ties keep the lower index. */
void top_blocks(const float *scores, long rows, long n, const long *valid, int K, int threads, long *blocks) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *s = scores + r * n;
        long *out = blocks + r * K;
        float best[K > 0 ? K : 1];
        int m = 0;
        for (long b = 0; b < valid[r]; b++) {     /* best[] descending: insert where s[b] beats an entry */
            if (m == K && s[b] <= best[K - 1]) continue;
            int at = m < K ? m++ : K - 1;
            while (at > 0 && best[at - 1] < s[b]) best[at] = best[at - 1], out[at] = out[at - 1], at--;
            best[at] = s[b], out[at] = b;
        }
        for (int i = 1; i < m; i++)               /* ascending by index */
            for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
                long x = out[j]; out[j] = out[j - 1]; out[j - 1] = x;
            }
        for (int i = m; i < K; i++) out[i] = -1;
    }
}

/* selected_attention for a few rows, their blocks chosen here: row (t, h) of q [T][H][D] (already scaled) at
   position past + t sees its recent keys from local = (past + t + 1 - recent, at least 0) rounded down to a block,
   and the K blocks before local whose bounds lo, hi [n][D] promise it the highest score, sum_d max(q_d lo_d,
   q_d hi_d): select.py's `select_blocks` and `selected_attention` in one call, where for a decode step their
   ~40 PyTorch calls cost more than the attention. Returns 0, or -1 when memory ran out (nothing written). */
int select_and_attend(const float *q, int T, int H, int D, const float *const *k, const float *const *v,
                      const long *starts, int nseg, const float *lo, const float *hi, long n, int K, long past,
                      long recent, int threads, float *o, float *lse) {
    long *local = malloc(sizeof(long) * T), *last = malloc(sizeof(long) * T);
    long *valid = malloc(sizeof(long) * T * H), *blocks = malloc(sizeof(long) * T * H * (K > 0 ? K : 1));
    float *scores = malloc(sizeof(float) * T * H * (n > 0 ? n : 1));
    int failed = !local || !last || !valid || !blocks || !scores;
    if (!failed) {
        for (long t = 0; t < T; t++) {
            const long from = past + t + 1 - recent;
            last[t] = past + t;
            local[t] = (from > 0 ? from : 0) / BLOCK * BLOCK;
            for (int h = 0; h < H; h++) {
                const long row = t * H + h, older = local[t] / BLOCK;
                const float *qr = q + row * D;
                valid[row] = older < n ? older : n;
                for (long b = 0; b < valid[row]; b++) {
                    float s = 0.0f;
                    for (int d = 0; d < D; d++) s += qr[d] > 0.0f ? qr[d] * hi[b * D + d] : qr[d] * lo[b * D + d];
                    scores[row * n + b] = s;
                }
            }
        }
        top_blocks(scores, (long)T * H, n, valid, K, 1, blocks);
        selected_attention(q, T, H, D, k, v, starts, nseg, blocks, K, local, last, threads, o, lse);
    }
    free(local), free(last), free(valid), free(blocks), free(scores);
    return failed ? -1 : 0;
}
