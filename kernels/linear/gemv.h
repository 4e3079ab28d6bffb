/* gemv.c's kernels for other C kernels (kernels/block): a weight held in fp16 [out, in] times a few fp32 rows. */
#ifndef RUSTLE_GEMV_H
#define RUSTLE_GEMV_H
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Outputs [o0, o1) of y [T, out] = x [T, in] W^T on the calling thread; o0 a multiple of 4. */
void gemv_f16_range(const float *x, const uint16_t *w, int T, int in, int out, int o0, int o1, float *y);

/* This thread's share [*o0, *o1) of n outputs inside a parallel region, cut at multiples of 4. */
static inline void split_quads(int n, int *o0, int *o1) {
#ifdef _OPENMP
    const int threads = omp_get_num_threads(), id = omp_get_thread_num();
#else
    const int threads = 1, id = 0;
#endif
    const int quads = (n + 3) / 4, per = (quads + threads - 1) / threads;
    *o0 = id * per * 4 < n ? id * per * 4 : n;
    *o1 = (id + 1) * per * 4 < n ? (id + 1) * per * 4 : n;
}
#endif
