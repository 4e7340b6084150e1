// Causal grouped-query flash attention (FlashAttention-2 algorithm), forward and backward.
//
// qkv rows are packed [Hq query heads | Hkv key heads | Hkv value heads] of head_dim each; query
// head h reads kv head h / (Hq/Hkv) straight from the packed rows (K/V are never copied per head).
//   forward:  S = q k^T / sqrt(hd), causal mask, P = softmax(S), out = P v,
//             lse = log-sum-exp of each row of S (saved for the backward).
//   backward: D = rowsum(dout * out); P recomputed from lse; dS = P * (dout v^T - D);
//             dq = dS k / sqrt(hd); dk = dS^T q / sqrt(hd); dv = P^T dout
//             (dk, dv of a kv head sum over the Hq/Hkv query heads that read it).
// Precision: bf16 in/out, tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate), online softmax
// and lse in fp32; P and dS are rounded to bf16 before they enter the second matmul (as FA2).
//
// Variant, and why:
// - forward: one block per (64-row query tile, query head, batch), 4 warps of 16 query rows each;
//   Q fragments stay in registers, K/V tiles of 64 rows stream through shared memory
//   (cp.async, two stages, XOR-swizzled 16-byte chunks so ldmatrix is bank-conflict free).
//   Tiles above the diagonal are skipped; only tiles that cross it (or the ragged end) are masked.
// - backward, deterministic, no float atomics anywhere:
//   (1) D = rowsum(dout*out) into the workspace;
//   (2) dK/dV: one block per (64-row kv tile, kv head, batch) loops over every query head of the
//       group and every query tile at or below the diagonal, so the GQA sum over query heads is a
//       register accumulation in a fixed order; each warp owns 16 kv rows and computes S^T, dP^T
//       directly in the layout the next mma needs (no cross-warp reduction, no shared scratch);
//   (3) dQ: one block per (64-row query tile, query head, batch) loops over kv tiles and
//       recomputes S, P, dP (3 matmuls instead of 2 more in (2) plus an fp32 atomic dQ buffer).
//   This costs 7 matmul-units of work against FA2's 5 (1.4x the backward FLOPs), but every
//   element of dqkv is written exactly once by one thread in a fixed order: bit-identical runs,
//   no zero-fill of a dQ accumulator, no fp32 dQ buffer (workspace is only D: B*Hq*T floats).
// Measured (H200, causal, 16k tokens, docs/bench/attention.md): forward 283 TFLOP/s
// at hd128 T4096 (FA2 SDPA 322, cuDNN 622); the kernels run at 230-285 TFLOP/s of the work they
// do, so the 7-vs-5 matmul backward is what leaves fwd+bwd at 0.74-0.83x FA2 for T >= 2048
// (1.26-1.39x at T 512, 1.0x at 1024). Tile choice per kernel: see Config below.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

#include "kernels/common.cuh"

