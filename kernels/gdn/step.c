/* One decode step of a gdn layer on CPU (fp32, batch 1), between its input projections and its output
 * projection: the short convolution (its window updated), SiLU, q and k L2-normalised per head, the write
 * strength and decay, the gated delta rule's update of the state, the per-head RMSNorm and the SiLU gate.
 * In PyTorch these are ~30 ops on vectors of a few hundred floats, where a decode step's time goes to the
 * calls, not the arithmetic (BENCHMARKS.md, the decode step). model/layers/gdn.py is the reference. */
#include <math.h>

static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }   /* torch's threshold */

static void l2_normalise(const float *x, float *out, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += x[i] * x[i];
    const float norm = sqrtf(sum), inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);   /* F.normalize's eps */
    for (int i = 0; i < n; i++) out[i] = x[i] * inv;
}

/* mixed [C] (the qkv projection), conv [C, W-1] (updated), conv_w [C, W], ba [2H] (beta, then the decay's
 * input), A_log, dt_bias [H], state [H, D, D] (updated), gate [H*D] (the gate projection), norm_w [D];
 * out [H*D]. C = 3*H*D; D <= 256. */
void gdn_step(const float *mixed, float *conv, const float *conv_w, int H, int D, int W, const float *ba,
              const float *A_log, const float *dt_bias, float *state, float scale, const float *gate,
              const float *norm_w, float eps, float *out) {
    const int C = 3 * H * D;
    float act[C];
    for (int c = 0; c < C; c++) {
        float *window = conv + (long)c * (W - 1);
        const float *w = conv_w + (long)c * W;
        float s = mixed[c] * w[W - 1];
        for (int j = 0; j < W - 1; j++) s += window[j] * w[j];
        for (int j = 0; j + 1 < W - 1; j++) window[j] = window[j + 1];
        window[W - 2] = mixed[c];
        act[c] = silu(s);
    }
    for (int h = 0; h < H; h++) {
        float q[D], k[D], err[D], o[D];
        l2_normalise(act + h * D, q, D);
        l2_normalise(act + (H + h) * D, k, D);
        const float *v = act + (2 * H + h) * D;
        const float beta = 1.0f / (1.0f + expf(-ba[h]));
        const float decay = expf(-expf(A_log[h]) * softplus(ba[H + h] + dt_bias[h]));
        float *S = state + (long)h * D * D;                       /* [key dim, value dim] */
        for (int j = 0; j < D; j++) err[j] = 0.0f;
        for (int i = 0; i < D; i++) {
            float *row = S + (long)i * D;
            for (int j = 0; j < D; j++) {
                row[j] *= decay;
                err[j] += k[i] * row[j];
            }
        }
        for (int j = 0; j < D; j++) { err[j] = beta * (v[j] - err[j]); o[j] = 0.0f; }
        for (int i = 0; i < D; i++) {
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
}
