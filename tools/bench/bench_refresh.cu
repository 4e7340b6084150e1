// GaLore projector refresh benchmark (DESIGN.md §1 "GaLore-Adam", optim/galore_gpu): one
// LLaMA-2-7B MLP gradient shape, both sides (rows×cols projects on the left, cols×rows on the
// right), rank r. For each: the exact refresh (cuSOLVER gesvd), the fast refresh cold (randomized
// range finder, Ω from the Rng) and warm (one subspace iteration from the projector of a perturbed
// gradient), timed with CUDA events around GaloreGpu::refresh (warm-up, median of --reps), with the
// captured energy ‖R‖²/‖G‖² of each and fast/exact; then where the warm refresh's time goes
// (GaloreGpu::profile_phases), against the ceiling measured in the same run: the fp32 GEMM rate
// of GemmF32 (CUBLAS_COMPUTE_32F: strict fp32, no TF32, as the refresh uses it) on the
// 4096×11008×256 product, and the GEMM floor of a warm refresh (its products with G at that rate).
//
// The gradient: G = Σ_j σ_j u_j v_jᵀ + ε·N, σ_j = (1 + j)^-0.8 for j < 1024 (a power law, as
// gradient spectra decay), u, v Gaussian columns of unit expected norm (nearly orthogonal at these
// sizes), N standard normal with ε·(√m + √n) = σ_512: top-256 energy ≈ 0.95, σ1/σ264 ≈ 90. The
// warm start's previous gradient is G + perturb·E, E the same construction from another seed.
//
// Build: cmake --build build --target bench_refresh (tools/bench/CMakeLists.txt). Run: bench_refresh
//   [--rows 4096] [--cols 11008] [--rank 256] [--reps 10] [--exact-reps 3] [--oversample 8]
//   [--power-iters 1] [--perturb 0.1] [--seed 1] [--no-exact]
// Output: markdown tables on stdout.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "base/rng.h"
#include "kernels/galore.cuh"
#include "optim/galore_cpu.h"
#include "optim/galore_gpu.h"

using namespace owlore;

namespace {

struct Args {
  int rows = 4096, cols = 11008, rank = 256;
  int reps = 10, exact_reps = 3;
  int oversample = 8, power_iters = 1;
  float perturb = 0.1f;
  uint64_t seed = 1;
  bool exact = true;
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--rows 4096] [--cols 11008] [--rank 256] [--reps 10] [--exact-reps 3] [--oversample 8]\n"
      "          [--power-iters 1] [--perturb 0.1] [--seed 1] [--no-exact]\n"
      "Times GaLore projector refreshes of a rows x cols and a cols x rows fp32 gradient at the rank.\n",
      argv0);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    const std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--rows") a.rows = std::atoi(value());
    else if (flag == "--cols") a.cols = std::atoi(value());
    else if (flag == "--rank") a.rank = std::atoi(value());
    else if (flag == "--reps") a.reps = std::atoi(value());
    else if (flag == "--exact-reps") a.exact_reps = std::atoi(value());
    else if (flag == "--oversample") a.oversample = std::atoi(value());
    else if (flag == "--power-iters") a.power_iters = std::atoi(value());
    else if (flag == "--perturb") a.perturb = (float)std::atof(value());
    else if (flag == "--seed") a.seed = std::strtoull(value(), nullptr, 10);
    else if (flag == "--no-exact") a.exact = false;
    else if (flag == "--help" || flag == "-h") usage(argv[0]), std::exit(0);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      usage(argv[0]);
      std::exit(2);
    }
  }
  if (a.rows < 1 || a.cols < 1 || a.rank < 1 || a.reps < 1 || a.exact_reps < 1 || a.oversample < 0 ||
      a.power_iters < 0) {
    std::fprintf(stderr, "sizes, rank and reps must be >= 1 (oversample, power iterations >= 0)\n");
    std::exit(2);
  }
  return a;
}