namespace owlore {
namespace attention_detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kTileN = 64;  // kv rows per tile (forward, dQ); query rows per tile (dK/dV)

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16-byte async copy global -> shared; !valid zero-fills the 16 bytes (ragged tiles).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// c(16x8, fp32) += a(16x16 bf16, row) * b(16x8 bf16, col)
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Shared tile of rows x HD bf16; 16-byte chunk c of row r lives at chunk c ^ (r & 7): the 8 rows
// one ldmatrix phase reads hit 8 different 16-byte bank groups.
template <int HD>
__device__ __forceinline__ int swz(int row, int col) {
  return row * HD + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

// Copy rows [0, ROWS) of a (row stride `stride`) global tile into a swizzled shared tile;
// rows >= rows_valid are zero-filled.
template <int ROWS, int HD, int NT>
__device__ __forceinline__ void load_tile(bf16* sm, const bf16* g, int64_t stride, int rows_valid) {
  constexpr int kChunks = HD / 8;
  static_assert((ROWS * kChunks) % NT == 0, "tile chunks must divide among threads");
#pragma unroll
  for (int it = 0; it < ROWS * kChunks / NT; it++) {
    const int i = it * NT + (int)threadIdx.x;
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const bool ok = r < rows_valid;
    cp_async16(smem_u32(sm + swz<HD>(r, c)), ok ? g + (int64_t)r * stride + c : g, ok);
  }
}

// A fragments (16 rows x 16 k) at (row0, k0) of a swizzled tile.
template <int HD>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* sm, int row0, int k0, int lane) {
  ldsm_x4(a, smem_u32(sm + swz<HD>(row0 + (lane & 15), k0 + (lane >> 4) * 8)));
}
// B fragments for two n8 tiles (n0..n0+15) x k16 from a tile stored [n][k]:
// b[0],b[1] for n-tile n0, b[2],b[3] for n0+8.
template <int HD>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16* sm, int n0, int k0, int lane) {
  ldsm_x4(b, smem_u32(sm + swz<HD>(n0 + (lane >> 4) * 8 + (lane & 7), k0 + ((lane >> 3) & 1) * 8)));
}
// Same, from a tile stored [k][n] (transposing load).
template <int HD>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* sm, int k0, int n0, int lane) {
  ldsm_x4_t(b, smem_u32(sm + swz<HD>(k0 + ((lane >> 3) & 1) * 8 + (lane & 7), n0 + (lane >> 4) * 8)));
}
// C fragments of n-tiles 2kk, 2kk+1 (16 x 16) as the A fragment of the next mma (k = those columns).
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}
// acc (MT·16 rows x HD) += P B, where P (MT·16 x K) is held as an earlier mma's fp32 C fragments
// (rounded to bf16 as A fragments) and B (K x HD) is a tile stored [k][n] in shared memory: O += P V
// in the forward, dV += P^T dO, dK += dS^T Q and dQ += dS K in the backward.
template <int HD, int MT, int K>
__device__ __forceinline__ void mma_c_times_kn(float (&acc)[MT][HD / 8][4], const float (&p)[MT][K / 8][4],
                                               const bf16* b_s, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; kk++) {
    uint32_t pa[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) c_to_a(pa[mt], p[mt][2 * kk], p[mt][2 * kk + 1]);
#pragma unroll
    for (int dd = 0; dd < HD / 16; dd++) {
      uint32_t bf[4];
      load_b_kn<HD>(bf, b_s, kk * 16, dd * 16, lane);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        mma_16816(acc[mt][2 * dd], pa[mt], bf[0], bf[1]);
        mma_16816(acc[mt][2 * dd + 1], pa[mt], bf[2], bf[3]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward. Grid (ceil(T/BM), Hq, B); block 32*NW; each warp owns MT m16 tiles (16*MT query rows),
// BM = 16*MT*NW. Every K/V fragment read from shared memory feeds MT mmas (MT=2 halves the
// shared-memory traffic per mma, which is what bounds MT=1). QREG keeps Q's fragments in registers.
template <int HD, int NW, int MT, int BN, bool QREG>
static __global__ void __launch_bounds__(NW * 32)
    attention_forward_kernel(bf16* out, float* lse, const bf16* qkv, int T, int Hq, int Hkv, float scale_log2) {
  constexpr int BM = 16 * MT * NW, NT = NW * 32, WM = 16 * MT;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + BM * HD;      // 2 stages
  bf16* sV = sK + 2 * BN * HD;  // 2 stages
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int q_tile = gridDim.x - 1 - blockIdx.x;  // longest (last) tiles first
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (Hq / Hkv);
  const int64_t stride = (int64_t)(Hq + 2 * Hkv) * HD;
  const int q0 = q_tile * BM;
  const bf16* qbase = qkv + ((int64_t)b * T + q0) * stride + (int64_t)h * HD;
  const bf16* kbase = qkv + (int64_t)b * T * stride + (int64_t)(Hq + kvh) * HD;
  const bf16* vbase = kbase + (int64_t)Hkv * HD;
  const int last_row = min(q0 + BM, T) - 1;
  const int n_kv = last_row / BN + 1;

  load_tile<BM, HD, NT>(sQ, qbase, stride, T - q0);
  load_tile<BN, HD, NT>(sK, kbase, stride, T);
  load_tile<BN, HD, NT>(sV, vbase, stride, T);
  cp_async_commit();

  float o[MT][HD / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
  uint32_t qf[QREG ? MT : 1][QREG ? HD / 16 : 1][4];
  const int warp_row0 = q0 + warp * WM;
  const int row_base = warp_row0 + (lane >> 2);  // rows of m-tile mt: row_base + 16*mt (+8)

  for (int j = 0; j < n_kv; j++) {
    const int stage = j & 1;
    if (j + 1 < n_kv) {
      const int64_t off = (int64_t)(j + 1) * BN * stride;
      load_tile<BN, HD, NT>(sK + (stage ^ 1) * BN * HD, kbase + off, stride, T - (j + 1) * BN);
      load_tile<BN, HD, NT>(sV + (stage ^ 1) * BN * HD, vbase + off, stride, T - (j + 1) * BN);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (QREG) {
      if (j == 0) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int kk = 0; kk < HD / 16; kk++) load_a<HD>(qf[mt][kk], sQ, warp * WM + mt * 16, kk * 16, lane);
      }
    }
    const bf16* k_s = sK + stage * BN * HD;
    const bf16* v_s = sV + stage * BN * HD;

    float s[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int i = 0; i < BN / 8; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
      uint32_t qa[QREG ? 1 : MT][4];
      if constexpr (!QREG) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++) load_a<HD>(qa[mt], sQ, warp * WM + mt * 16, kk * 16, lane);
      }
#pragma unroll
      for (int nn = 0; nn < BN / 16; nn++) {
        uint32_t bf[4];
        load_b_nk<HD>(bf, k_s, nn * 16, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          const uint32_t(&a)[4] = QREG ? qf[QREG ? mt : 0][QREG ? kk : 0] : qa[QREG ? 0 : mt];
          mma_16816(s[mt][2 * nn], a, bf[0], bf[1]);
          mma_16816(s[mt][2 * nn + 1], a, bf[2], bf[3]);
        }
      }
    }
    // Mask only tiles that reach past this warp's first row (the diagonal and the ragged end).
    if (j * BN + BN - 1 > warp_row0) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int col = j * BN + nt * 8 + 2 * (lane & 3) + (e & 1);
            const int row = row_base + mt * 16 + (e >> 1) * 8;
            if (col > row) s[mt][nt][e] = -INFINITY;
          }
    }
    // Online softmax, base 2: p = 2^(s*scale*log2e - m*scale*log2e).
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int r = 0; r < 2; r++) {
        float mx = m[mt][r];
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_scaled = (mx == -INFINITY) ? 0.f : mx * scale_log2;
        const float corr = exp2f(m[mt][r] * scale_log2 - m_scaled);
        m[mt][r] = mx;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < BN / 8; nt++) {
          s[mt][nt][2 * r] = exp2f(fmaf(s[mt][nt][2 * r], scale_log2, -m_scaled));
          s[mt][nt][2 * r + 1] = exp2f(fmaf(s[mt][nt][2 * r + 1], scale_log2, -m_scaled));
          sum += s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
        }
        l[mt][r] = l[mt][r] * corr + sum;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) {
          o[mt][dt][2 * r] *= corr;
          o[mt][dt][2 * r + 1] *= corr;
        }
      }
    // O += P V
    mma_c_times_kn<HD, MT, BN>(o, s, v_s, lane);
    __syncthreads();  // the next iteration's prefetch overwrites this stage
  }

  const float scale = scale_log2 / kLog2e;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float sum = l[mt][r];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int row = row_base + mt * 16 + r * 8;
      if (row < T) {
        const float inv = 1.f / sum;
        bf16* orow = out + ((int64_t)b * T + row) * Hq * HD + (int64_t)h * HD + 2 * (lane & 3);
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++)
          *reinterpret_cast<uint32_t*>(orow + dt * 8) =
              pack_bf16(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
        if ((lane & 3) == 0) lse[((int64_t)b * Hq + h) * T + row] = m[mt][r] * scale + logf(sum);
      }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward (1): D[b,h,t] = sum_d dout*out. One thread per 16-byte chunk, HD/8 lanes per row.
