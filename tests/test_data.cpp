// Training data sources: instruction JSONL (loss exactly on the answers), malformed lines
// reported with file:line in both modes, OWLTOK1 token files (round trip, every kind of damage),
// and the --data dispatcher.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "io/dataset.h"
#include "io/chat_template.h"
#include "io/token_data.h"
#include "io/tokenizer.h"

namespace owlore {
namespace {

const std::string kSourceDir = OWLORE_SOURCE_DIR;

const Tokenizer& smollm2() {
  static const Tokenizer tok(load_tokenizer_json(kSourceDir + "/tests/data/smollm2_tokenizer.json"));
  return tok;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "owlore_test_data_" + name; }

std::string write_file(const std::string& name, const std::string& content) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

// SmolLM2's ChatML, as its GGUF's tokenizer.chat_template resolves (tests/data has only its
// tokenizer.json).
InstructOptions chatml() {
  InstructOptions o;
  o.chat_template = ChatTemplate::kChatML;
  return o;
}

// Error message of f(), or "(no error)".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The decoded text of each maximal run of masked tokens.
std::vector<std::string> masked_runs(const Tokenizer& tok, const TokenStream& s) {
  std::vector<std::string> runs;
  bool in_run = false;
  for (size_t i = 0; i < s.tokens.size(); i++) {
    if (s.loss_mask[i] && !in_run) runs.emplace_back();
    if (s.loss_mask[i]) runs.back() += tok.token_bytes(s.tokens[i]);
    in_run = s.loss_mask[i];
  }
  return runs;
}

TEST(InstructData, LossMaskCoversExactlyTheAnswersAndTheirImEnd) {
  const Tokenizer& tok = smollm2();
  const std::string path = write_file(
      "two.jsonl",
      "{\"question\": \"What is 2+3?\", \"answer\": \"2+3 = <<2+3=5>>5\\n#### 5\"}\n"
      "\n"
      "{\"prompt\": \"Say hi\", \"response\": \"Hi! \\ud83d\\ude00\", \"id\": 7}\r\n");
  const TokenStream s = load_instruct_jsonl(path, tok, chatml());
  EXPECT_EQ(s.examples, 2);
  EXPECT_EQ(s.bad_lines, 0);
  ASSERT_EQ(s.loss_mask.size(), s.tokens.size());

  // The ids are those of the whole rendered conversation, one example after the other.
  std::vector<int32_t> expected = tok.encode(format_chat(ChatTemplate::kChatML, {{"user", "What is 2+3?"}, {"assistant", "2+3 = <<2+3=5>>5\n#### 5"}}, false));
  const std::vector<int32_t> second = tok.encode(format_chat(ChatTemplate::kChatML, {{"user", "Say hi"}, {"assistant", "Hi! 😀"}}, false));
  expected.insert(expected.end(), second.begin(), second.end());
  EXPECT_EQ(s.tokens, expected);

  EXPECT_EQ(masked_runs(tok, s), (std::vector<std::string>{"2+3 = <<2+3=5>>5\n#### 5<|im_end|>", "Hi! 😀<|im_end|>"}));
  // Around the first answer: the unmasked prompt ends with "<|im_start|>assistant\n", then the
  // answer ... "<|im_end|>", then "\n" (unmasked).
  size_t first = 0;
  while (!s.loss_mask[first]) first++;
  EXPECT_EQ(tok.decode(std::vector<int32_t>(s.tokens.begin(), s.tokens.begin() + first)),
            format_chat(ChatTemplate::kChatML, {{"user", "What is 2+3?"}}, true));
  size_t last = first;
  while (s.loss_mask[last + 1]) last++;
  EXPECT_EQ(s.tokens[last], tok.require_token("<|im_end|>"));
  EXPECT_EQ(tok.token_bytes(s.tokens[last + 1]), "\n");
  EXPECT_EQ(s.loss_mask[last + 1], 0);
  EXPECT_EQ(s.tokens[last + 2], tok.require_token("<|im_start|>"));  // the next example's system turn
}

TEST(InstructData, SystemMessageIsAParameter) {
  const Tokenizer& tok = smollm2();
  const std::string path = write_file("sys.jsonl", "{\"prompt\": \"p\", \"response\": \"r\"}\n");
  InstructOptions options = chatml();
  options.system = "Be brief.";
  const TokenStream s = load_instruct_jsonl(path, tok, options);
  EXPECT_EQ(tok.decode(s.tokens),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\np<|im_end|>\n<|im_start|>assistant\nr<|im_end|>\n");
  const TokenStream d = load_instruct_jsonl(path, tok, chatml());
  EXPECT_NE(tok.decode(d.tokens).find(kSmolLM2SystemMessage), std::string::npos);
}

TEST(InstructData, ResponsesStartingWithWhitespaceKeepAllTheirBytesInTheLoss) {
  const Tokenizer& tok = smollm2();
  for (const std::string response : {" 42", "\n\n\nindented", "   ", ""}) {
    TokenStream s;
    append_chat_example(tok, ChatTemplate::kChatML, {{"user", "q"}, {"assistant", response}}, TrainOn::kAssistant, s);
    const std::vector<std::string> runs = masked_runs(tok, s);
    ASSERT_EQ(runs.size(), 1u) << "response '" << response << "'";
    // All of the response is trained; at most the template's "\n" joins it at the front.
    EXPECT_TRUE(runs[0] == response + "<|im_end|>" || runs[0] == "\n" + response + "<|im_end|>")
        << "response '" << response << "' masked as '" << runs[0] << "'";
  }
}

TEST(InstructData, Gsm8kAnswersAreExactlyTheMaskedText) {
  const Tokenizer& tok = smollm2();
  std::ifstream gsm(kSourceDir + "/data/gsm8k/train.jsonl");
  std::string lines, line;
  for (int i = 0; i < 40 && std::getline(gsm, line); i++) lines += line + "\n";
  const TokenStream s = load_instruct_jsonl(write_file("gsm8k40.jsonl", lines), tok, chatml());
  ASSERT_EQ(s.examples, 40);
  const std::vector<std::string> runs = masked_runs(tok, s);
  ASSERT_EQ(runs.size(), 40u);
  std::istringstream again(lines);
  for (int i = 0; std::getline(again, line); i++) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(runs[i], j["answer"].get<std::string>() + "<|im_end|>") << "example " << i;
  }
  // Packed rows carry the mask: targets exist only where the answers are.
  const Dataset data = pack_dataset(s.tokens, s.loss_mask, 256, 0.1);
  int64_t masked = 0, total = 0;
  for (uint8_t m : data.train.loss_mask) masked += m, total++;
  EXPECT_GT(masked, 0);
  EXPECT_LT(masked, total);
}

const char* kBadLines =
    "{\"question\": \"q1\", \"answer\": \"a1\"}\n"  // 1 ok
    "{\"question\": \"q2\", \"answer\": \n"         // 2 broken JSON
    "[\"not\", \"an\", \"object\"]\n"               // 3 array
    "{\"question\": \"q4\"}\n"                      // 4 missing answer
    "{\"question\": 5, \"answer\": \"a5\"}\n"       // 5 wrong type
    "\n"                                            // 6 blank: fine
    "{\"title\": \"t\", \"body\": \"b\"}\n"         // 7 neither form
    "{\"prompt\": \"p8\", \"response\": null}\n"    // 8 null response
    "{\"prompt\": \"p9\", \"response\": \"r9\"}\n";  // 9 ok

TEST(InstructData, BadLineIsFatalWithFileAndLine) {
  const std::string path = write_file("bad.jsonl", kBadLines);
  const std::string message = error_of([&] { load_instruct_jsonl(path, smollm2(), chatml()); });
  EXPECT_NE(message.find(path + ":2: not valid JSON"), std::string::npos) << message;
  const std::string later = write_file("bad_later.jsonl", "{\"prompt\": \"p\", \"response\": \"r\"}\n{\"prompt\": \"p\"}\n");
  const std::string later_message = error_of([&] { load_instruct_jsonl(later, smollm2(), chatml()); });
  EXPECT_NE(later_message.find(later + ":2: missing \"response\""), std::string::npos) << later_message;
}

TEST(InstructData, BadLinesSkippedAreCountedAndReportedWithLineNumbers) {
  const std::string path = write_file("bad.jsonl", kBadLines);
  InstructOptions options = chatml();
  options.skip_bad_lines = true;
  ::testing::internal::CaptureStderr();
  const TokenStream s = load_instruct_jsonl(path, smollm2(), options);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.examples, 2);
  EXPECT_EQ(s.bad_lines, 6);
  ASSERT_EQ(s.problems.size(), 6u);
  const std::vector<std::string> expected = {
      path + ":2: not valid JSON",
      path + ":3: expected a JSON object, got an array",
      path + ":4: missing \"answer\"",
      path + ":5: \"question\" is a number, expected a string",
      path + ":7: missing \"prompt\": expected \"messages\" (a list of {\"role\", \"content\"}), Alpaca "
             "\"instruction\"/\"input\"/\"output\", \"question\"/\"answer\" (GSM8K) or \"prompt\"/\"response\", all "
             "strings; found \"body\", \"title\"",
      path + ":8: \"response\" is null, expected a string"};
  for (size_t i = 0; i < expected.size(); i++) {
    EXPECT_EQ(s.problems[i].rfind(expected[i], 0), 0u) << s.problems[i];
    EXPECT_NE(err.find(expected[i]), std::string::npos) << err;
  }
  EXPECT_NE(err.find(path + ": skipped 6 malformed examples of 8"), std::string::npos) << err;
  EXPECT_EQ(masked_runs(smollm2(), s), (std::vector<std::string>{"a1<|im_end|>", "r9<|im_end|>"}));
  // A file with nothing usable is an error even when skipping.
  const std::string none = write_file("none.jsonl", "{\"x\": 1}\n\n");
  ::testing::internal::CaptureStderr();
  const std::string message = error_of([&] { load_instruct_jsonl(none, smollm2(), options); });
  ::testing::internal::GetCapturedStderr();
  EXPECT_NE(message.find(none + ": no usable examples"), std::string::npos) << message;
}

// A number no double holds (1E400) is a bad line like any other JSON error (nlohmann reports it
// as out_of_range, not parse_error): fatal with its file:line, or skipped and counted.
TEST(InstructData, NumberOverflowIsABadLine) {
  const std::string path = write_file("overflow.jsonl", "{\"prompt\": \"p\", \"response\": \"r\"}\n"
                                                        "{\"prompt\": \"p\", \"response\": \"r\", \"n\": 1E400}\n");
  const std::string message = error_of([&] { load_instruct_jsonl(path, smollm2(), chatml()); });
  EXPECT_NE(message.find(path + ":2: not valid JSON: number overflow parsing '1E400'"), std::string::npos) << message;
  InstructOptions options = chatml();
  options.skip_bad_lines = true;
  ::testing::internal::CaptureStderr();
  const TokenStream s = load_instruct_jsonl(path, smollm2(), options);
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.examples, 1);
  EXPECT_EQ(s.bad_lines, 1);
}

