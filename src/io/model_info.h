// `owlore info --model FILE`: what a checkpoint holds, without loading its weights into an arena.
#pragma once
#include <ostream>
#include <string>

namespace owlore {

// Prints the model config, parameter count (from the config and from the tensors actually in the
// file), tensor counts per dtype / quantization type, and the tokenizer size when the file has
// one (GGUF metadata, or tokenizer.json beside a Hugging Face checkpoint). path is anything
// load_model accepts. Throws owlore::Error for files it cannot open.
void print_model_info(const std::string& path, std::ostream& out);

}  // namespace owlore
