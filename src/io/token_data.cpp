#include "io/token_data.h"

#include <cctype>
#include <cstdio>
#include <cstring>
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

// The example in one JSONL line, or a message saying what is wrong with it.
struct ParsedLine {
  std::string prompt, response, problem;
};

ParsedLine parse_instruct_line(const std::string& line) {
  ParsedLine out;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    // e.what() starts with "[json.exception.parse_error.101] parse error at line 1, column N", or
    // "[json.exception.out_of_range.406] number overflow parsing '1E400'" for a number no
    // double holds: both make the line unusable.
    const std::string what = e.what();
    const size_t at = what.find("] ");
    out.problem = "not valid JSON: " + (at == std::string::npos ? what : what.substr(at + 2));
    return out;
  }
  if (!j.is_object()) {
    out.problem = std::string("expected a JSON object, got ") + json_type(j);
    return out;
  }
  const char* prompt_key = "question";
  const char* response_key = "answer";
  if (!j.contains("question") && !j.contains("answer")) {
    prompt_key = "prompt";
    response_key = "response";
  }
  for (const char* key : {prompt_key, response_key}) {
    if (!j.contains(key)) {
      std::string keys;
      for (const auto& item : j.items()) keys += (keys.empty() ? "" : ", ") + ("\"" + item.key() + "\"");
      out.problem = std::string("missing \"") + key +
                    "\": expected string fields \"question\" and \"answer\" (GSM8K) or \"prompt\" and \"response\"; "
                    "found " + (keys.empty() ? "no keys" : keys);
      return out;
    }
    if (!j[key].is_string()) {
      out.problem = std::string("\"") + key + "\" is " + json_type(j[key]) + ", expected a string";
      return out;
    }
  }
  out.prompt = j[prompt_key].get<std::string>();
  out.response = j[response_key].get<std::string>();
  return out;
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

void append_chat_example(const Tokenizer& tokenizer, const std::string& system, const std::string& prompt,
                         const std::string& response, TokenStream& out) {
  // Tokenizing the whole conversation at once gives the ids the model sees at inference (the
  // split of "assistant\n{response}" depends on both sides); the mask then comes from where
  // each token's bytes fall relative to the response.
  const std::string text = format_chat({{"user", prompt}, {"assistant", response}}, false, system);
  const size_t response_begin = format_chat({{"user", prompt}}, true, system).size();
  const size_t response_end = response_begin + response.size() + std::strlen("<|im_end|>");
  std::vector<Tokenizer::Span> spans;
  const std::vector<int32_t> ids = tokenizer.encode_with_spans(text, spans);
  if (out.loss_mask.size() != out.tokens.size()) out.loss_mask.assign(out.tokens.size(), 1);
  for (size_t i = 0; i < ids.size(); i++) {
    out.tokens.push_back(ids[i]);
    out.loss_mask.push_back(spans[i].end > response_begin && spans[i].begin < response_end ? 1 : 0);
  }
  out.examples++;
}

TokenStream parse_instruct_jsonl(const std::string& text, const std::string& path, const Tokenizer& tokenizer,
                                 const InstructOptions& options) {
  std::istringstream file(text);
  TokenStream stream;
  const int64_t dropped_before = tokenizer.dropped_bytes();
  std::string line;
  int64_t line_number = 0;
  while (std::getline(file, line)) {
    line_number++;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const ParsedLine parsed = parse_instruct_line(line);
    if (parsed.problem.empty()) {
      append_chat_example(tokenizer, options.system, parsed.prompt, parsed.response, stream);
      continue;
    }
    const std::string problem = path + ":" + std::to_string(line_number) + ": " + parsed.problem;
    if (!options.skip_bad_lines) fail(problem, " (skip malformed lines with --skip-bad-lines)");
    if (stream.bad_lines < kMaxReportedProblems) std::cerr << problem << " (skipped)\n";
    stream.bad_lines++;
    stream.problems.push_back(problem);
  }
  OWLORE_REQUIRE(!file.bad(), path, ": read error after line ", line_number);
  if (stream.bad_lines > 0)
    std::cerr << path << ": skipped " << stream.bad_lines << " malformed line" << (stream.bad_lines > 1 ? "s" : "")
              << " of " << line_number << "\n";
  OWLORE_REQUIRE(stream.examples > 0, path, ": no usable examples in ", line_number, " lines");
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
  } else if (looks_like_damaged_magic(magic)) {
    fail(path, ": starts with \"", escaped(magic), "\", close to but not the token file magic \"OWLTOK1\\0\": ",
         "this looks like a damaged token file, not text (write it again with owlore tokenize)");
  } else if (path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0) {
    OWLORE_REQUIRE(tokenizer, path, ": instruction data (.jsonl) needs a model with a tokenizer");
    return load_instruct_jsonl(path, *tokenizer, options);
  } else if (tokenizer) {
    return load_text_tokens(path, *tokenizer);
  } else {
    stream.tokens = byte_tokens(read_text_file(path));
  }
  require_tokens(path, stream);
  return stream;
}

}  // namespace owlore