// Inputs on which a data fuzz target once crashed (tests/data/fuzz_regressions, jsonl-* and
// owltok-*): read as tools/run_fuzz.sh's targets read them, strict and lenient, each must give a
// stream or an owlore::Error, nothing else.
TEST(InstructData, FuzzRegressionsReplayCleanly) {
  const std::filesystem::path dir = std::filesystem::path(OWLORE_SOURCE_DIR) / "tests/data/fuzz_regressions";
  int replayed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool jsonl = name.rfind("jsonl-", 0) == 0, owltok = name.rfind("owltok-", 0) == 0;
    if (!jsonl && !owltok) continue;
    replayed++;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (bool skip_bad_lines : {false, true}) {
      InstructOptions options = chatml();
      options.skip_bad_lines = skip_bad_lines;
      ::testing::internal::CaptureStderr();
      EXPECT_NO_THROW({
        try {
          if (jsonl) parse_instruct_jsonl(bytes, name, smollm2(), options);
          else load_token_stream(entry.path().string(), &smollm2(), options);
        } catch (const Error&) {
        }
      }) << name;
      ::testing::internal::GetCapturedStderr();
    }
  }
  EXPECT_GT(replayed, 0);
}

TEST(TokenFile, RoundTripsUint16AndUint32) {
  const std::vector<int32_t> small = {0, 1, 2, 49151, 65535, 7};
  const std::string p16 = temp_path("small.tok");
  write_token_file(p16, small);
  EXPECT_EQ(std::filesystem::file_size(p16), 24u + 2 * small.size());
  EXPECT_TRUE(is_token_file(p16));
  EXPECT_EQ(read_token_file(p16), small);

  const std::vector<int32_t> large = {0, 65536, 128255, 2147483647, 3};
  const std::string p32 = temp_path("large.tok");
  write_token_file(p32, large);
  EXPECT_EQ(std::filesystem::file_size(p32), 24u + 4 * large.size());
  EXPECT_EQ(read_token_file(p32), large);

  const std::string empty = temp_path("empty.tok");
  write_token_file(empty, {});
  EXPECT_TRUE(read_token_file(empty).empty());
  EXPECT_FALSE(std::filesystem::exists(p16 + ".tmp"));
  EXPECT_NE(error_of([&] { write_token_file(temp_path("neg.tok"), {1, -5}); }).find("token 1 is -5"), std::string::npos);
}

