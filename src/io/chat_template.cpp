#include "io/chat_template.h"

#include "base/error.h"

namespace owlore {

const char* const kSmolLM2SystemMessage = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

namespace {

// Python's str.strip() / Jinja's trim on ASCII whitespace (LLaMA-2 strips, LLaMA-3 trims).
std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\v\f";
  const size_t begin = s.find_first_not_of(ws);
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(ws) + 1 - begin);
}

struct Builder {
  std::vector<ChatSegment> segments;
  int turn = 0;
  void plain(const std::string& text) {
    if (text.empty()) return;
    if (!segments.empty() && !segments.back().trained) segments.back().text += text;
    else segments.push_back({text, false, -1});
  }
  // One assistant message: its content and end of turn, trained; what follows is not.
  void answer(const std::string& content, const std::string& end_of_turn) {
    segments.push_back({content + end_of_turn, true, turn++});
  }
};

// The checks every template here shares (the role-alternating ones raise on anything else).
void check_roles(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string roles;
  for (const ChatMessage& m : messages) roles += (roles.empty() ? "" : ", ") + m.role;
  const size_t first = !messages.empty() && messages[0].role == "system" ? 1 : 0;
  OWLORE_REQUIRE(messages.size() > first, "a conversation needs a user message, got roles [", roles, "]");
  for (size_t i = first; i < messages.size(); i++) {
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    OWLORE_REQUIRE(messages[i].role == expected, "message ", i, " has role \"", messages[i].role, "\", expected \"",
                   expected, "\": after an optional first system message, roles alternate user/assistant (got [",
                   roles, "])");
  }
  OWLORE_REQUIRE(!add_generation_prompt || messages.back().role == "user",
                 "a prompt for generation ends with a user message, got roles [", roles, "]");
}

[[noreturn]] void unknown_template(const std::string& source, const std::string& why) {
  fail(source, ": the chat template ", why, "; pass --chat-template NAME to choose one (",
       choice_list(kChatTemplateChoices), ")");
}

}  // namespace

std::vector<ChatSegment> render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) {
  OWLORE_REQUIRE(t != ChatTemplate::kAuto, "render_chat: the chat template must be resolved (not auto)");
  check_roles(messages, add_generation_prompt);
  const bool has_system = messages[0].role == "system";
  const std::string system = has_system ? messages[0].content : "";
  const size_t first = has_system ? 1 : 0;
  Builder b;
  switch (t) {
    case ChatTemplate::kChatML:
      if (!has_system) b.plain(std::string("<|im_start|>system\n") + kSmolLM2SystemMessage + "<|im_end|>\n");
      for (const ChatMessage& m : messages) {
        b.plain("<|im_start|>" + m.role + "\n");
        if (m.role == "assistant") b.answer(m.content, "<|im_end|>");
        else b.plain(m.content + "<|im_end|>");
        b.plain("\n");
      }
      if (add_generation_prompt) b.plain("<|im_start|>assistant\n");
      break;
    case ChatTemplate::kLlama2:
      for (size_t i = first; i < messages.size(); i++) {
        const ChatMessage& m = messages[i];
        std::string content = m.content;
        if (i == first && has_system) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
        if (m.role == "user") {
          b.plain("<s>[INST] " + strip(content) + " [/INST]");
        } else {
          b.plain(" ");
          b.answer(strip(content), " </s>");
        }
      }
      break;  // the published template has no generation prompt: the reply follows [/INST]
    case ChatTemplate::kLlama3:
      b.plain("<|begin_of_text|>");
      for (const ChatMessage& m : messages) {
        b.plain("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n");
        if (m.role == "assistant") b.answer(strip(m.content), "<|eot_id|>");
        else b.plain(strip(m.content) + "<|eot_id|>");
      }
      if (add_generation_prompt) b.plain("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    case ChatTemplate::kMistralV1:
    case ChatTemplate::kMistralV3: {
      const bool v1 = t == ChatTemplate::kMistralV1;
      b.plain("<s>");
      for (size_t i = first; i < messages.size(); i++) {
        const ChatMessage& m = messages[i];
        if (m.role == "user") {
          // v1 joins the system message to the first user turn, v3 to the last message when
          // that is a user turn.
          const bool with_system = has_system && (v1 ? i == first : i + 1 == messages.size());
          const std::string content = with_system ? system + "\n\n" + m.content : m.content;
          b.plain(v1 ? " [INST] " + content + " [/INST]" : "[INST] " + content + "[/INST]");
        } else {
          b.plain(" ");
          b.answer(m.content, "</s>");
        }
      }
      break;
    }
    case ChatTemplate::kZephyr:
      for (const ChatMessage& m : messages) {
        b.plain("<|" + m.role + "|>\n");
        if (m.role == "assistant") b.answer(m.content, "</s>");
        else b.plain(m.content + "</s>");
        b.plain("\n");
      }
      if (add_generation_prompt) b.plain("<|assistant|>\n");
      break;
    case ChatTemplate::kNone:
      for (const ChatMessage& m : messages) {
        if (m.role == "assistant") b.answer(m.content, "\n");
        else b.plain(m.content + "\n");
      }
      break;
    case ChatTemplate::kAuto:
      break;
  }
  return b.segments;
}

std::string format_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string text;
  for (const ChatSegment& s : render_chat(t, messages, add_generation_prompt)) text += s.text;
  return text;
}

const char* end_of_turn_text(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatML: return "<|im_end|>";
    case ChatTemplate::kLlama3: return "<|eot_id|>";
    case ChatTemplate::kLlama2:
    case ChatTemplate::kMistralV1:
    case ChatTemplate::kMistralV3:
    case ChatTemplate::kZephyr: return "</s>";
    default: return "";
  }
}

ChatTemplate detect_chat_template(const std::string& jinja, const std::string& source) {
  auto has = [&](const char* s) { return jinja.find(s) != std::string::npos; };
  auto unknown = [&](const std::string& why) { unknown_template(source, why); };
  if (has("<|im_start|>")) {
    if (has(kSmolLM2SystemMessage)) return ChatTemplate::kChatML;
    unknown("is ChatML with a default system message other than SmolLM2's (owlore's chatml renders SmolLM2's)");
  }
  if (has("<|start_header_id|>") && has("<|eot_id|>")) {
    if (has("Cutting Knowledge Date") || has("<|python_tag|>"))
      unknown("is LLaMA-3.1's or later (a dated system header and tools), which owlore does not render; llama3 is "
              "LLaMA-3-Instruct's");
    return ChatTemplate::kLlama3;
  }
  if (has("<<SYS>>") && has("[INST]")) return ChatTemplate::kLlama2;
  if (has("[INST]")) {
    if (has("' [INST] '") || has("\" [INST] \"")) return ChatTemplate::kMistralV1;
    if ((has("'[INST] '") || has("\"[INST] \"")) && (has("'[/INST]'") || has("\"[/INST]\"")))
      return ChatTemplate::kMistralV3;
    unknown("has [INST] but neither Mistral v1's \" [INST] \" nor v3's \"[INST] \"...\"[/INST]\" spacing");
  }
  if (has("<|user|>") && has("<|assistant|>")) return ChatTemplate::kZephyr;
  unknown_template(source, "matches none that owlore renders");
}

}  // namespace owlore
