/* C source of the native CPU kernels (compiled on first use by sparsecl.kernels.native).

   Shipped as package data (pyproject.toml, [tool.setuptools.package-data]). Two float32 kernels on CSR
   structures with int32 indices, both working on "transposed" dense operands (row-major [*, B], batch innermost) so that every inner loop is a contiguous run of B
   floats that GCC's vector extensions turn into 16-lane FMAs:

     spk_spmm_t   yT[i, :] = bias[i] + sum_{k in row i} val[k] * xT[col[k], :]          (SpMM)
     spk_sddmm_t  g[k]     = sum_b gyT[i, b] * xT[col[k], b]  for each nonzero k of row i (SDDMM)

   and three for direct sparse convolution with stride S (Park et al., 2017, "Faster CNNs with Direct Sparse
   Convolutions and Guided Pruning"), on batch-innermost activations [C, H, W, Np] (Np a multiple of 16):

     spk_conv_t          out[r, ho, wo, :] = bias[r] + sum_{k in row r} val[k] * in[off[k] + S ho*Wp + S wo, :]
     spk_conv_sddmm_t    g[k] = sum_{ho, wo, n} gy[r, ho, wo, n] * in[off[k] + S ho*Wp + S wo, n]
     spk_conv_scatter_t  gx[ci, S ho + kh, S wo + kw, :] += W[r, ci, kh, kw] gy[r, ho, wo, :]  (stride S > 1)

   where off[k] = ci*Hp*Wp + kh*Wp + kw addresses the (padded) input plane of a nonzero (r, ci, kh, kw);
   and the transpose that moves activations between the batch-outermost layout of the rest of the network
   and the kernels' batch-innermost one (8 x 8 register blocks; 1.6-3.0x faster than ``x.t().contiguous()`` on
   the SparCL MLP's shapes, ``python benchmarks/bench_kernels.py --layout --threads 1``):

     spk_transpose     b[j, i] = a[i, j]
     spk_to_planes     planes[c, ph + h, pw + w, n] = x[n, c, h, w], zero border and batch lanes (convolutions)
     spk_from_planes   y[n, c, h, w] = planes[c, oh + h, ow + w, n]

   and the training path's fused sparse Linear, one call per direction (``spk_linear_fwd`` / ``spk_linear_bwd``):
   transposes, SpMM and SDDMM above with the weight's active values read from the dense weight at their flat
   positions and the weight gradient written straight into a dense zeroed gradient.

   Rows are distributed with OpenMP (the .so links libgomp.so.1, the same soname as torch's, so the
   process keeps one OpenMP runtime); ``nthreads`` comes from ``torch.get_num_threads()``.
*/
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

static inline v16 ld(const float* p) { v16 r; memcpy(&r, p, sizeof r); return r; }
static inline void st(float* p, v16 v) { memcpy(p, &v, sizeof v); }

/* The first r (< 16) lanes of p; other lanes 0. Masked AVX-512 loads never touch masked-out memory. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline v16 ld_part(const float* p, int64_t r) {
  return (v16)_mm512_maskz_loadu_ps((__mmask16)((1u << r) - 1u), p);
}
static inline void st_part(float* p, v16 v, int64_t r) {
  _mm512_mask_storeu_ps(p, (__mmask16)((1u << r) - 1u), (__m512)v);
}
#else
static inline v16 ld_part(const float* p, int64_t r) {
  v16 x = {0};
  memcpy(&x, p, (size_t)r * sizeof(float));
  return x;
}
static inline void st_part(float* p, v16 v, int64_t r) { memcpy(p, &v, (size_t)r * sizeof(float)); }
#endif
static inline float hsum(v16 a) {
  v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7)
       + __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
  v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (q[0] + q[2]) + (q[1] + q[3]);
}

/* Value of nonzero k: val[k], or, with a gather index, val[vidx[k]] (the dense weight read at the flat
   positions of its active entries: no separate gather of the values) */
#define VAL(k) (vidx ? val[vidx[k]] : val[k])