template <int HD>
static __global__ void attention_backward_dot_kernel(float* Dvec, const bf16* dout, const bf16* out, int B, int T,
                                                     int Hq) {
  constexpr int kLanes = HD / 8;
  const int64_t chunk = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t row = chunk / kLanes;  // (b*T + t)*Hq + h
  const bool ok = row < (int64_t)B * T * Hq;
  float acc = 0.f;
  if (ok) {
    const Pack128<bf16> g = load128cs(dout + chunk * 8), o = load128cs(out + chunk * 8);
#pragma unroll
    for (int i = 0; i < 8; i++) acc += __bfloat162float(g[i]) * __bfloat162float(o[i]);
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (ok && chunk % kLanes == 0) {
    const int h = (int)(row % Hq);
    const int64_t bt = row / Hq;
    const int t = (int)(bt % T), b = (int)(bt / T);
    Dvec[((int64_t)b * Hq + h) * T + t] = acc;
  }
}

// Backward (2): dK, dV. Grid (ceil(T/BN), Hkv, B); each warp owns MT m16 tiles of kv rows,
// BN = 16*MT*NW kv rows per block; query tiles of BM rows stream through shared memory.
template <int HD, int NW, int MT, int BM>
static __global__ void __launch_bounds__(NW * 32)
    attention_backward_dkdv_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                                   const float* Dvec, int T, int Hq, int Hkv, float scale_log2) {
  constexpr int BN = 16 * MT * NW, NT = NW * 32, WM = 16 * MT;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + BN * HD;
  bf16* sQ = sV + BN * HD;       // 2 stages
  bf16* sdO = sQ + 2 * BM * HD;  // 2 stages
  float* sL = reinterpret_cast<float*>(sdO + 2 * BM * HD);  // 2 stages of lse*log2e (+inf past T)
  float* sD = sL + 2 * BM;                                   // 2 stages of D
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kv_tile = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int group = Hq / Hkv;
  const int64_t stride = (int64_t)(Hq + 2 * Hkv) * HD;
  const int64_t dstride = (int64_t)Hq * HD;
  const int k0 = kv_tile * BN;
  const bf16* kbase = qkv + ((int64_t)b * T + k0) * stride + (int64_t)(Hq + kvh) * HD;
  const bf16* vbase = kbase + (int64_t)Hkv * HD;
  const int i0 = k0 / BM;                  // first query tile at or below the diagonal
  const int n_q = (T + BM - 1) / BM - i0;  // query tiles per head
  const int n_it = group * n_q;

  // lse/D by plain loads (+inf / 0 past T). Loading them by 4-byte cp.async instead measured
  // slower (hd128 5.05 vs 4.77 ms, hd64 1.00 vs 0.84 ms at 4x4096): more registers, spills.
  auto issue = [&](int it, int stage) {
    const int h = kvh * group + it / n_q;
    const int q0 = (i0 + it % n_q) * BM;
    load_tile<BM, HD, NT>(sQ + stage * BM * HD, qkv + ((int64_t)b * T + q0) * stride + (int64_t)h * HD, stride,
                          T - q0);
    load_tile<BM, HD, NT>(sdO + stage * BM * HD, dout + ((int64_t)b * T + q0) * dstride + (int64_t)h * HD,
                          dstride, T - q0);
    for (int i = threadIdx.x; i < BM; i += NT) {
      const int t = q0 + i;
      const int64_t idx = ((int64_t)b * Hq + h) * T + t;
      sL[stage * BM + i] = t < T ? lse[idx] * kLog2e : INFINITY;
      sD[stage * BM + i] = t < T ? Dvec[idx] : 0.f;
    }
  };

  load_tile<BN, HD, NT>(sK, kbase, stride, T - k0);
  load_tile<BN, HD, NT>(sV, vbase, stride, T - k0);
  issue(0, 0);
  cp_async_commit();

  float dk[MT][HD / 8][4], dv[MT][HD / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) dk[mt][i][e] = dv[mt][i][e] = 0.f;
  const int kv_row = k0 + warp * WM + (lane >> 2);  // rows of m-tile mt: kv_row + 16*mt (+8)

  for (int it = 0; it < n_it; it++) {
    const int stage = it & 1;
    if (it + 1 < n_it) issue(it + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int q0 = (i0 + it % n_q) * BM;
    const bf16* q_s = sQ + stage * BM * HD;
    const bf16* do_s = sdO + stage * BM * HD;
    const float* l_s = sL + stage * BM;
    const float* d_s = sD + stage * BM;

    // S^T = K Q^T (16*MT kv rows x BM query columns per warp)
    float s[MT][BM / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int i = 0; i < BM / 8; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) load_a<HD>(af[mt], sK, warp * WM + mt * 16, kk * 16, lane);
#pragma unroll
      for (int nn = 0; nn < BM / 16; nn++) {
        uint32_t bf[4];
        load_b_nk<HD>(bf, q_s, nn * 16, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_16816(s[mt][2 * nn], af[mt], bf[0], bf[1]);
          mma_16816(s[mt][2 * nn + 1], af[mt], bf[2], bf[3]);
        }
      }
    }
    // P^T = 2^(S^T*scale*log2e - lse*log2e); causal: query t < kv s -> 0.
    const bool need_mask = q0 < k0 + warp * WM + WM - 1;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < BM / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int tl = nt * 8 + 2 * (lane & 3) + (e & 1);
          float p = exp2f(fmaf(s[mt][nt][e], scale_log2, -l_s[tl]));
          if (need_mask && q0 + tl < kv_row + mt * 16 + (e >> 1) * 8) p = 0.f;
          s[mt][nt][e] = p;
        }
    // dV += P^T dO
    mma_c_times_kn<HD, MT, BM>(dv, s, do_s, lane);
    // dP^T = V dO^T
    float dp[MT][BM / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int i = 0; i < BM / 8; i++) dp[mt][i][0] = dp[mt][i][1] = dp[mt][i][2] = dp[mt][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) load_a<HD>(af[mt], sV, warp * WM + mt * 16, kk * 16, lane);
#pragma unroll
      for (int nn = 0; nn < BM / 16; nn++) {
        uint32_t bf[4];
        load_b_nk<HD>(bf, do_s, nn * 16, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_16816(dp[mt][2 * nn], af[mt], bf[0], bf[1]);
          mma_16816(dp[mt][2 * nn + 1], af[mt], bf[2], bf[3]);
        }
      }
    }
    // dS^T = P^T (dP^T - D)
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < BM / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          dp[mt][nt][e] = s[mt][nt][e] * (dp[mt][nt][e] - d_s[nt * 8 + 2 * (lane & 3) + (e & 1)]);
    // dK += dS^T Q
    mma_c_times_kn<HD, MT, BM>(dk, dp, q_s, lane);
    __syncthreads();  // the next iteration's prefetch overwrites this stage
  }

  const float scale = scale_log2 / kLog2e;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = kv_row + mt * 16 + r * 8;
      if (row >= T) continue;
      bf16* krow = dqkv + ((int64_t)b * T + row) * stride + (int64_t)(Hq + kvh) * HD + 2 * (lane & 3);
      bf16* vrow = krow + (int64_t)Hkv * HD;
