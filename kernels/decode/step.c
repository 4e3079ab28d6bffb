/* A few tokens through the whole hybrid model on CPU (fp32 activations, fp16 weights, batch 1): a decode step,
 * a draft to verify, a typed line. The embedding rows, every block (RMSNorm, its gdn, swa or lql mixer, the
 * residual, the SwiGLU MLP), the final norm and the head, in one call. The blocks' pieces are the other kernels of
 * this library (gemv.c, dense.c, gdn/step.c, attention/segments.c); what this adds is their order, so that a step
 * costs ~40 of those calls from C instead of ~400 PyTorch and Python calls (BENCHMARKS.md, the decode step). The
 * caches' bookkeeping stays in Python (model/cache.py): the caller reserves each lql layer's new positions, passes
 * its segments and block bounds, and advances the ring counts. model/model.py's forward is the reference
 * (model/serving.py, tests/test_serving.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../linear/gemv.h"

enum { GDN = 0, SWA = 1, LQL = 2 };

typedef struct {
    int kind;
    const float *attn_norm, *mlp_norm;              /* [D] */
    const uint16_t *gate_up, *down;                 /* the MLP: [2 hidden, D], [D, hidden] */
    const uint16_t *in[3];                          /* gdn: qkv, beta_decay, gate; swa: qkv; lql: down, query and
                                                       (token keys) token_down */
    const float *in_bias;                           /* swa's qkv bias, or NULL */
    const uint16_t *out;                            /* [D, inner] */
    /* gdn */
    const float *conv_w, *A_log, *dt_bias, *head_norm;
    float *conv, *state;
    /* swa: the ring [KV][window][head_dim] of keys and values, positions seen before these */
    float *ring_k, *ring_v;
    long seen;
    /* lql: where the rows' latents go, every latent's segments (theirs included), the block bounds */
    float *latent;
    const float *const *segments;
    const long *starts;                             /* [nseg + 1] */
    int nseg;
    const float *lo, *hi;                           /* [nbounds][key width] */
    long nbounds, past;
} Layer;

