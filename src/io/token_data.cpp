#include "io/token_data.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/dataset.h"
#include "io/files.h"

namespace owlore {

namespace {

constexpr char kTokenFileMagic[8] = {'O', 'W', 'L', 'T', 'O', 'K', '1', '\0'};
constexpr uint32_t kTokenFileVersion = 1;
constexpr size_t kTokenFileHeader = 24;
constexpr int kMaxReportedProblems = 10;  // on stderr; TokenStream::problems keeps them all

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "OWLTOK1 token files are read and written as little-endian arrays"
#endif

// Tells the user, once per file, that bytes went missing (never silently).
void report_dropped(const std::string& path, const Tokenizer& tokenizer, int64_t dropped_before) {
  const int64_t dropped = tokenizer.dropped_bytes() - dropped_before;
  if (dropped > 0)
    std::cerr << path << ": " << dropped
              << " bytes have no symbol in the tokenizer's vocabulary and were dropped (as Hugging Face "
                 "tokenizers does)\n";
}

const char* json_type(const nlohmann::json& j) {
  return j.is_string() ? "a string" : j.is_number() ? "a number" : j.is_boolean() ? "a boolean"
         : j.is_null() ? "null" : j.is_array() ? "an array" : "an object";
}

// The conversation in one JSON value, or a message saying what is wrong with it.
struct ParsedExample {
  std::vector<ChatMessage> messages;
  std::string problem;
};

const char* const kExpectedKinds =
    "expected \"messages\" (a list of {\"role\", \"content\"}), Alpaca \"instruction\"/\"input\"/\"output\", "
    "\"question\"/\"answer\" (GSM8K) or \"prompt\"/\"response\", all strings";

// A string field, or a problem naming it.
bool string_field(const nlohmann::json& j, const char* key, std::string& value, std::string& problem,
                  bool optional = false) {
  if (!j.contains(key)) {
    if (optional) return true;
    std::string keys;
    for (const auto& item : j.items()) keys += (keys.empty() ? "" : ", ") + ("\"" + item.key() + "\"");
    problem = std::string("missing \"") + key + "\": " + kExpectedKinds + "; found " + (keys.empty() ? "no keys" : keys);
    return false;
  }
  if (!j[key].is_string()) {
    problem = std::string("\"") + key + "\" is " + json_type(j[key]) + ", expected a string";
    return false;
  }
  value = j[key].get<std::string>();
  return true;
}

ParsedExample parse_example(const nlohmann::json& j, const InstructOptions& options) {
  ParsedExample out;
  if (!j.is_object()) {
    out.problem = std::string("expected a JSON object, got ") + json_type(j);
    return out;
  }
  std::vector<ChatMessage>& m = out.messages;
  if (j.contains("messages")) {
    const nlohmann::json& list = j["messages"];
    if (!list.is_array()) {
      out.problem = std::string("\"messages\" is ") + json_type(list) + ", expected an array of {\"role\", \"content\"}";
      return out;
    }
    for (size_t i = 0; i < list.size(); i++) {
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!list[i].is_object()) {
        out.problem = where + " is " + json_type(list[i]) + ", expected an object {\"role\", \"content\"}";
        return out;
      }
      ChatMessage message;
      for (auto [key, value] : {std::pair<const char*, std::string*>{"role", &message.role}, {"content", &message.content}}) {
        if (!list[i].contains(key) || !list[i][key].is_string()) {
          out.problem = where + (list[i].contains(key) ? std::string(".") + key + " is " + json_type(list[i][key])
                                                       : std::string(" has no \"") + key + "\"") +
                        ", expected a string";
          return out;
        }
        *value = list[i][key].get<std::string>();
      }
      m.push_back(std::move(message));
    }
    bool assistant = false;
    for (const ChatMessage& message : m) assistant |= message.role == "assistant";
    if (!assistant) {
      out.problem = "\"messages\" has no assistant message (nothing to train on)";
      return out;
    }
  } else {
    std::string prompt, response, input;
    const bool alpaca = j.contains("instruction") || j.contains("output");
    const bool gsm8k = !alpaca && (j.contains("question") || j.contains("answer"));
    const char* prompt_key = alpaca ? "instruction" : gsm8k ? "question" : "prompt";
    const char* response_key = alpaca ? "output" : gsm8k ? "answer" : "response";
    if (!string_field(j, prompt_key, prompt, out.problem) || !string_field(j, response_key, response, out.problem) ||
        (alpaca && !string_field(j, "input", input, out.problem, /*optional=*/true)))
      return out;
    if (!input.empty()) prompt += "\n\n" + input;
    m = {{"user", prompt}, {"assistant", response}};
  }
  if (!options.system.empty() && m[0].role != "system") m.insert(m.begin(), {"system", options.system});
  try {  // the roles the templates take (render_chat checks them, as the Jinja raises)
    render_chat(ChatTemplate::kNone, m, false);
  } catch (const Error& e) {
    out.problem = e.what();
  }
  return out;
}

std::string json_problem(const nlohmann::json::exception& e) {
  // e.what() starts with "[json.exception.parse_error.101] parse error at line 1, column N", or
  // "[json.exception.out_of_range.406] number overflow parsing '1E400'" for a number no
  // double holds: both make the example unusable.
  const std::string what = e.what();
  const size_t at = what.find("] ");
  return "not valid JSON: " + (at == std::string::npos ? what : what.substr(at + 2));
}

// The 1-based line of each top-level element of a JSON array text (the first byte of each
// element), so that a bad element is named file:line. Stops at the first sign the text is not
// a well-formed array; nlohmann's parse then reports that.
std::vector<int64_t> array_element_lines(const std::string& text) {
  std::vector<int64_t> lines;
  int64_t line = 1;
  int depth = 0;
  bool in_string = false, escape = false, expect_value = false;
  for (char c : text) {
    if (c == '\n') line++;
    if (in_string) {
      if (escape) escape = false;
      else if (c == '\\') escape = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    if (depth == 1 && expect_value && c != ']') {
      lines.push_back(line);
      expect_value = false;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth == 1) expect_value = true;
    } else if (c == ']' || c == '}') {
      if (--depth <= 0) break;
    } else if (c == ',' && depth == 1) {
      expect_value = true;
    }
  }
  return lines;
}

// A file whose first bytes come close to the magic is a token file damaged at its start (a
// flipped bit, a changed version digit, a lower-cased copy), not text: read as text, its binary
// tokens would silently become training characters. Close: at most 2 of the 8 bytes differ, or
// the file starts with "OWLTOK" in any case.
bool looks_like_damaged_magic(const std::string& prefix) {
  int differing = 0;
  for (size_t i = 0; i < 8; i++) differing += i >= prefix.size() || prefix[i] != kTokenFileMagic[i];
  bool owltok = prefix.size() >= 6;
  for (size_t i = 0; owltok && i < 6; i++) owltok = std::toupper((unsigned char)prefix[i]) == kTokenFileMagic[i];
  return owltok || differing <= 2;
}

// Bytes as C-string text (OWLTOJ1\0), for an error message.
std::string escaped(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c == 0) out += "\\0";
    else if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') out += (char)c;
    else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

void require_tokens(const std::string& path, const TokenStream& stream) {
  OWLORE_REQUIRE(!stream.tokens.empty(), path, ": no tokens (empty data file?)");
}

}  // namespace