TEST(TokenFile, DamagedFilesAreRefusedNamingTheFile) {
  const std::string path = temp_path("damaged.tok");
  const std::vector<int32_t> tokens = {10, 20, 30, 40};
  write_token_file(path, tokens);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_EQ(bytes.size(), 32u);
  auto message_for = [&](const std::string& name, const std::string& content) {
    const std::string p = write_file(name, content);
    return std::make_pair(p, error_of([&] { read_token_file(p); }));
  };
  auto [truncated, m1] = message_for("truncated.tok", bytes.substr(0, 31));
  EXPECT_NE(m1.find(truncated + ": header says 4 tokens of 2 bytes (8 bytes), but 7 bytes follow the header (truncated)"),
            std::string::npos) << m1;
  auto [trailing, m2] = message_for("trailing.tok", bytes + "xy");
  EXPECT_NE(m2.find(trailing + ": header says 4 tokens"), std::string::npos) << m2;
  EXPECT_NE(m2.find("(trailing data)"), std::string::npos) << m2;
  auto [short_header, m3] = message_for("short.tok", bytes.substr(0, 10));
  EXPECT_NE(m3.find(short_header + ": 10 bytes, shorter than the 24-byte OWLTOK1 header"), std::string::npos) << m3;
  std::string bad_magic = bytes;
  bad_magic[3] = 'X';
  auto [magic, m4] = message_for("magic.tok", bad_magic);
  EXPECT_NE(m4.find(magic + ": not an owlore token file"), std::string::npos) << m4;
  std::string bad_width = bytes;
  bad_width[12] = 3;
  auto [width, m5] = message_for("width.tok", bad_width);
  EXPECT_NE(m5.find(width + ": 3 bytes per token, expected 2 (uint16) or 4 (uint32)"), std::string::npos) << m5;
  std::string bad_version = bytes;
  bad_version[8] = 9;
  auto [version, m6] = message_for("version.tok", bad_version);
  EXPECT_NE(m6.find(version + ": token file version 9"), std::string::npos) << m6;
  // A count so large that count * width overflows must not pass the size check.
  std::string huge = bytes;
  const uint64_t count = (1ull << 63) + 4;
  std::memcpy(&huge[16], &count, 8);
  auto [overflow, m7] = message_for("overflow.tok", huge);
  EXPECT_NE(m7.find(overflow + ": header says"), std::string::npos) << m7;
  EXPECT_NE(error_of([&] { read_token_file(temp_path("missing.tok")); }).find("cannot open token file"),
            std::string::npos);
}

