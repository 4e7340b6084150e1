// owlore <command> [flags]: the one binary. Every command lists its flags with defaults under
// --help; errors print on one line and exit non-zero.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>

#include "base/error.h"
#include "model/config.h"
#include "train/trainer.h"

using namespace owlore;

namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void add_train_command(CLI::App& app, TrainOptions& o) {
  CLI::App* train = app.add_subcommand("train", "fine-tune or train a model");
  train->add_option("--preset", o.preset, "model shape with fresh weights: " + join(preset_names()));
  train->add_option("--model", o.model_path, "checkpoint to fine-tune (safetensors dir/file or GGUF)");
  train->add_option("--data", o.data_path, "training data: text, JSONL {question,answer}|{prompt,response}, or an OWLTOK1 token file; the tail is held out for validation")->required();
  train->add_option("--device", o.device, "cpu or cuda")->capture_default_str();
  train->add_option("--method", o.method, "full, lisa, owlore, ows or galore")->capture_default_str();
  train->add_option("--out", o.out_dir, "output directory (metrics.jsonl, checkpoint/)")->capture_default_str();
  train->add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  train->add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str();
  train->add_option("--seq", o.seq, "tokens per sequence")->capture_default_str();
  train->add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step")->capture_default_str();
  train->add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  train->add_option("--min-lr-ratio", o.min_lr_ratio, "final lr as a fraction of the peak (cosine)")
      ->capture_default_str();
  train->add_option("--warmup", o.warmup_steps, "linear warmup steps (-1: 5% of --steps)")->capture_default_str();
  train->add_option("--weight-decay", o.weight_decay, "decoupled weight decay on matrices")->capture_default_str();
  train->add_option("--beta1", o.beta1, "Adam beta1")->capture_default_str();
  train->add_option("--beta2", o.beta2, "Adam beta2")->capture_default_str();
  train->add_option("--eps", o.eps, "Adam epsilon")->capture_default_str();
  train->add_option("--clip", o.clip, "global gradient-norm clip (0: off)")->capture_default_str();
  train->add_option("--val-fraction", o.val_fraction, "fraction of the data held out")->capture_default_str();
  train->add_option("--val-every", o.val_every, "validate every N steps (0: only at start and end)")
      ->capture_default_str();
  train->add_option("--val-batches", o.val_batches, "batches per validation")->capture_default_str();
  train->add_option("--log-every", o.log_every, "progress line every N steps when not on a terminal")
      ->capture_default_str();
  train->add_option("--seed", o.seed, "seed for initialization, data order and sampling")->capture_default_str();
  train->add_flag("--skip-bad-lines", o.skip_bad_lines, "JSONL data: skip (and report) malformed lines instead of stopping");
  train->add_option("--moments", o.moments, "GPU Adam moments: fp32 or bf16")->capture_default_str();
  train->add_option("--lm-head-chunk", o.lm_head_chunk_tokens, "GPU: tokens per chunk of the fused LM head")
      ->capture_default_str();
  train->add_option("--save-every", o.save_every, "checkpoint every N steps (0: only at the end)")->capture_default_str();
  train->add_option("--save-dtype", o.save_dtype, "checkpoint weights: bf16 or f32")->capture_default_str();
  train->callback([&o] { run_training(o); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"owlore: fine-tune LLaMA-class models on one GPU with layerwise sampling and low-rank Adam"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("owlore 0.1"));
  TrainOptions train_options;
  add_train_command(app, train_options);
  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> commands;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) commands.push_back(sub->get_name());
    if (std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
      std::fprintf(stderr, "owlore: error: unknown command '%s' (expected one of: %s)\n", argv[1], join(commands).c_str());
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // A progress line may be open on the terminal: end it so the error stands on its own line.
    if (isatty(fileno(stdout))) std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "owlore: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
