#include "train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>

#include <cuda_profiler_api.h>
#include <nvtx3/nvToolsExt.h>

#include "base/error.h"
#include "base/format.h"
#include "base/state_reader.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/model_tokenizer.h"
#include "io/token_data.h"
#include "model/config.h"
#include "model/layout.h"
#include "model/model_cpu.h"
#include "optim/outliers.h"
#include "optim/outliers_gpu.h"
#include "optim/sampler.h"
#include "train/backend.h"
#include "train/flops.h"
#include "train/metrics.h"
#include "train/run_dir.h"
#include "train/schedule.h"

namespace owlore {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool finite_in(double x, double lo, double hi) { return std::isfinite(x) && x >= lo && x <= hi; }

// Tokens of one optimizer step must fit the host batch buffers (int32 positions, a few GiB).
constexpr int64_t kMaxTokensPerStep = int64_t(1) << 28;

// A flag that does nothing here is refused when the user gave it (not when a default sets it).
void refuse_given(const TrainOptions& o, std::initializer_list<const char*> flags, bool applies, const std::string& why) {
  for (const char* flag : flags)
    OWLORE_REQUIRE(applies || std::find(o.given_flags.begin(), o.given_flags.end(), flag) == o.given_flags.end(), flag,
                   " has no effect ", why, ": leave it out");
}

void validate(const TrainOptions& o) {
  // A resume whose directory holds no checkpoint is the error to report, not the flags its missing
  // config.toml would have supplied.
  if (!o.resume_path.empty()) resolve_checkpoint_dir(o.resume_path);
  OWLORE_REQUIRE(!o.data_path.empty(), "--data is required");
  OWLORE_REQUIRE(o.preset.empty() != o.model_path.empty(), "give exactly one of --preset and --model");
  OWLORE_REQUIRE(o.steps >= 1, "--steps must be >= 1, got ", o.steps);
  OWLORE_REQUIRE(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  OWLORE_REQUIRE(o.seq >= 1, "--seq must be >= 1, got ", o.seq);
  OWLORE_REQUIRE(o.grad_accum >= 1, "--grad-accum must be >= 1, got ", o.grad_accum);
  OWLORE_REQUIRE((int64_t)o.grad_accum * o.batch * o.seq <= kMaxTokensPerStep, "--grad-accum ", o.grad_accum,
                 " x --batch ", o.batch, " x --seq ", o.seq, " = ", (int64_t)o.grad_accum * o.batch * o.seq,
                 " tokens per step, more than the ", kMaxTokensPerStep, " a step may hold");
  OWLORE_REQUIRE(std::isfinite(o.lr) && o.lr > 0, "--lr must be a finite number > 0, got ", o.lr);
  OWLORE_REQUIRE(finite_in(o.min_lr_ratio, 0, 1), "--min-lr-ratio must be in [0, 1], got ", o.min_lr_ratio);
  OWLORE_REQUIRE(o.warmup_steps >= -1, "--warmup must be >= 0 (or -1: 5% of --steps), got ", o.warmup_steps);
  OWLORE_REQUIRE(finite_in(o.weight_decay, 0, 1e30), "--weight-decay must be a finite number >= 0, got ",
                 o.weight_decay);
  OWLORE_REQUIRE(finite_in(o.clip, 0, 1e30), "--clip must be a finite number >= 0 (0: off), got ", o.clip);
  OWLORE_REQUIRE(finite_in(o.beta1, 0, 1) && o.beta1 < 1 && finite_in(o.beta2, 0, 1) && o.beta2 < 1,
                 "--beta1/--beta2 must be in [0, 1), got ", o.beta1, " / ", o.beta2);
  OWLORE_REQUIRE(finite_in(o.eps, 0, 1) && o.eps > 0, "--eps must be a finite number in (0, 1], got ", o.eps);
  OWLORE_REQUIRE(finite_in(o.val_fraction, 0, 1) && o.val_fraction > 0 && o.val_fraction < 1,
                 "--val-fraction must be in (0, 1), got ", o.val_fraction);
  OWLORE_REQUIRE(o.val_every >= 0, "--val-every must be >= 0, got ", o.val_every);
  OWLORE_REQUIRE(o.val_batches >= 1, "--val-batches must be >= 1, got ", o.val_batches);
  OWLORE_REQUIRE(o.log_every >= 1, "--log-every must be >= 1, got ", o.log_every);
  OWLORE_REQUIRE(o.save_every >= 0, "--save-every must be >= 0, got ", o.save_every);
  OWLORE_REQUIRE(o.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1, got ", o.keep_checkpoints);
  OWLORE_REQUIRE(o.lm_head_chunk_tokens >= 1, "--lm-head-chunk must be >= 1, got ", o.lm_head_chunk_tokens);
  OWLORE_REQUIRE((o.profile_first == 0 && o.profile_last == 0) || (o.profile_first >= 1 && o.profile_last >= o.profile_first),
                 "--profile-steps must be A:B with 1 <= A <= B, got ", o.profile_first, ":", o.profile_last);
  OWLORE_REQUIRE(o.stop_at >= 0, "--stop-at must be >= 0, got ", o.stop_at);
  OWLORE_REQUIRE(o.gamma >= 1, "--gamma must be >= 1, got ", o.gamma);
  OWLORE_REQUIRE(o.period >= 1, "--period must be >= 1, got ", o.period);
  OWLORE_REQUIRE(o.rank >= 1, "--rank must be >= 1, got ", o.rank);
  OWLORE_REQUIRE(o.proj_gap >= 1, "--proj-gap must be >= 1, got ", o.proj_gap);
  OWLORE_REQUIRE(finite_in(o.galore_scale, 0, 1e30) && o.galore_scale > 0,
                 "--galore-scale must be a finite number > 0, got ", o.galore_scale);
  OWLORE_REQUIRE(finite_in(o.outlier_threshold, 0, 1e30) && o.outlier_threshold > 0,
                 "--outlier-threshold must be a finite number > 0, got ", o.outlier_threshold);
  OWLORE_REQUIRE(o.outlier_samples >= 1, "--outlier-samples must be >= 1, got ", o.outlier_samples);
  OWLORE_REQUIRE(o.outlier_seq >= 1, "--outlier-seq must be >= 1, got ", o.outlier_seq);
  const std::string with_method = std::string("with --method ") + name(o.method);
  refuse_given(o, {"--rank", "--proj-gap", "--galore-scale", "--projector"}, uses_galore(o.method),
               with_method + " (it sets GaLore: owlore, galore)");
  refuse_given(o, {"--gamma", "--period", "--state"}, samples_layers(o.method),
               with_method + " (it sets layer sampling: lisa, ows, owlore)");
  refuse_given(o, {"--outliers", "--outlier-threshold", "--outlier-samples", "--outlier-seq"},
               samples_by_outliers(o.method), with_method + " (it sets outlier-weighted sampling: ows, owlore)");
}

// The checks that depend on where the run goes (--device auto is resolved by then).
void validate_device(const TrainOptions& o, Device device) {
  refuse_given(o, {"--moments", "--lm-head-chunk", "--profile-steps"}, device == Device::cuda,
               std::string("with --device ") + name(device) + " (a GPU option)");
  OWLORE_REQUIRE(!o.offload_activations || device == Device::cuda,
                 "--offload-activations moves GPU activations to the host; it has no meaning with --device ", name(device));
  OWLORE_REQUIRE(!o.offload_activations || o.recompute == Recompute::layer,
                 "--offload-activations needs --recompute layer (only the layer inputs are offloaded), got --recompute ",
                 name(o.recompute));
  OWLORE_REQUIRE(o.recompute == Recompute::none || device == Device::cuda, "--recompute ", name(o.recompute),
                 " is a GPU option (the CPU trainer keeps every activation); with --device ", name(device),
                 " leave it at none");
}

const char* const kPassTokenizerHint =
    "pass --tokenizer naming a model that has the tokenizer of this vocabulary (a GGUF file or a directory with "
    "tokenizer.json)";

// Where the run's tokenizer (and chat template) comes from: --tokenizer, else the model.
const std::string& tokenizer_source(const TrainOptions& o) { return o.tokenizer_path.empty() ? o.model_path : o.tokenizer_path; }

Dataset load_training_data(const TrainOptions& o, const ModelConfig& config, const Tokenizer* tokenizer) {
  const InstructOptions instruct =
      chat_data_options(tokenizer_source(o), o.chat_template, o.train_on, o.system, o.skip_bad_lines, tokenizer,
                        config.vocab, config.name,
                        kPassTokenizerHint);
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
std::vector<double> outlier_distribution(const TrainOptions& o, Device device, const ModelLayout& layout,
                                         const std::vector<float>& weights, const Dataset& data) {
  if (!o.outliers_path.empty()) return read_outlier_file(o.outliers_path, layout.config.n_layers).D;
  const int seq = std::min(o.outlier_seq, data.train.row_len - 1);
  const int n = (int)std::min<int64_t>(o.outlier_samples, data.train.count());
  std::vector<int32_t> tokens((int64_t)n * seq);
  for (int r = 0; r < n; r++)
    std::copy_n(data.train.tokens.begin() + (int64_t)r * data.train.row_len, seq, tokens.begin() + (int64_t)r * seq);
  OutlierOptions options;
  options.threshold = o.outlier_threshold;
  options.progress = calibration_progress_printer();
  // The GPU calibration's model lives only for this call: its memory is free again before the
  // training backend plans its own.
  std::vector<double> D = device == Device::cuda
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

// The shortest decimal that reads back as f: flags compare and print as the user wrote them.
std::string float_text(float f) {
  char buf[32];
  for (int digits = 6; digits <= 9; digits++) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, f);
    if (std::strtof(buf, nullptr) == f) break;
  }
  return buf;
}

// FNV-1a over the packed rows and their loss masks: the data a resumed run must see again.
uint64_t data_fingerprint(const Dataset& data) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* p, size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const TokenRows* rows : {&data.train, &data.val}) {
    mix(rows->tokens.data(), rows->tokens.size() * sizeof(int32_t));
    mix(rows->loss_mask.data(), rows->loss_mask.size());
  }
  return h;
}

// What a resumed run must share with the run that wrote the checkpoint, keyed by the flag that
// sets it: everything that decides the trajectory. Flags left out (--steps, --stop-at,
// --save-every, --log-every, --val-every, --val-batches, --recompute, --offload-activations,
// --lm-head-chunk, --save-dtype, --keep-checkpoints, --profile-steps, --out) may change.
nlohmann::json run_identity(const TrainOptions& o, Device device, const ModelConfig& config, int64_t parameters,
                            const Dataset& data) {
  return {{"--method", name(o.method)},
          {"--device", name(device)},
          {"model", config.name + " (" + std::to_string(parameters) + " parameters)"},
          {"--data", {{"train_rows", data.train.count()},
                      {"validation_rows", data.val.count()},
                      {"fingerprint", std::to_string(data_fingerprint(data))}}},
          {"--batch", o.batch},
          {"--seq", o.seq},
          {"--grad-accum", o.grad_accum},
          {"--lr", float_text(o.lr)},
          {"--min-lr-ratio", float_text(o.min_lr_ratio)},
          {"--warmup", o.warmup_steps},
          {"--weight-decay", float_text(o.weight_decay)},
          {"--beta1", float_text(o.beta1)},
          {"--beta2", float_text(o.beta2)},
          {"--eps", float_text(o.eps)},
          {"--clip", float_text(o.clip)},
          {"--val-fraction", o.val_fraction},
          {"--seed", o.seed},
          {"--moments", name(o.moments)},
          {"--freeze-embeddings", o.freeze_embeddings},
          {"--state", name(o.state_policy)},
          {"--gamma", o.gamma},
          {"--period", o.period},
          {"--outliers", o.outliers_path},
          {"--outlier-threshold", o.outlier_threshold},
          {"--outlier-samples", o.outlier_samples},
          {"--outlier-seq", o.outlier_seq},
          {"--rank", o.rank},
          {"--proj-gap", o.proj_gap},
          {"--galore-scale", float_text(o.galore_scale)},
          {"--projector", name(o.projector)}};
}

// Refuses a resume whose trajectory-deciding flags differ from the checkpoint's, naming each.
void check_same_run(const JsonFields& meta, const nlohmann::json& now, const std::string& source) {
  const JsonFields saved = meta.object("run");
  std::string differences;
  int count = 0;
  for (const auto& item : now.items()) {
    const std::string was = saved.has(item.key()) ? saved.raw(item.key()).dump() : "(none)";
    if (saved.has(item.key()) && saved.raw(item.key()) == item.value()) continue;
    differences += std::string(count++ ? "; " : "") + item.key() + " " + item.value().dump() + " (checkpoint: " + was + ")";
  }
  for (const std::string& key : saved.keys())
    if (!now.contains(key)) differences += std::string(count++ ? "; " : "") + key + " (only in the checkpoint)";
  OWLORE_REQUIRE(count == 0, "--resume ", source, ": this run differs from the one that wrote the checkpoint in ",
                 differences,
                 ". Leave those flags out (the checkpoint's config.toml supplies them), or start a new run");
}

// SIGINT / SIGTERM: the loop finishes its step, saves a checkpoint and stops. The same stop often
// arrives twice (timeout, Slurm and a terminal's Ctrl-C signal the process and its group): a repeat
// within a second is that one; a later one is the user insisting, and ends the process at once.
std::atomic<int> g_stop_signal{0};
std::atomic<int64_t> g_stop_time_ns{0};
int64_t monotonic_ns() {  // clock_gettime is async-signal-safe
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
extern "C" void on_stop_signal(int sig) {
  const int64_t now = monotonic_ns();
  if (g_stop_signal.load() == 0) {
    g_stop_time_ns.store(now);
    g_stop_signal.store(sig);
    return;
  }
  if (now - g_stop_time_ns.load() < 1000000000) return;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}
struct StopSignals {
  using Handler = void (*)(int);
  Handler previous_int, previous_term;
  StopSignals() {
    g_stop_signal.store(0);
    previous_int = std::signal(SIGINT, on_stop_signal);
    previous_term = std::signal(SIGTERM, on_stop_signal);
  }
  ~StopSignals() {
    std::signal(SIGINT, previous_int);
    std::signal(SIGTERM, previous_term);
  }
};

const std::vector<std::string> kStateMetaKeys = {"run",  "step",    "cursor_seed", "cursor_position",
                                                 "mask", "sampler", "adam.steps",  "galore"};

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
  // The checkpoint is read first: a damaged or foreign one fails before anything is loaded.
  const bool resuming = !o.resume_path.empty();
  const std::string resume_dir = resuming ? resolve_checkpoint_dir(o.resume_path) : std::string();
  const std::string state_path = resume_dir + "/trainer_state.safetensors";
  const StateBundle saved = resuming ? load_state_bundle(state_path) : StateBundle{};

  const LoadedModel loaded = load_model_or_preset(o.model_path, o.preset, o.seed + 1);
  const ModelConfig& config = loaded.config;
  const Device device = resolve_device(o.device, config);
  validate_device(o, device);
  require_seq_fits(config, o.seq);
  const ModelLayout layout(config);
  const std::unique_ptr<Tokenizer> tokenizer = load_model_tokenizer(tokenizer_source(o));
  OWLORE_REQUIRE(tokenizer || o.tokenizer_path.empty(), "--tokenizer ", o.tokenizer_path,
                 ": no tokenizer in it (expected a GGUF file or a directory with tokenizer.json)");
  // Read once, so every checkpoint carries the tokenizer the run trained with (see io/tokenizer_export.h).
  const TokenizerFiles tokenizer_files = checkpoint_tokenizer_files(tokenizer_source(o), config);
  const Dataset data = load_training_data(o, config, tokenizer.get());
  const nlohmann::json identity = run_identity(o, device, config, layout.total, data);
  StateReader state_in(saved, state_path);
  if (resuming) {
    const JsonFields meta = state_in.meta();
    for (const std::string& key : meta.keys())
      OWLORE_REQUIRE(std::find(kStateMetaKeys.begin(), kStateMetaKeys.end(), key) != kStateMetaKeys.end(),
                     meta.path(key), ": unknown key (not written by owlore train)");
    check_same_run(meta, identity, state_path);
  }

  // Which decoder layers train: all (full, galore) or a sampled few (lisa, ows, owlore).
  const bool sampled = samples_layers(o.method);
  OWLORE_REQUIRE(!sampled || o.gamma <= config.n_layers, "--gamma ", o.gamma, " exceeds the model's ", config.n_layers,
                 " decoder layers");
  RunDir run(o.out_dir, resuming, o.overwrite);
  // The config records the device the run resolved to: a resume elsewhere must not switch it.
  std::string config_toml = o.config_toml;
  const size_t auto_device = config_toml.find("\ndevice=\"auto\"\n");
  if (auto_device != std::string::npos)
    config_toml.replace(auto_device, 15, std::string("\ndevice=\"") + name(device) + "\"\n");
  if (!config_toml.empty()) write_file_atomically(run.file("config.toml"), config_toml);
  if (device == Device::cpu)
    std::printf("note: training on the CPU: this is the fp32 CPU twin, single-threaded, the engine of the tests "
                "(SmolLM2-135M runs at about 3-6 tokens/s); use a GPU (--device cuda) for real runs\n");
  std::unique_ptr<LayerSampler> sampler;
  if (o.method == Method::lisa) {
    sampler = std::make_unique<LayerSampler>(LayerSampler::uniform(config.n_layers, o.gamma, o.period, o.seed));
  } else if (sampled) {
    const std::vector<double> D = outlier_distribution(o, device, layout, loaded.weights, data);
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
  optim.galore = uses_galore(o.method);
  optim.stream_galore_gradients = o.grad_accum == 1;
  optim.micro_batches_per_step = o.grad_accum;
  optim.train_embeddings = !o.freeze_embeddings;
  optim.galore_config.rank = o.rank;
  optim.galore_config.proj_gap = o.proj_gap;
  optim.galore_config.scale = o.galore_scale;
  optim.galore_config.mode = o.projector;
  std::unique_ptr<TrainBackend> backend =
      device == Device::cpu
          ? make_cpu_backend(layout, loaded.weights, optim)
          : make_gpu_backend(layout, loaded.weights, optim,
                             GpuModelOptions{o.batch, o.seq, o.lm_head_chunk_tokens, o.recompute, o.offload_activations},
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
    OWLORE_REQUIRE(kept > 0, o.data_path, ": the validation rows hold no target token (every one is masked)");
    return sum / kept;
  };
  BatchCursor cursor;
  cursor.seed = o.seed;
  const int64_t rows_per_step = (int64_t)o.grad_accum * B;
  // A checkpoint is written only from weights that are all finite (the last good one stays
  // linked otherwise): see RunDir for how it is made durable.
  std::string last_checkpoint;
  auto save = [&](int step) {
    StateBundle state;
    backend->save_state(state);
    const std::vector<float>& weights = state.tensors.at("weights");
    int64_t bad = 0;
    for (float w : weights) bad += !std::isfinite(w);
    OWLORE_REQUIRE(bad == 0, "step ", step, ": ", bad, " of ", weights.size(),
                   " weights are not finite: no checkpoint written",
                   last_checkpoint.empty() ? std::string() : " (the last good one stays linked: " + last_checkpoint + ")");
    state.meta["run"] = identity;
    state.meta["step"] = step;
    state.meta["cursor_seed"] = std::to_string(cursor.seed);
    state.meta["cursor_position"] = cursor.position;
    state.meta["mask"] = {{"layers", mask.layers}, {"embedding", mask.embedding}, {"head", mask.head}};
    if (sampler) state.meta["sampler"] = sampler->to_json();
    last_checkpoint = run.save(step, o.keep_checkpoints, [&](const std::string& dir) {
      save_hf_checkpoint(dir, layout, weights.data(), o.save_dtype, tokenizer_files);
      save_state_bundle(dir + "/trainer_state.safetensors", state);
      if (!config_toml.empty()) write_file_atomically(dir + "/config.toml", config_toml);
    });
  };

  // Resume: weights, optimizer, sampler, data position and step from a checkpoint, every field
  // checked against this run.
  int first_step = 1;
  double resumed_first_val = 0;  // the step-0 validation loss of the interrupted run
  const int last_step = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  if (resuming) {
    const JsonFields meta = state_in.meta();
    const int saved_step = (int)meta.integer("step", 1, std::numeric_limits<int>::max() - 1);
    first_step = saved_step + 1;
    OWLORE_REQUIRE(first_step <= last_step, "--resume: the checkpoint is at step ", saved_step, ", so --steps ", o.steps,
                   o.stop_at > 0 ? " / --stop-at " + std::to_string(o.stop_at) : std::string(), " leaves nothing to run");
    cursor.seed = meta.unsigned64("cursor_seed");
    cursor.position = meta.integer("cursor_position", 0, std::numeric_limits<int64_t>::max());
    OWLORE_REQUIRE(cursor.position == (int64_t)saved_step * rows_per_step, meta.path("cursor_position"), ": ",
                   cursor.position, " rows, but ", saved_step, " steps of ", rows_per_step, " rows consume ",
                   (int64_t)saved_step * rows_per_step);
    const JsonFields m = meta.object("mask");
    mask.layers = m.booleans("layers");
    OWLORE_REQUIRE((int)mask.layers.size() == config.n_layers, m.path("layers"), ": ", mask.layers.size(),
                   " entries, the model has ", config.n_layers, " decoder layers");
    mask.embedding = m.boolean("embedding");
    mask.head = m.boolean("head");
    OWLORE_REQUIRE(mask.embedding == !o.freeze_embeddings && mask.head == !o.freeze_embeddings, m.where(),
                   ": the embedding and head ", o.freeze_embeddings ? "train" : "are frozen",
                   " in the checkpoint, not in this run (--freeze-embeddings)");
    std::vector<int> active;
    for (int l = 0; l < config.n_layers; l++)
      if (mask.layers[l]) active.push_back(l);
    OWLORE_REQUIRE(meta.has("sampler") == (sampler != nullptr), meta.where(),
                   sampler ? ": no 'sampler' state, which --method " + std::string(name(o.method)) + " needs"
                           : ": a 'sampler' state, which --method " + std::string(name(o.method)) + " has no use for");
    if (sampler) {
      sampler->from_json(meta.object("sampler"));
      OWLORE_REQUIRE(active == sampler->current, m.path("layers"), ": trains layers ", join_ints(active),
                     ", the sampler's current sample is ", join_ints(sampler->current));
    } else {
      OWLORE_REQUIRE((int)active.size() == config.n_layers, m.path("layers"), ": trains layers ", join_ints(active),
                     ", but --method ", name(o.method), " trains every layer");
    }
    backend->set_mask(mask);
    backend->load_state(state_in);
    state_in.finish();
    // Metrics past the checkpoint belong to the interrupted run: drop them (a line cut short by
    // a crash does not parse: it goes too). Rewritten atomically: a kill here loses nothing.
    std::ifstream old(run.file("metrics.jsonl"));
    std::string kept_lines, line;
    while (std::getline(old, line)) {
      const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (record.is_discarded() || !record.is_object() || !record.contains("step") ||
          !record["step"].is_number_integer() || record["step"].get<int64_t>() >= first_step)
        continue;
      kept_lines += line + "\n";
      if (record["step"] == 0 && record.contains("val_loss") && record["val_loss"].is_number())
        resumed_first_val = record["val_loss"];
    }
    old.close();
    write_file_atomically(run.file("metrics.jsonl"), kept_lines);
  }
  MetricsLog metrics(run.file("metrics.jsonl"), /*append=*/resuming);

  std::printf("owlore train | %s (%s) | %.1fM parameters | method %s | device %s\n", config.name.c_str(),
              loaded.source.c_str(), config.total_params() / 1e6, name(o.method), backend->device_name().c_str());
  std::printf("data %s: %lld train / %lld validation sequences of %d tokens | batch %d x %d x %d%s\n",
              o.data_path.c_str(), (long long)data.train.count(), (long long)data.val.count(), T, o.grad_accum, B, T,
              tokenizer ? "" : " | byte-level tokens");
  const std::string plan = backend->plan_table();
  if (!plan.empty()) std::printf("%s", plan.c_str());
  std::fflush(stdout);
  Progress progress(first_step - 1, o.steps, o.log_every);
  TrainResult result;
  char text[160];
  if (first_step == 1) {
    result.first_val_loss = validation_loss();
    OWLORE_REQUIRE(std::isfinite(result.first_val_loss), "the validation loss of the model before training is ",
                   result.first_val_loss, ": the weights hold non-finite values");
    metrics.write({{"step", 0}, {"val_loss", result.first_val_loss}});
    std::snprintf(text, sizeof text, "step 0 | val_loss %.4f", result.first_val_loss);
    progress.line(text);
  } else {
    result.first_val_loss = resumed_first_val;
    progress.line("resumed from " + resume_dir + " at step " + std::to_string(first_step));
  }

  const StopSignals stop_signals;
  const auto start = Clock::now();
  double steady_seconds = 0;  // steps 2..N: step 1 carries one-time costs (GEMM plans, caches)
  int64_t tokens_seen = (int64_t)(first_step - 1) * o.grad_accum * o.batch * o.seq;  // continues across a resume
  int step_done = first_step - 1;
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
    // Checked before the update: a bad step never reaches the weights, and the last checkpoint
    // stays the last good one.
    OWLORE_REQUIRE(std::isfinite(loss) && std::isfinite(grad_norm), "step ", step, ": loss ", loss, ", gradient norm ",
                   grad_norm, " is not finite (lower --lr?); the run stops without saving");
    OWLORE_REQUIRE(kept_total == 0 || grad_norm > 0, "step ", step, ": the gradient norm is exactly 0 with loss ",
                   loss, ": the model has collapsed (its outputs no longer depend on the trained weights; lower --lr?); the run ",
                   "stops without saving");
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
    const int signal = g_stop_signal.load();
    if ((o.val_every > 0 && step % o.val_every == 0) || step == last_step || signal) {
      result.last_val_loss = validation_loss();
      record["val_loss"] = result.last_val_loss;
      std::snprintf(text, sizeof text, "step %d | val_loss %.4f", step, result.last_val_loss);
      progress.line(text);
    }
    metrics.write(record);
    nvtxRangePop();
    if (step == o.profile_last) cudaProfilerStop();
    if (record.contains("val_loss"))
      OWLORE_REQUIRE(std::isfinite(result.last_val_loss), "step ", step, ": the validation loss is ",
                     result.last_val_loss, " (the weights hold non-finite values; lower --lr?); the run stops ",
                     "without saving");
    step_done = step;
    if (signal) {
      progress.finish();
      save(step);
      throw Interrupted(signal, std::string(signal == SIGINT ? "SIGINT" : "SIGTERM") + " after step " +
                                    std::to_string(step) + ": checkpoint " + last_checkpoint +
                                    " written; --resume " + o.out_dir + " continues");
    }
    if (o.save_every > 0 && step % o.save_every == 0 && step < last_step) save(step);
  }
  progress.finish();
  if (o.save_final) {
    save(last_step);
    result.checkpoint_dir = last_checkpoint;
  }
  // Steady throughput: training steps 2..N, validation and checkpoints excluded.
  const int64_t steady_tokens = (int64_t)(last_step - first_step) * o.grad_accum * B * T;
  result.tokens_per_s = last_step > first_step ? steady_tokens / std::max(1e-9, steady_seconds)
                                    : (double)o.grad_accum * B * T / std::max(1e-9, seconds_since(start));
  const double mfu = result.tokens_per_s * training_flops_per_token(config, mask, T) / kDatasheetBf16Flops;
  char mfu_text[96] = "";
  if (device == Device::cuda)
    std::snprintf(mfu_text, sizeof mfu_text, " (MFU %.1f%% of the 989 TFLOP/s bf16 datasheet peak)", 100 * mfu);
  std::printf("done: step %d of %d, %.0f tokens/s%s, validation loss %.4f -> %.4f, peak %s %s\n"
              "  metrics %s/metrics.jsonl\n  model %s\n",
              step_done, o.steps, result.tokens_per_s, mfu_text, result.first_val_loss, result.last_val_loss,
              device == Device::cuda ? "GPU memory" : "weights+gradients+optimizer state",
              format_bytes(backend->memory().peak_bytes).c_str(), o.out_dir.c_str(),
              o.save_final ? result.checkpoint_dir.c_str() : "(not saved: --no-checkpoint)");
  return result;
}

}  // namespace owlore