#pragma unroll
      for (int dt = 0; dt < HD / 8; dt++) {
        *reinterpret_cast<uint32_t*>(krow + dt * 8) =
            pack_bf16(dk[mt][dt][2 * r] * scale, dk[mt][dt][2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(vrow + dt * 8) = pack_bf16(dv[mt][dt][2 * r], dv[mt][dt][2 * r + 1]);
      }
    }
}

// Backward (3): dQ. Grid (ceil(T/BM), Hq, B); each warp owns MT m16 tiles of query rows,
// BM = 16*MT*NW; kv tiles of BN rows.
template <int HD, int NW, int MT, int BN>
static __global__ void __launch_bounds__(NW * 32)
    attention_backward_dq_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                                 const float* Dvec, int T, int Hq, int Hkv, float scale_log2) {
  constexpr int BM = 16 * MT * NW, NT = NW * 32, WM = 16 * MT;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sdO = sQ + BM * HD;
  bf16* sK = sdO + BM * HD;     // 2 stages
  bf16* sV = sK + 2 * BN * HD;  // 2 stages
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int q_tile = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (Hq / Hkv);
  const int64_t stride = (int64_t)(Hq + 2 * Hkv) * HD;
  const int64_t dstride = (int64_t)Hq * HD;
  const int q0 = q_tile * BM;
  const bf16* kbase = qkv + (int64_t)b * T * stride + (int64_t)(Hq + kvh) * HD;
  const bf16* vbase = kbase + (int64_t)Hkv * HD;
  const int n_kv = (min(q0 + BM, T) - 1) / BN + 1;

  load_tile<BM, HD, NT>(sQ, qkv + ((int64_t)b * T + q0) * stride + (int64_t)h * HD, stride, T - q0);
  load_tile<BM, HD, NT>(sdO, dout + ((int64_t)b * T + q0) * dstride + (int64_t)h * HD, dstride, T - q0);
  load_tile<BN, HD, NT>(sK, kbase, stride, T);
  load_tile<BN, HD, NT>(sV, vbase, stride, T);
  cp_async_commit();

  const int warp_row0 = q0 + warp * WM;
  const int row_base = warp_row0 + (lane >> 2);
  float lse2[MT][2], Dr[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = row_base + mt * 16 + r * 8;
      const int64_t idx = ((int64_t)b * Hq + h) * T + row;
      lse2[mt][r] = row < T ? lse[idx] * kLog2e : INFINITY;
      Dr[mt][r] = row < T ? Dvec[idx] : 0.f;
    }
  float dq[MT][HD / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < HD / 8; i++) dq[mt][i][0] = dq[mt][i][1] = dq[mt][i][2] = dq[mt][i][3] = 0.f;

  for (int j = 0; j < n_kv; j++) {
    const int stage = j & 1;
    if (j + 1 < n_kv) {
      const int64_t off = (int64_t)(j + 1) * BN * stride;
      load_tile<BN, HD, NT>(sK + (stage ^ 1) * BN * HD, kbase + off, stride, T - (j + 1) * BN);
      load_tile<BN, HD, NT>(sV + (stage ^ 1) * BN * HD, vbase + off, stride, T - (j + 1) * BN);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const bf16* k_s = sK + stage * BN * HD;
    const bf16* v_s = sV + stage * BN * HD;

    float s[MT][BN / 8][4], dp[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int i = 0; i < BN / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][i][e] = dp[mt][i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
      uint32_t qa[MT][4], ga[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        load_a<HD>(qa[mt], sQ, warp * WM + mt * 16, kk * 16, lane);
        load_a<HD>(ga[mt], sdO, warp * WM + mt * 16, kk * 16, lane);
      }
#pragma unroll
      for (int nn = 0; nn < BN / 16; nn++) {
        uint32_t bk[4], bv[4];
        load_b_nk<HD>(bk, k_s, nn * 16, kk * 16, lane);
        load_b_nk<HD>(bv, v_s, nn * 16, kk * 16, lane);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma_16816(s[mt][2 * nn], qa[mt], bk[0], bk[1]);
          mma_16816(s[mt][2 * nn + 1], qa[mt], bk[2], bk[3]);
          mma_16816(dp[mt][2 * nn], ga[mt], bv[0], bv[1]);
          mma_16816(dp[mt][2 * nn + 1], ga[mt], bv[2], bv[3]);
        }
      }
    }
    const bool need_mask = j * BN + BN - 1 > warp_row0;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int nt = 0; nt < BN / 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = e >> 1;
          float p = exp2f(fmaf(s[mt][nt][e], scale_log2, -lse2[mt][r]));
          if (need_mask && j * BN + nt * 8 + 2 * (lane & 3) + (e & 1) > row_base + mt * 16 + r * 8) p = 0.f;
          dp[mt][nt][e] = p * (dp[mt][nt][e] - Dr[mt][r]);
        }
    // dQ += dS K
    mma_c_times_kn<HD, MT, BN>(dq, dp, k_s, lane);
    __syncthreads();
  }

  const float scale = scale_log2 / kLog2e;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = row_base + mt * 16 + r * 8;
      if (row >= T) continue;
      bf16* qrow = dqkv + ((int64_t)b * T + row) * stride + (int64_t)h * HD + 2 * (lane & 3);
