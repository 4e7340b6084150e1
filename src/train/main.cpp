// owlore <command> [flags]: the one binary. Every command lists its flags with defaults under
// --help; errors print on one line and exit non-zero.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>
#include <string>

#include "base/error.h"
#include "io/model_info.h"
#include "model/config.h"
#include "train/commands.h"
#include "train/run_dir.h"
#include "train/trainer.h"

using namespace owlore;

namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// A flag that takes one of an enum's names: parsed once, here; --help shows the names and the
// default.
template <typename E, size_t N>
CLI::Option* add_choice(CLI::App* app, const std::string& flag, E& value, const ChoiceTable<E, N>& table,
                        const std::string& help) {
  return app
      ->add_option_function<std::string>(
          flag, [&value, &table, flag](const std::string& text) { value = parse_choice(table, text, flag); },
          help + " (" + choice_list(table) + ")")
      ->type_name("NAME")
      ->default_str(choice_name(table, value));
}

// --chat-template, --train-on, --system: how instruction data (JSONL or a JSON array) becomes
// tokens and targets, the same for train, eval and outliers.
void add_chat_data_flags(CLI::App* app, ChatTemplate& chat_template, TrainOn& train_on, std::string& system) {
  add_choice(app, "--chat-template", chat_template, kChatTemplateChoices,
             "instruction data: the template conversations render with; auto: the model's own (tokenizer_config.json "
             "chat_template or GGUF tokenizer.chat_template)");
  add_choice(app, "--train-on", train_on, kTrainOnChoices,
             "instruction data: the loss on every assistant turn, only the last one, or every token");
  app->add_option("--system", system,
                  "instruction data: the system message of examples that have none (default: the template's own, "
                  "SmolLM2's for chatml, none for the others)");
}

const char* const kDataHelp =
    "plain text (every token), instruction data (JSONL, or a JSON array like alpaca_data.json, of {\"messages\": "
    "[{role, content}]}, {instruction, input, output}, {question, answer} or {prompt, response}: the loss on the "
    "assistant turns), or an OWLTOK1 token file; the kind comes from the content";

// Every option of every command refuses an empty value ("--seed ''" would otherwise read as 0).
void refuse_empty_values(CLI::App& app) {
  const CLI::Validator non_empty(
      [](std::string& text) { return text.empty() ? std::string("an empty value is not allowed") : std::string(); },
      "");
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    for (CLI::Option* option : sub->get_options())
      if (option->get_expected_min() > 0 && option->get_name() != "--help") option->check(non_empty);
}

// The flags the user wrote after `train` (not those a config file supplies): options that do
// nothing for the chosen method or device are refused only when given explicitly.
std::vector<std::string> flags_given(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 2; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0 && arg.size() > 2) out.push_back(arg.substr(0, arg.find('=')));
  }
  return out;
}

// OUT/config.toml: the resolved flags of a train run, in the form --config reads back. Paths
// that were not given (empty) and the flags that only steer this invocation are left out.
std::string resolved_config(const CLI::App& train) {
  std::istringstream lines(train.config_to_str(/*default_also=*/true, /*write_description=*/false));
  std::string out =
      "# owlore train: the resolved flags of this run (owlore --config FILE train ... reads them back;\n"
      "# --resume finds this file in the checkpoint). Flags on the command line win over it.\n[train]\n";
  for (std::string line; std::getline(lines, line);) {
    const std::string key = line.substr(0, line.find('='));
    const std::string value = line.substr(std::min(line.size(), key.size() + 1));
    if (key == "resume" || key == "overwrite" || value == "\"\"" || value == "''" || value.empty()) continue;
    out += line + "\n";
  }
  return out;
}