/* One row, columns b .. b + 16*NV of yT: NV accumulators stay in registers across the row's nonzeros. */
#define SPMM_BLOCK(NV)                                                              \
  static inline void spmm_block##NV(const int32_t* col, const float* val,           \
                                    const int64_t* vidx, int32_t k0, int32_t k1,    \
                                    const float* xT, int64_t B, int64_t b,          \
                                    float b0, float* y) {                           \
    v16 acc[NV];                                                                      \
    for (int t = 0; t < NV; ++t) acc[t] = (v16){0} + b0;                              \
    for (int32_t k = k0; k < k1; ++k) {                                               \
      const float v = VAL(k);                                                         \
      const float* xr = xT + (int64_t)col[k] * B + b;                                 \
      for (int t = 0; t < NV; ++t) acc[t] += v * ld(xr + 16 * t);                     \
    }                                                                                 \
    for (int t = 0; t < NV; ++t) st(y + b + 16 * t, acc[t]);                          \
  }
SPMM_BLOCK(4)
SPMM_BLOCK(2)
SPMM_BLOCK(1)

static void spmm_rows(int64_t rows, const int32_t* crow, const int32_t* col, const float* val,
                      const int64_t* vidx, const float* xT, int64_t B, const float* bias, float* yT,
                      int nthreads) {
  const int64_t nnz = crow[rows];
#pragma omp parallel for schedule(dynamic, 16) num_threads(nthreads) if (nthreads > 1 && nnz * B > 65536)
  for (int64_t i = 0; i < rows; ++i) {
    float* y = yT + i * B;
    const float b0 = bias ? bias[i] : 0.f;
    const int32_t k0 = crow[i], k1 = crow[i + 1];
    int64_t b = 0;
    for (; b + 64 <= B; b += 64) spmm_block4(col, val, vidx, k0, k1, xT, B, b, b0, y);
    if (b + 32 <= B) { spmm_block2(col, val, vidx, k0, k1, xT, B, b, b0, y); b += 32; }
    if (b + 16 <= B) { spmm_block1(col, val, vidx, k0, k1, xT, B, b, b0, y); b += 16; }
    if (b < B) { /* last B % 16 columns */
      const int64_t r = B - b;
      v16 acc = (v16){0} + b0;
      for (int32_t k = k0; k < k1; ++k) acc += VAL(k) * ld_part(xT + (int64_t)col[k] * B + b, r);
      st_part(y + b, acc, r);
    }
  }
}

/* yT[i, :] = bias[i] + sum_{k in row i} val[k] * xT[col[k], :]   (yT [rows, B], xT [*, B], row-major) */
void spk_spmm_t(int64_t rows, const int32_t* crow, const int32_t* col, const float* val,
                const float* xT, int64_t B, const float* bias, float* yT, int nthreads) {
  spmm_rows(rows, crow, col, val, NULL, xT, B, bias, yT, nthreads);
}

static inline v16 dot_tail(const float* a, const float* c, int64_t b, int64_t B) {
  return b < B ? ld_part(a + b, B - b) * ld_part(c + b, B - b) : (v16){0};
}

/* Output slot of nonzero k: g[k], or, with a scatter index, g[gidx[k]] (straight into a dense gradient) */
#define OUT(k) g[gidx ? gidx[k] : (k)]

static void sddmm_rows(int64_t rows, const int32_t* crow, const int32_t* col, const float* gyT,
                       const float* xT, int64_t B, float* g, const int64_t* gidx, int nthreads) {
  const int64_t nnz = crow[rows];
  const int64_t Bv = B & ~(int64_t)15;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nthreads) if (nthreads > 1 && nnz * B > 65536)
  for (int64_t i = 0; i < rows; ++i) {
    const float* gr = gyT + i * B;
    int32_t k = crow[i];
    const int32_t k1 = crow[i + 1];
    for (; k + 4 <= k1; k += 4) { /* four independent dot products share each load of gr */
      const float* x0 = xT + (int64_t)col[k] * B;
      const float* x1 = xT + (int64_t)col[k + 1] * B;
      const float* x2 = xT + (int64_t)col[k + 2] * B;
      const float* x3 = xT + (int64_t)col[k + 3] * B;
      v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
      for (int64_t b = 0; b < Bv; b += 16) {
        const v16 gv = ld(gr + b);
        a0 += gv * ld(x0 + b); a1 += gv * ld(x1 + b); a2 += gv * ld(x2 + b); a3 += gv * ld(x3 + b);
      }
      OUT(k) = hsum(a0 + dot_tail(gr, x0, Bv, B));
      OUT(k + 1) = hsum(a1 + dot_tail(gr, x1, Bv, B));
      OUT(k + 2) = hsum(a2 + dot_tail(gr, x2, Bv, B));
      OUT(k + 3) = hsum(a3 + dot_tail(gr, x3, Bv, B));
    }
    for (; k < k1; ++k) {
      const float* xr = xT + (int64_t)col[k] * B;
      v16 a = {0};
      for (int64_t b = 0; b < Bv; b += 16) a += ld(gr + b) * ld(xr + b);
      OUT(k) = hsum(a + dot_tail(gr, xr, Bv, B));
    }
  }
}

