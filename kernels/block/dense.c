/* A block's dense parts for a few rows on CPU (fp32 activations, fp16 weights): RMSNorm, and the residual MLP
 *     out = x + a;   out += down(silu(gate) * up),   [gate | up] = gate_up(rmsnorm(out))
 * in one call, its two matrix products split across the threads in one parallel region. In PyTorch these are ~15
 * calls a block on vectors of a few hundred floats, where a decode step's time goes to the calls (BENCHMARKS.md,
 * the decode step). The reference is model/model.py's Block (nn.RMSNorm, SwiGLU). */
#include <math.h>
#include <stdlib.h>

#include "../linear/gemv.h"

static void rms_norm_row(const float *x, const float *w, int D, float eps, float *y) {
    float sq = 0.0f;
    for (int i = 0; i < D; i++) sq += x[i] * x[i];
    const float r = 1.0f / sqrtf(sq / D + eps);
    for (int i = 0; i < D; i++) y[i] = x[i] * r * w[i];
}

/* y [T, D] = rmsnorm(x [T, D]) * w [D]. */
void rms_norm_rows(const float *x, const float *w, int T, int D, float eps, float *y) {
    for (int t = 0; t < T; t++) rms_norm_row(x + (long)t * D, w, D, eps, y + (long)t * D);
}

/* out [T, D] = x + a (a may be NULL), then out += the SwiGLU MLP of rmsnorm(out): gate_up [2H, D] (the gate's
 * rows, then the up's), down [D, H], both fp16. out may be x. Returns 0, or -1 when memory ran out (nothing
 * is written then). */
int residual_mlp(const float *x, const float *a, const float *norm_w, float eps, const uint16_t *gate_up,
                 const uint16_t *down, int T, int D, int H, int threads, float *out) {
    float *h = malloc(sizeof(float) * (long)T * (2L * D + 3L * H));
    if (h == NULL) return -1;
    float *gu = h + (long)T * D, *act = gu + 2L * T * H, *y = act + (long)T * H;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < D; i++) out[(long)t * D + i] = x[(long)t * D + i] + (a ? a[(long)t * D + i] : 0.0f);
        rms_norm_row(out + (long)t * D, norm_w, D, eps, h + (long)t * D);
    }
    #pragma omp parallel num_threads(threads)
    {
        int o0, o1;
        split_quads(2 * H, &o0, &o1);
        gemv_f16_range(h, gate_up, T, D, 2 * H, o0, o1, gu);
        #pragma omp barrier
        split_quads(H, &o0, &o1);
        for (int t = 0; t < T; t++)
            for (int j = o0; j < o1; j++) {
                const float g = gu[2L * t * H + j], u = gu[2L * t * H + H + j];
                act[(long)t * H + j] = g / (1.0f + expf(-g)) * u;
            }
        #pragma omp barrier
        split_quads(D, &o0, &o1);
        gemv_f16_range(act, down, T, H, D, o0, o1, y);
        for (int t = 0; t < T; t++)
            for (int i = o0; i < o1; i++) out[(long)t * D + i] += y[(long)t * D + i];
    }
    free(h);
    return 0;
}
