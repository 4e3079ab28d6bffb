/* One decode step of the whole hybrid model on CPU (fp32 activations, fp16 weights, batch 1, one token): the
 * embedding row, every block (RMSNorm, its gdn, swa or lql mixer, the residual, the SwiGLU MLP), the final norm
 * and the head, in one call. The blocks' pieces are the other kernels of this library (gemv.c, dense.c,
 * gdn/step.c, attention/segments.c); what this adds is their order, so that a step costs ~40 of those calls
 * from C instead of ~400 PyTorch and Python calls (BENCHMARKS.md, the decode step). The caches' bookkeeping stays
 * in Python (model/cache.py): the caller reserves each lql layer's new position, passes its segments and block
 * bounds, and advances the ring counts. model/model.py's forward is the reference (kernels/decode/cpu.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../linear/gemv.h"

enum { GDN = 0, SWA = 1, LQL = 2 };

typedef struct {
    int kind;
    const float *attn_norm, *mlp_norm;              /* [D] */
    const uint16_t *gate_up, *down;                 /* the MLP: [2 hidden, D], [D, hidden] */
    const uint16_t *in[3];                          /* gdn: qkv, beta_decay, gate; swa: qkv; lql: down, query */
    const float *in_bias;                           /* swa's qkv bias, or NULL */
    const uint16_t *out;                            /* [D, inner] */
    /* gdn */
    const float *conv_w, *A_log, *dt_bias, *head_norm;
    float *conv, *state;
    /* swa: the ring [KV][window][head_dim] of keys and values, positions seen before this one */
    float *ring_k, *ring_v;
    long seen;
    /* lql: where this position's latent goes, every latent's segments (this one's included), the block bounds */
    float *latent;
    const float *const *segments;
    const long *starts;                             /* [nseg + 1] */
    int nseg;
    const float *lo, *hi;                           /* [nbounds][lql_dim] */
    long nbounds, past;
} Layer;

typedef struct {
    int D, vocab, hidden, layers, threads;
    float eps;
    int heads, kv_heads, head_dim, window;          /* swa */
    const float *freqs;                             /* rope's [head_dim / 2] */
    int gdn_heads, gdn_dim, conv_size;              /* gdn */
    float gdn_scale;
    int lql_dim, lql_heads, lql_blocks;             /* lql */
    long lql_recent;
    const float *embed;                             /* [vocab][D], its strides below (the serving layout may
                                                       hold it column-major) */
    long embed_row, embed_col;
    const float *norm;                              /* [D] */
    const uint16_t *head;                           /* [vocab][D] */
} Model;

/* The other kernels' entry points (one library, kernels/clib.py). */
void rms_norm_rows(const float *x, const float *w, int T, int D, float eps, float *y);
int residual_mlp(const float *x, const float *a, const float *norm_w, float eps, const uint16_t *gate_up,
                 const uint16_t *down, int T, int D, int H, int threads, float *out);
int gdn_tokens(const float *mixed, float *conv, const float *conv_w, int T, int H, int D, int W, const float *ba,
               const float *A_log, const float *dt_bias, float *state, float scale, const float *gate,
               const float *norm_w, float eps, int threads, float *out);
void segment_attention(const float *q, int G, int R, int D, const float *const *k, const float *const *v,
                       const long *len, int nseg, const long *limit, int chunks, float *o, float *lse);
int select_and_attend(const float *q, int T, int H, int D, const float *const *k, const float *const *v,
                      const long *starts, int nseg, const float *lo, const float *hi, long n, int K, long past,
                      long recent, int threads, float *o, float *lse);

#define THREADED (1L << 16)   /* as kernels/linear/cpu.py: weights from which outputs are split across threads */
#define MIN_SPLIT 4096        /* as kernels/attention/cpu.py: keys below which one thread attends */

static void linear(const float *x, const uint16_t *w, int in, int out, float *y, int threads) {
    #pragma omp parallel num_threads((long)in * out >= THREADED ? threads : 1)
    {
        int o0, o1;
        split_quads(out, &o0, &o1);
        gemv_f16_range(x, w, 1, in, out, o0, o1, y);
    }
}

/* Rotate pairs (first half, second half) of each of n heads [n][dim] by position pos, as model/layers/common.py. */
static void rope(float *x, int n, int dim, const float *freqs, long pos) {
    const int half = dim / 2;
    for (int i = 0; i < half; i++) {
        const float angle = (float)pos * freqs[i], c = cosf(angle), s = sinf(angle);
        for (int h = 0; h < n; h++) {
            float *a = x + (long)h * dim + i, *b = a + half;
            const float x0 = *a, x1 = *b;
            *a = x0 * c - x1 * s;
            *b = x0 * s + x1 * c;
        }
    }
}

static int gdn(const Model *m, Layer *L, const float *h, float *a, float *work) {
    const int H = m->gdn_heads, Dk = m->gdn_dim, HD = H * Dk;
    float *mixed = work, *ba = mixed + 3 * HD, *gate = ba + 2 * H, *o = gate + HD;
    linear(h, L->in[0], m->D, 3 * HD, mixed, m->threads);
    linear(h, L->in[1], m->D, 2 * H, ba, m->threads);
    linear(h, L->in[2], m->D, HD, gate, m->threads);
    if (gdn_tokens(mixed, L->conv, L->conv_w, 1, H, Dk, m->conv_size, ba, L->A_log, L->dt_bias, L->state,
                   m->gdn_scale, gate, L->head_norm, m->eps, m->threads, o))
        return -1;
    linear(o, L->out, HD, m->D, a, m->threads);
    return 0;
}

