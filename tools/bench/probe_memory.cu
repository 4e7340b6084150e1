// What the device holds outside owlore's memory plan: the CUDA context, its per-thread stacks,
// the cuBLASLt and cuSOLVER handles and the kernels they load on first use. Each stage does what
// a training run does (same libraries, same calls, LLaMA-2-7B shapes at 16 x 512 tokens) and
// prints the device memory in use after it (cudaMemGetInfo: total - free), so the difference
// between a run's peak and its plan can be taken apart.
//   probe_memory [--stack BYTES]   --stack: set cudaLimitStackSize right after the context
#include <cublasLt.h>
#include <cusolverDn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/galore.cuh"
#include "kernels/matmul.cuh"
#include "kernels/rmsnorm.cuh"

using namespace owlore;

namespace {
double used_mib() {
  size_t free_bytes = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return (double)(total - free_bytes) / (1 << 20);
}
double last = 0;
void report(const char* stage) {
  const double now = used_mib();
  std::printf("%-58s %10.1f MiB  %+9.1f\n", stage, now, now - last);
  last = now;
}
}  // namespace

int main(int argc, char** argv) {
  long stack = -1;
  for (int i = 1; i + 1 < argc; i++)
    if (!std::strcmp(argv[i], "--stack")) stack = std::atol(argv[i + 1]);
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("card: %s, %d SMs, %d threads per SM\n", prop.name, prop.multiProcessorCount,
              prop.maxThreadsPerMultiProcessor);
  CUDA_CHECK(cudaFree(nullptr));
  size_t limit = 0;
  CUDA_CHECK(cudaDeviceGetLimit(&limit, cudaLimitStackSize));
  std::printf("stack limit at start: %zu bytes per thread\n", limit);
  std::printf("%-58s %10s      %9s\n", "stage", "in use", "delta");
  report("CUDA context");
  if (stack >= 0) {
    CUDA_CHECK(cudaDeviceSetLimit(cudaLimitStackSize, (size_t)stack));
    CUDA_CHECK(cudaDeviceGetLimit(&limit, cudaLimitStackSize));
    char line[96];
    std::snprintf(line, sizeof line, "stack limit set to %ld (now %zu) bytes", stack, limit);
    report(line);
  }
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int N = 16 * 512, C = 4096, F = 11008;
  bf16 *x, *w, *y;
  float* rstd;
  CUDA_CHECK(cudaMalloc(&x, (size_t)N * C * 2));
  CUDA_CHECK(cudaMalloc(&w, (size_t)2 * F * C * 2));
  CUDA_CHECK(cudaMalloc(&y, (size_t)N * 2 * F * 2));
  CUDA_CHECK(cudaMalloc(&rstd, (size_t)N * 4));
  CUDA_CHECK(cudaMemset(x, 0, (size_t)N * C * 2));
  CUDA_CHECK(cudaMemset(w, 0, (size_t)2 * F * C * 2));
  last = used_mib();  // the buffers above stand for the plan: not counted
  rmsnorm_forward(y, rstd, x, w, N, C, 1e-5f, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  report("owlore's kernels loaded (first launch)");
  {
    Matmul mm;
    report("cuBLASLt handle + 32 MiB workspace (Matmul)");
    mm.forward(y, x, w, N, C, 2 * F, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    report("bf16 GEMM 8192 x 4096 x 22016 (kernels loaded)");
    GemmF32 g32;
    report("second cuBLASLt handle + 32 MiB workspace (GemmF32)");
    float* a32 = reinterpret_cast<float*>(y);
    g32.gemm(true, false, 256, C, C, 1.0f, a32, C, a32, C, 0.0f, a32 + (size_t)C * C, 256, s);
    CUDA_CHECK(cudaStreamSynchronize(s));
    report("fp32 GEMM (kernels loaded)");
    cusolverDnHandle_t solver;
    CUSOLVER_CHECK(cusolverDnCreate(&solver));
    CUSOLVER_CHECK(cusolverDnSetStream(solver, s));
    report("cuSOLVER handle");
    const int rows = C, k = 264;
    int lwork = 0, lwork2 = 0;
    CUSOLVER_CHECK(cusolverDnSgeqrf_bufferSize(solver, rows, k, a32, rows, &lwork));
    CUSOLVER_CHECK(cusolverDnSorgqr_bufferSize(solver, rows, k, k, a32, rows, a32, &lwork2));
    float *work, *tau;
    int* info;
    CUDA_CHECK(cudaMalloc(&work, (size_t)std::max(lwork, lwork2) * 4));
    CUDA_CHECK(cudaMalloc(&tau, k * 4));
    CUDA_CHECK(cudaMalloc(&info, 4));
    CUDA_CHECK(cudaMemset(a32, 0, (size_t)rows * k * 4));
    last = used_mib();
    CUSOLVER_CHECK(cusolverDnSgeqrf(solver, rows, k, a32, rows, tau, work, lwork, info));
    CUSOLVER_CHECK(cusolverDnSorgqr(solver, rows, k, k, a32, rows, tau, work, lwork2, info));
    CUDA_CHECK(cudaStreamSynchronize(s));
    report("QR (geqrf, orgqr) 4096 x 264 (kernels loaded)");
    int lwork3 = 0;
    float* sigma;
    CUDA_CHECK(cudaMalloc(&sigma, k * 4));
    CUSOLVER_CHECK(cusolverDnSsyevd_bufferSize(solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, k, a32, k,
                                               sigma, &lwork3));
    float* work3;
    CUDA_CHECK(cudaMalloc(&work3, (size_t)lwork3 * 4));
    last = used_mib();
    CUSOLVER_CHECK(cusolverDnSsyevd(solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, k, a32, k, sigma, work3,
                                    lwork3, info));
    CUDA_CHECK(cudaStreamSynchronize(s));
    report("syevd 264 x 264 (kernels loaded)");
    CUDA_CHECK(cudaDeviceGetLimit(&limit, cudaLimitStackSize));
    std::printf("stack limit at the end: %zu bytes per thread\n", limit);
    cusolverDnDestroy(solver);
  }
  return 0;
}