// p[i] = scale · standard normal (Box-Muller on a hash of (seed, i)).
__global__ void gaussian_kernel(float* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t a = hash_u32((uint32_t)i, seed), b = hash_u32((uint32_t)i, seed ^ 0x9E3779B9u);
    const uint32_t c = hash_u32((uint32_t)(i >> 32), a);
    const float u1 = ((a ^ c) >> 8) * (1.0f / 16777216.0f) + 0.5f / 16777216.0f, u2 = (b >> 8) * (1.0f / 16777216.0f);
    p[i] = scale * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}
void gaussian(float* p, int64_t n, uint32_t seed, float scale) {
  gaussian_kernel<<<1024, 256>>>(p, n, seed, scale);
  CUDA_CHECK_LAUNCH();
}

// Column-major X (rows×cols): column j *= (1 + j)^-decay / sqrt(rows).
__global__ void power_law_columns_kernel(float* X, int rows, int cols, float decay) {
  const int64_t n = (int64_t)rows * cols;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x)
    X[e] *= powf(1.0f + (float)(e / rows), -decay) * rsqrtf((float)rows);
}

// G (m×n row-major) = Σ_j σ_j u_j v_jᵀ + ε·N (see the header), built as the column-major n×m Gᵀ:
// Gᵀ = V·diag(σ)·Uᵀ + ε·N with V (n×L) and U (m×L) Gaussian, one GEMM.
void make_gradient(float* G /*(m,n)*/, int m, int n, uint32_t seed, GemmF32& gemm) {
  const int L = std::min({1024, m, n});
  const float decay = 0.8f;
  float* U /*(m,L) col-major*/ = nullptr;
  float* V /*(n,L) col-major*/ = nullptr;
  CUDA_CHECK(cudaMalloc(&U, (size_t)m * L * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&V, (size_t)n * L * sizeof(float)));
  gaussian(U, (int64_t)m * L, seed * 3 + 1, 1.0f);
  gaussian(V, (int64_t)n * L, seed * 3 + 2, 1.0f);
  power_law_columns_kernel<<<1024, 256>>>(U, m, L, decay);  // σ_j folded into U; U, V unit columns
  CUDA_CHECK_LAUNCH();
  power_law_columns_kernel<<<1024, 256>>>(V, n, L, 0.0f);
  CUDA_CHECK_LAUNCH();
  const float sigma_floor = std::pow(1.0f + std::min(512, L - 1), -decay);
  gaussian(G, (int64_t)m * n, seed * 3 + 3, sigma_floor / (std::sqrt((float)m) + std::sqrt((float)n)));
  gemm.gemm(false, true, n, m, L, 1.0f, V, n, U, m, 1.0f, G, n, 0);  // Gᵀ += V·Uᵀ
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaFree(U);
  cudaFree(V);
}

// out = a + s·b, elementwise.
__global__ void axpy_kernel(float* out, const float* a, const float* b, float s, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = a[i] + s * b[i];
}