#pragma unroll
      for (int dt = 0; dt < HD / 8; dt++)
        *reinterpret_cast<uint32_t*>(qrow + dt * 8) =
            pack_bf16(dq[mt][dt][2 * r] * scale, dq[mt][dt][2 * r + 1] * scale);
    }
}

// ---- tile configurations ----------------------------------------------------------------------
// A configuration names the template arguments of the three main kernels; Config<HD> is what the
// launchers use (chosen by tools/bench/bench_attention.cu), ConfigMt1<HD> the one-m-tile-per-warp
// variant kept for comparison (and tested, so either can be shipped).
template <int HD_, int FW, int FMT, int FBN, bool FQREG, int KW, int KMT, int KBM, int QW, int QMT, int QBN>
struct TileConfig {
  static constexpr int HD = HD_;
  static constexpr int kFwdWarps = FW, kFwdMt = FMT, kFwdBn = FBN;
  static constexpr bool kFwdQreg = FQREG;
  static constexpr int kDkdvWarps = KW, kDkdvMt = KMT, kDkdvBm = KBM;
  static constexpr int kDqWarps = QW, kDqMt = QMT, kDqBn = QBN;
};
template <int HD>
using ConfigMt1 = TileConfig<HD, 4, 1, 64, true, 4, 1, (HD == 128 ? 32 : 64), 4, 1, 64>;
template <int HD>
using ConfigMt2 = std::conditional_t<HD == 64, TileConfig<64, 4, 2, 64, true, 4, 2, 32, 4, 2, 32>,
                                     TileConfig<128, 4, 2, 32, false, 4, 1, 32, 4, 2, 32>>;
