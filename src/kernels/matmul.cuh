// Linear layer (no bias) on cuBLASLt: bf16 operands, fp32 accumulation (CUBLAS_COMPUTE_32F).
//   forward:       out (N,OC)  = inp (N,IC) W^T          W is (OC,IC) row-major, as stored
//   input grad:    dinp (N,IC) = dout (N,OC) W           (=, may be skipped: nullptr)
//   weight grad:   dW (OC,IC) += dout^T inp               (beta = 1; bf16 or fp32 dW; nullptr: frozen)
// The backward computes dW before dinp, so dinp may be the buffer inp was in (the model reuses
// the saved SwiGLU output for its gradient).
// Row-major X is column-major X^T, so each call is one column-major GEMM:
//   forward  D(OC x N)  = op_T(W: IC x OC) * inp(IC x N)
//   dinp     D(IC x N)  = W(IC x OC) * dout(OC x N)
//   dW       D(IC x OC) = inp(IC x N) * op_T(dout: OC x N) + D
// Matmul runs on CachedGemm below, the one place the project calls cublasLtMatmul (GaLore's fp32
// GemmF32 runs on it too). One Matmul per stream (the workspace is shared by its calls).
// Measured on H200 (8192 tokens, SmolLM2 and LLaMA-2-7B layer GEMMs): 94-104% of the same raw
// cublasGemmEx call in the same run (641-686 TFLOP/s at 7B). docs/bench/kernels.md.
#pragma once
#include <cublasLt.h>

#include <cstring>
#include <map>
#include <memory>
#include <tuple>

#include "kernels/common.cuh"

namespace owlore {

inline void cublaslt_check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt error ") + std::to_string((int)status) + " (" +
                             cublasLtGetStatusName(status) + ") in " + call + " at " + file + ":" +
                             std::to_string(line));
}
#define CUBLASLT_CHECK(call) ::owlore::cublaslt_check((call), #call, __FILE__, __LINE__)

// Column-major D (m x n) = alpha op(A) op(B) + beta D on cuBLASLt, fp32 accumulation
// (CUBLAS_COMPUTE_32F: strict fp32, no TF32, when the operands are fp32). It owns the handle, and
// a 32 MiB workspace unless it is given one: GEMMs ordered on one stream may share one (the
// model's memory plan holds one for its Matmul and GaLore's GemmF32). A plan (descriptors, layouts and the heuristic's first algorithm) is built
// once per (shape, transposes, types, alignments) and cached, so a repeated call costs one
// cublasLtMatmul. Any sizes work; alignment below 16 bytes is passed to the heuristic, which
// then picks a kernel that accepts it. lda/ldb/ldd in elements.
class CachedGemm {
 public:
  static constexpr size_t kWorkspaceBytes = 32u << 20;

  explicit CachedGemm(void* workspace /*kWorkspaceBytes, or null: its own*/ = nullptr) : workspace_(workspace) {
    CUBLASLT_CHECK(cublasLtCreate(&handle_));
    if (!workspace_) {
      CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
      owns_workspace_ = true;
    }
  }
  ~CachedGemm() {
    plans_.clear();
    if (owns_workspace_) cudaFree(workspace_);
    cublasLtDestroy(handle_);
  }
  CachedGemm(const CachedGemm&) = delete;
  CachedGemm& operator=(const CachedGemm&) = delete;

  void run(bool trans_a, bool trans_b, int m, int n, int k, float alpha, cudaDataType_t ab_type, const void* A, int lda,
           const void* B, int ldb, float beta, cudaDataType_t d_type, void* D, int ldd, cudaStream_t stream) {
    const Key key{m, n, k, lda, ldb, ldd, (int)trans_a, (int)trans_b, (int)ab_type, (int)d_type,
                  alignment(A), alignment(B), alignment(D)};
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, std::make_unique<Plan>(handle_, key)).first;
    const Plan& p = *it->second;
    CUBLASLT_CHECK(cublasLtMatmul(handle_, p.op, &alpha, A, p.a, B, p.b, &beta, D, p.d, D, p.d, &p.algo, workspace_,
                                  kWorkspaceBytes, stream));
  }

  size_t cached_plans() const { return plans_.size(); }

 private:
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int>;

  static int alignment(const void* p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    int bytes = 256;
    while (bytes > 1 && (a % bytes) != 0) bytes /= 2;
    return bytes;
  }

  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo;
    Plan(cublasLtHandle_t handle, const Key& key) {
      const auto [m, n, k, lda, ldb, ldd, ta, tb, ab_type, d_type, align_a, align_b, align_d] = key;
      CUBLASLT_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
      CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
      CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
      // stored shapes: A is (m x k) after op, so stored (k x m) when transposed
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&a, (cudaDataType_t)ab_type, ta ? k : m, ta ? m : k, lda));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&b, (cudaDataType_t)ab_type, tb ? n : k, tb ? k : n, ldb));
      CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&d, (cudaDataType_t)d_type, m, n, ldd));
      cublasLtMatmulPreference_t pref = nullptr;
      CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const size_t ws = kWorkspaceBytes;
      const uint32_t aa = align_a, ab = align_b, ad = align_d;
      CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa)));
      CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab)));
      CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof(ad)));
      CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof(ad)));
      cublasLtMatmulHeuristicResult_t result;
      int found = 0;
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, op, a, b, d, d, pref, 1, &result, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        release();
        throw std::runtime_error("cuBLASLt: no algorithm for m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                 " k=" + std::to_string(k) + " (operand type " + std::to_string(ab_type) +
                                 ", output type " + std::to_string(d_type) + ", status " + std::to_string((int)st) +
                                 ")");
      }
      algo = result.algo;
    }
    void release() {
      if (op) cublasLtMatmulDescDestroy(op);
      if (a) cublasLtMatrixLayoutDestroy(a);
      if (b) cublasLtMatrixLayoutDestroy(b);
      if (d) cublasLtMatrixLayoutDestroy(d);
      op = nullptr;
      a = b = d = nullptr;
    }
    ~Plan() { release(); }
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
  };

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  bool owns_workspace_ = false;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

