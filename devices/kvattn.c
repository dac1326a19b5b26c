/* Decode attention over KV given as segments (e.g. the pages of a read buffer, in place).
 *
 * Built and loaded by devices/native.py (cc -O3 -march=native, on first use); see there for the
 * Python side. One call attends F groups of G query heads (grouped-query attention: the G query
 * heads sharing a KV head) over F KV heads. KV head f is the concatenation of its segments
 * [seg_start[f], seg_start[f + 1]): segment i has n[i] rows (0 <= n[i] <= 256) of D elements,
 * K rows contiguous at k[i], V rows contiguous at v[i], in fp32, fp16 or bf16. Everything is
 * computed in fp32: scores in blocks of up to 256 tokens, an online (flash-decoding) softmax
 * across blocks. Outputs: out [F, G, D] (normalised) and lse [F, G], fp32; an empty KV head
 * gives out = 0 and lse = -inf.
 *
 * With AVX2 + F16C + FMA (x86-64 since 2013) the inner loops are hand-vectorised: two tokens'
 * scores at a time (eight independent FMA chains), V accumulated 16 columns at a time in
 * registers, exp by a Cephes polynomial (relative error < 2e-7), and the pages two segments
 * ahead prefetched into L1 (hardware prefetchers do not cross the page boundaries between
 * segments). Elsewhere (or built with -DKVATTN_SCALAR) plain C loops compute the same thing.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__) && !defined(KVATTN_SCALAR)
#define KVATTN_SIMD 1
#include <immintrin.h>
#else
#define KVATTN_SIMD 0
#endif

#define BT 256   /* tokens per softmax block, and the most rows one segment may hold */
#define MAXD 512
#define MAXG 64
#define PF 2     /* prefetch the segment this many ahead */

enum { F32 = 0, F16 = 1, BF16 = 2 };

int kvattn_simd(void) { return KVATTN_SIMD; }

