// Training data as a token stream with a loss mask, before pack_dataset (io/dataset.h) cuts it
// into rows: plain text through a Tokenizer, instruction data (JSONL or a JSON array: messages,
// Alpaca, question/answer, prompt/response) through the model's chat template with the loss on
// the assistant turns, and pre-tokenized OWLTOK1 files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/choices.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"

namespace owlore {

struct TokenStream {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // one per token (1 = training target); empty = every token
  int64_t examples = 0;            // instruction examples kept
  int64_t bad_lines = 0;           // malformed JSONL lines skipped (skip_bad_lines mode)
  std::vector<std::string> problems;  // "file:line: what was wrong" for each skipped line
};

// Which tokens of a conversation are training targets (--train-on).
enum class TrainOn { kAssistant, kLast, kAll };
inline constexpr ChoiceTable<TrainOn, 3> kTrainOnChoices{
    {{"assistant", TrainOn::kAssistant}, {"last", TrainOn::kLast}, {"all", TrainOn::kAll}}};
inline const char* name(TrainOn t) { return choice_name(kTrainOnChoices, t); }

struct InstructOptions {
  // The template chat data renders with. kAuto here means the model's could not be resolved:
  // chat data is then an error saying `no_template` (why) and what to pass.
  ChatTemplate chat_template = ChatTemplate::kAuto;
  std::string no_template = "no chat template was given";
  // assistant: every assistant turn and its end of turn; last: only the last one; all: every token.
  TrainOn train_on = TrainOn::kAssistant;
  // The system message of examples that have none (--system); empty: the template's own default
  // (SmolLM2's for chatml, none for the others).
  std::string system;
  // false: the first malformed line stops the load with its file:line. true: malformed lines
  // are skipped, each reported on stderr (the first few) and counted in TokenStream.
  bool skip_bad_lines = false;
  // Set when the model has no tokenizer and a vocabulary byte ids do not serve (see
  // byte_level_refusal): text data is then this error, never byte ids.
  std::string no_tokenizer;
};

// Byte-level tokens (one id per byte) serve only the tiny test presets: a model without a
// tokenizer may read text as bytes when its vocabulary is 256 to kMaxByteLevelVocab ids.
constexpr int kMaxByteLevelVocab = 512;
// Empty when it may; else why not, naming the model and ending with `hint` (what to pass).
std::string byte_level_refusal(int vocab, const std::string& model, const std::string& hint);

// One conversation rendered with `chat_template` (render_chat) and tokenized whole, appended to
// out; loss_mask is 1 on every token whose byte span overlaps a trained segment that train_on
// selects (a token straddling a segment's edge counts as trained), 0 elsewhere.
void append_chat_example(const Tokenizer& tokenizer, ChatTemplate chat_template,
                         const std::vector<ChatMessage>& messages, TrainOn train_on, TokenStream& out);

// Instruction data, one example per JSON object, as JSONL (one object a line, blank lines
// skipped) or as one JSON array of objects (alpaca_data.json). Each object's keys decide its kind:
//   {"messages": [{"role", "content"}, ...]}   multi-turn, optional first system message
//   {"instruction", "input", "output"}         Alpaca ("input" optional; joined to the
//                                               instruction after a blank line when not empty)
//   {"question", "answer"}                     GSM8K
//   {"prompt", "response"}
// other keys are ignored. Examples are concatenated in file order. A malformed example is a
// problem named file:line (fatal, or skipped with skip_bad_lines).
TokenStream load_instruct_jsonl(const std::string& path, const Tokenizer& tokenizer,
                                const InstructOptions& options = {});
// The same from the file's text already in memory (JSONL or a JSON array, by its first
// non-space byte); `path` names it in errors.
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

// What the trainer calls for --data, by content, not name: an OWLTOK1 file (by its magic);
// instruction data when the first non-space byte is '{' (JSONL) or '[' (a JSON array); else
// plain text, except that a .json or .jsonl file must be instruction data. tokenizer may be
// null for byte-level tokens (tiny presets, unless options.no_tokenizer says otherwise), never
// for instruction data. A file whose first bytes are close to the magic (a damaged token file)
// is an error, never read as text.
TokenStream load_token_stream(const std::string& path, const Tokenizer* tokenizer,
                              const InstructOptions& options = {});

}  // namespace owlore
