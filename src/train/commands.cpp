#include "train/commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/rng.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/model_tokenizer.h"
#include "io/token_data.h"
#include "model/decode_cpu.h"
#include "model/layout.h"
#include "model/model_cpu.h"
#include "optim/outliers.h"
#include "optim/outliers_gpu.h"
#include "train/backend.h"
#include "train/trainer.h"

namespace owlore {

namespace {

// Temperature + nucleus sampling; greedy at temperature 0.
int32_t pick_token(const std::vector<float>& logits, float temperature, float top_p, Rng& rng) {
  if (temperature <= 0.0f) return (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<double, int32_t>> probs(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); i++) {
    probs[i] = {std::exp((logits[i] - max_logit) / temperature), (int32_t)i};
    sum += probs[i].first;
  }
  std::sort(probs.begin(), probs.end(), std::greater<>());
  double kept = 0;
  size_t n = 0;
  while (n < probs.size() && (kept < top_p * sum || n == 0)) kept += probs[n++].first;
  double r = rng.uniform() * kept;
  for (size_t i = 0; i < n; i++)
    if ((r -= probs[i].first) <= 0) return probs[i].second;
  return probs[n - 1].second;
}

}  // namespace

std::string run_generate(const GenerateOptions& o) {
  OWLORE_REQUIRE(!o.model_path.empty(), "--model is required");
  OWLORE_REQUIRE(o.max_new_tokens >= 1, "--max-tokens must be >= 1, got ", o.max_new_tokens);
  OWLORE_REQUIRE(o.temperature >= 0, "--temperature must be >= 0, got ", o.temperature);
  OWLORE_REQUIRE(o.top_p > 0 && o.top_p <= 1, "--top-p must be in (0, 1], got ", o.top_p);
  const LoadedModel model = load_model(o.model_path);
  const ModelLayout layout(model.config);
  const std::unique_ptr<Tokenizer> tokenizer = load_model_tokenizer(o.model_path);
  OWLORE_REQUIRE(tokenizer != nullptr, o.model_path, ": the model has no tokenizer (GGUF metadata or tokenizer.json)");
  std::string text = o.prompt;
  ChatTemplate chat_template = ChatTemplate::kNone;
  if (!o.raw) {
    std::string why;
    chat_template = resolve_chat_template(o.chat_template, o.model_path, why);
    OWLORE_REQUIRE(chat_template != ChatTemplate::kAuto, "generate renders the prompt with the model's chat template: ",
                   why, "; pass --chat-template NAME (", choice_list(kChatTemplateChoices),
                   "), or --raw to continue the prompt text as is");
    std::vector<ChatMessage> messages;
    if (!o.system.empty()) messages.push_back({"system", o.system});
    messages.push_back({"user", o.prompt});
    text = format_chat(chat_template, messages, /*add_generation_prompt=*/true);
  }
  const std::vector<int32_t> prompt = tokenizer->encode(text);
  OWLORE_REQUIRE(!prompt.empty(), "the prompt encodes to no tokens");
  CpuDecoder decoder(layout, model.weights.data(), (int)prompt.size() + o.max_new_tokens);
  const std::vector<float>* logits = nullptr;
  for (int32_t t : prompt) logits = &decoder.step(t);
  // The template's end of turn (when the vocabulary has it as one token) ends the answer, as eos does.
  const int end_of_turn = *end_of_turn_text(chat_template) ? tokenizer->token_id(end_of_turn_text(chat_template)) : -1;
  Rng rng(o.seed);
  std::vector<int32_t> answer;
  std::string printed;
  for (int i = 0; i < o.max_new_tokens; i++) {
    const int32_t next = pick_token(*logits, o.temperature, o.top_p, rng);
    if (next == model.config.eos_token || next == end_of_turn || next == tokenizer->vocab().eos) break;
    answer.push_back(next);
    // Print what decodes so far (a multi-byte character may span tokens).
    const std::string decoded = tokenizer->decode(answer);
    std::fwrite(decoded.data() + printed.size(), 1, decoded.size() - printed.size(), stdout);
    std::fflush(stdout);
    printed = decoded;
    if (i + 1 < o.max_new_tokens) logits = &decoder.step(next);
  }
  std::printf("\n");
  return printed;
}

void run_eval(const EvalOptions& o) {
  OWLORE_REQUIRE(!o.data_path.empty(), "--data is required");
  OWLORE_REQUIRE(o.batch >= 1 && o.seq >= 1, "--batch and --seq must be >= 1");
  OWLORE_REQUIRE(o.max_batches >= 0, "--max-batches must be >= 0, got ", o.max_batches);
  OWLORE_REQUIRE(std::isfinite(o.val_fraction) && o.val_fraction > 0 && o.val_fraction < 1,
                 "--val-fraction must be in (0, 1), got ", o.val_fraction);
  const LoadedModel model = load_model_or_preset(o.model_path, o.preset, /*init_seed=*/1);
  const Device device = resolve_device(o.device, model.config);
  require_seq_fits(model.config, o.seq);
  const ModelLayout layout(model.config);
  const std::unique_ptr<Tokenizer> tokenizer =
      load_model_tokenizer(o.tokenizer_path.empty() ? o.model_path : o.tokenizer_path);
  OWLORE_REQUIRE(tokenizer || o.tokenizer_path.empty(), "--tokenizer ", o.tokenizer_path,
                 ": no tokenizer in it (expected a GGUF file or a directory with tokenizer.json)");
  const InstructOptions instruct =
      chat_data_options(o.tokenizer_path.empty() ? o.model_path : o.tokenizer_path, o.chat_template, o.train_on,
                        o.system, o.skip_bad_lines, tokenizer.get(), model.config.vocab, model.config.name,
                        "pass --tokenizer naming a model that has the tokenizer of this vocabulary (a GGUF file or a "
                        "directory with tokenizer.json)");
  const TokenStream stream = load_token_stream(o.data_path, tokenizer.get(), instruct);
  const int row_len = o.seq + 1;
  TokenRows data;
  if (o.split == EvalSplit::all) {  // every sequence: all of it packed as rows, nothing held out
    const int64_t rows = (int64_t)stream.tokens.size() / row_len;
    OWLORE_REQUIRE(rows >= 1, o.data_path, ": ", stream.tokens.size(), " tokens, fewer than one sequence of ", row_len);
    data.row_len = row_len;
    data.tokens.assign(stream.tokens.begin(), stream.tokens.begin() + rows * row_len);
    if (stream.loss_mask.empty())
      data.loss_mask.assign(rows * row_len, 1);
    else
      data.loss_mask.assign(stream.loss_mask.begin(), stream.loss_mask.begin() + rows * row_len);
  } else {  // packed exactly as train packs it, so val is the tail a run with this --seq held out
    Dataset split = pack_dataset(stream.tokens, stream.loss_mask, o.seq, o.val_fraction);
    data = std::move(o.split == EvalSplit::val ? split.val : split.train);
  }
  const int64_t rows = data.count();
  const int32_t max_token = data.tokens.empty() ? 0 : *std::max_element(data.tokens.begin(), data.tokens.end());
  OWLORE_REQUIRE(max_token < model.config.vocab, o.data_path, ": token ", max_token,
                 " is outside the model's vocabulary of ", model.config.vocab,
                 o.tokenizer_path.empty() ? "" : " (is --tokenizer the model's own?)");
  int64_t batches = (rows + o.batch - 1) / o.batch;
  if (o.max_batches > 0) batches = std::min<int64_t>(batches, o.max_batches);
  std::unique_ptr<TrainBackend> backend =
      device == Device::cpu ? make_cpu_backend(layout, model.weights, {})
                        : make_gpu_backend(layout, model.weights, {}, GpuModelOptions{o.batch, o.seq}, 0);
  std::vector<int32_t> inputs((int64_t)o.batch * o.seq), targets(inputs.size());
  double sum = 0;
  int64_t kept = 0;
  for (int64_t b = 0; b < batches; b++) {
    const int rows_here = (int)std::min<int64_t>(o.batch, rows - b * o.batch);
    fixed_batch(data, b * o.batch, rows_here, inputs.data(), targets.data());
    int64_t k = 0;
    sum += backend->forward_loss(inputs.data(), targets.data(), rows_here, o.seq, &k);
    kept += k;
    std::fprintf(stderr, "\reval batch %lld/%lld", (long long)b + 1, (long long)batches);
  }
  std::fprintf(stderr, "\n");
  // A loss over no tokens is no measurement (it would print loss 0, perplexity 1), and a
  // non-finite one prints as null in JSON: both are errors, never a result.
  const int64_t sequences = std::min<int64_t>(rows, batches * o.batch);
  OWLORE_REQUIRE(kept > 0, o.data_path, ": no token was scored: every target in the ", sequences, " evaluated sequence",
                 sequences == 1 ? "" : "s", " is masked (instruction data whose answers fall outside them?)");
  const double loss = sum / kept, perplexity = std::exp(loss);
  OWLORE_REQUIRE(std::isfinite(loss) && std::isfinite(perplexity), o.data_path, ": the loss over ", kept,
                 " tokens is ", loss, " (perplexity ", perplexity, "), not a finite number: the forward overflowed on this data");
  nlohmann::json result = {{"loss", loss},   {"tokens", kept},          {"perplexity", perplexity},
                           {"sequences", sequences},
                           {"data", o.data_path}, {"split", choice_name(kEvalSplitChoices, o.split)},
                           {"model", o.model_path.empty() ? o.preset : o.model_path},
                           {"device", backend->device_name()}};
  std::printf("%s\n", result.dump().c_str());
}

void run_convert(const std::string& model_path, const std::string& out_dir, SaveDtype dtype) {
  OWLORE_REQUIRE(!model_path.empty() && !out_dir.empty(), "--model and --out are required");
  const LoadedModel model = load_model(model_path);
  const TokenizerFiles tokenizer = checkpoint_tokenizer_files(model_path, model.config);
  save_hf_checkpoint(out_dir, ModelLayout(model.config), model.weights.data(), dtype, tokenizer);
  std::string tokenizer_names;
  for (const auto& [file, bytes] : tokenizer.files) tokenizer_names += ", " + file;
  std::printf("wrote %s: config.json, the weights%s (%s, %.1fM parameters)\n", out_dir.c_str(), tokenizer_names.c_str(),
              name(dtype), model.config.total_params() / 1e6);
}

void run_tokenize(const std::string& model_path, const std::string& data_path, const std::string& out_path,
                  bool skip_bad_lines) {
  const std::unique_ptr<Tokenizer> tokenizer = load_model_tokenizer(model_path);
  OWLORE_REQUIRE(tokenizer != nullptr, model_path, ": the model has no tokenizer");
  const InstructOptions instruct = chat_data_options(model_path, ChatTemplate::kAuto, TrainOn::kAssistant, "",
                                                     skip_bad_lines, tokenizer.get(), 0, "", "");
  const TokenStream stream = load_token_stream(data_path, tokenizer.get(), instruct);
  OWLORE_REQUIRE(stream.loss_mask.empty(), data_path,
                 ": instruction data carries a loss mask, which token files do not store; train on the JSONL directly");
  write_token_file(out_path, stream.tokens);
  std::printf("wrote %s: %zu tokens\n", out_path.c_str(), stream.tokens.size());
}

void run_outliers(const OutliersOptions& o) {
  OWLORE_REQUIRE(!o.data_path.empty(), "--data is required");
  OWLORE_REQUIRE(!o.out_path.empty(), "-o/--out is required");
  OWLORE_REQUIRE(std::isfinite(o.threshold) && o.threshold > 0, "--threshold must be > 0, got ", o.threshold);
  OWLORE_REQUIRE(o.samples >= 1, "--samples must be >= 1, got ", o.samples);
  OWLORE_REQUIRE(o.seq >= 1, "--seq must be >= 1, got ", o.seq);
  OWLORE_REQUIRE(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  const LoadedModel model = load_model_or_preset(o.model_path, o.preset, /*init_seed=*/1);  // as `eval --preset`
  const ModelConfig& config = model.config;
  const Device device = resolve_device(o.device, config);
  // The reference's 2048 tokens exceed the tiny presets' context: calibrate on what the model allows
  // (its context, and its attention window, past which owlore would compute another model).
  int seq = config.max_seq > 0 ? std::min(o.seq, config.max_seq) : o.seq;
  if (seq < o.seq)
    std::printf("--seq %d exceeds the model's context of %d tokens: calibrating on %d\n", o.seq, config.max_seq, seq);
  if (config.sliding_window > 0 && seq > config.sliding_window) {
    std::printf("--seq %d exceeds the model's attention window (config.json sliding_window %d): calibrating on %d\n",
                seq, config.sliding_window, config.sliding_window);
    seq = config.sliding_window;
  }
  const ModelLayout layout(config);
  const std::unique_ptr<Tokenizer> tokenizer = load_model_tokenizer(o.model_path);
  const InstructOptions instruct =
      chat_data_options(o.model_path, o.chat_template, o.train_on, o.system, o.skip_bad_lines, tokenizer.get(),
                        config.vocab, config.name, "calibrate on an OWLTOK1 file of its tokens (owlore tokenize)");
  const TokenStream stream = load_token_stream(o.data_path, tokenizer.get(), instruct);
  // Packed as `train --seq <seq>` packs it (default held-out fraction), so the calibration rows are
  // the first training rows a run with the same --seq would compute D on.
  const Dataset data = pack_dataset(stream.tokens, stream.loss_mask, seq, TrainOptions{}.val_fraction);
  OWLORE_REQUIRE(data.max_token < config.vocab, o.data_path, ": token ", data.max_token,
                 " is outside the model's vocabulary of ", config.vocab);
  const int n = (int)std::min<int64_t>(o.samples, data.train.count());
  std::vector<int32_t> tokens((int64_t)n * seq);
  for (int r = 0; r < n; r++)
    std::copy_n(data.train.tokens.begin() + (int64_t)r * data.train.row_len, seq, tokens.begin() + (int64_t)r * seq);
  std::printf("owlore outliers | %s | %d layers | device %s | M = %g\n", config.name.c_str(), config.n_layers,
              name(device), o.threshold);
  std::printf("calibration: %d of %d requested sequences x %d tokens from %s (%lld training rows available)\n", n,
              o.samples, seq, o.data_path.c_str(), (long long)data.train.count());
  OutlierOptions options;
  options.threshold = o.threshold;
  options.batch_sequences = o.batch;
  options.progress = calibration_progress_printer();
  const std::vector<double> D =
      device == Device::cpu ? compute_outlier_distribution(layout, model.weights.data(), tokens.data(), n, seq, options)
                        : compute_outlier_distribution_gpu(layout, model.weights, tokens.data(), n, seq, options);
  const std::vector<double> weights = outlier_sampling_weights(D);
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  std::printf("layer  D (%%)     sampling p\n");
  for (int l = 0; l < config.n_layers; l++) std::printf("%5d  %8.4f  %.4f\n", l, D[l], weights[l] / total);
  write_outlier_file(o.out_path, D, OutlierMetadata{config.name, o.threshold, n, seq});
  std::printf("wrote %s\n", o.out_path.c_str());
}

}  // namespace owlore