TEST(TokenStreamDispatch, DamagedMagicIsAnErrorNotText) {
  write_token_file(temp_path("good.tok"), {10, 20, 30});
  std::string bytes;
  {
    std::ifstream in(temp_path("good.tok"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const struct {
    const char* name;
    std::string magic, shown;
  } damaged[] = {
      {"j.tok", std::string("OWLTOJ1\0", 8), "OWLTOJ1\\0"},     // one letter (one bit: K 0x4b, J 0x4a)
      {"v2.tok", std::string("OWLTOK2\0", 8), "OWLTOK2\\0"},    // the version digit
      {"lower.tok", std::string("owltok1\0", 8), "owltok1\\0"},  // case
      {"nul.tok", std::string("OWLTOK1\x01", 8), "OWLTOK1\\x01"},  // a bit of the final NUL
      {"two.tok", std::string("OVLTOK1 ", 8), "OVLTOK1 "},         // two bytes
  };
  for (const auto& d : damaged) {
    std::string content = bytes;
    content.replace(0, 8, d.magic);
    const std::string path = write_file(d.name, content);
    for (const Tokenizer* tok : {static_cast<const Tokenizer*>(nullptr), &smollm2()}) {
      const std::string message = error_of([&] { load_token_stream(path, tok); });
      EXPECT_NE(message.find(path + ": starts with \"" + d.shown + "\""), std::string::npos) << message;
      EXPECT_NE(message.find("looks like a damaged token file"), std::string::npos) << message;
    }
  }
  // Text that merely shares a few letters with the magic is still text.
  const std::string owls = write_file("owls.txt", "OWLS are birds.");
  EXPECT_EQ(load_token_stream(owls, nullptr).tokens, byte_tokens("OWLS are birds."));
}

TEST(TokenStreamDispatch, PicksTheSourceByMagicThenExtension) {
  const Tokenizer& tok = smollm2();
  const std::string tokens_named_txt = temp_path("tokens.txt");
  write_token_file(tokens_named_txt, {5, 6, 7});
  EXPECT_EQ(load_token_stream(tokens_named_txt, &tok).tokens, (std::vector<int32_t>{5, 6, 7}));

  const std::string text = write_file("plain.txt", "To be, or not to be<|endoftext|>");
  const TokenStream t = load_token_stream(text, &tok);
  EXPECT_EQ(t.tokens, tok.encode("To be, or not to be<|endoftext|>"));
  EXPECT_EQ(t.tokens.back(), tok.require_token("<|endoftext|>"));
  EXPECT_TRUE(t.loss_mask.empty());
  EXPECT_EQ(load_token_stream(text, nullptr).tokens, byte_tokens("To be, or not to be<|endoftext|>"));

  const std::string jsonl = write_file("d.jsonl", "{\"prompt\": \"p\", \"response\": \"r\"}\n");
  EXPECT_EQ(load_token_stream(jsonl, &tok, chatml()).examples, 1);
  EXPECT_NE(error_of([&] { load_token_stream(jsonl, nullptr, chatml()); })
                .find(jsonl + ": instruction data (JSON) needs the model's tokenizer"),
            std::string::npos);
  const std::string empty = write_file("empty.txt", "");
  EXPECT_NE(error_of([&] { load_token_stream(empty, &tok); }).find(empty + ": no tokens"), std::string::npos);

  // Bytes the vocabulary lacks are dropped, and the loader says so on stderr.
  const std::string odd = write_file("odd.txt", "a\x04z");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(tok.decode(load_token_stream(odd, &tok).tokens), "az");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find(odd + ": 1 bytes have no symbol"), std::string::npos) << err;
}

// The masked text of each example, from the ChatML rendering with the SmolLM2 tokenizer.
std::vector<std::string> answers_of(const std::string& path, InstructOptions options = chatml()) {
  return masked_runs(smollm2(), load_token_stream(path, &smollm2(), options));
}

TEST(InstructFormats, MessagesJsonlIsMultiTurnWithAnOptionalSystemMessage) {
  const std::string path = write_file(
      "messages.jsonl",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}\n"
      "{\"messages\": [{\"role\": \"system\", \"content\": \"Terse.\"}, {\"role\": \"user\", \"content\": \"A?\"}, "
      "{\"role\": \"assistant\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"B?\"}, "
      "{\"role\": \"assistant\", \"content\": \"b\"}], \"id\": 2}\n");
  const TokenStream s = load_token_stream(path, &smollm2(), chatml());
  EXPECT_EQ(s.examples, 2);
  EXPECT_EQ(masked_runs(smollm2(), s), (std::vector<std::string>{"Hello<|im_end|>", "a<|im_end|>", "b<|im_end|>"}));
  const std::string text = smollm2().decode(s.tokens);
  EXPECT_EQ(text, format_chat(ChatTemplate::kChatML, {{"user", "Hi"}, {"assistant", "Hello"}}, false) +
                      format_chat(ChatTemplate::kChatML,
                                  {{"system", "Terse."}, {"user", "A?"}, {"assistant", "a"}, {"user", "B?"}, {"assistant", "b"}},
                                  false));
  InstructOptions last = chatml();
  last.train_on = TrainOn::kLast;
  EXPECT_EQ(answers_of(path, last), (std::vector<std::string>{"Hello<|im_end|>", "b<|im_end|>"}));
  InstructOptions all = chatml();
  all.train_on = TrainOn::kAll;
  const TokenStream every = load_token_stream(path, &smollm2(), all);
  EXPECT_EQ(every.tokens, s.tokens);
  EXPECT_EQ(every.loss_mask, std::vector<uint8_t>(s.tokens.size(), 1));
  // --system fills in only where the example has none.
  InstructOptions system = chatml();
  system.system = "Be kind.";
  const std::string with = smollm2().decode(load_token_stream(path, &smollm2(), system).tokens);
  EXPECT_EQ(with.find(kSmolLM2SystemMessage), std::string::npos);
  EXPECT_NE(with.find("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi"), std::string::npos);
  EXPECT_NE(with.find("<|im_start|>system\nTerse."), std::string::npos);
  EXPECT_EQ(with.find("Be kind.<|im_end|>\n<|im_start|>system"), std::string::npos);
}

TEST(InstructFormats, AlpacaAsJsonlAndAsOneJsonArray) {
  const std::string jsonl = write_file(
      "alpaca.jsonl",
      "{\"instruction\": \"Add.\", \"input\": \"2 3\", \"output\": \"5\"}\n"
      "{\"instruction\": \"Greet.\", \"input\": \"\", \"output\": \"Hi!\"}\n"
      "{\"instruction\": \"Wave.\", \"output\": \"*waves*\"}\n");
  const std::string array = write_file(
      "alpaca_data.json",
      "[\n  {\n    \"instruction\": \"Add.\",\n    \"input\": \"2 3\",\n    \"output\": \"5\"\n  },\n"
      "  {\"instruction\": \"Greet.\", \"input\": \"\", \"output\": \"Hi!\"},\n"
      "  {\"instruction\": \"Wave.\", \"output\": \"*waves*\"}\n]\n");
  const TokenStream a = load_token_stream(jsonl, &smollm2(), chatml());
  const TokenStream b = load_token_stream(array, &smollm2(), chatml());
  EXPECT_EQ(a.examples, 3);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.loss_mask, b.loss_mask);
  EXPECT_EQ(masked_runs(smollm2(), a), (std::vector<std::string>{"5<|im_end|>", "Hi!<|im_end|>", "*waves*<|im_end|>"}));
  // The input joins the instruction after a blank line; an empty one adds nothing.
  const std::string text = smollm2().decode(a.tokens);
  EXPECT_NE(text.find("<|im_start|>user\nAdd.\n\n2 3<|im_end|>"), std::string::npos) << text;
  EXPECT_NE(text.find("<|im_start|>user\nGreet.<|im_end|>"), std::string::npos) << text;
}

