// Chat templates: owlore's rendering of each family equals its published Jinja template's
// (tests/data/chat_template_golden.json, rendered by tools/ref/make_chat_template_golden.py with
// jinja2 as transformers renders), the trained segments are exactly the assistant contents and
// their end of turn, detection from template text, and the loss masks a tokenizer gives them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "base/error.h"
#include "io/chat_template.h"
#include "io/model_tokenizer.h"
#include "io/token_data.h"
#include "io/tokenizer.h"

namespace owlore {
namespace {

const std::string kSourceDir = OWLORE_SOURCE_DIR;

const nlohmann::json& golden() {
  static const nlohmann::json j = [] {
    std::ifstream in(kSourceDir + "/tests/data/chat_template_golden.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

const Tokenizer& smollm2() {
  static const Tokenizer tok(load_tokenizer_json(kSourceDir + "/tests/data/smollm2_tokenizer.json"));
  return tok;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<ChatMessage> messages_of(const nlohmann::json& list) {
  std::vector<ChatMessage> out;
  for (const auto& m : list) out.push_back({m["role"], m["content"]});
  return out;
}

std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\n\r"), e = s.find_last_not_of(" \t\n\r");
  return b == std::string::npos ? "" : s.substr(b, e + 1 - b);
}

// What each family trains for one assistant message, written out independently of render_chat.
std::string expected_trained(ChatTemplate t, const std::string& content) {
  switch (t) {
    case ChatTemplate::kChatML: return content + "<|im_end|>";
    case ChatTemplate::kLlama2: return strip(content) + " </s>";
    case ChatTemplate::kLlama3: return strip(content) + "<|eot_id|>";
    default: return content + "</s>";
  }
}

TEST(ChatTemplate, EveryFamilyRendersAsItsJinjaTemplateByteForByte) {
  int cases = 0;
  std::set<std::string> families;
  for (const auto& c : golden()["cases"]) {
    const ChatTemplate t = parse_choice(kChatTemplateChoices, c["template"].get<std::string>(), "template");
    const std::vector<ChatMessage> messages = messages_of(c["messages"]);
    const bool prompt = c["add_generation_prompt"];
    const std::vector<ChatSegment> segments = render_chat(t, messages, prompt);
    std::string text, trained;
    std::vector<std::string> trained_segments;
    for (const ChatSegment& s : segments) {
      text += s.text;
      if (s.trained) trained_segments.push_back(s.text);
    }
    const std::string what = c["template"].get<std::string>() + " case " + c["messages"].dump();
    EXPECT_EQ(text, c["text"].get<std::string>()) << what;
    EXPECT_EQ(format_chat(t, messages, prompt), text) << what;
    // Trained: each assistant message's content and end of turn, in order, nothing else.
    std::vector<std::string> expected;
    for (const ChatMessage& m : messages)
      if (m.role == "assistant") expected.push_back(expected_trained(t, m.content));
    EXPECT_EQ(trained_segments, expected) << what;
    families.insert(c["template"]);
    cases++;
  }
  EXPECT_EQ(families.size(), 6u);
  EXPECT_EQ(cases, 48);
}

TEST(ChatTemplate, NoneIsEachContentOnItsLine) {
  const std::vector<ChatSegment> s =
      render_chat(ChatTemplate::kNone, {{"system", "S"}, {"user", "Q"}, {"assistant", "A"}}, false);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].text, "S\nQ\n");
  EXPECT_FALSE(s[0].trained);
  EXPECT_EQ(s[1].text, "A\n");
  EXPECT_TRUE(s[1].trained);
}

TEST(ChatTemplate, DetectsEachPublishedTemplate) {
  for (const auto& [name, jinja] : golden()["templates"].items())
    EXPECT_EQ(choice_name(kChatTemplateChoices, detect_chat_template(jinja.get<std::string>(), "tokenizer_config.json")),
              name);
}

TEST(ChatTemplate, AnUnknownTemplateIsAnErrorNamingTheChoicesNeverChatML) {
  const std::string gemma =
      "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n{{ message['content'] }}"
      "<end_of_turn>\n{% endfor %}";
  const std::string qwen =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
      "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
      "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
  const std::string llama31 =
      "{{- bos_token }}{%- set date_string = \"26 Jul 2024\" %}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
      "{{- \"Cutting Knowledge Date: December 2023\\n\" }}{{- '<|eot_id|>' }}";
  for (const std::string& t : {gemma, qwen, llama31}) {
    const std::string message = error_of([&] { detect_chat_template(t, "m/tokenizer_config.json: chat_template"); });
    EXPECT_NE(message.find("m/tokenizer_config.json: chat_template: the chat template"), std::string::npos) << message;
    EXPECT_NE(message.find("pass --chat-template NAME"), std::string::npos) << message;
    EXPECT_NE(message.find("chatml, llama2, llama3, mistral-v1, mistral-v3, zephyr or none"), std::string::npos)
        << message;
  }
}

TEST(ChatTemplate, RolesMustAlternateAfterAnOptionalSystemMessage) {
  const std::vector<std::vector<ChatMessage>> bad = {
      {},
      {{"system", "S"}},
      {{"assistant", "A"}},
      {{"user", "Q"}, {"user", "Q2"}},
      {{"user", "Q"}, {"system", "S"}, {"assistant", "A"}},
      {{"user", "Q"}, {"tool", "T"}},
  };
  for (const auto& m : bad)
    for (ChatTemplate t : {ChatTemplate::kChatML, ChatTemplate::kLlama2, ChatTemplate::kZephyr})
      EXPECT_NE(error_of([&] { render_chat(t, m, false); }), "(no error)") << m.size() << " messages";
  EXPECT_NE(error_of([&] { render_chat(ChatTemplate::kLlama3, {{"user", "Q"}, {"assistant", "A"}}, true); })
                .find("a prompt for generation ends with a user message"),
            std::string::npos);
  EXPECT_NE(error_of([&] { render_chat(ChatTemplate::kAuto, {{"user", "Q"}}, true); }), "(no error)");
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

const std::vector<ChatMessage> kTwoTurns = {
    {"system", "Be terse."}, {"user", "Name a bird."}, {"assistant", "An owl."},
    {"user", "Another?"},    {"assistant", "A heron."}};

TEST(ChatMask, ChatMLWithTheSmolLM2TokenizerTrainsEachAnswerAndItsImEnd) {
  const Tokenizer& tok = smollm2();
  TokenStream all_turns, last, every;
  append_chat_example(tok, ChatTemplate::kChatML, kTwoTurns, TrainOn::kAssistant, all_turns);
  append_chat_example(tok, ChatTemplate::kChatML, kTwoTurns, TrainOn::kLast, last);
  append_chat_example(tok, ChatTemplate::kChatML, kTwoTurns, TrainOn::kAll, every);
  EXPECT_EQ(all_turns.tokens, tok.encode(format_chat(ChatTemplate::kChatML, kTwoTurns, false)));
  EXPECT_EQ(masked_runs(tok, all_turns), (std::vector<std::string>{"An owl.<|im_end|>", "A heron.<|im_end|>"}));
  EXPECT_EQ(masked_runs(tok, last), (std::vector<std::string>{"A heron.<|im_end|>"}));
  EXPECT_EQ(every.tokens, all_turns.tokens);
  EXPECT_EQ(every.loss_mask, std::vector<uint8_t>(every.tokens.size(), 1));
  EXPECT_EQ(all_turns.examples, 1);
}

// The other families' tokenizers (SentencePiece, LLaMA-3 tiktoken) are tested where they live;
// here the SmolLM2 tokenizer, for which their markers are plain text, shows that the masked text
// is each trained segment (tokens straddling its edges add a byte or two).
TEST(ChatMask, EveryFamilyMasksItsTrainedSegmentsAtTextLevel) {
  const Tokenizer& tok = smollm2();
  for (ChatTemplate t : {ChatTemplate::kLlama2, ChatTemplate::kLlama3, ChatTemplate::kMistralV1,
                         ChatTemplate::kMistralV3, ChatTemplate::kZephyr, ChatTemplate::kNone}) {
    std::vector<std::string> trained;
    for (const ChatSegment& s : render_chat(t, kTwoTurns, false))
      if (s.trained) trained.push_back(s.text);
    ASSERT_EQ(trained.size(), 2u) << name(t);
    for (TrainOn on : {TrainOn::kAssistant, TrainOn::kLast}) {
      TokenStream s;
      append_chat_example(tok, t, kTwoTurns, on, s);
      const std::vector<std::string> runs = masked_runs(tok, s);
      const std::vector<std::string> want =
          on == TrainOn::kLast ? std::vector<std::string>{trained[1]} : trained;
      ASSERT_EQ(runs.size(), want.size()) << name(t) << " " << name(on);
      for (size_t i = 0; i < want.size(); i++)
        // Tokens straddling either edge count as trained: at most a byte or two more (here "><"
        // merges across the end, which the families' own tokenizers keep apart as specials).
        EXPECT_TRUE(runs[i].find(want[i]) != std::string::npos && runs[i].size() <= want[i].size() + 2)
            << name(t) << " " << name(on) << ": masked '" << runs[i] << "', trained '" << want[i] << "'";
    }
  }
}

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) : path(std::filesystem::path(::testing::TempDir()) / ("owlore_chat_" + name)) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

TEST(ModelChatTemplate, ComesFromTokenizerConfigOrChatTemplateJinja) {
  TempDir dir("model");
  std::string why;
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kAuto, dir.path.string(), why), ChatTemplate::kAuto);
  EXPECT_NE(why.find("has no chat template"), std::string::npos) << why;
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kZephyr, dir.path.string(), why), ChatTemplate::kZephyr);
  EXPECT_TRUE(why.empty());
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kAuto, "", why), ChatTemplate::kAuto);
  EXPECT_NE(why.find("a preset has no chat template"), std::string::npos) << why;

  const nlohmann::json config = {{"chat_template", golden()["templates"]["llama3"]}, {"eos_token", "<|eot_id|>"}};
  std::ofstream(dir.path / "tokenizer_config.json") << config.dump();
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kAuto, dir.path.string(), why), ChatTemplate::kLlama3);
  // A model file inside the directory finds it too.
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kAuto, (dir.path / "model.safetensors").string(), why),
            ChatTemplate::kLlama3);
  // chat_template.jinja wins, as in transformers.
  std::ofstream(dir.path / "chat_template.jinja") << golden()["templates"]["mistral-v3"].get<std::string>();
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kAuto, dir.path.string(), why), ChatTemplate::kMistralV3);
  // An unknown one waits (only chat data needs it), with the reason.
  std::ofstream(dir.path / "chat_template.jinja") << "{{ messages }}";
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kAuto, dir.path.string(), why), ChatTemplate::kAuto);
  EXPECT_NE(why.find("chat_template.jinja: the chat template matches none"), std::string::npos) << why;
  EXPECT_NE(why.find("pass --chat-template NAME"), std::string::npos) << why;
}

TEST(ModelChatTemplate, SmolLM2GgufIsChatML) {
  const char* env = std::getenv("OWLORE_CACHE");
  const std::string cache = env ? env : std::string(std::getenv("HOME") ? std::getenv("HOME") : "") + "/.cache/owlore";
  const std::string gguf = cache + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(gguf)) GTEST_SKIP() << gguf << " is absent (tools/fetch_tokenizers.sh's cache)";
  std::string why;
  EXPECT_EQ(resolve_chat_template(ChatTemplate::kAuto, gguf, why), ChatTemplate::kChatML) << why;
}

}  // namespace
}  // namespace owlore