/* g[k] = sum_b gyT[i, b] * xT[col[k], b] for every nonzero k of row i (SDDMM, both operands [*, B]). */
void spk_sddmm_t(int64_t rows, const int32_t* crow, const int32_t* col, const float* gyT,
                 const float* xT, int64_t B, float* g, int nthreads) {
  sddmm_rows(rows, crow, col, gyT, xT, B, g, NULL, nthreads);
}

/* ------------------------------------------------------------------ transpose */
static inline v8 ld8(const float* p) { v8 r; memcpy(&r, p, sizeof r); return r; }
static inline void st8(float* p, v8 v) { memcpy(p, &v, sizeof v); }

/* b[8 x 8 block] = a[8 x 8 block]^T in registers: three rounds of two-input shuffles */
static inline void transpose8x8(const float* a, int64_t lda, float* b, int64_t ldb) {
  v8 r[8], t[8], s[8];
  for (int q = 0; q < 8; ++q) r[q] = ld8(a + q * lda);
  for (int q = 0; q < 8; q += 2) {
    t[q] = __builtin_shufflevector(r[q], r[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[q + 1] = __builtin_shufflevector(r[q], r[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int q = 0; q < 8; q += 4)
    for (int h = 0; h < 2; ++h) {
      s[q + 2 * h] = __builtin_shufflevector(t[q + h], t[q + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      s[q + 2 * h + 1] = __builtin_shufflevector(t[q + h], t[q + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int q = 0; q < 4; ++q) { /* row q: low halves of s[q], s[q + 4]; row q + 4: their high halves */
    st8(b + q * ldb, __builtin_shufflevector(s[q], s[q + 4], 0, 1, 2, 3, 8, 9, 10, 11));
    st8(b + (q + 4) * ldb, __builtin_shufflevector(s[q], s[q + 4], 4, 5, 6, 7, 12, 13, 14, 15));
  }
}

/* b[j * ldb + i] = a[i * lda + j] for an R x C block with row strides lda, ldb (8 x 8 register blocks) */
static void transpose_strided(int64_t R, int64_t C, const float* a, int64_t lda, float* b, int64_t ldb) {
  int64_t i = 0;
  for (; i + 8 <= R; i += 8) {
    int64_t j = 0;
    for (; j + 8 <= C; j += 8) transpose8x8(a + i * lda + j, lda, b + j * ldb + i, ldb);
    for (; j < C; ++j)
      for (int64_t q = i; q < i + 8; ++q) b[j * ldb + q] = a[q * lda + j];
  }
  for (; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) b[j * ldb + i] = a[i * lda + j];
}

/* b [C, R] = a [R, C]^T (both row-major), in 32 x 32 tiles (cache blocking) of 8 x 8 register blocks */
void spk_transpose(int64_t R, int64_t C, const float* a, float* b, int nthreads) {
  const int64_t T = 32;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads) if (nthreads > 1 && R * C > 262144)
  for (int64_t i0 = 0; i0 < R; i0 += T)
    for (int64_t j0 = 0; j0 < C; j0 += T)
      transpose_strided(i0 + T < R ? T : R - i0, j0 + T < C ? T : C - j0, a + i0 * C + j0, C, b + j0 * R + i0, R);
}

/* planes [C, H + 2 ph, W + 2 pw, Np] = x [N, C, H, W] moved batch-innermost, with a zero border of ph rows
   and pw columns and zero batch lanes N..Np-1: every element of planes is written once. */
void spk_to_planes(int64_t N, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t Np,
                   const float* x, float* planes, int nthreads) {
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads) if (nthreads > 1 && C * Hp * Wp * Np > 262144)
  for (int64_t c = 0; c < C; ++c)
    for (int64_t hp = 0; hp < Hp; ++hp) {
      float* row = planes + (c * Hp + hp) * Wp * Np;
      const int64_t h = hp - ph;
      if (h < 0 || h >= H) { memset(row, 0, (size_t)(Wp * Np) * sizeof(float)); continue; }
      memset(row, 0, (size_t)(pw * Np) * sizeof(float));
      memset(row + (pw + W) * Np, 0, (size_t)(pw * Np) * sizeof(float));
      transpose_strided(N, W, x + (c * H + h) * W, C * H * W, row + pw * Np, Np);
      if (Np > N)
        for (int64_t w = 0; w < W; ++w) memset(row + (pw + w) * Np + N, 0, (size_t)(Np - N) * sizeof(float));
    }
}

/* y [N, C, H, W] (contiguous) = the first N batch lanes of the H x W window at (oh, ow) of planes
   [C, Hs, Ws, Np]. A full-width window (Ws == W) is one run of H * W positions per channel: one transpose
   of all of them (a row at a time, small maps would fall to the scalar tails of the 8 x 8 blocks). */
void spk_from_planes(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Hs, int64_t Ws, int64_t oh, int64_t ow,
                     int64_t Np, const float* planes, float* y, int nthreads) {
  const int64_t rows = Ws == W ? 1 : H, run = Ws == W ? H * W : W;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads) if (nthreads > 1 && C * H * W * N > 262144)
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = 0; h < rows; ++h)
      transpose_strided(run, N, planes + ((c * Hs + oh + h) * Ws + ow) * Np, Np, y + (c * H + h) * W, C * H * W);
}

/* ------------------------------------------------------------------ fused sparse linear (training) */
/* One call per layer and direction: the layout moves and the products above, with W's active values
   read from the dense weight w at their flat positions flat[k] (t_flat[k] = flat[perm[k]] for W^T).

   forward:  xT [in, B] = x^T (skipped when x is NULL: xT already holds it); yT = W xT + bias; y = yT^T
   backward: gyT = gy^T; gw (dense [out * in], zeroed) gets the SDDMM at the flat positions;
             gxT = W^T gyT; gx = gxT^T.  gw / gx NULL: not needed. */
void spk_linear_fwd(int64_t out, int64_t in, int64_t B, const int32_t* crow, const int32_t* col,
                    const int64_t* flat, const float* w, const float* x, float* xT, const float* bias,
                    float* yT, float* y, int nthreads) {
  if (x) spk_transpose(B, in, x, xT, nthreads);
  spmm_rows(out, crow, col, w, flat, xT, B, bias, yT, nthreads);
  spk_transpose(out, B, yT, y, nthreads);
}

void spk_linear_bwd(int64_t out, int64_t in, int64_t B, const int32_t* crow, const int32_t* col,
                    const int64_t* flat, const int32_t* t_crow, const int32_t* t_col, const int64_t* t_flat,
                    const float* w, const float* gy, float* gyT, const float* xT, float* gw, float* gxT,
                    float* gx, int nthreads) {
  spk_transpose(B, out, gy, gyT, nthreads);
  if (gw) {
    memset(gw, 0, (size_t)(out * in) * sizeof(float));
    sddmm_rows(out, crow, col, gyT, xT, B, gw, flat, nthreads);
  }
  if (gx) {
    spmm_rows(in, t_crow, t_col, w, t_flat, gyT, B, NULL, gxT, nthreads);
    spk_transpose(in, B, gxT, gx, nthreads);
  }
}

/* ------------------------------------------------------------------ direct sparse convolution */
/* WB output positions x NV 16-lane column blocks of accumulators, kept in registers over a row's nonzeros;
   adjacent output positions read the input ``step`` floats apart (stride * Np) */
#define CONV_BLOCK(WB, NV)                                                                      \
  static inline void conv_block_##WB##_##NV(const int32_t* off, const float* val, int32_t k0,      \
                                            int32_t k1, const float* base, int64_t Np, int64_t step, \
                                            float b0, float* out) {                                 \
    v16 acc[WB][NV];                                                                              \
    for (int a = 0; a < WB; ++a)                                                                  \
      for (int t = 0; t < NV; ++t) acc[a][t] = (v16){0} + b0;                                     \
    for (int32_t k = k0; k < k1; ++k) {                                                           \
      const float v = val[k];                                                                     \
      const float* p = base + (int64_t)off[k] * Np;                                               \
      for (int a = 0; a < WB; ++a)                                                                \
        for (int t = 0; t < NV; ++t) acc[a][t] += v * ld(p + a * step + 16 * t);                  \
    }                                                                                             \
    for (int a = 0; a < WB; ++a)                                                                  \
      for (int t = 0; t < NV; ++t) st(out + a * Np + 16 * t, acc[a][t]);                          \
  }
CONV_BLOCK(4, 2)
CONV_BLOCK(4, 1)
CONV_BLOCK(1, 2)
CONV_BLOCK(1, 1)

/* out [rows, Ho, Wo, Np]; in [*, Hp, Wp, Np] (already padded); output (ho, wo) reads the input at
   (S ho, S wo) + the nonzero's offset; Np % 16 == 0 */
void spk_conv_t(int64_t rows, int64_t Ho, int64_t Wo, int64_t Wp, int64_t S, const int32_t* crow,
                const int32_t* off, const float* val, const float* in, int64_t Np, const float* bias, float* out,
                int nthreads) {
  const int64_t nnz = crow[rows], step = S * Np;
#pragma omp parallel for collapse(2) schedule(dynamic, 4) num_threads(nthreads) \
    if (nthreads > 1 && nnz * Ho * Wo * Np > 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ho = 0; ho < Ho; ++ho) {
      const int32_t k0 = crow[r], k1 = crow[r + 1];
      const float b0 = bias ? bias[r] : 0.f;
      for (int64_t c = 0; c < Np;) {
        const int nv = (c + 32 <= Np) ? 2 : 1;
        int64_t wo = 0;
        for (; wo + 4 <= Wo; wo += 4) {
          const float* base = in + S * (ho * Wp + wo) * Np + c;
          float* o = out + ((r * Ho + ho) * Wo + wo) * Np + c;
          if (nv == 2) conv_block_4_2(off, val, k0, k1, base, Np, step, b0, o);
          else conv_block_4_1(off, val, k0, k1, base, Np, step, b0, o);
        }
        for (; wo < Wo; ++wo) {
          const float* base = in + S * (ho * Wp + wo) * Np + c;
          float* o = out + ((r * Ho + ho) * Wo + wo) * Np + c;
          if (nv == 2) conv_block_1_2(off, val, k0, k1, base, Np, step, b0, o);
          else conv_block_1_1(off, val, k0, k1, base, Np, step, b0, o);
        }
        c += 16 * nv;
      }
    }
}

/* g[k] for the nonzeros of row r: gy rows are Wo*Np contiguous floats at gy + ((r*gHs + ho)*gWs)*Np;
   output (ho, wo) met the input at (S ho, S wo) + off[k] */
static void conv_sddmm_strided(int64_t r, int64_t Ho, int64_t Wo, int64_t Wp, int64_t S, const int32_t* crow,
                               const int32_t* off, const float* gy, int64_t gHs, int64_t gWs, const float* in,
                               int64_t Np, float* g) {
  for (int32_t k = crow[r]; k < crow[r + 1]; ++k) {
    v16 a = {0};
    for (int64_t ho = 0; ho < Ho; ++ho) {
      const float* gr = gy + ((r * gHs + ho) * gWs) * Np;
      const float* xr = in + ((int64_t)off[k] + S * ho * Wp) * Np;
      for (int64_t wo = 0; wo < Wo; ++wo)
        for (int64_t c = 0; c < Np; c += 16) a += ld(gr + wo * Np + c) * ld(xr + S * wo * Np + c);
    }
    g[k] = hsum(a);
  }
}

void spk_conv_sddmm_t(int64_t rows, int64_t Ho, int64_t Wo, int64_t Wp, int64_t S, const int32_t* crow,
                      const int32_t* off, const float* gy, int64_t gHs, int64_t gWs, const float* in,
                      int64_t Np, float* g, int nthreads) {
  const int64_t nnz = crow[rows];
  const int64_t len = Wo * Np;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1 && nnz * Ho * len > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    if (S != 1) { conv_sddmm_strided(r, Ho, Wo, Wp, S, crow, off, gy, gHs, gWs, in, Np, g); continue; }
    int32_t k = crow[r];
    const int32_t k1 = crow[r + 1];
    for (; k + 4 <= k1; k += 4) { /* four nonzeros share each load of gy */
      v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
      for (int64_t ho = 0; ho < Ho; ++ho) {
        const float* gr = gy + ((r * gHs + ho) * gWs) * Np;
        const float* x0 = in + ((int64_t)off[k] + ho * Wp) * Np;
        const float* x1 = in + ((int64_t)off[k + 1] + ho * Wp) * Np;
        const float* x2 = in + ((int64_t)off[k + 2] + ho * Wp) * Np;
        const float* x3 = in + ((int64_t)off[k + 3] + ho * Wp) * Np;
        for (int64_t b = 0; b < len; b += 16) {
          const v16 gv = ld(gr + b);
          a0 += gv * ld(x0 + b); a1 += gv * ld(x1 + b); a2 += gv * ld(x2 + b); a3 += gv * ld(x3 + b);
        }
      }
      g[k] = hsum(a0); g[k + 1] = hsum(a1); g[k + 2] = hsum(a2); g[k + 3] = hsum(a3);
    }
    for (; k < k1; ++k) {
      v16 a = {0};
      for (int64_t ho = 0; ho < Ho; ++ho) {
        const float* gr = gy + ((r * gHs + ho) * gWs) * Np;
        const float* xr = in + ((int64_t)off[k] + ho * Wp) * Np;
        for (int64_t b = 0; b < len; b += 16) a += ld(gr + b) * ld(xr + b);
      }
      g[k] = hsum(a);
    }
  }
}
/* Input gradient of a strided convolution by scatter, one input channel per task (no write conflicts):
   gxp [Ci, Hq, Wq, Np] is zeroed, then for each nonzero e of W^T's row ci (weight (r, ci, kh, kw), value
   val[e], src[e] = r * Ho * Wo, dst[e] = kh * Wq + kw):
       gxp[ci, S ho + kh, S wo + kw, :] += val[e] * gy[r, ho, wo, :]      (gy [*, Ho, Wo, Np], unpadded)
   (Hq, Wq) is the padded input frame; the caller crops the interior. */
void spk_conv_scatter_t(int64_t Ci, int64_t Ho, int64_t Wo, int64_t S, int64_t Hq, int64_t Wq, const int32_t* crow,
                        const int32_t* src, const int32_t* dst, const float* val, const float* gy, int64_t Np,
                        float* gxp, int nthreads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1 && Ci * Hq * Wq * Np > 65536)
  for (int64_t ci = 0; ci < Ci; ++ci) {
    float* plane = gxp + ci * Hq * Wq * Np;
    memset(plane, 0, (size_t)(Hq * Wq * Np) * sizeof(float));
    for (int32_t e = crow[ci]; e < crow[ci + 1]; ++e) {
      const float v = val[e];
      const float* g = gy + (int64_t)src[e] * Np;
      float* d = plane + (int64_t)dst[e] * Np;
      for (int64_t ho = 0; ho < Ho; ++ho)
        for (int64_t wo = 0; wo < Wo; ++wo) {
          const float* gp = g + (ho * Wo + wo) * Np;
          float* dp = d + S * (ho * Wq + wo) * Np;
          for (int64_t c = 0; c < Np; c += 16) st(dp + c, ld(dp + c) + v * ld(gp + c));
        }
    }
  }
}

