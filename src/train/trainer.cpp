#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <cuda_profiler_api.h>
#include <nvtx3/nvToolsExt.h>

#include "base/error.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/model_tokenizer.h"
#include "io/token_data.h"
#include "kernels/ref/ops_ref.h"
#include "model/config.h"
#include "model/layout.h"
#include "model/memory_plan.h"
#include "model/model_cpu.h"
#include "optim/adamw_cpu.h"
#include "optim/outliers.h"
#include "optim/outliers_gpu.h"
#include "optim/sampler.h"
#include "train/backend.h"
#include "train/flops.h"
#include "train/metrics.h"
#include "train/schedule.h"

namespace owlore {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void validate(const TrainOptions& o) {
  OWLORE_REQUIRE(!o.data_path.empty(), "--data is required");
  OWLORE_REQUIRE(o.preset.empty() != o.model_path.empty(), "give exactly one of --preset and --model");
  OWLORE_REQUIRE(o.device == "cpu" || o.device == "cuda", "--device must be cpu or cuda, got '", o.device, "'");
  check_method(o.method);
  OWLORE_REQUIRE(o.steps >= 1, "--steps must be >= 1, got ", o.steps);
  OWLORE_REQUIRE(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  OWLORE_REQUIRE(o.seq >= 1, "--seq must be >= 1, got ", o.seq);
  OWLORE_REQUIRE(o.grad_accum >= 1, "--grad-accum must be >= 1, got ", o.grad_accum);
  OWLORE_REQUIRE(o.lr > 0, "--lr must be > 0, got ", o.lr);
  OWLORE_REQUIRE(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "--min-lr-ratio must be in [0, 1], got ", o.min_lr_ratio);
  OWLORE_REQUIRE(o.clip >= 0, "--clip must be >= 0, got ", o.clip);
  OWLORE_REQUIRE(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "--beta1/--beta2 must be in [0, 1)");
  OWLORE_REQUIRE(o.val_batches >= 1, "--val-batches must be >= 1, got ", o.val_batches);
  OWLORE_REQUIRE(o.save_dtype == "bf16" || o.save_dtype == "f32", "--save-dtype must be bf16 or f32, got '",
                 o.save_dtype, "'");
  OWLORE_REQUIRE(o.lm_head_chunk_tokens >= 1, "--lm-head-chunk must be >= 1, got ", o.lm_head_chunk_tokens);
  OWLORE_REQUIRE((o.profile_first == 0 && o.profile_last == 0) || (o.profile_first >= 1 && o.profile_last >= o.profile_first),
                 "--profile-steps must be A:B with 1 <= A <= B, got ", o.profile_first, ":", o.profile_last);
  OWLORE_REQUIRE(o.recompute == "none" || o.recompute == "cheap" || o.recompute == "layer",
                 "--recompute must be none, cheap or layer, got '",
                 o.recompute, "'");
  OWLORE_REQUIRE(!o.offload_activations || o.device == "cuda",
                 "--offload-activations moves GPU activations to the host; it has no meaning with --device ", o.device);
  OWLORE_REQUIRE(!o.offload_activations || o.recompute == "layer",
                 "--offload-activations needs --recompute layer (only the layer inputs are offloaded), got --recompute ",
                 o.recompute);
  OWLORE_REQUIRE(o.recompute == "none" || o.device == "cuda", "--recompute ", o.recompute,
                 " is a GPU option (the CPU trainer keeps every activation); with --device ", o.device,
                 " leave it at none");
  OWLORE_REQUIRE(o.state_policy == "drop" || o.state_policy == "keep" || o.state_policy == "reset",
                 "--state must be drop, keep or reset, got '", o.state_policy, "'");
  OWLORE_REQUIRE(o.stop_at >= 0, "--stop-at must be >= 0, got ", o.stop_at);
  OWLORE_REQUIRE(o.gamma >= 1, "--gamma must be >= 1, got ", o.gamma);
  OWLORE_REQUIRE(o.period >= 1, "--period must be >= 1, got ", o.period);
  OWLORE_REQUIRE(o.rank >= 1, "--rank must be >= 1, got ", o.rank);
  OWLORE_REQUIRE(o.proj_gap >= 1, "--proj-gap must be >= 1, got ", o.proj_gap);
  OWLORE_REQUIRE(o.projector == "exact" || o.projector == "fast", "--projector must be exact or fast, got '",
                 o.projector, "'");
  OWLORE_REQUIRE(o.outlier_threshold > 0, "--outlier-threshold must be > 0, got ", o.outlier_threshold);
}

}  // namespace

void check_method(const std::string& method) {
  if (method == "full" || method == "lisa" || method == "owlore" || method == "ows" || method == "galore") return;
  fail("--method: unknown method '", method, "' (expected full, lisa, owlore, ows or galore)");
}

namespace {

Dataset load_training_data(const TrainOptions& o, const ModelConfig& config, const Tokenizer* tokenizer) {
  if (!tokenizer)
    OWLORE_REQUIRE(config.vocab >= 256, "byte-level data needs a vocabulary of at least 256 tokens; model '",
                   config.name, "' has ", config.vocab);
  InstructOptions instruct;
  instruct.skip_bad_lines = o.skip_bad_lines;
  const TokenStream stream = load_token_stream(o.data_path, tokenizer, instruct);
  Dataset data = pack_dataset(stream.tokens, stream.loss_mask, o.seq, o.val_fraction);
  OWLORE_REQUIRE(data.max_token < config.vocab, o.data_path, ": token ", data.max_token,
                 " is outside the model's vocabulary of ", config.vocab);
  OWLORE_REQUIRE(data.train.count() >= o.batch, o.data_path, ": ", data.train.count(), " training sequences of ",
                 o.seq + 1, " tokens, fewer than one batch of ", o.batch, " (lower --batch or --seq)");
  return data;
}

// The layerwise outlier distribution for owlore/ows: read from --outliers, else computed on the
// run's device (CPU fp32, or GPU bf16: optim/outliers_gpu.h) from calibration rows of the
// training data and cached beside the metrics.
std::vector<double> outlier_distribution(const TrainOptions& o, const ModelLayout& layout,
                                         const std::vector<float>& weights, const Dataset& data) {
  if (!o.outliers_path.empty()) return read_outlier_file(o.outliers_path, layout.config.n_layers).D;
  const int seq = std::min(o.outlier_seq, data.train.row_len - 1);
  const int n = (int)std::min<int64_t>(o.outlier_samples, data.train.count());
  std::vector<int32_t> tokens((int64_t)n * seq);
  for (int r = 0; r < n; r++)
    std::copy_n(data.train.tokens.begin() + (int64_t)r * data.train.row_len, seq, tokens.begin() + (int64_t)r * seq);
  OutlierOptions options;
  options.threshold = o.outlier_threshold;
  // The GPU calibration's model lives only for this call: its memory is free again before the
  // training backend plans its own.
  std::vector<double> D = o.device == "cuda"
                              ? compute_outlier_distribution_gpu(layout, weights, tokens.data(), n, seq, options)
                              : compute_outlier_distribution(layout, weights.data(), tokens.data(), n, seq, options);
  write_outlier_file(o.out_dir + "/outliers.json", D, OutlierMetadata{layout.config.name, o.outlier_threshold, n, seq});
  return D;
}

std::string join_ints(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

}  // namespace

LoadedModel load_model_or_preset(const std::string& model_path, const std::string& preset, uint64_t init_seed) {
  OWLORE_REQUIRE(model_path.empty() != preset.empty(), "give exactly one of --preset and --model");
  if (!model_path.empty()) return load_model(model_path);
  LoadedModel m;
  m.config = preset_config(preset);
  const ModelLayout layout(m.config);
  m.weights.resize(layout.total);
  init_weights(layout, m.weights.data(), init_seed);
  m.source = "preset " + preset;
  return m;
}

TrainResult run_training(const TrainOptions& o) {
  validate(o);
  const LoadedModel loaded = load_model_or_preset(o.model_path, o.preset, o.seed + 1);
  const ModelConfig& config = loaded.config;
  OWLORE_REQUIRE(o.seq <= config.max_seq || config.max_seq <= 0, "--seq ", o.seq, " does not fit the model's context of ",
                 config.max_seq, " tokens");
  const ModelLayout layout(config);
  const std::unique_ptr<Tokenizer> tokenizer = load_model_tokenizer(o.model_path);
  const Dataset data = load_training_data(o, config, tokenizer.get());

  std::filesystem::create_directories(o.out_dir);

  // Which decoder layers train: all (full, galore) or a sampled few (lisa, ows, owlore).
  const bool sampled = o.method == "lisa" || o.method == "ows" || o.method == "owlore";
  OWLORE_REQUIRE(!sampled || o.gamma <= config.n_layers, "--gamma ", o.gamma, " exceeds the model's ", config.n_layers,
                 " decoder layers");
  std::unique_ptr<LayerSampler> sampler;
  if (o.method == "lisa") {
    sampler = std::make_unique<LayerSampler>(LayerSampler::uniform(config.n_layers, o.gamma, o.period, o.seed));
  } else if (sampled) {
    const std::vector<double> D = outlier_distribution(o, layout, loaded.weights, data);
    const std::vector<double> weights = outlier_sampling_weights(D);
    const std::vector<double> inclusion = exact_inclusion_probabilities(weights, o.gamma);
    std::string table = "layerwise outlier ratio D (%) and inclusion probability per layer:\n";
    const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
    for (int l = 0; l < config.n_layers; l++) {
      char row[96];
      std::snprintf(row, sizeof row, "  layer %2d  D %7.4f  p %.4f  P(in sample) %.4f\n", l, D[l], weights[l] / total,
                    inclusion[l]);
      table += row;
    }
    std::printf("%s", table.c_str());
    sampler = std::make_unique<LayerSampler>(LayerSampler::weighted(weights, o.gamma, o.period, o.seed));
  }
  TrainMask mask = TrainMask::all(config.n_layers);
  if (sampler) mask.layers.assign(config.n_layers, false);
  if (o.freeze_embeddings) mask.embedding = mask.head = false;

  OptimizerOptions optim;
  optim.beta1 = o.beta1, optim.beta2 = o.beta2, optim.eps = o.eps, optim.weight_decay = o.weight_decay;
  optim.moments = o.moments;
  optim.state_policy = o.state_policy;
  optim.seed = o.seed;
  optim.galore = o.method == "owlore" || o.method == "galore";
  optim.stream_galore_gradients = o.grad_accum == 1;
  optim.micro_batches_per_step = o.grad_accum;
  optim.train_embeddings = !o.freeze_embeddings;
  optim.galore_config.rank = o.rank;
  optim.galore_config.proj_gap = o.proj_gap;
  optim.galore_config.scale = o.galore_scale;
  optim.galore_config.mode = o.projector == "fast" ? ProjectorMode::fast : ProjectorMode::exact;
  std::unique_ptr<TrainBackend> backend =
      o.device == "cpu" ? make_cpu_backend(layout, loaded.weights, optim)
                        : make_gpu_backend(layout, loaded.weights, optim,
                                           GpuModelOptions{o.batch, o.seq, o.lm_head_chunk_tokens,
                                                           o.recompute == "layer"   ? Recompute::layer
                                                           : o.recompute == "cheap" ? Recompute::cheap
                                                                                    : Recompute::none,
                                                           o.offload_activations},
                                           sampler ? o.gamma : config.n_layers);
  backend->set_mask(mask);
  LrSchedule schedule{o.lr, o.min_lr_ratio, o.warmup_steps >= 0 ? o.warmup_steps : o.steps / 20, o.steps};

  const int B = o.batch, T = o.seq;
  std::vector<int32_t> inputs((int64_t)o.grad_accum * B * T), targets(inputs.size());
  auto validation_loss = [&] {
    nvtxRangePushA("validation");
    double sum = 0;
    int64_t kept = 0;
    for (int i = 0; i < o.val_batches; i++) {
      fixed_batch(data.val, (int64_t)i * B, B, inputs.data(), targets.data());
      int64_t k = 0;
      sum += backend->forward_loss(inputs.data(), targets.data(), B, T, &k);
      kept += k;
    }
    nvtxRangePop();
    return kept ? sum / kept : 0.0;
  };
  BatchCursor cursor;
  cursor.seed = o.seed;
  // The run's identity: a resumed run must match it (other flags, like --steps, may change).
  const nlohmann::json run_identity = {{"method", o.method}, {"batch", o.batch},      {"seq", o.seq},
                                       {"grad_accum", o.grad_accum}, {"model", config.name}, {"parameters", layout.total},
                                       {"device", o.device}, {"moments", o.moments}, {"seed", o.seed}};
  // A checkpoint is a directory checkpoint-<step> with the Hugging Face model (config.json,
  // model.safetensors) and trainer_state.safetensors (exact weights, optimizer, sampler, data
  // position). <out>/checkpoint is a symlink to the newest complete one, replaced atomically
  // (rename of a fresh symlink), so a crash at any point leaves a loadable checkpoint.
  auto save = [&](int step) {
    namespace fs = std::filesystem;
    const std::string name = "checkpoint-" + std::to_string(step);
    const fs::path dir = fs::path(o.out_dir) / name;
    StateBundle state;
    backend->save_state(state);
    save_hf_checkpoint(dir.string(), layout, state.tensors.at("weights").data(), o.save_dtype);
    state.meta["run"] = run_identity;
    state.meta["step"] = step;
    state.meta["cursor_seed"] = cursor.seed;
    state.meta["cursor_position"] = cursor.position;
    state.meta["mask"] = {{"layers", mask.layers}, {"embedding", mask.embedding}, {"head", mask.head}};
    if (sampler) state.meta["sampler"] = sampler->to_json();
    save_state_bundle((dir / "trainer_state.safetensors").string(), state);
    const fs::path link = fs::path(o.out_dir) / "checkpoint", fresh = fs::path(o.out_dir) / "checkpoint.new";
    fs::remove(fresh);
    OWLORE_REQUIRE(!fs::exists(link) || fs::is_symlink(link), link.string(),
                   " exists and is not the checkpoint link owlore keeps: move it away");
    fs::create_directory_symlink(name, fresh);
    fs::rename(fresh, link);  // atomic on POSIX: the old link or the new one, never neither
    for (const auto& entry : fs::directory_iterator(o.out_dir)) {
      const std::string other = entry.path().filename().string();
      if (other.rfind("checkpoint-", 0) == 0 && other != name) fs::remove_all(entry.path());
    }
  };

  // Resume: weights, optimizer, sampler, data position and step from a checkpoint.
  int first_step = 1;
  double resumed_first_val = 0;  // the step-0 validation loss of the interrupted run
  if (!o.resume_path.empty()) {
    const std::string state_path = o.resume_path + "/trainer_state.safetensors";
    const StateBundle state = load_state_bundle(state_path);
    OWLORE_REQUIRE(state.meta.at("run") == run_identity, state_path, ": the checkpoint belongs to another run (",
                   state.meta.at("run").dump(), "); this run is ", run_identity.dump());
    first_step = state.meta.at("step").get<int>() + 1;
    const int stop = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
    OWLORE_REQUIRE(first_step <= stop, "--resume: the checkpoint is at step ", first_step - 1, ", so --steps ", o.steps,
                   o.stop_at > 0 ? " / --stop-at " + std::to_string(o.stop_at) : std::string(), " leaves nothing to run");
    cursor.seed = state.meta.at("cursor_seed").get<uint64_t>();
    cursor.position = state.meta.at("cursor_position").get<int64_t>();
    mask.layers = state.meta.at("mask").at("layers").get<std::vector<bool>>();
    mask.embedding = state.meta.at("mask").at("embedding").get<bool>();
    mask.head = state.meta.at("mask").at("head").get<bool>();
    if (sampler) sampler->from_json(state.meta.at("sampler"));
    backend->set_mask(mask);
    backend->load_state(state);
    // Metrics past the checkpoint belong to the interrupted run: drop them.
    // A line cut short by the crash does not parse: it goes too.
    std::ifstream old(o.out_dir + "/metrics.jsonl");
    std::string kept_lines, line;
    while (std::getline(old, line)) {
      const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (record.is_discarded() || !record.is_object() || record.value("step", 0) >= first_step) continue;
      kept_lines += line + "\n";
      if (record.value("step", -1) == 0 && record.contains("val_loss")) resumed_first_val = record["val_loss"];
    }
    old.close();
    std::ofstream(o.out_dir + "/metrics.jsonl", std::ios::trunc) << kept_lines;
  }
  MetricsLog metrics(o.out_dir + "/metrics.jsonl", /*append=*/first_step > 1);

  std::printf("owlore train | %s (%s) | %.1fM parameters | method %s | device %s\n", config.name.c_str(),
              loaded.source.c_str(), config.total_params() / 1e6, o.method.c_str(), backend->device_name().c_str());
  std::printf("data %s: %lld train / %lld validation sequences of %d tokens | batch %d x %d x %d%s\n",
              o.data_path.c_str(), (long long)data.train.count(), (long long)data.val.count(), T, o.grad_accum, B, T,
              tokenizer ? "" : " | byte-level tokens");
  const std::string plan = backend->plan_table();
  if (!plan.empty()) std::printf("%s", plan.c_str());
  Progress progress(o.steps, o.log_every);
  TrainResult result;
  char text[160];
  if (first_step == 1) {
    result.first_val_loss = validation_loss();
    metrics.write({{"step", 0}, {"val_loss", result.first_val_loss}});
    std::snprintf(text, sizeof text, "step 0 | val_loss %.4f", result.first_val_loss);
    progress.line(text);
  } else {
    result.first_val_loss = resumed_first_val;
    progress.line("resumed from " + o.resume_path + " at step " + std::to_string(first_step));
  }

  const auto start = Clock::now();
  double steady_seconds = 0;  // steps 2..N: step 1 carries one-time costs (GEMM plans, caches)
  int64_t tokens_seen = (int64_t)(first_step - 1) * o.grad_accum * o.batch * o.seq;  // continues across a resume
  const int last_step = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  for (int step = first_step; step <= last_step; step++) {
    // Nsight: the profiler capture brackets --profile-steps, and every step is one NVTX range.
    if (step == o.profile_first) cudaProfilerStart();
    nvtxRangePushA(("step " + std::to_string(step)).c_str());
    const auto step_start = Clock::now();
    const float lr = schedule.at(step);
    if (sampler && sampler->resamples_at(step)) {
      const std::vector<int>& active = sampler->sample(step);
      mask.layers.assign(config.n_layers, false);
      for (int l : active) mask.layers[l] = true;
      backend->set_mask(mask, /*resample=*/true);
      if (step == 1 || o.log_every <= o.period) progress.line("step " + std::to_string(step) + " | training layers " +
                                                              join_ints(active));
    }
    // All micro-batches first: the loss is the mean over every kept target of the whole
    // accumulated batch, so accumulation equals one large batch of the same tokens.
    int64_t kept_total = 0;
    for (int micro = 0; micro < o.grad_accum; micro++)
      next_batch(data.train, cursor, B, inputs.data() + (int64_t)micro * B * T, targets.data() + (int64_t)micro * B * T);
    for (int32_t t : targets) kept_total += t >= 0;
    double loss_sum = 0;
    // A batch with no kept targets has no gradient: no backward (nor projector refreshes from a
    // zero gradient), no update.
    for (int micro = 0; micro < o.grad_accum && kept_total > 0; micro++) {
      const int64_t offset = (int64_t)micro * B * T;
      loss_sum += backend->forward_backward(inputs.data() + offset, targets.data() + offset, B, T,
                                            kept_total ? 1.0f / (float)kept_total : 0.0f);
    }
    const double loss = kept_total ? loss_sum / kept_total : 0.0;
    const double grad_norm = std::sqrt(backend->grad_sum_squares());
    OWLORE_REQUIRE(std::isfinite(loss) && std::isfinite(grad_norm), "step ", step, ": loss ", loss, ", gradient norm ",
                   grad_norm, " is not finite (lower --lr?)");
    const float clip_scale = (o.clip > 0 && grad_norm > o.clip) ? (float)(o.clip / grad_norm) : 1.0f;
    // A batch whose targets are all masked carries no signal: no update (Adam's momentum and the
    // weight decay would still move the weights), and the step is marked in the metrics.
    if (kept_total > 0) backend->optimizer_step(lr, clip_scale);

    tokens_seen += (int64_t)o.grad_accum * B * T;
    const double elapsed = seconds_since(start);
    const double step_seconds = seconds_since(step_start);
    if (step > first_step) steady_seconds += step_seconds;
    const double tokens_per_s = (double)o.grad_accum * B * T / std::max(1e-9, step_seconds);
    const MemoryReport memory = backend->memory();
    const double mfu = tokens_per_s * training_flops_per_token(config, mask, T) / kDatasheetBf16Flops;
    result.train_losses.push_back(loss);
    nlohmann::json record = {{"step", step},
                             {"loss", loss},
                             {"lr", lr},
                             {"grad_norm", grad_norm},
                             {"tokens_per_s", tokens_per_s},
                             {"mfu", mfu},
                             {"tokens", tokens_seen},
                             {"elapsed_s", elapsed},
                             {"memory_bytes", memory.in_use_bytes},
                             {"peak_memory_bytes", memory.peak_bytes}};
    if (sampler) record["active_layers"] = sampler->current;
    if (kept_total == 0) record["skipped"] = "no kept targets in the batch";
    const ProjectorReport projectors = backend->projector_report();
    if (projectors.refreshes > 0) {
      record["projector_refreshes"] = projectors.refreshes;
      record["captured_energy_mean"] = projectors.mean_energy;
      record["captured_energy_min"] = projectors.min_energy;
    }
    progress.step(step, loss, lr, tokens_per_s, elapsed);
    if ((o.val_every > 0 && step % o.val_every == 0) || step == last_step) {
      result.last_val_loss = validation_loss();
      record["val_loss"] = result.last_val_loss;
      std::snprintf(text, sizeof text, "step %d | val_loss %.4f", step, result.last_val_loss);
      progress.line(text);
    }
    metrics.write(record);
    nvtxRangePop();
    if (step == o.profile_last) cudaProfilerStop();
    if (o.save_every > 0 && step % o.save_every == 0 && step < last_step) save(step);
  }
  progress.finish();
  if (o.save_final) {
    result.checkpoint_dir = o.out_dir + "/checkpoint";
    save(last_step);
  }
  // Steady throughput: training steps 2..N, validation and checkpoints excluded.
  const int64_t steady_tokens = (int64_t)(last_step - first_step) * o.grad_accum * B * T;
  result.tokens_per_s = last_step > first_step ? steady_tokens / std::max(1e-9, steady_seconds)
                                    : (double)o.grad_accum * B * T / std::max(1e-9, seconds_since(start));
  const double mfu = result.tokens_per_s * training_flops_per_token(config, mask, T) / kDatasheetBf16Flops;
  char mfu_text[96] = "";
  if (o.device == "cuda")
    std::snprintf(mfu_text, sizeof mfu_text, " (MFU %.1f%% of the 989 TFLOP/s bf16 datasheet peak)", 100 * mfu);
  std::printf("done: step %d of %d, %.0f tokens/s%s, validation loss %.4f -> %.4f, peak %s %s\n"
              "  metrics %s/metrics.jsonl\n  model %s\n",
              last_step, o.steps, result.tokens_per_s, mfu_text, result.first_val_loss, result.last_val_loss,
              o.device == "cuda" ? "GPU memory" : "weights+gradients+optimizer state",
              format_bytes(backend->memory().peak_bytes).c_str(), o.out_dir.c_str(),
              o.save_final ? result.checkpoint_dir.c_str() : "(not saved: --no-checkpoint)");
  return result;
}

}  // namespace owlore