TEST(InstructFormats, BadArrayElementsAreNamedByTheirLine) {
  const std::string path = write_file("bad_array.json",
                                      "[\n"
                                      "  {\"instruction\": \"a\", \"output\": \"b\"},\n"  // line 2
                                      "  {\"instruction\": \"a\"},\n"                    // line 3
                                      "  \"text\",\n"                                    // line 4
                                      "  {\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]},\n"  // 5
                                      "  {\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}, "
                                      "{\"role\": \"user\", \"content\": \"q\"}]},\n"  // 6
                                      "  {\"messages\": [{\"role\": \"user\", \"content\": 7}]}\n"  // 7
                                      "]\n");
  const std::string message = error_of([&] { load_token_stream(path, &smollm2(), chatml()); });
  EXPECT_NE(message.find(path + ":3: missing \"output\""), std::string::npos) << message;
  EXPECT_NE(message.find("--skip-bad-lines"), std::string::npos) << message;
  InstructOptions skip = chatml();
  skip.skip_bad_lines = true;
  ::testing::internal::CaptureStderr();
  const TokenStream s = load_token_stream(path, &smollm2(), skip);
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.examples, 1);
  ASSERT_EQ(s.problems.size(), 5u);
  const std::vector<std::string> expected = {
      path + ":3: missing \"output\"", path + ":4: expected a JSON object, got a string",
      path + ":5: \"messages\" has no assistant message",
      path + ":6: message 0 has role \"assistant\", expected \"user\"",
      path + ":7: messages[0].content is a number, expected a string"};
  for (size_t i = 0; i < expected.size(); i++) EXPECT_EQ(s.problems[i].rfind(expected[i], 0), 0u) << s.problems[i];
  // A broken array is one error for the file.
  const std::string broken = write_file("broken.json", "[{\"instruction\": \"a\", \"output\": \"b\"},\n");
  EXPECT_NE(error_of([&] { load_token_stream(broken, &smollm2(), skip); }).find(broken + ": not valid JSON"),
            std::string::npos);
}

