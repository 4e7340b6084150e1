// SwiGLU on packed gate_up rows [gate (F) | up (F)]:
//   forward:  out = (gate * s) * up,  s = sigmoid(gate)
//   backward: dgate = ((dout*up)*s) * (1 + gate*(1-s));  dup = (dout*gate)*s
// bf16 in/out, fp32 math, one rounding per output. sigmoid = rcp(1 + __expf(-x)): with the precise
// expf and division the forward was compute-bound at SmolLM2 size (73% of copy bandwidth); the
// fast forms are within 2 fp32 ulp, far below the bf16 output rounding. One 16-byte pack of 8 features per thread when F % 8 == 0 and pointers are aligned;
// otherwise one element per thread. Backward reads gate_up (saved) instead of a saved silu
// output, so nothing extra is stored.
// Measured on H200 at 8192 tokens: F=11008 forward 132 us (97% of copy bandwidth), backward 211 us
// (101%); F=1536 79% / 90%. docs/bench/kernels.md.
#pragma once
#include "kernels/common.cuh"

namespace owlore {
namespace swiglu_detail {

static __device__ __forceinline__ float sigmoidf_(float x) { return __frcp_rn(1.0f + __expf(-x)); }

template <bool VEC>
static __global__ void swiglu_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ gate_up, int N, int F) {
  constexpr int W = VEC ? 8 : 1;
  const int per_row = F / W;
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (int64_t)N * per_row) return;
  const int64_t n = i / per_row;
  const int f = (int)(i % per_row) * W;
  const bf16* gate = gate_up + n * 2 * F + f;
  const bf16* up = gate + F;
  if constexpr (VEC) {
    const Pack128<bf16> g = load128cs(gate), u = load128cs(up);
    Pack128<bf16> y;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const float gf = __bfloat162float(g[j]);
      y[j] = __float2bfloat16_rn(gf * sigmoidf_(gf) * __bfloat162float(u[j]));
    }
    store128cs(out + n * F + f, y);
  } else {
    const float gf = __bfloat162float(*gate);
    out[n * F + f] = __float2bfloat16_rn(gf * sigmoidf_(gf) * __bfloat162float(*up));
  }
}

template <bool VEC>
// In place allowed (dgate_up == gate_up): each thread reads its gate and up values before it
// writes their gradients, and no thread touches another's (hence no __restrict__ on those two).
static __global__ void swiglu_backward_kernel(bf16* dgate_up, const bf16* __restrict__ dout, const bf16* gate_up,
                                              int N, int F) {
  constexpr int W = VEC ? 8 : 1;
  const int per_row = F / W;
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (int64_t)N * per_row) return;
  const int64_t n = i / per_row;
  const int f = (int)(i % per_row) * W;
  const int64_t gate_off = n * 2 * F + f, up_off = gate_off + F;
  float g[W], u[W], d[W], dg[W], du[W];
  if constexpr (VEC) {
    const Pack128<bf16> gv = load128cs(gate_up + gate_off), uv = load128cs(gate_up + up_off),
                        dv = load128cs(dout + n * F + f);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      g[j] = __bfloat162float(gv[j]);
      u[j] = __bfloat162float(uv[j]);
      d[j] = __bfloat162float(dv[j]);
    }
  } else {
    g[0] = __bfloat162float(gate_up[gate_off]);
    u[0] = __bfloat162float(gate_up[up_off]);
    d[0] = __bfloat162float(dout[n * F + f]);
  }
#pragma unroll
  for (int j = 0; j < W; j++) {
    const float s = sigmoidf_(g[j]);
    dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
    du[j] = d[j] * g[j] * s;
  }
  if constexpr (VEC) {
    Pack128<bf16> a, b;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      a[j] = __float2bfloat16_rn(dg[j]);
      b[j] = __float2bfloat16_rn(du[j]);
    }
    store128cs(dgate_up + gate_off, a);
    store128cs(dgate_up + up_off, b);
  } else {
    dgate_up[gate_off] = __float2bfloat16_rn(dg[0]);
    dgate_up[up_off] = __float2bfloat16_rn(du[0]);
  }
}

inline bool use_vec(int F, const void* p, const void* q, const void* r) {
  return F % 8 == 0 && is_aligned16(p) && is_aligned16(q) && is_aligned16(r);
}

}  // namespace swiglu_detail

inline void swiglu_forward(bf16* out /*(N,F)*/, const bf16* gate_up /*(N,2F)*/, int N, int F, cudaStream_t stream) {
  NvtxRange range("swiglu_forward");
  KERNEL_REQUIRE(N > 0 && F > 0, "swiglu_forward", "sizes must be positive");
  KERNEL_REQUIRE(out && gate_up, "swiglu_forward", "null pointer");
  const bool vec = swiglu_detail::use_vec(F, out, gate_up, gate_up);
  const int64_t work = (int64_t)N * (vec ? F / 8 : F);
  if (vec)
    swiglu_detail::swiglu_forward_kernel<true><<<ceil_div(work, 256), 256, 0, stream>>>(out, gate_up, N, F);
  else
    swiglu_detail::swiglu_forward_kernel<false><<<ceil_div(work, 256), 256, 0, stream>>>(out, gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

inline void swiglu_backward(bf16* dgate_up /*(N,2F) =, may be gate_up*/, const bf16* dout /*(N,F)*/, const bf16* gate_up /*(N,2F)*/,
                            int N, int F, cudaStream_t stream) {
  NvtxRange range("swiglu_backward");
  KERNEL_REQUIRE(N > 0 && F > 0, "swiglu_backward", "sizes must be positive");
  KERNEL_REQUIRE(dgate_up && dout && gate_up, "swiglu_backward", "null pointer");
  const bool vec = swiglu_detail::use_vec(F, dgate_up, dout, gate_up);
  const int64_t work = (int64_t)N * (vec ? F / 8 : F);
  if (vec)
    swiglu_detail::swiglu_backward_kernel<true><<<ceil_div(work, 256), 256, 0, stream>>>(dgate_up, dout, gate_up, N, F);
  else
    swiglu_detail::swiglu_backward_kernel<false><<<ceil_div(work, 256), 256, 0, stream>>>(dgate_up, dout, gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

}  // namespace owlore