static inline float ld1(const void* p, int i, int dt) {
  if (dt == F32) return ((const float*)p)[i];
  uint16_t h = ((const uint16_t*)p)[i];
  if (dt == BF16) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  /* IEEE half -> float, exact (normal, subnormal, inf, nan) */
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
  if (e == 0x1f) {
    u = sign | 0x7f800000u | (m << 13);
  } else if (e != 0) {
    u = sign | ((e + 112) << 23) | (m << 13);
  } else if (m == 0) {
    u = sign;
  } else {
    float f = (float)m * 5.9604644775390625e-8f; /* m * 2^-24 */
    memcpy(&u, &f, 4);
    u |= sign;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

#if KVATTN_SIMD
static inline __m256 ld8(const void* p, int dt) {
  if (dt == F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
  if (dt == BF16)
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
  return _mm256_loadu_ps((const float*)p);
}

static inline float hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* exp(x) for x <= 0 (scores minus their running max); Cephes expf */
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  __m256 fx = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

static inline void prefetch(const char* p, size_t nbytes) {
  for (size_t o = 0; o < nbytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}
#endif

/* sc[g * BT + t] = q_g . k_t over the tokens of segments [s, s1) */
static inline __attribute__((always_inline)) void scores(
    const int G, const int D, const int dt, const float* restrict q, const void* const* kp,
    const int32_t* nseg, int s, int s1, int S, float* restrict sc) {
  const int es = dt == F32 ? 4 : 2;
  const size_t rb = (size_t)D * es;
  int t = 0;
  for (int x = s; x < s1; x++) {
    const char* kb = (const char*)kp[x];
    int r = 0;
#if KVATTN_SIMD
    if (D % 8 == 0) {
      if (x + PF < S) prefetch((const char*)kp[x + PF], (size_t)nseg[x + PF] * rb);
      for (; r + 2 <= nseg[x]; r += 2, t += 2) {
        const char* k0 = kb + r * rb;
        const char* k1 = k0 + rb;
        for (int g0 = 0; g0 < G; g0 += 4) {
          const int gn = G - g0 < 4 ? G - g0 : 4;
          __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
          __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
          for (int d = 0; d < D; d += 8) {
            const __m256 x0 = ld8(k0 + d * es, dt), x1 = ld8(k1 + d * es, dt);
            const float* qg = q + (size_t)g0 * D + d;
            __m256 qv = _mm256_loadu_ps(qg);
            a0 = _mm256_fmadd_ps(qv, x0, a0);
            b0 = _mm256_fmadd_ps(qv, x1, b0);
            if (gn > 1) {
              qv = _mm256_loadu_ps(qg + D);
              a1 = _mm256_fmadd_ps(qv, x0, a1);
              b1 = _mm256_fmadd_ps(qv, x1, b1);
            }
            if (gn > 2) {
              qv = _mm256_loadu_ps(qg + 2 * D);
              a2 = _mm256_fmadd_ps(qv, x0, a2);
              b2 = _mm256_fmadd_ps(qv, x1, b2);
            }
            if (gn > 3) {
              qv = _mm256_loadu_ps(qg + 3 * D);
              a3 = _mm256_fmadd_ps(qv, x0, a3);
              b3 = _mm256_fmadd_ps(qv, x1, b3);
            }
          }
          float* o = sc + (size_t)g0 * BT + t;
          o[0] = hsum(a0);
          o[1] = hsum(b0);
          if (gn > 1) { o[BT] = hsum(a1); o[BT + 1] = hsum(b1); }
          if (gn > 2) { o[2 * BT] = hsum(a2); o[2 * BT + 1] = hsum(b2); }
          if (gn > 3) { o[3 * BT] = hsum(a3); o[3 * BT + 1] = hsum(b3); }
        }
      }
    }
#endif
    for (; r < nseg[x]; r++, t++) {
      const char* kr = kb + r * rb;
      for (int g = 0; g < G; g++) {
        float a = 0.f;
        for (int d = 0; d < D; d++) a += q[(size_t)g * D + d] * ld1(kr, d, dt);
        sc[(size_t)g * BT + t] = a;
      }
    }
  }
}

/* acc_g += sum_t p[g * BT + t] v_t over the tokens of segments [s, s1) */
static inline __attribute__((always_inline)) void pv(
    const int G, const int D, const int dt, const float* restrict p, const void* const* vp,
    const int32_t* nseg, int s, int s1, int S, float* restrict acc) {
  const int es = dt == F32 ? 4 : 2;
  const size_t rb = (size_t)D * es;
  int t0 = 0;
  for (int x = s; x < s1; x++) {
    const char* vb = (const char*)vp[x];
    const int n = nseg[x];
#if KVATTN_SIMD
    if (D % 16 == 0) {
      if (x + PF < S) prefetch((const char*)vp[x + PF], (size_t)nseg[x + PF] * rb);
      for (int d = 0; d < D; d += 16) {
        for (int g0 = 0; g0 < G; g0 += 4) {
          const int gn = G - g0 < 4 ? G - g0 : 4;
          float* ag = acc + (size_t)g0 * D + d;
          __m256 a00 = _mm256_loadu_ps(ag), a01 = _mm256_loadu_ps(ag + 8);
          __m256 a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
          if (gn > 1) { a10 = _mm256_loadu_ps(ag + D); a11 = _mm256_loadu_ps(ag + D + 8); }
          if (gn > 2) { a20 = _mm256_loadu_ps(ag + 2 * D); a21 = _mm256_loadu_ps(ag + 2 * D + 8); }
          if (gn > 3) { a30 = _mm256_loadu_ps(ag + 3 * D); a31 = _mm256_loadu_ps(ag + 3 * D + 8); }
          const float* pg = p + (size_t)g0 * BT + t0;
          for (int r = 0; r < n; r++) {
            const char* vr = vb + r * rb + d * es;
            const __m256 v0 = ld8(vr, dt), v1 = ld8(vr + 8 * es, dt);
            __m256 w = _mm256_broadcast_ss(pg + r);
            a00 = _mm256_fmadd_ps(w, v0, a00);
            a01 = _mm256_fmadd_ps(w, v1, a01);
            if (gn > 1) {
              w = _mm256_broadcast_ss(pg + BT + r);
              a10 = _mm256_fmadd_ps(w, v0, a10);
              a11 = _mm256_fmadd_ps(w, v1, a11);
            }
            if (gn > 2) {
              w = _mm256_broadcast_ss(pg + 2 * BT + r);
              a20 = _mm256_fmadd_ps(w, v0, a20);
              a21 = _mm256_fmadd_ps(w, v1, a21);
            }
            if (gn > 3) {
              w = _mm256_broadcast_ss(pg + 3 * BT + r);
              a30 = _mm256_fmadd_ps(w, v0, a30);
              a31 = _mm256_fmadd_ps(w, v1, a31);
            }
          }
          _mm256_storeu_ps(ag, a00);
          _mm256_storeu_ps(ag + 8, a01);
          if (gn > 1) { _mm256_storeu_ps(ag + D, a10); _mm256_storeu_ps(ag + D + 8, a11); }
          if (gn > 2) { _mm256_storeu_ps(ag + 2 * D, a20); _mm256_storeu_ps(ag + 2 * D + 8, a21); }
          if (gn > 3) { _mm256_storeu_ps(ag + 3 * D, a30); _mm256_storeu_ps(ag + 3 * D + 8, a31); }
        }
      }
      t0 += n;
      continue;
    }
#endif
    for (int r = 0; r < n; r++) {
      const char* vr = vb + r * rb;
      for (int g = 0; g < G; g++) {
        const float w = p[(size_t)g * BT + t0 + r];
        float* ag = acc + (size_t)g * D;
        for (int d = 0; d < D; d++) ag[d] += w * ld1(vr, d, dt);
      }
    }
    t0 += n;
  }
}

/* one softmax step over a block of nb scores per query: p = exp(s - m_new) in place, and the
   running max m, sum l and accumulator acc rescaled to m_new */
static void softmax_step(int G, int D, int nb, float* sc, float* m, float* l, float* acc) {
  for (int g = 0; g < G; g++) {
    float* sg = sc + (size_t)g * BT;
    float mx = m[g];
    for (int i = 0; i < nb; i++) mx = sg[i] > mx ? sg[i] : mx;
    const float alpha = m[g] == -INFINITY ? 0.f : expf(m[g] - mx);
    float sum = 0.f;
    int i = 0;
#if KVATTN_SIMD
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    for (; i + 8 <= nb; i += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sg + i), vm));
      _mm256_storeu_ps(sg + i, e);
      vs = _mm256_add_ps(vs, e);
    }
    sum = hsum(vs);
#endif
    for (; i < nb; i++) {
      const float e = expf(sg[i] - mx);
      sg[i] = e;
      sum += e;
    }
    l[g] = l[g] * alpha + sum;
    if (alpha != 1.f) {
      float* ag = acc + (size_t)g * D;
      for (int d = 0; d < D; d++) ag[d] *= alpha;
    }
    m[g] = mx;
  }
}

/* the running (flash-decoding) state of G queries over one KV head */
typedef struct {
  float *m, *l, *acc, *sc; /* [G], [G], [G, D], [G, BT] */
} state_t;

/* one allocation sized for G and D (small: no mmap per call); NULL when out of memory */
static state_t* state_new(int G, int D) {
  const size_t head = (sizeof(state_t) + 63) / 64 * 64;
  const size_t n = (size_t)2 * G + (size_t)G * D + (size_t)G * BT;
  const size_t bytes = (head + n * sizeof(float) + 63) / 64 * 64;
  state_t* st = (state_t*)aligned_alloc(64, bytes);
  if (!st) return NULL;
  st->acc = (float*)((char*)st + head);
  st->sc = st->acc + (size_t)G * D;
  st->m = st->sc + (size_t)G * BT;
  st->l = st->m + G;
  return st;
}

static void state_init(state_t* st, int G, int D) {
  for (int g = 0; g < G; g++) {
    st->m[g] = -INFINITY;
    st->l[g] = 0.f;
  }
  memset(st->acc, 0, sizeof(float) * (size_t)G * D);
}

/* fold segments [0, S) into the state, in blocks of up to BT tokens */
static inline __attribute__((always_inline)) void state_fold(
    state_t* st, const int G, const int D, const int dt, const float* restrict q, int S,
    const void* const* kp, const void* const* vp, const int32_t* nseg) {
  int s = 0;
  while (s < S) {
    int s1 = s, nb = 0;
    while (s1 < S && nb + nseg[s1] <= BT) nb += nseg[s1++];
    if (nb > 0) {
      scores(G, D, dt, q, kp, nseg, s, s1, S, st->sc);
      softmax_step(G, D, nb, st->sc, st->m, st->l, st->acc);
      pv(G, D, dt, st->sc, vp, nseg, s, s1, S, st->acc);
    }
    s = s1;
  }
}

static void fold(state_t* st, int G, int D, int dt, const float* q, int S, const void* const* kp,
                 const void* const* vp, const int32_t* nseg) {
  /* the common shape, with constants the compiler can unroll against */
  if (G == 4 && D == 128) {
    if (dt == F16) state_fold(st, 4, 128, F16, q, S, kp, vp, nseg);
    else if (dt == F32) state_fold(st, 4, 128, F32, q, S, kp, vp, nseg);
    else state_fold(st, 4, 128, BF16, q, S, kp, vp, nseg);
  } else {
    state_fold(st, G, D, dt, q, S, kp, vp, nseg);
  }
}

static void state_finish(const state_t* st, int G, int D, float* out, float* lse) {
  for (int g = 0; g < G; g++) {
    if (st->l[g] > 0.f) {
      const float inv = 1.f / st->l[g];
      for (int d = 0; d < D; d++) out[(size_t)g * D + d] = st->acc[(size_t)g * D + d] * inv;
      lse[g] = st->m[g] + logf(st->l[g]);
    } else {
      for (int d = 0; d < D; d++) out[(size_t)g * D + d] = 0.f;
      lse[g] = -INFINITY;
    }
  }
}

/* q: [F, G, D] fp32, already scaled. Returns 0, or -1 (bad G, D or dtype), -2 (a segment
   outside [0, BT] rows). */
int kvattn_segments(int F, int G, int D, int dt, const float* q, const int64_t* seg_start,
                    const void* const* kp, const void* const* vp, const int32_t* nseg,
                    float* out, float* lse) {
  if (G < 1 || G > MAXG || D < 1 || D > MAXD || dt < F32 || dt > BF16) return -1;
  for (int64_t i = seg_start[0]; i < seg_start[F]; i++)
    if (nseg[i] < 0 || nseg[i] > BT) return -2;
  state_t* st = state_new(G, D);
  if (!st) return -5;
  for (int f = 0; f < F; f++) {
    const int64_t a = seg_start[f];
    state_init(st, G, D);
    fold(st, G, D, dt, q + (size_t)f * G * D, (int)(seg_start[f + 1] - a), kp + a, vp + a,
         nseg + a);
    state_finish(st, G, D, out + (size_t)f * G * D, lse + (size_t)f * G);
  }
  free(st);
  return 0;
}

/* Read and attend in one pass, for the in-storage worker's steady-state scan: the full pages
 * of F (layer, head) files, read with pread in pieces of at most buf_pages pages into buf (a
 * buffer of buf_pages * slot bytes that stays in the core's cache), each page's header checked,
 * each piece attended to as soon as it is read; no Python between reads.
 *
 * Unit f reads the runs [run_start[f], run_start[f + 1]): run r is run_pages[r] consecutive
 * full pages starting at page run_first[r] of file fds[f] (page p lies at byte (2 + p) * slot;
 * a page is a 64-byte header, then P rows of K, then P rows of V). Header words (little-endian
 * u64) checked: word 0 == w0, word 1 == seq[f], word 2 == layerhead[f], word 3 == the page
 * index, low half of word 5 == P (the crc in the high half is not checked here: the caller
 * verified these pages before). After its full pages, unit f folds its tail segment (tail_k[f],
 * tail_v[f], tail_rows[f] rows; 0 for none) and writes out [f], lse [f].
 * Returns 0; -1 bad shapes; -3 a file ends inside a run; -4 a bad header; -6 a read error
 * (errno in *err_page); on -3 / -4, *err_unit and *err_page say where. */
int kvattn_scan(int F, int G, int D, int dt, int P, const float* q, const int32_t* fds,
                const int64_t* run_start, const int64_t* run_first, const int32_t* run_pages,
                int64_t slot, uint64_t w0, const uint64_t* seq, const uint64_t* layerhead,
                const void* const* tail_k, const void* const* tail_v, const int32_t* tail_rows,
                uint8_t* buf, int buf_pages, float* out, float* lse, int64_t* err_unit,
                int64_t* err_page) {
  if (G < 1 || G > MAXG || D < 1 || D > MAXD || dt < F32 || dt > BF16 || P < 1 || P > BT ||
      buf_pages < 1)
    return -1;
  const int64_t kv = (int64_t)P * D * (dt == F32 ? 4 : 2);
  if (slot != 64 + 2 * kv) return -1;
  state_t* st = state_new(G, D);
  const void** kp = (const void**)malloc(sizeof(void*) * 2 * (size_t)buf_pages);
  int32_t* rows = (int32_t*)malloc(sizeof(int32_t) * (size_t)buf_pages);
  if (!st || !kp || !rows) {
    free(st);
    free(kp);
    free(rows);
    return -5;
  }
  const void** vp = kp + buf_pages;
  for (int i = 0; i < buf_pages; i++) {
    kp[i] = buf + (size_t)i * slot + 64;
    vp[i] = buf + (size_t)i * slot + 64 + kv;
    rows[i] = P;
  }
  int rc = 0;
  for (int f = 0; f < F && rc == 0; f++) {
    const float* qf = q + (size_t)f * G * D;
    state_init(st, G, D);
    for (int64_t r = run_start[f]; r < run_start[f + 1] && rc == 0; r++) {
      for (int64_t a = 0; a < run_pages[r] && rc == 0; a += buf_pages) {
        const int64_t page0 = run_first[r] + a;
        const int n = (int)(run_pages[r] - a < buf_pages ? run_pages[r] - a : buf_pages);
        const size_t want = (size_t)n * slot;
        size_t got = 0;
        while (got < want) {
          const ssize_t k = pread(fds[f], buf + got, want - got, (off_t)((2 + page0) * slot + got));
          if (k < 0) {
            if (errno == EINTR) continue;
            *err_unit = f;
            *err_page = errno;
            rc = -6;
            break;
          }
          if (k == 0) {
            *err_unit = f;
            *err_page = page0 + (int64_t)(got / slot);
            rc = -3;
            break;
          }
          got += (size_t)k;
        }
        for (int i = 0; i < n && rc == 0; i++) {
          uint64_t w[6];
          memcpy(w, buf + (size_t)i * slot, sizeof(w));
          if (w[0] != w0 || w[1] != seq[f] || w[2] != layerhead[f] ||
              w[3] != (uint64_t)(page0 + i) || (w[5] & 0xffffffffu) != (uint64_t)P) {
            *err_unit = f;
            *err_page = page0 + i;
            rc = -4;
          }
        }
        if (rc == 0) fold(st, G, D, dt, qf, n, kp, vp, rows);
      }
    }
    if (rc == 0 && tail_rows[f] > 0) fold(st, G, D, dt, qf, 1, tail_k + f, tail_v + f, tail_rows + f);
    if (rc == 0) state_finish(st, G, D, out + (size_t)f * G * D, lse + (size_t)f * G);
  }
  free(st);
  free(kp);
  free(rows);
  return rc;
}