// Shipped: the fastest kernel of each kind in tools/bench/bench_attention.cu on an H200 (T 512..4096,
// docs/bench/attention.md): hd64 fwd MT2 (0.328 vs 0.363 ms at 4x4096, 9/3),
// dkdv MT1 (0.842 vs 0.900), dq MT2/BN32 (0.440 vs 0.451); hd128 fwd MT1 (1.93 vs 2.05 ms at
// 4x4096, 32/8: MT2 needs Q from shared memory and spills), dkdv MT1 (MT2 cannot hold 2x128
// accumulators per m-tile), dq MT2/BN32 (2.73 vs 2.97). MT2 gained far less than the halved
// shared-memory traffic predicted: the kernels are not bound by ldmatrix bandwidth alone.
template <int HD>
using Config = std::conditional_t<HD == 64, TileConfig<64, 4, 2, 64, true, 4, 1, 64, 4, 2, 32>,
                                  TileConfig<128, 4, 1, 64, true, 4, 1, 32, 4, 2, 32>>;

template <typename C>
inline void launch_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int Hq, int Hkv, cudaStream_t stream) {
  constexpr int HD = C::HD, NW = C::kFwdWarps, MT = C::kFwdMt, BN = C::kFwdBn, BM = 16 * MT * NW;
  auto kernel = attention_forward_kernel<HD, NW, MT, BN, C::kFwdQreg>;
  const size_t smem = (size_t)(BM + 4 * BN) * HD * sizeof(bf16);
  static bool configured = false;  // per instantiation: raise the dynamic shared-memory limit once
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    configured = true;
  }
  kernel<<<dim3(ceil_div(T, BM), Hq, B), NW * 32, smem, stream>>>(out, lse, qkv, T, Hq, Hkv,
                                                                   kLog2e / sqrtf((float)HD));
  CUDA_CHECK_LAUNCH();
}