std::string byte_level_refusal(int vocab, const std::string& model, const std::string& hint) {
  if (vocab >= 256 && vocab <= kMaxByteLevelVocab) return "";
  return "model '" + model + "' has no tokenizer and a vocabulary of " + std::to_string(vocab) +
         " ids: byte-level tokens (one id per byte) serve only the tiny presets (vocabularies of 256 to " +
         std::to_string(kMaxByteLevelVocab) + "); " + hint;
}

void append_chat_example(const Tokenizer& tokenizer, ChatTemplate chat_template,
                         const std::vector<ChatMessage>& messages, TrainOn train_on, TokenStream& out) {
  // Tokenizing the whole conversation at once gives the ids the model sees at inference (the
  // split of "assistant\n{response}" depends on both sides); the mask then comes from where
  // each token's bytes fall relative to the trained segments.
  const std::vector<ChatSegment> segments = render_chat(chat_template, messages, /*add_generation_prompt=*/false);
  int last_turn = -1;
  for (const ChatSegment& s : segments) last_turn = std::max(last_turn, s.turn);
  std::string text;
  std::vector<std::pair<size_t, size_t>> trained;  // byte ranges, in order
  for (const ChatSegment& s : segments) {
    if (train_on == TrainOn::kAll || (s.trained && (train_on == TrainOn::kAssistant || s.turn == last_turn)))
      trained.emplace_back(text.size(), text.size() + s.text.size());
    text += s.text;
  }
  std::vector<Tokenizer::Span> spans;
  const std::vector<int32_t> ids = tokenizer.encode_with_spans(text, spans);
  if (out.loss_mask.size() != out.tokens.size()) out.loss_mask.assign(out.tokens.size(), 1);
  size_t r = 0;
  for (size_t i = 0; i < ids.size(); i++) {
    while (r < trained.size() && trained[r].second <= spans[i].begin) r++;
    // An empty span (a token for no byte) belongs to the range it sits inside.
    const bool in = r < trained.size() && (spans[i].end > trained[r].first ||
                                           (spans[i].begin == spans[i].end && spans[i].begin >= trained[r].first));
    out.tokens.push_back(ids[i]);
    out.loss_mask.push_back(in ? 1 : 0);
  }
  out.examples++;
}