static void swa(const Model *m, Layer *L, const float *h, long pos, float *a, float *work) {
    const int H = m->heads, KV = m->kv_heads, Dh = m->head_dim, W = m->window, R = H / KV;
    const int n = L->seen + 1 < W ? (int)L->seen + 1 : W;      /* keys in the ring after this one is written */
    const long slot = L->seen % W;
    float *qkv = work, *o = qkv + (H + 2 * KV) * Dh, *lse = o + H * Dh;
    linear(h, L->in[0], m->D, (H + 2 * KV) * Dh, qkv, m->threads);
    if (L->in_bias)
        for (int i = 0; i < (H + 2 * KV) * Dh; i++) qkv[i] += L->in_bias[i];
    rope(qkv, H + KV, Dh, m->freqs, pos);                       /* the query heads, then the key heads */
    const float *k[KV], *v[KV];
    for (int g = 0; g < KV; g++) {
        memcpy(L->ring_k + ((long)g * W + slot) * Dh, qkv + (H + g) * Dh, sizeof(float) * Dh);
        memcpy(L->ring_v + ((long)g * W + slot) * Dh, qkv + (H + KV + g) * Dh, sizeof(float) * Dh);
        k[g] = L->ring_k + (long)g * W * Dh;
        v[g] = L->ring_v + (long)g * W * Dh;
    }
    const float scale = 1.0f / sqrtf((float)Dh);
    for (int i = 0; i < H * Dh; i++) qkv[i] *= scale;          /* the query rows, kv head by kv head */
    long len = n, limit[R];
    for (int r = 0; r < R; r++) limit[r] = n;
    segment_attention(qkv, KV, R, Dh, (const float *const *)k, (const float *const *)v, &len, 1, limit, 1, o, lse);
    linear(o, L->out, H * Dh, m->D, a, m->threads);
}

static int lql(const Model *m, Layer *L, const float *h, float *a, float *work) {
    const int d = m->lql_dim, H = m->lql_heads;
    float *q = work, *o = q + H * d, *lse = o + H * d;
    linear(h, L->in[0], m->D, d, L->latent, m->threads);
    linear(h, L->in[1], m->D, H * d, q, m->threads);
    const float scale = 1.0f / sqrtf((float)d);
    for (int i = 0; i < H * d; i++) q[i] *= scale;
    const long total = L->past + 1;
    if (m->lql_blocks && total > m->lql_recent + (long)m->lql_blocks * 64) {
        if (select_and_attend(q, 1, H, d, L->segments, L->segments, L->starts, L->nseg, L->lo, L->hi, L->nbounds,
                              m->lql_blocks, L->past, m->lql_recent, m->threads, o, lse))
            return -1;
    } else {
        long len[L->nseg], limit[H];
        for (int s = 0; s < L->nseg; s++) len[s] = L->starts[s + 1] - L->starts[s];
        for (int r = 0; r < H; r++) limit[r] = total;
        const long chunks = total / MIN_SPLIT < 1 ? 1 : total / MIN_SPLIT;
        segment_attention(q, 1, H, d, L->segments, L->segments, len, L->nseg, limit,
                          (int)(chunks < m->threads ? chunks : m->threads), o, lse);
    }
    linear(o, L->out, H * d, m->D, a, m->threads);
    return 0;
}

/* The logits [vocab] of `token` at position pos, every layer's cache advanced (the caller's bookkeeping aside).
   Returns 0, or -1 when memory ran out (the caches may then be part-way: the caller drops them). */
int decode_step(const Model *m, Layer *layers, long token, long pos, float *logits) {
    const int D = m->D, widest = 3 * m->gdn_heads * m->gdn_dim + 2 * m->gdn_heads + 2 * m->gdn_heads * m->gdn_dim;
    const int swa_work = (m->heads + 2 * m->kv_heads) * m->head_dim + m->heads * m->head_dim + m->heads;
    const int lql_work = 2 * m->lql_heads * m->lql_dim + m->lql_heads;
    int work_size = widest > swa_work ? widest : swa_work;
    work_size = work_size > lql_work ? work_size : lql_work;
    float *x = malloc(sizeof(float) * (3L * D + work_size));
    if (x == NULL) return -1;
    float *h = x + D, *a = h + D, *work = a + D;
    int failed = 0;
    for (int i = 0; i < D; i++) x[i] = m->embed[token * m->embed_row + i * m->embed_col];
    for (int i = 0; i < m->layers && !failed; i++) {
        Layer *L = layers + i;
        rms_norm_rows(x, L->attn_norm, 1, D, m->eps, h);
        if (L->kind == GDN) failed = gdn(m, L, h, a, work);
        else if (L->kind == SWA) swa(m, L, h, pos, a, work);
        else failed = lql(m, L, h, a, work);
        failed = failed || residual_mlp(x, a, L->mlp_norm, m->eps, L->gate_up, L->down, 1, D, m->hidden,
                                        m->threads, x);
    }
    if (!failed) {
        rms_norm_rows(x, m->norm, 1, D, m->eps, h);
        linear(h, m->head, D, m->vocab, logits, m->threads);
    }
    free(x);
    return failed ? -1 : 0;
}