template <typename C>
inline void launch_backward_dkdv(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* Dvec,
                                 int B, int T, int Hq, int Hkv, cudaStream_t stream) {
  constexpr int HD = C::HD, NW = C::kDkdvWarps, MT = C::kDkdvMt, BM = C::kDkdvBm, BN = 16 * MT * NW;
  auto kernel = attention_backward_dkdv_kernel<HD, NW, MT, BM>;
  const size_t smem = (size_t)(2 * BN + 4 * BM) * HD * sizeof(bf16) + 4 * BM * sizeof(float);
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    configured = true;
  }
  kernel<<<dim3(ceil_div(T, BN), Hkv, B), NW * 32, smem, stream>>>(dqkv, dout, qkv, lse, Dvec, T, Hq, Hkv,
                                                                    kLog2e / sqrtf((float)HD));
  CUDA_CHECK_LAUNCH();
}

template <typename C>
inline void launch_backward_dq(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* Dvec,
                               int B, int T, int Hq, int Hkv, cudaStream_t stream) {
  constexpr int HD = C::HD, NW = C::kDqWarps, MT = C::kDqMt, BN = C::kDqBn, BM = 16 * MT * NW;
  auto kernel = attention_backward_dq_kernel<HD, NW, MT, BN>;
  const size_t smem = (size_t)(2 * BM + 4 * BN) * HD * sizeof(bf16);
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    configured = true;
  }
  kernel<<<dim3(ceil_div(T, BM), Hq, B), NW * 32, smem, stream>>>(dqkv, dout, qkv, lse, Dvec, T, Hq, Hkv,
                                                                   kLog2e / sqrtf((float)HD));
  CUDA_CHECK_LAUNCH();
}

