// Training data as a token stream with a loss mask, before pack_dataset (io/dataset.h) cuts it
// into rows: plain text through a Tokenizer, instruction JSONL through the chat template with
// the loss on the answers only, and pre-tokenized OWLTOK1 files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace owlore {

struct TokenStream {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // one per token (1 = training target); empty = every token
  int64_t examples = 0;            // instruction examples kept
  int64_t bad_lines = 0;           // malformed JSONL lines skipped (skip_bad_lines mode)
  std::vector<std::string> problems;  // "file:line: what was wrong" for each skipped line
};

struct InstructOptions {
  // The chat template's system turn; SmolLM2-Instruct's own default unless set.
  std::string system = kSmolLM2SystemMessage;
  // false: the first malformed line stops the load with its file:line. true: malformed lines
  // are skipped, each reported on stderr (the first few) and counted in TokenStream.
  bool skip_bad_lines = false;
};

// One instruction example rendered with format_chat (system, user = prompt, assistant =
// response) and appended to out; loss_mask is 1 exactly on the tokens that carry the response
// and its closing <|im_end|>, 0 on the system/user turns, "<|im_start|>assistant\n" and the
// final "\n". A token that straddles the start of the response (only when the response begins
// with whitespace that merges with the template's "\n") counts as response.
void append_chat_example(const Tokenizer& tokenizer, const std::string& system, const std::string& prompt,
                         const std::string& response, TokenStream& out);

// JSONL, one example per line: {"question", "answer"} (GSM8K) or {"prompt", "response"}, both
// strings; other keys are ignored, blank lines skipped. Examples are concatenated in file order.
TokenStream load_instruct_jsonl(const std::string& path, const Tokenizer& tokenizer,
                                const InstructOptions& options = {});
// The same from the file's text already in memory; `path` names it in errors.
TokenStream parse_instruct_jsonl(const std::string& text, const std::string& path, const Tokenizer& tokenizer,
                                 const InstructOptions& options = {});

// A whole text file, every token a target (special-token text in it becomes special tokens,
// as HF tokenizers does by default).
TokenStream load_text_tokens(const std::string& path, const Tokenizer& tokenizer);

// OWLTOK1 pre-tokenized file, little-endian:
//   offset 0   char[8]  magic "OWLTOK1\0"
//          8   uint32   version (1)
//         12   uint32   bytes per token: 2 (uint16) or 4 (uint32)
//         16   uint64   token count
//         24   tokens
// The writer picks uint16 when every token fits, and writes through a temporary file so a
// crash never leaves a truncated file under the final name.
void write_token_file(const std::string& path, const std::vector<int32_t>& tokens);
std::vector<int32_t> read_token_file(const std::string& path);
bool is_token_file(const std::string& path);  // the file starts with the OWLTOK1 magic

// What the trainer calls for --data: an OWLTOK1 file (by its magic), a .jsonl instruction file,
// or plain text; tokenizer may be null for byte-level tokens (tiny presets), except for JSONL.
// A file whose first bytes are close to the magic (a damaged token file) is an error, never
// read as text.
TokenStream load_token_stream(const std::string& path, const Tokenizer* tokenizer,
                              const InstructOptions& options = {});

}  // namespace owlore
