// owlore <command> [flags]: the one binary. Every command lists its flags with defaults under
// --help; errors print on one line and exit non-zero.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "base/error.h"
#include "model/config.h"
#include "io/model_info.h"
#include "train/commands.h"
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
  train->add_option("--moments", o.moments,
                    "GPU full-rank Adam moments (embedding, head, norms; the layers of full, lisa, ows): fp32 or "
                    "bf16; GaLore's low-rank moments are fp32")->capture_default_str();
  train->add_option("--recompute", o.recompute, "GPU: none (keep every activation), cheap (recompute norms and SwiGLU) or layer (keep only each layer's input)")
      ->capture_default_str();
  train->add_flag("--offload-activations", o.offload_activations,
                  "GPU, with --recompute layer: keep the layer inputs in pinned host memory (two stay on the GPU); "
                  "the copies overlap the layers' compute");
  train->add_option("--lm-head-chunk", o.lm_head_chunk_tokens, "GPU: tokens per chunk of the fused LM head")
      ->capture_default_str();
  train->add_option("--save-every", o.save_every, "checkpoint every N steps (0: only at the end)")->capture_default_str();
  train->add_option("--save-dtype", o.save_dtype, "checkpoint weights: bf16 or f32")->capture_default_str();
  train->add_flag("!--no-checkpoint", o.save_final, "no checkpoint at the end (benchmarks)");
  train->add_option("--stop-at", o.stop_at, "stop after this step with a checkpoint; --resume continues (0: off)")
      ->capture_default_str();
  train->add_option("--resume", o.resume_path, "continue from a checkpoint directory (e.g. OUT/checkpoint), bit-exactly");
  train->add_option("--gamma", o.gamma, "lisa/ows/owlore: decoder layers trained at once")->capture_default_str();
  train->add_option("--period", o.period, "lisa/ows/owlore: steps between re-samplings (K)")->capture_default_str();
  train->add_option("--state", o.state_policy,
                    "sampled layers' optimizer state when the sample changes: drop (a leaving layer starts fresh when it "
                    "returns), keep (parked in host memory, restored on return) or reset (every layer restarts each period)")
      ->capture_default_str();
  train->add_flag("--freeze-embeddings", o.freeze_embeddings, "embedding, final norm and LM head frozen too");
  train->add_option("--outliers", o.outliers_path, "ows/owlore: layerwise outlier file (default: computed, cached in --out)");
  train->add_option("--outlier-threshold", o.outlier_threshold, "outlier score threshold M (x mean)")
      ->capture_default_str();
  train->add_option("--outlier-samples", o.outlier_samples, "calibration sequences for the outlier scores")
      ->capture_default_str();
  train->add_option("--outlier-seq", o.outlier_seq, "calibration tokens per sequence (at most --seq)")
      ->capture_default_str();
  train->add_option("--rank", o.rank, "owlore/galore: projection rank r")->capture_default_str();
  train->add_option("--proj-gap", o.proj_gap, "owlore/galore: projector refresh every T of a matrix's steps")
      ->capture_default_str();
  train->add_option("--galore-scale", o.galore_scale, "owlore/galore: update scale alpha")->capture_default_str();
  train->add_option("--projector", o.projector, "owlore/galore: exact (SVD) or fast (randomized range finder)")
      ->capture_default_str();
  train->add_option_function<std::string>(
      "--profile-steps",
      [&o](const std::string& range) {
        const size_t colon = range.find(':');
        try {
          o.profile_first = std::stoi(range.substr(0, colon));
          o.profile_last = colon == std::string::npos ? o.profile_first : std::stoi(range.substr(colon + 1));
        } catch (const std::exception&) {
          throw CLI::ValidationError("--profile-steps", "expected A:B (step numbers), got '" + range + "'");
        }
      },
      "A:B: cudaProfilerStart/Stop around steps A..B (for nsys/ncu --profile-from-start off)");
  train->callback([&o] { run_training(o); });
}