class Matmul {
 public:
  // workspace: CachedGemm::kWorkspaceBytes shared with GEMMs on the same stream, or null (its own).
  explicit Matmul(void* workspace = nullptr) : gemm_(workspace) {}

  // out = inp W^T
  void forward(bf16* out /*(N,OC)*/, const bf16* inp /*(N,IC)*/, const bf16* weight /*(OC,IC)*/, int N, int IC, int OC,
               cudaStream_t stream) {
    NvtxRange range("matmul_forward");
    KERNEL_REQUIRE(N > 0 && IC > 0 && OC > 0, "matmul_forward", "sizes must be positive");
    KERNEL_REQUIRE(out && inp && weight, "matmul_forward", "null pointer");
    gemm(true, false, OC, N, IC, weight, IC, inp, IC, CUDA_R_16BF, out, OC, 0.0f, stream);
  }

  // dinp = dout W (when dinp is not null); dweight += dout^T inp (when dweight is not null).
  void backward(bf16* dinp /*(N,IC) = or null*/, bf16* dweight /*(OC,IC) += or null*/, const bf16* dout /*(N,OC)*/,
                const bf16* inp /*(N,IC)*/, const bf16* weight /*(OC,IC)*/, int N, int IC, int OC,
                cudaStream_t stream) {
    backward_impl(dinp, dweight, CUDA_R_16BF, dout, inp, weight, N, IC, OC, stream);
  }
  // accumulate = false overwrites dweight (=) instead: a gradient streamed through a workspace.
  void backward(bf16* dinp /*(N,IC) = or null*/, float* dweight /*(OC,IC) += or null*/, const bf16* dout /*(N,OC)*/,
                const bf16* inp /*(N,IC)*/, const bf16* weight /*(OC,IC)*/, int N, int IC, int OC,
                cudaStream_t stream, bool accumulate = true) {
    backward_impl(dinp, dweight, CUDA_R_32F, dout, inp, weight, N, IC, OC, stream, accumulate);
  }
  void backward(bf16* dinp /*(N,IC) = or null*/, std::nullptr_t /*frozen*/, const bf16* dout /*(N,OC)*/,
                const bf16* inp /*(N,IC)*/, const bf16* weight /*(OC,IC)*/, int N, int IC, int OC,
                cudaStream_t stream) {
    backward_impl(dinp, nullptr, CUDA_R_16BF, dout, inp, weight, N, IC, OC, stream);
  }

  // One weight gradient alone: dweight (OC,IC) = or += dout^T inp, where dout's OC columns are
  // read with row stride ld_dout — a column block of a fused output (q of qkv, gate of gate_up),
  // so that a fused layer's matrices can stream through a workspace one at a time.
  void weight_gradient(float* dweight /*(OC,IC)*/, const bf16* dout /*(N, ld_dout): columns [0, OC)*/, int ld_dout,
                       const bf16* inp /*(N,IC)*/, int N, int IC, int OC, bool accumulate, cudaStream_t stream) {
    NvtxRange range("matmul_weight_gradient");
    KERNEL_REQUIRE(N > 0 && IC > 0 && OC > 0 && ld_dout >= OC, "matmul_weight_gradient", "sizes must be positive, ld >= OC");
    KERNEL_REQUIRE(dweight && dout && inp, "matmul_weight_gradient", "null pointer");
    gemm_.run(false, true, IC, OC, N, 1.0f, CUDA_R_16BF, inp, IC, dout, ld_dout, accumulate ? 1.0f : 0.0f, CUDA_R_32F,
              dweight, IC, stream);
  }

  size_t cached_plans() const { return gemm_.cached_plans(); }

 private:
  // Column-major D(m x n) = op(A) op(B) + beta D; A, B bf16; D bf16 or fp32.
  void gemm(bool trans_a, bool trans_b, int m, int n, int k, const bf16* A, int lda, const bf16* B, int ldb,
            cudaDataType_t d_type, void* D, int ldd, float beta, cudaStream_t stream) {
    gemm_.run(trans_a, trans_b, m, n, k, 1.0f, CUDA_R_16BF, A, lda, B, ldb, beta, d_type, D, ldd, stream);
  }
  void backward_impl(bf16* dinp, void* dweight, cudaDataType_t dw_type, const bf16* dout, const bf16* inp,
                     const bf16* weight, int N, int IC, int OC, cudaStream_t stream, bool accumulate = true) {
    NvtxRange range("matmul_backward");
    KERNEL_REQUIRE(N > 0 && IC > 0 && OC > 0, "matmul_backward", "sizes must be positive");
    KERNEL_REQUIRE(dout && (!dinp || weight) && (!dweight || inp), "matmul_backward", "null pointer");
    if (dweight) gemm(false, true, IC, OC, N, inp, IC, dout, OC, dw_type, dweight, IC, accumulate ? 1.0f : 0.0f, stream);
    if (dinp) gemm(false, false, IC, N, OC, weight, IC, dout, OC, CUDA_R_16BF, dinp, IC, 0.0f, stream);
  }

  CachedGemm gemm_;
};

}  // namespace owlore