void add_train_command(CLI::App& app, TrainOptions& o, bool& no_checkpoint) {
  CLI::App* train = app.add_subcommand("train", "fine-tune or train a model");
  train->fallthrough();  // --config belongs to the main app (CLI11 reads config files there)
  train->footer(
      "Config files: owlore --config FILE train [flags] reads flags from a TOML file (the [train] section, as "
      "OUT/config.toml holds them); flags given on the command line win, and a later flag wins over an earlier "
      "one. --resume DIR reads the checkpoint's own config.toml, so no flag needs restating.");
  train->add_option("--preset", o.preset, "model shape with fresh weights: " + join(preset_names()));
  train->add_option("--model", o.model_path, "checkpoint to fine-tune (safetensors dir/file or GGUF)");
  train->add_option("--data", o.data_path, std::string("training data: ") + kDataHelp + "; the tail is held out for validation");
  train->add_option("--tokenizer", o.tokenizer_path,
                    "the tokenizer (and chat template) of another model (GGUF or a directory with tokenizer.json), for "
                    "a checkpoint that has none (default: the model's own); checkpoints carry it");
  add_chat_data_flags(train, o.chat_template, o.train_on, o.system);
  add_choice(train, "--device", o.device, kDeviceChoices, "auto: the GPU when there is one");
  add_choice(train, "--method", o.method, kMethodChoices, "training method (DESIGN.md §1)");
  train->add_option("--out", o.out_dir, "run directory (metrics.jsonl, config.toml, checkpoint/)")->capture_default_str();
  train->add_flag("--overwrite", o.overwrite, "replace an earlier run in --out (its checkpoints and metrics are deleted)");
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
  train->add_option("--eps", o.eps,
                    "Adam epsilon, for GaLore-Adam and the full-rank AdamW (embedding, head, norms, full/lisa/ows "
                    "layers) alike; 1e-6 as the official GaLore optimizer")
      ->capture_default_str();
  train->add_option("--clip", o.clip, "global gradient-norm clip (0: off)")->capture_default_str();
  train->add_option("--val-fraction", o.val_fraction, "fraction of the data held out")->capture_default_str();
  train->add_option("--val-every", o.val_every, "validate every N steps (0: only at start and end)")
      ->capture_default_str();
  train->add_option("--val-batches", o.val_batches, "batches per validation")->capture_default_str();
  train->add_option("--log-every", o.log_every, "progress line every N steps when not on a terminal")
      ->capture_default_str();
  train->add_option("--seed", o.seed, "seed for initialization, data order and sampling")->capture_default_str();
  train->add_flag("--skip-bad-lines", o.skip_bad_lines, "JSONL data: skip (and report) malformed lines instead of stopping");
  add_choice(train, "--moments", o.moments, kMomentsChoices,
             "GPU full-rank Adam moments (embedding, head, norms; the layers of full, lisa, ows); GaLore's low-rank "
             "moments are fp32");
  add_choice(train, "--recompute", o.recompute, kRecomputeChoices,
             "GPU: keep every activation, recompute the norms and SwiGLU, or keep only each layer's input");
  train->add_flag("--offload-activations", o.offload_activations,
                  "GPU, with --recompute layer: keep the layer inputs in pinned host memory (two stay on the GPU); "
                  "the copies overlap the layers' compute");
  train->add_option("--lm-head-chunk", o.lm_head_chunk_tokens, "GPU: tokens per chunk of the fused LM head")
      ->capture_default_str();
  train->add_option("--save-every", o.save_every, "checkpoint every N steps (0: only at the end)")->capture_default_str();
  train->add_option("--keep-checkpoints", o.keep_checkpoints, "checkpoint-<step> directories kept (the newest)")
      ->capture_default_str();
  add_choice(train, "--save-dtype", o.save_dtype, kSaveDtypeChoices, "checkpoint weights (model.safetensors)");
  train->add_flag("--no-checkpoint", no_checkpoint, "no checkpoint at the end (benchmarks)");
  train->add_option("--stop-at", o.stop_at, "stop after this step with a checkpoint; --resume continues (0: off)")
      ->capture_default_str();
  train->add_option("--resume", o.resume_path,
                    "continue bit-exactly from a checkpoint directory (OUT/checkpoint) or a run directory (OUT)");
  train->add_option("--gamma", o.gamma, "lisa/ows/owlore: decoder layers trained at once")->capture_default_str();
  train->add_option("--period", o.period, "lisa/ows/owlore: steps between re-samplings (K)")->capture_default_str();
  add_choice(train, "--state", o.state_policy, kStatePolicyChoices,
             "lisa/ows/owlore: a sampled layer's optimizer state when the sample changes: drop (it starts fresh when "
             "it returns), keep (parked in host memory, restored on return) or reset (every layer restarts each period)");
  train->add_flag("--freeze-embeddings", o.freeze_embeddings, "embedding, final norm and LM head frozen too");
  train->add_option("--outliers", o.outliers_path, "ows/owlore: layerwise outlier file (default: computed, cached in --out)");
  train->add_option("--outlier-threshold", o.outlier_threshold, "ows/owlore: outlier score threshold M (x mean)")
      ->capture_default_str();
  train->add_option("--outlier-samples", o.outlier_samples, "ows/owlore: calibration sequences for the outlier scores")
      ->capture_default_str();
  train->add_option("--outlier-seq", o.outlier_seq, "ows/owlore: calibration tokens per sequence (at most --seq)")
      ->capture_default_str();
  train->add_option("--rank", o.rank, "owlore/galore: projection rank r")->capture_default_str();
  train->add_option("--proj-gap", o.proj_gap, "owlore/galore: projector refresh every T of a matrix's steps")
      ->capture_default_str();
  train->add_option("--galore-scale", o.galore_scale, "owlore/galore: update scale alpha")->capture_default_str();
  add_choice(train, "--projector", o.projector, kProjectorChoices,
             "owlore/galore: exact SVD or the fast randomized range finder");
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
      "GPU: A:B: cudaProfilerStart/Stop around steps A..B (for nsys/ncu --profile-from-start off)");
  train->callback([&o, &no_checkpoint, train] {
    o.save_final = !no_checkpoint;
    o.config_toml = resolved_config(*train);
    run_training(o);
  });
}

