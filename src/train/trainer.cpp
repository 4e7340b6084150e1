#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "base/error.h"
#include "io/dataset.h"
#include "kernels/ref/ops_ref.h"
#include "model/config.h"
#include "model/layout.h"
#include "model/model_cpu.h"
#include "optim/adamw_cpu.h"
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
  OWLORE_REQUIRE(o.device == "cpu", "--device cuda: the GPU trainer is not built yet; use --device cpu");
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
}

}  // namespace

void check_method(const std::string& method) {
  if (method == "full") return;
  if (method == "lisa" || method == "owlore" || method == "ows" || method == "galore")
    fail("--method ", method, ": not available yet in this build (only 'full' is)");
  fail("--method: unknown method '", method, "' (expected full, lisa, owlore, ows or galore)");
}

TrainResult run_training(const TrainOptions& o) {
  validate(o);
  OWLORE_REQUIRE(o.model_path.empty(), "--model: loading checkpoints is not available in this build; use --preset");
  const ModelConfig config = preset_config(o.preset);
  OWLORE_REQUIRE(o.seq <= config.max_seq, "--seq ", o.seq, " does not fit the model's context of ", config.max_seq,
                 " tokens");
  const ModelLayout layout(config);

  // Data: byte-level tokens until a tokenizer comes with the model.
  OWLORE_REQUIRE(config.vocab >= 256, "byte-level data needs a vocabulary of at least 256 tokens; preset '",
                 config.name, "' has ", config.vocab);
  const std::string text = read_text_file(o.data_path);
  const Dataset data = pack_dataset(byte_tokens(text), {}, o.seq, o.val_fraction);
  OWLORE_REQUIRE(data.train.count() >= o.batch, o.data_path, ": ", data.train.count(),
                 " training sequences of ", o.seq + 1, " tokens, fewer than one batch of ", o.batch,
                 " (lower --batch or --seq)");

  std::filesystem::create_directories(o.out_dir);
  MetricsLog metrics(o.out_dir + "/metrics.jsonl", false);

  std::vector<float> weights(layout.total), grads(layout.total, 0.0f);
  init_weights(layout, weights.data(), o.seed + 1);
  CpuModel<float> model(layout);
  const TrainMask mask = TrainMask::all(config.n_layers);
  CpuAdamW optimizer(layout, AdamWConfig{o.beta1, o.beta2, o.eps, o.weight_decay});
  LrSchedule schedule{o.lr, o.min_lr_ratio, o.warmup_steps >= 0 ? o.warmup_steps : o.steps / 20, o.steps};

  const int B = o.batch, T = o.seq;
  std::vector<int32_t> inputs((int64_t)o.grad_accum * B * T), targets(inputs.size());
  auto validation_loss = [&] {
    double sum = 0;
    int64_t kept = 0;
    for (int i = 0; i < o.val_batches; i++) {
      fixed_batch(data.val, (int64_t)i * B, B, inputs.data(), targets.data());
      int64_t k = 0;
      sum += model.forward(weights.data(), inputs.data(), targets.data(), B, T, &k);
      kept += k;
    }
    return kept ? sum / kept : 0.0;
  };

  std::printf("owlore train | %s | %.2fM parameters | method %s | device %s\n", config.name.c_str(),
              config.total_params() / 1e6, o.method.c_str(), o.device.c_str());
  std::printf("data %s: %lld train / %lld validation sequences of %d tokens | batch %d x %d x %d\n",
              o.data_path.c_str(), (long long)data.train.count(), (long long)data.val.count(), T, o.grad_accum, B, T);
  Progress progress(o.steps, o.log_every);
  TrainResult result;
  result.first_val_loss = validation_loss();
  metrics.write({{"step", 0}, {"val_loss", result.first_val_loss}});
  progress.line("step 0 | val_loss " + std::to_string(result.first_val_loss));

  BatchCursor cursor{o.seed, 0};
  const auto start = Clock::now();
  int64_t tokens_seen = 0;
  for (int step = 1; step <= o.steps; step++) {
    const auto step_start = Clock::now();
    const float lr = schedule.at(step);
    // All micro-batches first: the loss is the mean over every kept target of the whole
    // accumulated batch, so accumulation equals one large batch of the same tokens.
    int64_t kept_total = 0;
    for (int micro = 0; micro < o.grad_accum; micro++) {
      next_batch(data.train, cursor, B, inputs.data() + (int64_t)micro * B * T, targets.data() + (int64_t)micro * B * T);
    }
    for (int32_t t : targets) kept_total += t >= 0;
    std::fill(grads.begin(), grads.end(), 0.0f);
    double loss_sum = 0;
    for (int micro = 0; micro < o.grad_accum; micro++) {
      const int64_t offset = (int64_t)micro * B * T;
      loss_sum += model.forward(weights.data(), inputs.data() + offset, targets.data() + offset, B, T, nullptr);
      if (kept_total > 0) model.backward(grads.data(), weights.data(), mask, 1.0f / (float)kept_total);
    }
    const double loss = kept_total ? loss_sum / kept_total : 0.0;
    double sum_sq = 0;
    for (const TensorSlot& t : layout.tensors)
      if (tensor_trains(layout, t, mask))
        sum_sq += sum_squares_ref(grads.data() + t.offset, t.numel());
    const double grad_norm = std::sqrt(sum_sq);
    OWLORE_REQUIRE(std::isfinite(loss) && std::isfinite(grad_norm), "step ", step, ": loss ", loss, ", gradient norm ",
                   grad_norm, " is not finite (lower --lr?)");
    const float clip_scale = (o.clip > 0 && grad_norm > o.clip) ? (float)(o.clip / grad_norm) : 1.0f;
    optimizer.step(weights.data(), grads.data(), mask, lr, clip_scale);

    tokens_seen += (int64_t)o.grad_accum * B * T;
    const double elapsed = seconds_since(start);
    const double tokens_per_s = (double)o.grad_accum * B * T / std::max(1e-9, seconds_since(step_start));
    result.train_losses.push_back(loss);
    nlohmann::json record = {{"step", step},         {"loss", loss},       {"lr", lr},
                             {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s}, {"tokens", tokens_seen},
                             {"elapsed_s", elapsed}};
    progress.step(step, loss, lr, tokens_per_s, elapsed);
    if ((o.val_every > 0 && step % o.val_every == 0) || step == o.steps) {
      result.last_val_loss = validation_loss();
      record["val_loss"] = result.last_val_loss;
      char text[96];
      std::snprintf(text, sizeof text, "step %d | val_loss %.4f", step, result.last_val_loss);
      progress.line(text);
    }
    metrics.write(record);
  }
  progress.finish();
  result.tokens_per_s = tokens_seen / std::max(1e-9, seconds_since(start));
  std::printf("done: %d steps, %.0f tokens/s, validation loss %.4f -> %.4f; metrics in %s/metrics.jsonl\n", o.steps,
              result.tokens_per_s, result.first_val_loss, result.last_val_loss, o.out_dir.c_str());
  return result;
}

}  // namespace owlore