TokenStream parse_instruct_jsonl(const std::string& text, const std::string& path, const Tokenizer& tokenizer,
                                 const InstructOptions& options) {
  OWLORE_REQUIRE(options.chat_template != ChatTemplate::kAuto, path, ": chat data needs a chat template: ",
                 options.no_template, "; pass --chat-template NAME (", choice_list(kChatTemplateChoices), ")");
  TokenStream stream;
  const int64_t dropped_before = tokenizer.dropped_bytes();
  int64_t line_number = 0, items = 0;
  auto take = [&](const ParsedExample& parsed, int64_t line) {
    items++;
    if (parsed.problem.empty()) {
      append_chat_example(tokenizer, options.chat_template, parsed.messages, options.train_on, stream);
      return;
    }
    const std::string problem = path + ":" + std::to_string(line) + ": " + parsed.problem;
    if (!options.skip_bad_lines) fail(problem, " (skip malformed lines with --skip-bad-lines)");
    if (stream.bad_lines < kMaxReportedProblems) std::cerr << problem << " (skipped)\n";
    stream.bad_lines++;
    stream.problems.push_back(problem);
  };
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {  // one JSON array of examples
    nlohmann::json array;
    try {
      array = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": ", json_problem(e), " (a file starting with '[' is read as one JSON array of examples)");
    }
    OWLORE_REQUIRE(array.is_array(), path, ": expected a JSON array of examples");
    const std::vector<int64_t> lines = array_element_lines(text);
    for (size_t i = 0; i < array.size(); i++) take(parse_example(array[i], options), i < lines.size() ? lines[i] : 0);
    line_number = lines.empty() ? 1 : lines.back();
  } else {
    std::istringstream file(text);
    std::string line;
    while (std::getline(file, line)) {
      line_number++;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      ParsedExample parsed;
      try {
        parsed = parse_example(nlohmann::json::parse(line), options);
      } catch (const nlohmann::json::exception& e) {
        parsed.problem = json_problem(e);
      }
      take(parsed, line_number);
    }
    OWLORE_REQUIRE(!file.bad(), path, ": read error after line ", line_number);
  }
  if (stream.bad_lines > 0)
    std::cerr << path << ": skipped " << stream.bad_lines << " malformed " << (stream.bad_lines > 1 ? "examples" : "example")
              << " of " << items << "\n";
  OWLORE_REQUIRE(stream.examples > 0, path, ": no usable examples in ", items, " examples (", line_number, " lines)");
  report_dropped(path, tokenizer, dropped_before);
  return stream;
}

TokenStream load_instruct_jsonl(const std::string& path, const Tokenizer& tokenizer, const InstructOptions& options) {
  return parse_instruct_jsonl(read_regular_file(path, "instruction data file"), path, tokenizer, options);
}

TokenStream load_text_tokens(const std::string& path, const Tokenizer& tokenizer) {
  const int64_t dropped_before = tokenizer.dropped_bytes();
  TokenStream stream;
  stream.tokens = tokenizer.encode(read_text_file(path));
  report_dropped(path, tokenizer, dropped_before);
  require_tokens(path, stream);
  return stream;
}

void write_token_file(const std::string& path, const std::vector<int32_t>& tokens) {
  int32_t max_token = 0;
  for (size_t i = 0; i < tokens.size(); i++) {
    OWLORE_REQUIRE(tokens[i] >= 0, path, ": token ", i, " is ", tokens[i], ", token ids must be >= 0");
    max_token = std::max(max_token, tokens[i]);
  }
  const uint32_t width = max_token < 65536 ? 2 : 4;
  const uint64_t count = tokens.size();
  char header[kTokenFileHeader];
  std::memcpy(header, kTokenFileMagic, 8);
  std::memcpy(header + 8, &kTokenFileVersion, 4);
  std::memcpy(header + 12, &width, 4);
  std::memcpy(header + 16, &count, 8);

  const std::string temp = path + ".tmp";
  {
    std::ofstream file(temp, std::ios::binary | std::ios::trunc);
    OWLORE_REQUIRE(file.good(), temp, ": cannot create token file");
    file.write(header, kTokenFileHeader);
    if (width == 4) {
      file.write(reinterpret_cast<const char*>(tokens.data()), (std::streamsize)(count * 4));
    } else {
      std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
      file.write(reinterpret_cast<const char*>(narrow.data()), (std::streamsize)(count * 2));
    }
    file.flush();
    OWLORE_REQUIRE(file.good(), temp, ": write failed (disk full?)");
  }
  OWLORE_REQUIRE(std::rename(temp.c_str(), path.c_str()) == 0, path, ": cannot move ", temp, " into place");
}