void add_other_commands(CLI::App& app, GenerateOptions& gen, EvalOptions& ev, std::string& info_model,
                        std::string& convert_model, std::string& convert_out, SaveDtype& convert_dtype,
                        std::string& tok_model, std::string& tok_data, std::string& tok_out, bool& tok_skip) {
  CLI::App* info = app.add_subcommand("info", "print a model's config, parameter count, tensor types, tokenizer");
  info->add_option("--model", info_model, "GGUF, safetensors file, or Hugging Face checkpoint directory")->required();
  info->callback([&info_model] { print_model_info(info_model, std::cout); });

  CLI::App* generate = app.add_subcommand("generate", "answer a prompt with a model on the CPU (KV cache)");
  generate->add_option("--model", gen.model_path, "model with a tokenizer (GGUF or HF directory)")->required();
  generate->add_option("--prompt", gen.prompt, "the user message (or the text to continue with --raw)")->required();
  generate->add_option("--system", gen.system, "system message (default: the template's own, SmolLM2's for chatml)");
  add_choice(generate, "--chat-template", gen.chat_template, kChatTemplateChoices,
             "the template the prompt renders with (its generation prompt included); auto: the model's own");
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
  eval->add_option("--tokenizer", ev.tokenizer_path,
                   "the tokenizer of another model (GGUF or a directory with tokenizer.json), for a checkpoint "
                   "that has none (default: the model's own)");
  eval->add_option("--data", ev.data_path, kDataHelp)->required();
  add_chat_data_flags(eval, ev.chat_template, ev.train_on, ev.system);
  add_choice(eval, "--device", ev.device, kDeviceChoices, "auto: the GPU when there is one");
  eval->add_option("--batch", ev.batch, "sequences per batch")->capture_default_str();
  eval->add_option("--seq", ev.seq, "tokens per sequence")->capture_default_str();
  add_choice(eval, "--split", ev.split, kEvalSplitChoices,
             "all: every sequence of the data; train / val: the rows `train --seq S --val-fraction F` trains on / "
             "holds out");
  eval->add_option("--val-fraction", ev.val_fraction, "with --split train|val: the held-out fraction of the run")
      ->capture_default_str();
  eval->add_option("--max-batches", ev.max_batches, "stop after N batches (0: all data)")->capture_default_str();
  eval->add_flag("--skip-bad-lines", ev.skip_bad_lines, "JSONL: skip (and report) malformed lines");
  eval->callback([&ev] { run_eval(ev); });

  CLI::App* convert = app.add_subcommand("convert", "write any supported model as a Hugging Face checkpoint");
  convert->add_option("--model", convert_model, "GGUF, safetensors or HF directory")->required();
  convert->add_option("--out", convert_out, "output directory (config.json + model.safetensors)")->required();
  add_choice(convert, "--dtype", convert_dtype, kSaveDtypeChoices, "weights of model.safetensors");
  convert->callback([&] { run_convert(convert_model, convert_out, convert_dtype); });

  CLI::App* tokenize = app.add_subcommand("tokenize", "tokenize text into an OWLTOK1 token file");
  tokenize->add_option("--model", tok_model, "model whose tokenizer to use")->required();
  tokenize->add_option("--data", tok_data, "text file (instruction data carries a loss mask, which token files do not store)")->required();
  tokenize->add_option("-o,--out", tok_out, "output token file")->required();
  tokenize->add_flag("--skip-bad-lines", tok_skip, "JSONL: skip malformed lines");
  tokenize->callback([&] { run_tokenize(tok_model, tok_data, tok_out, tok_skip); });
}