typedef struct {
    int D, vocab, hidden, layers, threads;
    float eps;
    int heads, kv_heads, head_dim, window;          /* swa */
    const float *freqs;                             /* rope's [head_dim / 2] */
    int gdn_heads, gdn_dim, conv_size;              /* gdn */
    float gdn_scale;
    int lql_dim, lql_heads, lql_blocks, lql_shift;  /* lql; keys 0: z_t, 1: [z_t, z_t-1], 2: [z_t, e_t-1, e_t] */
    long lql_recent;
    const float *embed;                             /* [vocab][D], its strides below (the serving layout may
                                                       hold it column-major) */
    long embed_row, embed_col;
    const float *norm;                              /* [D] */
    const uint16_t *head;                           /* [vocab][D] */
    int tap;                                        /* the block whose output `hidden` gets; -1: the final states */
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

/* y [T][out] = x [T][in] W^T */
static void linear(const float *x, const uint16_t *w, int T, int in, int out, float *y, int threads) {
    #pragma omp parallel num_threads((long)in * out >= THREADED ? threads : 1)
    {
        int o0, o1;
        split_quads(out, &o0, &o1);
        gemv_f16_range(x, w, T, in, out, o0, o1, y);
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

static int gdn(const Model *m, Layer *L, const float *h, int T, float *a) {
    const int H = m->gdn_heads, Dk = m->gdn_dim, HD = H * Dk;
    float *mixed = malloc(sizeof(float) * T * (5L * HD + 2 * H));
    if (mixed == NULL) return -1;
    float *ba = mixed + 3L * T * HD, *gate = ba + 2L * T * H, *o = gate + (long)T * HD;
    linear(h, L->in[0], T, m->D, 3 * HD, mixed, m->threads);
    linear(h, L->in[1], T, m->D, 2 * H, ba, m->threads);
    linear(h, L->in[2], T, m->D, HD, gate, m->threads);
    int failed = gdn_tokens(mixed, L->conv, L->conv_w, T, H, Dk, m->conv_size, ba, L->A_log, L->dt_bias, L->state,
                            m->gdn_scale, gate, L->head_norm, m->eps, m->threads, o);
    if (!failed) linear(o, L->out, T, HD, m->D, a, m->threads);
    free(mixed);
    return failed ? -1 : 0;
}

/* Row t (position pos + t) sees the window's keys up to itself. One row attends the ring as it lies (all of it is
   in the window, and a softmax does not depend on the keys' order), as the model's decode step does; more rows
   attend the ring's keys in order followed by their own, each from its window's first key on. */
static int swa(const Model *m, Layer *L, const float *h, int T, long pos, float *a) {
    const int H = m->heads, KV = m->kv_heads, Dh = m->head_dim, W = m->window, R = H / KV, width = (H + 2 * KV) * Dh;
    const long old = L->seen < W ? L->seen : W, keys = old + T;          /* in order: the ring's, then the rows' */
    float *qkv = malloc(sizeof(float) * ((long)T * (width + H * Dh + H) + (T > 1 ? 2L * KV * keys * Dh : 0)));
    if (qkv == NULL) return -1;
    float *o = qkv + (long)T * width, *lse = o + (long)T * H * Dh, *ordered = lse + (long)T * H;
    linear(h, L->in[0], T, m->D, width, qkv, m->threads);
    const float scale = 1.0f / sqrtf((float)Dh);
    for (int t = 0; t < T; t++) {
        float *row = qkv + (long)t * width;
        if (L->in_bias)
            for (int i = 0; i < width; i++) row[i] += L->in_bias[i];
        rope(row, H + KV, Dh, m->freqs, pos + t);                  /* the query heads, then the key heads */
    }
    const float *k[KV], *v[KV];
    for (int g = 0; g < KV && T > 1; g++) {                         /* several rows: the keys in order */
        float *kg = ordered + (long)g * keys * Dh, *vg = ordered + (long)(KV + g) * keys * Dh;
        for (long j = 0; j < old; j++) {
            const long slot = (L->seen - old + j) % W;
            memcpy(kg + j * Dh, L->ring_k + ((long)g * W + slot) * Dh, sizeof(float) * Dh);
            memcpy(vg + j * Dh, L->ring_v + ((long)g * W + slot) * Dh, sizeof(float) * Dh);
        }
        for (int t = 0; t < T; t++) {
            memcpy(kg + (old + t) * Dh, qkv + (long)t * width + (H + g) * Dh, sizeof(float) * Dh);
            memcpy(vg + (old + t) * Dh, qkv + (long)t * width + (H + KV + g) * Dh, sizeof(float) * Dh);
        }
    }
    for (int t = 0; t < T; t++) {                                   /* the rows' keys into the ring */
        const long slot = (L->seen + t) % W;
        for (int g = 0; g < KV; g++) {
            memcpy(L->ring_k + ((long)g * W + slot) * Dh, qkv + (long)t * width + (H + g) * Dh, sizeof(float) * Dh);
            memcpy(L->ring_v + ((long)g * W + slot) * Dh, qkv + (long)t * width + (H + KV + g) * Dh,
                   sizeof(float) * Dh);
        }
    }
    for (int t = 0; t < T; t++) {
        float *q = qkv + (long)t * width;                          /* its query rows, kv head by kv head */
        for (int i = 0; i < H * Dh; i++) q[i] *= scale;
        long first = 0, len = T == 1 ? (L->seen + 1 < W ? L->seen + 1 : W) : 0, limit[R];
        if (T > 1) {
            first = old + t + 1 - W > 0 ? old + t + 1 - W : 0;
            len = old + t + 1 - first;
        }
        for (int g = 0; g < KV; g++) {
            k[g] = (T == 1 ? L->ring_k + (long)g * W * Dh : ordered + ((long)g * keys + first) * Dh);
            v[g] = (T == 1 ? L->ring_v + (long)g * W * Dh : ordered + ((long)(KV + g) * keys + first) * Dh);
        }
        for (int r = 0; r < R; r++) limit[r] = len;
        segment_attention(q, KV, R, Dh, (const float *const *)k, (const float *const *)v, &len, 1, limit, 1,
                          o + (long)t * H * Dh, lse + (long)t * H);
    }
    linear(o, L->out, T, H * Dh, m->D, a, m->threads);
    free(qkv);
    return 0;
}

/* x [T][D] scaled to unit root mean square (F.rms_norm without a weight, its eps float32's epsilon). */
static void unit_norm_rows(const float *x, int T, int D, float *y) {
    for (int t = 0; t < T; t++) {
        const float *r = x + (long)t * D;
        float ss = 0.0f;
        for (int i = 0; i < D; i++) ss += r[i] * r[i];
        const float scale = 1.0f / sqrtf(ss / D + 1.1920929e-07f);
        for (int i = 0; i < D; i++) y[(long)t * D + i] = r[i] * scale;
    }
}

/* The rows' keys into their reserved slots of `w` floats: z_t; with shifted keys z_t-1 after it; with token keys
   e_t-1 and e_t, e the projection of the token's normed embedding `en`. The previous position's part of the first row
   comes from the cache (zeros at position 0), as model/layers/lql.py's `latent`. `z`: scratch of d floats a row
   (token keys: 2 d). */
static void latents(const Model *m, Layer *L, const float *h, const float *en, int T, int w, float *z) {
    const int d = m->lql_dim, token = m->lql_shift == 2;
    if (!m->lql_shift) {
        linear(h, L->in[0], T, m->D, d, L->latent, m->threads);
        return;
    }
    float *part = z + (long)T * d;                                      /* what the next row shifts in */
    linear(h, L->in[0], T, m->D, d, z, m->threads);
    if (token) linear(en, L->in[2], T, m->D, d, part, m->threads);
    const float *before = NULL;
    for (int s = 0; s < L->nseg && L->past; s++)
        if (L->past - 1 < L->starts[s + 1]) {
            before = L->segments[s] + (L->past - 1 - L->starts[s]) * w + (token ? 2 * d : 0);
            break;
        }
    for (int t = 0; t < T; t++) {
        float *slot = L->latent + (long)t * w;
        const float *own = token ? part + (long)t * d : z + (long)t * d;
        const float *previous = t ? own - d : before;
        memcpy(slot, z + (long)t * d, sizeof(float) * d);
        if (previous) memcpy(slot + d, previous, sizeof(float) * d);
        else memset(slot + d, 0, sizeof(float) * d);
        if (token) memcpy(slot + 2 * d, own, sizeof(float) * d);
    }
}

static int lql(const Model *m, Layer *L, const float *h, const float *en, int T, float *a) {
    const int d = m->lql_dim, H = m->lql_heads, w = (m->lql_shift + 1) * d;     /* w: a key's width */
    float *q = malloc(sizeof(float) * T * (2L * H * w + H + (long)m->lql_shift * d));   /* z: shifted only */
    if (q == NULL) return -1;
    float *o = q + (long)T * H * w, *lse = o + (long)T * H * w, *z = lse + (long)T * H;
    latents(m, L, h, en, T, w, z);                                      /* into the cache's reserved slots */
    linear(h, L->in[1], T, m->D, H * w, q, m->threads);             /* rows (t, head) */
    const float scale = 1.0f / sqrtf((float)w);
    for (long i = 0; i < (long)T * H * w; i++) q[i] *= scale;
    const long total = L->past + T;
    int failed = 0;
    if (m->lql_blocks && total > m->lql_recent + (long)m->lql_blocks * 64) {
        failed = select_and_attend(q, T, H, w, L->segments, L->segments, L->starts, L->nseg, L->lo, L->hi,
                                   L->nbounds, m->lql_blocks, L->past, m->lql_recent, m->threads, o, lse);
    } else {
        long len[L->nseg], limit[T * H];
        for (int s = 0; s < L->nseg; s++) len[s] = L->starts[s + 1] - L->starts[s];
        for (int r = 0; r < T * H; r++) limit[r] = L->past + r / H + 1;
        const long chunks = total / MIN_SPLIT < 1 ? 1 : total / MIN_SPLIT;
        segment_attention(q, 1, T * H, w, L->segments, L->segments, len, L->nseg, limit,
                          (int)(chunks < m->threads ? chunks : m->threads), o, lse);
    }
    if (!failed) linear(o, L->out, T, H * w, m->D, a, m->threads);
    free(q);
    return failed ? -1 : 0;
}

/* tokens [T] at positions pos..pos+T-1 through the whole model, every layer's cache advanced (the caller's
   bookkeeping aside): the logits [n_out][vocab] of the last n_out rows, and where `hidden` is not NULL every
   row's final normed hidden state [T][D], or block `tap`'s output where tap >= 0, not normed (the model's memory
   keeps them). Returns 0, or -1 when memory ran out
   (the caches may then be part-way: the caller restores a snapshot or starts a new cache). */
int forward_rows(const Model *m, Layer *layers, const long *tokens, int T, long pos, int n_out, float *logits,
                 float *hidden) {
    const int D = m->D;
    float *x = malloc(sizeof(float) * 4L * T * D);
    if (x == NULL) return -1;
    float *h = x + (long)T * D, *a = h + (long)T * D, *en = a + (long)T * D;    /* en: token keys' normed embeddings */
    int failed = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) x[(long)t * D + i] = m->embed[tokens[t] * m->embed_row + i * m->embed_col];
    if (m->lql_shift == 2) unit_norm_rows(x, T, D, en);
    for (int i = 0; i < m->layers && !failed; i++) {
        Layer *L = layers + i;
        rms_norm_rows(x, L->attn_norm, T, D, m->eps, h);
        if (L->kind == GDN) failed = gdn(m, L, h, T, a);
        else if (L->kind == SWA) failed = swa(m, L, h, T, pos, a);
        else failed = lql(m, L, h, en, T, a);
        failed = failed || residual_mlp(x, a, L->mlp_norm, m->eps, L->gate_up, L->down, T, D, m->hidden,
                                        m->threads, x);
        if (hidden != NULL && i == m->tap) memcpy(hidden, x, sizeof(float) * T * D);
    }
    if (!failed) {
        const int final = hidden != NULL && m->tap < 0;
        if (final) rms_norm_rows(x, m->norm, T, D, m->eps, hidden);
        else rms_norm_rows(x + (long)(T - n_out) * D, m->norm, n_out, D, m->eps, h);
        linear(final ? hidden + (long)(T - n_out) * D : h, m->head, n_out, D, m->vocab, logits, m->threads);
    }
    free(x);
    return failed ? -1 : 0;
}
