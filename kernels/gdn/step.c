/* A gdn layer's tokens on CPU (fp32, batch 1), between its input projections and its output projection: the
 * short convolution (its window carried in the cache), SiLU, q and k L2-normalised per head, the write strength
 * and decay, the gated delta rule's update of the state, one token after another, the per-head RMSNorm and the
 * SiLU gate; heads on separate threads. In PyTorch a decode step is ~30 ops on vectors of a few hundred floats,
 * and a few dozen tokens go through the chunked form's ~100 ops, where the time goes to the calls, not the
 * arithmetic (BENCHMARKS.md, the decode step); here a token costs ~3 H D^2 multiply-adds.
 * model/layers/gdn.py is the reference. */
#include <math.h>
#include <stdlib.h>

static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }   /* torch's threshold */

static void l2_normalise(const float *x, float *out, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += x[i] * x[i];
    const float norm = sqrtf(sum), inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);   /* F.normalize's eps */
    for (int i = 0; i < n; i++) out[i] = x[i] * inv;
}

/* The convolution of T tokens: mixed [T, C] → act [T, C] = SiLU(conv), the window conv [C, W-1] carried on. */
static void convolve(const float *mixed, float *conv, const float *conv_w, long C, int W, int T, float *act) {
    for (int t = 0; t < T; t++) {
        for (long c = 0; c < C; c++) {
            float *window = conv + c * (W - 1);
            const float *w = conv_w + c * W;
            const float x = mixed[t * C + c];
            float s = x * w[W - 1];
            for (int j = 0; j < W - 1; j++) s += window[j] * w[j];
            for (int j = 0; j + 1 < W - 1; j++) window[j] = window[j + 1];
            window[W - 2] = x;
            act[t * C + c] = silu(s);
        }
    }
}

/* Head h of one token: act [C] (q, k, v of every head), ba [2H]; S [D, D] (updated); gate, out [H*D]. */
static void head_token(const float *act, int h, int H, int D, const float *ba, const float *A_log,
                       const float *dt_bias, float *S, float scale, const float *gate, const float *norm_w,
                       float eps, float *out) {
    float q[D], k[D], err[D], o[D];
    l2_normalise(act + h * D, q, D);
    l2_normalise(act + (H + h) * D, k, D);
    const float *v = act + (2 * H + h) * D;
    const float beta = 1.0f / (1.0f + expf(-ba[h]));
    const float decay = expf(-expf(A_log[h]) * softplus(ba[H + h] + dt_bias[h]));
    for (int j = 0; j < D; j++) err[j] = 0.0f;
    for (int i = 0; i < D; i++) {                    /* S = decay S; err = k S */
        float *row = S + (long)i * D;
        for (int j = 0; j < D; j++) {
            row[j] *= decay;
            err[j] += k[i] * row[j];
        }
    }
    for (int j = 0; j < D; j++) { err[j] = beta * (v[j] - err[j]); o[j] = 0.0f; }
    for (int i = 0; i < D; i++) {                    /* S += k (beta (v - k S)); o = scale q S */
        float *row = S + (long)i * D;
        const float qi = q[i] * scale;
        for (int j = 0; j < D; j++) {
            row[j] += k[i] * err[j];
            o[j] += qi * row[j];
        }
    }
    float sq = 0.0f;
    for (int j = 0; j < D; j++) sq += o[j] * o[j];
    const float r = 1.0f / sqrtf(sq / D + eps);
    for (int j = 0; j < D; j++) out[h * D + j] = o[j] * r * norm_w[j] * silu(gate[h * D + j]);
}

/* mixed [T, C] (the qkv projection, C = 3 H D), conv [C, W-1] (updated), conv_w [C, W], ba [T, 2H] (beta, then
 * the decay's input), A_log, dt_bias [H], state [H, D, D] (updated), gate [T, H D] (the gate projection),
 * norm_w [D]; out [T, H D]. D <= 256. Returns 0, or -1 when memory ran out (nothing was changed then). */
int gdn_tokens(const float *mixed, float *conv, const float *conv_w, int T, int H, int D, int W, const float *ba,
               const float *A_log, const float *dt_bias, float *state, float scale, const float *gate,
               const float *norm_w, float eps, int threads, float *out) {
    const long C = 3L * H * D, HD = (long)H * D;
    float *act = malloc(sizeof(float) * C * (T > 0 ? T : 1));
    if (act == NULL) return -1;
    convolve(mixed, conv, conv_w, C, W, T, act);
    #pragma omp parallel for num_threads(T >= 16 ? threads : 1) schedule(static)
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
            head_token(act + t * C, h, H, D, ba + 2L * H * t, A_log, dt_bias, state + (long)h * D * D, scale,
                       gate + t * HD, norm_w, eps, out + t * HD);
    free(act);
    return 0;
}