void add_outliers_command(CLI::App& app, OutliersOptions& o) {
  CLI::App* outliers = app.add_subcommand("outliers", "layerwise outlier distribution D (for --method owlore/ows) into a file");
  outliers->add_option("--model", o.model_path, "model to score (safetensors dir/file or GGUF)");
  outliers->add_option("--preset", o.preset, "or a preset with fresh weights");
  add_chat_data_flags(outliers, o.chat_template, o.train_on, o.system);
  outliers->add_option("--data", o.data_path, "calibration data (text, instruction data or token file), packed as train does")
      ->required();
  add_choice(outliers, "--device", o.device, kDeviceChoices, "auto: the GPU when there is one");
  outliers->add_option("--threshold", o.threshold, "outlier score threshold M (x mean)")->capture_default_str();
  outliers->add_option("--samples", o.samples, "calibration sequences (fewer if the data has fewer)")
      ->capture_default_str();
  outliers->add_option("--seq", o.seq, "tokens per calibration sequence")->capture_default_str();
  outliers->add_option("--batch", o.batch, "sequences per forward (memory only)")->capture_default_str();
  outliers->add_flag("--skip-bad-lines", o.skip_bad_lines, "JSONL: skip (and report) malformed lines");
  outliers->add_option("-o,--out", o.out_path, "output file (JSON, read by train --outliers)")->required();
  outliers->callback([&o] { run_outliers(o); });
}

// `train --resume DIR` without --config: the checkpoint's own config.toml supplies every flag
// not given, so the arguments gain "--config DIR/config.toml" ahead of the command.
std::vector<std::string> with_resume_config(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (argc < 2 || args[1] != "train") return args;
  std::string resume;
  for (int i = 2; i < argc; i++) {
    if (args[i] == "--config" || args[i].rfind("--config=", 0) == 0) return args;
    if (args[i] == "--resume" && i + 1 < argc) resume = args[i + 1];
    if (args[i].rfind("--resume=", 0) == 0) resume = args[i].substr(9);
  }
  if (resume.empty()) return args;
  std::error_code ec;
  std::string config;
  try {
    config = resolve_checkpoint_dir(resume) + "/config.toml";
  } catch (const Error&) {
    return args;  // the trainer says what is wrong with the path
  }
  if (std::filesystem::is_regular_file(config, ec)) args.insert(args.begin() + 1, {"--config", config});
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered stdout also into files and pipes: a run's header and progress appear as they
  // happen, not when a 4 KiB buffer fills.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  CLI::App app{"owlore: fine-tune LLaMA-class models on one GPU with layerwise sampling and low-rank Adam"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("owlore 0.1"));
  // A flag given twice takes its last value: later flags (and the command line over a config
  // file) win, so a script's defaults can be overridden by appending flags.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_config("--config", "", "train: read flags from a TOML file (see owlore train --help)");
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored
  TrainOptions train_options;
  bool no_checkpoint = false;
  add_train_command(app, train_options, no_checkpoint);
  train_options.given_flags = flags_given(argc, argv);
  GenerateOptions generate_options;
  EvalOptions eval_options;
  std::string info_model, convert_model, convert_out, tok_model, tok_data, tok_out;
  SaveDtype convert_dtype = SaveDtype::f32;
  bool tok_skip = false;
  add_other_commands(app, generate_options, eval_options, info_model, convert_model, convert_out, convert_dtype,
                     tok_model, tok_data, tok_out, tok_skip);
  OutliersOptions outliers_options;
  add_outliers_command(app, outliers_options);
  refuse_empty_values(app);
  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> commands;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) commands.push_back(sub->get_name());
    if (std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
      std::fprintf(stderr, "owlore: error: unknown command '%s' (expected one of: %s)\n", argv[1], join(commands).c_str());
      return 1;
    }
  }
  std::vector<std::string> args = with_resume_config(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  try {
    app.parse((int)arg_ptrs.size(), arg_ptrs.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // A progress line may be open on the terminal: end it so the error stands on its own line.
    if (isatty(fileno(stdout))) std::printf("\n");
    std::fflush(stdout);
    const auto* interrupted = dynamic_cast<const Interrupted*>(&e);
    std::fprintf(stderr, "owlore: %s: %s\n", interrupted ? "stopped" : "error", e.what());
    return interrupted ? 128 + interrupted->signal : 1;
  }
  return 0;
}