struct Events {
  cudaEvent_t start, stop;
  Events() {
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Events() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  float ms() const {
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    return t;
  }
};

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5f * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// The projector as r orthonormal rows (r×side, row-major, device): Q itself, or Pᵀ.
void projector_rows(float* out /*(r,side)*/, const GaloreGpuMatrix& s) {
  if (s.side == ProjectionSide::right)
    CUDA_CHECK(cudaMemcpy(out, s.projector, s.projector_numel() * sizeof(float), cudaMemcpyDeviceToDevice));
  else transpose_f32(out, s.projector, s.rows, s.rank, s.rank, s.rows, 0);
}

// Checks of a projector against another (rows r×side): max |A·Aᵀ − I| and the mean cos² of the
// principal angles between the two subspaces, ‖A·Bᵀ‖²_F / r.
struct Agreement {
  double orthonormality_error = 0, mean_cos2 = 0;
};
Agreement agreement(const GaloreGpuMatrix& a, const GaloreGpuMatrix& b, GemmF32& gemm) {
  const int r = a.rank, side = a.side == ProjectionSide::right ? a.cols : a.rows;
  float *A /*(r,side)*/, *B /*(r,side)*/, *M /*(r,r)*/;
  CUDA_CHECK(cudaMalloc(&A, (size_t)r * side * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&B, (size_t)r * side * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&M, (size_t)r * r * sizeof(float)));
  projector_rows(A, a);
  projector_rows(B, b);
  std::vector<float> host((size_t)r * r);
  Agreement out;
  // Row-major A (r×side) is column-major Aᵀ (side×r): column-major (r×r) = op_T(Aᵀ)·Aᵀ = A·Aᵀ.
  gemm.gemm(true, false, r, r, side, 1.0f, A, side, A, side, 0.0f, M, r, 0);
  CUDA_CHECK(cudaMemcpy(host.data(), M, host.size() * sizeof(float), cudaMemcpyDeviceToHost));
  for (int i = 0; i < r; i++)
    for (int j = 0; j < r; j++)
      out.orthonormality_error = std::max(out.orthonormality_error, (double)std::fabs(host[(size_t)i * r + j] - (i == j)));
  gemm.gemm(true, false, r, r, side, 1.0f, A, side, B, side, 0.0f, M, r, 0);
  CUDA_CHECK(cudaMemcpy(host.data(), M, host.size() * sizeof(float), cudaMemcpyDeviceToHost));
  for (float x : host) out.mean_cos2 += (double)x * x / r;
  cudaFree(A);
  cudaFree(B);
  cudaFree(M);
  return out;
}

struct Row {
  std::string shape, method;
  float ms;
  double energy, ratio;
};

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
  std::printf("# GaLore projector refresh, %s, %s (%d SMs), rank %d, oversample %d, power iterations %d\n\n", prop.name,
              date, prop.multiProcessorCount, args.rank, args.oversample, args.power_iters);

  GemmF32 gemm;
  const int big = std::max(args.rows, args.cols), small = std::min(args.rows, args.cols);
  const int r = std::min(args.rank, small);
  float *G /*(rows,cols)*/, *G_prev /*(rows,cols)*/, *scratch /*(rows,cols)*/;
  const size_t mn = (size_t)args.rows * args.cols;
  CUDA_CHECK(cudaMalloc(&G, mn * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&G_prev, mn * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&scratch, mn * sizeof(float)));
  Events ev;

  // Ceiling: GemmF32 on the refresh's product shape, as the refresh calls it (A·X, A = G (big×small)
  // stored as the column-major small×big Gᵀ).
  float ceiling_ms = 0, ceiling_tflops = 0;
  {
    float *X /*(small,r)*/, *Y /*(big,r)*/;
    CUDA_CHECK(cudaMalloc(&X, (size_t)small * r * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&Y, (size_t)big * r * sizeof(float)));
    gaussian(G, (int64_t)mn, 7, 1.0f);
    gaussian(X, (int64_t)small * r, 8, 1.0f);
    std::vector<float> t;
    for (int rep = 0; rep < args.reps + 2; rep++) {
      CUDA_CHECK(cudaEventRecord(ev.start, 0));
      for (int i = 0; i < 10; i++) gemm.gemm(true, false, big, r, small, 1.0f, G, small, X, small, 0.0f, Y, big, 0);
      CUDA_CHECK(cudaEventRecord(ev.stop, 0));
      if (rep >= 2) t.push_back(ev.ms() / 10);
    }
    ceiling_ms = median(t);
    ceiling_tflops = (float)(2.0 * big * small * r / (ceiling_ms * 1e-3) / 1e12);
    cudaFree(X);
    cudaFree(Y);
  }
  std::printf("ceiling: fp32 GEMM (GemmF32, CUBLAS_COMPUTE_32F, no TF32) %d x %d x %d: %.3f ms, %.1f TFLOP/s\n\n", big,
              r, small, ceiling_ms, ceiling_tflops);

