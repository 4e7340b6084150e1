// The subcommands besides train: info, generate, eval, convert, tokenize, outliers. Each takes its
// options struct and throws owlore::Error with a message naming the problem.
#pragma once
#include <cstdint>
#include <string>

#include "io/checkpoint.h"
#include "io/token_data.h"
#include "train/options.h"

namespace owlore {

struct GenerateOptions {
  std::string model_path;
  std::string prompt;
  std::string system;          // empty: the template's default system message (SmolLM2's for chatml)
  bool raw = false;            // no chat template: continue the prompt text as is
  ChatTemplate chat_template = ChatTemplate::kAuto;  // auto: the model's own
  int max_new_tokens = 128;
  float temperature = 0.0f;    // 0: greedy
  float top_p = 1.0f;
  uint64_t seed = 0;
};
// Prints the answer as it is generated (stdout); returns it.
std::string run_generate(const GenerateOptions& options);

// Which rows of the data eval scores: all of them, or the rows that `train` with the same --seq and
// --val-fraction trains on (train) or holds out (val).
enum class EvalSplit { all, train, val };
inline constexpr ChoiceTable<EvalSplit, 3> kEvalSplitChoices{
    {{"all", EvalSplit::all}, {"train", EvalSplit::train}, {"val", EvalSplit::val}}};

struct EvalOptions {
  std::string model_path, preset, data_path;
  std::string tokenizer_path;  // empty: the model's own tokenizer
  Device device = Device::automatic;
  EvalSplit split = EvalSplit::all;
  double val_fraction = 0.05;  // as train's default
  int batch = 4, seq = 512;
  int max_batches = 0;  // 0: every sequence of the data
  bool skip_bad_lines = false;
  ChatTemplate chat_template = ChatTemplate::kAuto;  // chat data: auto = the model's own
  TrainOn train_on = TrainOn::kAssistant;
  std::string system;
};
// Prints one JSON line: {"loss", "tokens", "perplexity", ...}.
void run_eval(const EvalOptions& options);

// Reads any supported model and writes a Hugging Face checkpoint (config.json + safetensors).
void run_convert(const std::string& model_path, const std::string& out_dir, SaveDtype dtype);

// Tokenizes data with the model's tokenizer into an OWLTOK1 token file.
void run_tokenize(const std::string& model_path, const std::string& data_path, const std::string& out_path,
                  bool skip_bad_lines);

// owlore outliers: the layerwise outlier distribution D_ℓ (DESIGN.md §1) of a model on calibration
// rows of the data, tokenized and packed as training does (the first `samples` training rows of
// seq tokens, fewer if the data has fewer). Prints D and the sampling probabilities per layer and
// writes the file that `train --outliers` reads.
struct OutliersOptions {
  std::string model_path, preset, data_path, out_path;
  Device device = Device::automatic;
  double threshold = 13.0;  // M
  int samples = 128;        // calibration sequences
  int seq = 2048;           // tokens per sequence
  int batch = 4;            // sequences per forward (memory only)
  bool skip_bad_lines = false;
  ChatTemplate chat_template = ChatTemplate::kAuto;  // chat data: auto = the model's own
  TrainOn train_on = TrainOn::kAssistant;
  std::string system;
};
void run_outliers(const OutliersOptions& options);

}  // namespace owlore
