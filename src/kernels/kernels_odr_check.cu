// Includes every kernel header in a second translation unit of owlore_core, so that any test
// that includes them too links two copies: a header that breaks the one-definition rule fails
// the link here instead of in the trainer. owlore_kernels_odr_check() forces the link.
#include "kernels/adamw.cuh"
#include "kernels/encoder.cuh"
#include "kernels/lm_head_ce.cuh"
#include "kernels/matmul.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"

int owlore_kernels_odr_check() {
  using namespace owlore;
  int n = 0;
  n += &encoder_forward != nullptr;
  n += &rmsnorm_forward != nullptr;
  n += &rmsnorm_residual_forward != nullptr;
  n += &swiglu_forward != nullptr;
  n += &rope_forward != nullptr;
  n += &adamw_update<bf16, float> != nullptr;
  n += &sum_squares<bf16> != nullptr;
  void (*fb)(float*, bf16*, float*, bf16*, size_t, const bf16*, const bf16*, const int*, float, int, int, int, int,
             Matmul&, cudaStream_t) = &lm_head_ce_forward_backward;
  n += fb != nullptr;
  return n;
}