  std::vector<Row> rows;
  std::vector<std::string> breakdown;
  for (const auto& [m, n] : {std::pair<int, int>{args.rows, args.cols}, std::pair<int, int>{args.cols, args.rows}}) {
    char shape[64];
    std::snprintf(shape, sizeof shape, "%dx%d (%s)", m, n, m >= n ? "right" : "left");
    // G and the warm start's previous gradient G_prev = G + perturb·E, as m×n.
    make_gradient(G, m, n, (uint32_t)args.seed, gemm);
    make_gradient(scratch, m, n, (uint32_t)args.seed + 1000, gemm);
    axpy_kernel<<<1024, 256>>>(G_prev, G, scratch, args.perturb, (int64_t)mn);
    CUDA_CHECK_LAUNCH();

    GaloreConfig config;
    config.rank = args.rank;
    config.proj_gap = 1;
    config.oversample = args.oversample;
    config.power_iters = args.power_iters;
    config.mode = ProjectorMode::fast;
    config.warm_start = true;
    GaloreGpu fast(config, {{m, n}}, 0);
    fast.bind(nullptr);
    const int64_t state_floats = galore_gpu_state_floats(m, n, config);
    float *fast_memory, *exact_memory, *saved_projector;
    CUDA_CHECK(cudaMalloc(&fast_memory, state_floats * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&exact_memory, state_floats * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&saved_projector, state_floats * sizeof(float)));
    GaloreGpuMatrix fs = galore_gpu_matrix(m, n, config, fast_memory);
    galore_gpu_reset(fs, 0);
    Rng rng(args.seed);

    // exact (verifies the others: nothing captures more than the exact top-r subspace)
    double e_exact = 0;
    GaloreGpuMatrix es;
    if (args.exact) {
      GaloreConfig exact_config = config;
      exact_config.mode = ProjectorMode::exact;
      GaloreGpu exact(exact_config, {{m, n}}, 0);
      exact.bind(nullptr);
      es = galore_gpu_matrix(m, n, exact_config, exact_memory);
      galore_gpu_reset(es, 0);
      e_exact = exact.refresh(es, G, rng);  // warm-up
      std::vector<float> t;
      for (int rep = 0; rep < args.exact_reps; rep++) {
        CUDA_CHECK(cudaEventRecord(ev.start, 0));
        e_exact = exact.refresh(es, G, rng);
        CUDA_CHECK(cudaEventRecord(ev.stop, 0));
        t.push_back(ev.ms());
      }
      rows.push_back({shape, "exact (gesvd)", median(t), e_exact, 1.0});
    }

    // fast, cold: no projector, Ω from rng
    double e_cold = 0;
    {
      std::vector<float> t;
      for (int rep = 0; rep < args.reps + 1; rep++) {  // the first is a warm-up (GEMM plans)
        fs.has_projector = false;
        CUDA_CHECK(cudaEventRecord(ev.start, 0));
        e_cold = fast.refresh(fs, G, rng);
        CUDA_CHECK(cudaEventRecord(ev.stop, 0));
        if (rep > 0) t.push_back(ev.ms());
      }
      rows.push_back({shape, "fast cold", median(t), e_cold, args.exact ? e_cold / e_exact : 0.0});
    }
    Agreement cold_vs_exact;
    if (args.exact) cold_vs_exact = agreement(fs, es, gemm);

    // fast, warm: from the (cold) projector of G_prev, each rep restarting from it
    fs.has_projector = false;
    const double e_prev = fast.refresh(fs, G_prev, rng);
    CUDA_CHECK(cudaMemcpy(saved_projector, fs.projector, fs.projector_numel() * sizeof(float),
                          cudaMemcpyDeviceToDevice));
    double e_warm = 0;
    GaloreGpu::RefreshPhases sum;
    int fallbacks = 0;
    {
      std::vector<float> t;
      fast.profile_phases(true);
      for (int rep = 0; rep < args.reps + 1; rep++) {
        CUDA_CHECK(cudaMemcpy(fs.projector, saved_projector, fs.projector_numel() * sizeof(float),
                              cudaMemcpyDeviceToDevice));
        CUDA_CHECK(cudaEventRecord(ev.start, 0));
        e_warm = fast.refresh(fs, G, rng);
        CUDA_CHECK(cudaEventRecord(ev.stop, 0));
        if (rep == 0) continue;
        t.push_back(ev.ms());
        const GaloreGpu::RefreshPhases p = fast.refresh_phases();
        sum.products_ms += p.products_ms / args.reps;
        sum.orthonormalize_ms += p.orthonormalize_ms / args.reps;
        sum.rotation_ms += p.rotation_ms / args.reps;
        sum.check_ms += p.check_ms / args.reps;
        fallbacks += p.fell_back;
      }
      fast.profile_phases(false);
      const float warm_ms = median(t);
      rows.push_back({shape, "fast warm", warm_ms, e_warm, args.exact ? e_warm / e_exact : 0.0});
      // Products with G in a warm refresh: A·X, Aᵀ·Z, A·B, and refresh()'s R = projection for the energy.
      const float floor_ms = 4 * ceiling_ms;
      const float rest = warm_ms - sum.products_ms - sum.orthonormalize_ms - sum.rotation_ms - sum.check_ms;
      char line[512];
      std::snprintf(line, sizeof line,
                    "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1fx | %d |", shape, warm_ms,
                    sum.products_ms, sum.orthonormalize_ms, sum.rotation_ms, sum.check_ms, rest, floor_ms,
                    warm_ms / floor_ms, fallbacks);
      breakdown.push_back(line);
    }
    Agreement warm_vs_exact;
    if (args.exact) warm_vs_exact = agreement(fs, es, gemm);
    Agreement self = agreement(fs, fs, gemm);
    std::printf("%s: energy of G_prev's projector (cold) %.5f; warm projector: max|QQᵀ-I| %.2e", shape, e_prev,
                self.orthonormality_error);
    if (args.exact)
      std::printf(", mean cos² to exact: cold %.4f, warm %.4f", cold_vs_exact.mean_cos2, warm_vs_exact.mean_cos2);
    std::printf("; Householder fallbacks %d\n", fast.fallbacks());
    if (args.exact && (e_cold < 0.99 * e_exact || e_warm < 0.99 * e_exact))
      std::printf("WARNING: %s: fast refresh captures less than 0.99 of the exact energy\n", shape);
    cudaFree(fast_memory);
    cudaFree(exact_memory);
    cudaFree(saved_projector);
  }

  std::printf("\n| shape (side) | refresh | ms (median) | captured energy | / exact |\n|---|---|---:|---:|---:|\n");
  for (const Row& row : rows) {
    if (row.ratio > 0)
      std::printf("| %s | %s | %.2f | %.5f | %.4f |\n", row.shape.c_str(), row.method.c_str(), row.ms, row.energy,
                  row.ratio);
    else
      std::printf("| %s | %s | %.2f | %.5f | - |\n", row.shape.c_str(), row.method.c_str(), row.ms, row.energy);
  }
  std::printf(
      "\nWarm refresh, where the time goes (ms, mean over reps; products = GEMMs with G; rest = refresh()'s\n"
      "energy projection and sums, launches; floor = 4 products with G at the ceiling rate):\n\n"
      "| shape (side) | total | products | orthonormalize | rotation | flag check | rest | GEMM floor | / floor | "
      "fallbacks |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const std::string& line : breakdown) std::printf("%s\n", line.c_str());
  cudaFree(G);
  cudaFree(G_prev);
  cudaFree(scratch);
  return 0;
}
