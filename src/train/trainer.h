// The training loop shared by every method (DESIGN.md §1): data, schedule, micro-batches with
// gradient accumulation, global-norm clipping, the optimizer, validation and metrics.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/token_data.h"
#include "model/model_gpu.h"
#include "optim/optimizer_options.h"
#include "train/options.h"

namespace owlore {

struct TrainOptions {
  // what to train
  std::string preset;       // a named shape with fresh weights (tiny models, benchmarks) ...
  std::string model_path;   // ... or a checkpoint (safetensors dir/file, GGUF)
  std::string data_path;
  Device device = Device::automatic;
  Method method = Method::full;
  std::string out_dir = "runs/train";
  // how long and how big
  int steps = 200;
  int batch = 8;            // sequences per micro-batch
  int seq = 64;             // tokens per sequence
  int grad_accum = 1;       // micro-batches per optimizer step
  // optimizer and schedule
  float lr = 1e-3f;
  float min_lr_ratio = 0.1f;
  int warmup_steps = -1;    // -1: 5% of steps
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-6f;  // ε: OptimizerOptions says why 1e-6
  float clip = 1.0f;        // global gradient-norm clip; 0 disables
  // evaluation and reporting
  double val_fraction = 0.05;
  int val_every = 50;       // 0: only before and after training
  int val_batches = 4;
  int log_every = 10;
  uint64_t seed = 0;
  // data and memory
  bool skip_bad_lines = false;       // JSONL: skip (and report) malformed lines instead of stopping
  std::string tokenizer_path;        // empty: the model's own tokenizer (and chat template)
  ChatTemplate chat_template = ChatTemplate::kAuto;  // chat data: auto = the model's (or --tokenizer's) own
  TrainOn train_on = TrainOn::kAssistant;            // chat data: which tokens are targets
  std::string system;                // chat data: system message of examples without one (empty: template default)
  MomentsDtype moments = MomentsDtype::fp32;  // GPU full-rank Adam moments
  int lm_head_chunk_tokens = 2048;   // rows of logits alive at once in the fused LM head (GPU)
  Recompute recompute = Recompute::none;  // GPU activations: keep all, recompute norms and SwiGLU, or keep layer inputs
  bool offload_activations = false;  // --recompute layer: layer inputs in pinned host memory
  int save_every = 0;                // write a checkpoint every N steps (0: only at the end)
  bool save_final = true;            // false (--no-checkpoint): no checkpoint at the end (benchmarks)
  SaveDtype save_dtype = SaveDtype::bf16;  // checkpoint weights
  std::string resume_path;           // a checkpoint directory (or a run directory) to continue from, bit-exactly
  bool overwrite = false;            // a fresh run may replace an earlier run in out_dir
  int keep_checkpoints = 1;          // checkpoint-<step> directories kept (the newest; the linked one always)
  // The resolved flags as TOML (the CLI fills it): written to <out>/config.toml and into every
  // checkpoint, so `--resume OUT` needs no restated flags. Empty: none written (tests).
  std::string config_toml;
  // The flags the user gave on the command line (the CLI fills it): a flag that does nothing for
  // the method or the device (--rank with --method full, --moments on the CPU) is refused when
  // given, rather than ignored.
  std::vector<std::string> given_flags;
  int stop_at = 0;                   // stop after this step with a checkpoint (0: run to --steps)
  int profile_first = 0, profile_last = 0;  // --profile-steps A:B: cudaProfilerStart/Stop around them
  // layerwise sampling (lisa, ows, owlore; DESIGN.md §1)
  int gamma = 5;                     // decoder layers trained at once
  int period = 50;                   // K: steps between re-samplings
  bool freeze_embeddings = false;    // embedding, final norm and head frozen too
  StatePolicy state_policy = StatePolicy::drop;  // a leaving layer's optimizer state
  std::string outliers_path;         // D file (owlore outliers); computed and cached when empty
  double outlier_threshold = 13.0;   // M
  int outlier_samples = 128;         // calibration sequences (fewer if the data has fewer)
  int outlier_seq = 2048;            // calibration tokens per sequence (clamped to --seq)
  // GaLore (owlore, galore)
  int rank = 256;
  int proj_gap = 100;
  float galore_scale = 1.0f;
  ProjectorMode projector = ProjectorMode::exact;
};

struct TrainResult {
  double first_val_loss = 0, last_val_loss = 0;
  std::vector<double> train_losses;  // per step
  double tokens_per_s = 0;
  std::string checkpoint_dir;        // where the final model was written
};

// A checkpoint (model_path: safetensors dir/file or GGUF), or a preset's shape with fresh
// weights seeded by init_seed (exactly one of the two is given; the error says so otherwise).
LoadedModel load_model_or_preset(const std::string& model_path, const std::string& preset, uint64_t init_seed);

// Validates options (each error names the flag), trains, writes <out>/metrics.jsonl.
TrainResult run_training(const TrainOptions& options);

}  // namespace owlore