void add_other_commands(CLI::App& app, GenerateOptions& gen, EvalOptions& ev, std::string& info_model,
                        std::string& convert_model, std::string& convert_out, std::string& convert_dtype,
                        std::string& tok_model, std::string& tok_data, std::string& tok_out, bool& tok_skip) {
  CLI::App* info = app.add_subcommand("info", "print a model's config, parameter count, tensor types, tokenizer");
  info->add_option("--model", info_model, "GGUF, safetensors file, or Hugging Face checkpoint directory")->required();
  info->callback([&info_model] { print_model_info(info_model, std::cout); });

  CLI::App* generate = app.add_subcommand("generate", "answer a prompt with a model on the CPU (KV cache)");
  generate->add_option("--model", gen.model_path, "model with a tokenizer (GGUF or HF directory)")->required();
  generate->add_option("--prompt", gen.prompt, "the user message (or the text to continue with --raw)")->required();
  generate->add_option("--system", gen.system, "system message (default: the model's own)");
  generate->add_flag("--raw", gen.raw, "no chat template: continue the prompt text");
  generate->add_option("--max-tokens", gen.max_new_tokens, "new tokens at most")->capture_default_str();
  generate->add_option("--temperature", gen.temperature, "0: greedy; otherwise sampling temperature")
      ->capture_default_str();
  generate->add_option("--top-p", gen.top_p, "nucleus sampling mass")->capture_default_str();
  generate->add_option("--seed", gen.seed, "sampling seed")->capture_default_str();
  generate->callback([&gen] { run_generate(gen); });

  CLI::App* eval = app.add_subcommand("eval", "mean loss, token count and perplexity of a model on data (one JSON line)");
  eval->add_option("--model", ev.model_path, "model to evaluate");
  eval->add_option("--preset", ev.preset, "or a preset with fresh weights");
  eval->add_option("--data", ev.data_path, "text (all tokens), JSONL (answer tokens only) or token file")->required();
  eval->add_option("--device", ev.device, "cpu or cuda")->capture_default_str();
  eval->add_option("--batch", ev.batch, "sequences per batch")->capture_default_str();
  eval->add_option("--seq", ev.seq, "tokens per sequence")->capture_default_str();
  eval->add_option("--max-batches", ev.max_batches, "stop after N batches (0: all data)")->capture_default_str();
  eval->add_flag("--skip-bad-lines", ev.skip_bad_lines, "JSONL: skip (and report) malformed lines");
  eval->callback([&ev] { run_eval(ev); });

  CLI::App* convert = app.add_subcommand("convert", "write any supported model as a Hugging Face checkpoint");
  convert->add_option("--model", convert_model, "GGUF, safetensors or HF directory")->required();
  convert->add_option("--out", convert_out, "output directory (config.json + model.safetensors)")->required();
  convert->add_option("--dtype", convert_dtype, "bf16 or f32")->capture_default_str();
  convert->callback([&] { run_convert(convert_model, convert_out, convert_dtype); });

  CLI::App* tokenize = app.add_subcommand("tokenize", "tokenize text into an OWLTOK1 token file");
  tokenize->add_option("--model", tok_model, "model whose tokenizer to use")->required();
  tokenize->add_option("--data", tok_data, "text file")->required();
  tokenize->add_option("-o,--out", tok_out, "output token file")->required();
  tokenize->add_flag("--skip-bad-lines", tok_skip, "JSONL: skip malformed lines");
  tokenize->callback([&] { run_tokenize(tok_model, tok_data, tok_out, tok_skip); });
}

void add_outliers_command(CLI::App& app, OutliersOptions& o) {
  CLI::App* outliers = app.add_subcommand("outliers", "layerwise outlier distribution D (for --method owlore/ows) into a file");
  outliers->add_option("--model", o.model_path, "model to score (safetensors dir/file or GGUF)");
  outliers->add_option("--preset", o.preset, "or a preset with fresh weights");
  outliers->add_option("--data", o.data_path, "calibration data (text, JSONL or token file), packed as train does")
      ->required();
  outliers->add_option("--device", o.device, "cpu or cuda")->capture_default_str();
  outliers->add_option("--threshold", o.threshold, "outlier score threshold M (x mean)")->capture_default_str();
  outliers->add_option("--samples", o.samples, "calibration sequences (fewer if the data has fewer)")
      ->capture_default_str();
  outliers->add_option("--seq", o.seq, "tokens per calibration sequence")->capture_default_str();
  outliers->add_option("--batch", o.batch, "sequences per forward (memory only)")->capture_default_str();
  outliers->add_flag("--skip-bad-lines", o.skip_bad_lines, "JSONL: skip (and report) malformed lines");
  outliers->add_option("-o,--out", o.out_path, "output file (JSON, read by train --outliers)")->required();
  outliers->callback([&o] { run_outliers(o); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"owlore: fine-tune LLaMA-class models on one GPU with layerwise sampling and low-rank Adam"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("owlore 0.1"));
  TrainOptions train_options;
  add_train_command(app, train_options);
  GenerateOptions generate_options;
  EvalOptions eval_options;
  std::string info_model, convert_model, convert_out, convert_dtype = "f32", tok_model, tok_data, tok_out;
  bool tok_skip = false;
  add_other_commands(app, generate_options, eval_options, info_model, convert_model, convert_out, convert_dtype,
                     tok_model, tok_data, tok_out, tok_skip);
  OutliersOptions outliers_options;
  add_outliers_command(app, outliers_options);
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