bool is_token_file(const std::string& path) {
  return is_regular_file(path) && RegularFile(path, "token file").read_prefix(8) == std::string(kTokenFileMagic, 8);
}

std::vector<int32_t> read_token_file(const std::string& path) {
  const RegularFile file(path, "token file");
  const uint64_t size = file.size();
  OWLORE_REQUIRE(size >= kTokenFileHeader, path, ": ", size, " bytes, shorter than the ", kTokenFileHeader,
                 "-byte OWLTOK1 header");
  char header[kTokenFileHeader];
  OWLORE_REQUIRE(file.read_at(0, header, kTokenFileHeader) == kTokenFileHeader, path, ": read error");
  OWLORE_REQUIRE(std::memcmp(header, kTokenFileMagic, 8) == 0, path,
                 ": not an owlore token file (expected the magic \"OWLTOK1\\0\" at offset 0)");
  uint32_t version, width;
  uint64_t count;
  std::memcpy(&version, header + 8, 4);
  std::memcpy(&width, header + 12, 4);
  std::memcpy(&count, header + 16, 8);
  OWLORE_REQUIRE(version == kTokenFileVersion, path, ": token file version ", version, ", this build reads version ",
                 kTokenFileVersion);
  OWLORE_REQUIRE(width == 2 || width == 4, path, ": ", width, " bytes per token, expected 2 (uint16) or 4 (uint32)");
  const uint64_t payload = size - kTokenFileHeader;
  OWLORE_REQUIRE(count <= payload / width && count * width == payload, path, ": header says ", count, " tokens of ",
                 width, " bytes (", count * width, " bytes), but ", payload, " bytes follow the header",
                 payload < count * width ? " (truncated)" : " (trailing data)");
  std::vector<int32_t> tokens(count);
  if (width == 4) {
    OWLORE_REQUIRE(file.read_at(kTokenFileHeader, tokens.data(), payload) == payload, path,
                   ": read error (truncated?)");
    for (uint64_t i = 0; i < count; i++)
      OWLORE_REQUIRE(tokens[i] >= 0, path, ": token ", i, " is ", (uint32_t)tokens[i], ", above the int32 range");
  } else {
    std::vector<uint16_t> narrow(count);
    OWLORE_REQUIRE(file.read_at(kTokenFileHeader, narrow.data(), payload) == payload, path,
                   ": read error (truncated?)");
    tokens.assign(narrow.begin(), narrow.end());
  }
  return tokens;
}

TokenStream load_token_stream(const std::string& path, const Tokenizer* tokenizer, const InstructOptions& options) {
  const std::string magic = RegularFile(path, "data file").read_prefix(8);
  TokenStream stream;
  if (magic == std::string(kTokenFileMagic, 8)) {
    stream.tokens = read_token_file(path);
    require_tokens(path, stream);
    return stream;
  }
  if (looks_like_damaged_magic(magic))
    fail(path, ": starts with \"", escaped(magic), "\", close to but not the token file magic \"OWLTOK1\\0\": ",
         "this looks like a damaged token file, not text (write it again with owlore tokenize)");
  const std::string text = read_regular_file(path, "data file");
  const size_t first = text.find_first_not_of(" \t\r\n");
  const bool json_name = std::filesystem::path(path).extension() == ".json" ||
                         std::filesystem::path(path).extension() == ".jsonl";
  if (first != std::string::npos && (text[first] == '{' || text[first] == '[')) {
    OWLORE_REQUIRE(tokenizer, path, ": instruction data (JSON) needs the model's tokenizer; ",
                   options.no_tokenizer.empty() ? "this model has none" : options.no_tokenizer);
    return parse_instruct_jsonl(text, path, *tokenizer, options);
  }
  if (json_name) {
    int64_t line = 1;
    for (size_t i = 0; first != std::string::npos && i < first; i++) line += text[i] == '\n';
    fail(path, ":", line, ": expected instruction data (JSON objects one a line, or a JSON array of them: ",
         kExpectedKinds, "), but the file does not start with '{' or '['; plain text needs another extension");
  }
  OWLORE_REQUIRE(tokenizer || options.no_tokenizer.empty(), path, ": text data needs the model's tokenizer: ",
                 options.no_tokenizer);
  if (tokenizer) {
    const int64_t dropped_before = tokenizer->dropped_bytes();
    stream.tokens = tokenizer->encode(text);
    report_dropped(path, *tokenizer, dropped_before);
  } else {
    stream.tokens = byte_tokens(text);
  }
  require_tokens(path, stream);
  return stream;
}

}  // namespace owlore