TEST(InstructFormats, TheContentDecidesTheFormatNotTheName) {
  // A .txt file of JSONL is instruction data.
  const std::string txt = write_file("qa.txt", "  {\"question\": \"q\", \"answer\": \"a\"}\n");
  EXPECT_EQ(answers_of(txt), (std::vector<std::string>{"a<|im_end|>"}));
  // A .jsonl or .json file of plain text is an error naming file:line, never text.
  for (const std::string name : {"plain.jsonl", "plain.json"}) {
    const std::string path = write_file(name, "\n\nTo be, or not to be\n");
    const std::string message = error_of([&] { load_token_stream(path, &smollm2(), chatml()); });
    EXPECT_NE(message.find(path + ":3: expected instruction data"), std::string::npos) << message;
    EXPECT_NE(error_of([&] { load_token_stream(path, nullptr); }).find(path + ":3: expected instruction data"),
              std::string::npos);
  }
  // Plain text under any other name stays text.
  const std::string md = write_file("notes.md", "# Owls\n");
  EXPECT_TRUE(load_token_stream(md, &smollm2(), chatml()).loss_mask.empty());
}

TEST(InstructFormats, ChatDataWithoutATemplateSaysWhatToPass) {
  const std::string path = write_file("nt.jsonl", "{\"prompt\": \"p\", \"response\": \"r\"}\n");
  InstructOptions options;
  options.no_template = "m has no chat template";
  const std::string message = error_of([&] { load_token_stream(path, &smollm2(), options); });
  EXPECT_NE(message.find(path + ": chat data needs a chat template: m has no chat template; pass --chat-template NAME"),
            std::string::npos) << message;
  // Plain text needs none.
  EXPECT_FALSE(load_token_stream(write_file("t.txt", "owls"), &smollm2(), options).tokens.empty());
}

