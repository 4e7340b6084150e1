// Chat templates: a conversation rendered as text exactly as each model family's published
// Jinja chat_template renders it (tools/ref/chat_templates.py holds those templates;
// tests/data/chat_template_golden.json, rendered from them with jinja2, checks this byte for
// byte). The text comes as ordered segments; `trained` marks what a chat fine-tune learns: each
// assistant message's content (as the template writes it: LLaMA-2 strips it, LLaMA-3 trims it)
// and the family's end of turn after it.
//
//   chatml      SmolLM2-Instruct: <|im_start|>role\ncontent<|im_end|>\n, and SmolLM2's default
//               system turn when the conversation has none. Trained: content<|im_end|>.
//   llama2      LLaMA-2-chat: <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] answer </s>.
//               Trained: answer </s> (the space before </s> included).
//   llama3      LLaMA-3-Instruct: <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\n
//               content<|eot_id|>. Trained: content<|eot_id|>.
//   mistral-v1  Mistral-7B-Instruct-v0.1: <s> [INST] system\n\nuser [/INST] answer</s>, the system
//               message joined to the first user message. Trained: answer</s>.
//   mistral-v3  Mistral-7B-Instruct-v0.3: <s>[INST] user[/INST] answer</s>; the system message is
//               joined to the last message only when that is a user message (a prompt), so the
//               published template drops it from a conversation that ends with the assistant.
//   zephyr      Zephyr-7B-beta, TinyLlama-1.1B-Chat: <|role|>\ncontent</s>\n. Trained: content</s>.
//   none        no template: each message's content and "\n". Trained: assistant content + "\n".
// llama2, mistral-v1 and mistral-v3 take only user/assistant turns alternating from a user turn
// after an optional leading system message (their templates raise otherwise); so does
// every family here, so that data means the same whichever template trains on it.
#pragma once
#include <string>
#include <vector>

#include "base/choices.h"

namespace owlore {

enum class ChatTemplate { kAuto, kChatML, kLlama2, kLlama3, kMistralV1, kMistralV3, kZephyr, kNone };
// --chat-template: auto = the model's own (its tokenizer_config.json chat_template or GGUF
// tokenizer.chat_template, recognised by detect_chat_template).
inline constexpr ChoiceTable<ChatTemplate, 8> kChatTemplateChoices{{{"auto", ChatTemplate::kAuto},
                                                                    {"chatml", ChatTemplate::kChatML},
                                                                    {"llama2", ChatTemplate::kLlama2},
                                                                    {"llama3", ChatTemplate::kLlama3},
                                                                    {"mistral-v1", ChatTemplate::kMistralV1},
                                                                    {"mistral-v3", ChatTemplate::kMistralV3},
                                                                    {"zephyr", ChatTemplate::kZephyr},
                                                                    {"none", ChatTemplate::kNone}}};
inline const char* name(ChatTemplate t) { return choice_name(kChatTemplateChoices, t); }

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct ChatSegment {
  std::string text;
  bool trained = false;  // assistant content or its end of turn
  int turn = -1;         // trained segments: which assistant message (0, 1, ...) it belongs to
};

extern const char* const kSmolLM2SystemMessage;  // "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

// Throws owlore::Error (naming the roles) for a conversation the templates refuse: roles other
// than system/user/assistant, a system message that is not first, turns that do not alternate
// user/assistant from a user turn, or no user turn. add_generation_prompt appends what starts
// the assistant's reply (the conversation must then end with a user turn). `t` is not kAuto.
std::vector<ChatSegment> render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt);
// The segments' text joined.
std::string format_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, bool add_generation_prompt);

// The family of a published Jinja chat template, from short signatures of its text. A template
// that matches none is an owlore::Error naming `source`, the choices, and that
// --chat-template NAME overrides; never a guess.
ChatTemplate detect_chat_template(const std::string& jinja, const std::string& source);

// The text of the token that ends an assistant turn ("<|im_end|>", "<|eot_id|>", "</s>"); empty
// for none. generate stops on it.
const char* end_of_turn_text(ChatTemplate t);

}  // namespace owlore