template <int HD>
inline void launch_backward_dot(float* Dvec, const bf16* dout, const bf16* out, int B, int T, int Hq,
                                cudaStream_t stream) {
  const int64_t threads = (int64_t)B * T * Hq * (HD / 8);
  attention_backward_dot_kernel<HD><<<ceil_div(threads, 256), 256, 0, stream>>>(Dvec, dout, out, B, T, Hq);
  CUDA_CHECK_LAUNCH();
}

template <typename C>
inline void backward_all(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                         int T, int Hq, int Hkv, float* workspace, cudaStream_t stream) {
  launch_backward_dot<C::HD>(workspace, dout, out, B, T, Hq, stream);
  launch_backward_dkdv<C>(dqkv, dout, qkv, lse, workspace, B, T, Hq, Hkv, stream);
  launch_backward_dq<C>(dqkv, dout, qkv, lse, workspace, B, T, Hq, Hkv, stream);
}

inline void check_args(const char* op, const void* a, const void* b, const void* c, int B, int T, int Hq, int Hkv,
                       int head_dim) {
  KERNEL_REQUIRE(head_dim == 64 || head_dim == 128, op, "head_dim must be 64 or 128");
  KERNEL_REQUIRE(B >= 1 && T >= 1 && Hq >= 1 && Hkv >= 1, op, "sizes must be positive");
  KERNEL_REQUIRE(Hq % Hkv == 0, op, "Hq must be a multiple of Hkv");
  KERNEL_REQUIRE(Hq <= 65535 && B <= 65535, op, "Hq and B must fit the grid's y/z dimensions");
  KERNEL_REQUIRE(is_aligned16(a) && is_aligned16(b) && is_aligned16(c), op, "bf16 pointers must be 16-byte aligned");
}

}  // namespace attention_detail

// Scratch the backward needs: D = rowsum(dout*out), one float per (b, query head, t).
inline size_t attention_backward_workspace_bytes(int B, int T, int Hq) { return (size_t)B * Hq * T * sizeof(float); }

inline void attention_forward(bf16* out /*(B,T,Hq*hd)*/, float* lse /*(B,Hq,T)*/,
                              const bf16* qkv /*(B,T,(Hq+2Hkv)*hd)*/, int B, int T, int Hq, int Hkv, int head_dim,
                              cudaStream_t stream) {
  NvtxRange range("attention_forward");
  using namespace attention_detail;
  check_args("attention_forward", out, qkv, qkv, B, T, Hq, Hkv, head_dim);
  if (head_dim == 64)
    launch_forward<Config<64>>(out, lse, qkv, B, T, Hq, Hkv, stream);
  else
    launch_forward<Config<128>>(out, lse, qkv, B, T, Hq, Hkv, stream);
}

// dqkv is overwritten (every element, q, k and v parts). Deterministic: no atomics.
inline void attention_backward(bf16* dqkv /*(B,T,(Hq+2Hkv)*hd) =*/, const bf16* dout /*(B,T,Hq*hd)*/,
                               const bf16* qkv /*(B,T,(Hq+2Hkv)*hd)*/, const bf16* out /*(B,T,Hq*hd)*/,
                               const float* lse /*(B,Hq,T)*/, int B, int T, int Hq, int Hkv, int head_dim,
                               float* workspace /*(B,Hq,T): attention_backward_workspace_bytes*/,
                               cudaStream_t stream) {
  NvtxRange range("attention_backward");
  using namespace attention_detail;
  check_args("attention_backward", dqkv, dout, qkv, B, T, Hq, Hkv, head_dim);
  KERNEL_REQUIRE(is_aligned16(out), "attention_backward", "out must be 16-byte aligned");
  KERNEL_REQUIRE(workspace != nullptr, "attention_backward", "workspace (attention_backward_workspace_bytes) missing");
  if (head_dim == 64)
    backward_all<Config<64>>(dqkv, dout, qkv, out, lse, B, T, Hq, Hkv, workspace, stream);
  else
    backward_all<Config<128>>(dqkv, dout, qkv, out, lse, B, T, Hq, Hkv, workspace, stream);
}

}  // namespace owlore