TEST(ByteLevelTokens, OnlyTheTinyPresetsReadTextAsBytes) {
  EXPECT_EQ(byte_level_refusal(256, "tiny", "pass X"), "");
  EXPECT_EQ(byte_level_refusal(kMaxByteLevelVocab, "tiny", "pass X"), "");
  const std::string big = byte_level_refusal(49152, "smollm2-135m", "pass --tokenizer M");
  EXPECT_NE(big.find("model 'smollm2-135m' has no tokenizer and a vocabulary of 49152 ids"), std::string::npos) << big;
  EXPECT_NE(big.find("pass --tokenizer M"), std::string::npos) << big;
  EXPECT_NE(byte_level_refusal(100, "small", ""), "");
  InstructOptions options;
  options.no_tokenizer = big;
  const std::string text = write_file("bytes.txt", "owls");
  const std::string message = error_of([&] { load_token_stream(text, nullptr, options); });
  EXPECT_NE(message.find(text + ": text data needs the model's tokenizer: model 'smollm2-135m'"), std::string::npos)
      << message;
  // Token files need no tokenizer.
  const std::string tokens = temp_path("bytes.tok");
  write_token_file(tokens, {1, 2, 40000});
  EXPECT_EQ(load_token_stream(tokens, nullptr, options).tokens, (std::vector<int32_t>{1, 2, 40000}));
}

}  // namespace
}  // namespace owlore
