// A chat as generate and chat keep it: either a harmony conversation (system message with the
// reasoning effort and date, developer instructions and function tools, then user / assistant /
// tool messages), or, for models trained on plain text, a transcript that the model continues.
// It renders itself to prompt tokens that fit a context, dropping the oldest turns when needed,
// and saves to / loads from JSON.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mind4/harmony.h"
#include "mind4/tokenizer.h"

namespace mind4::chat {

enum class ChatMode { kHarmony, kPlain };
const char* chat_mode_name(ChatMode mode);

// True when the vocabulary has the harmony special tokens (o200k_harmony does, a trained
// vocabulary with only <|endoftext|> does not).
bool speaks_harmony(const Tokenizer& tokenizer);

std::string today_iso_date();                                    // local date, YYYY-MM-DD
harmony::ReasoningEffort parse_effort(const std::string& text);  // low | medium | high
const char* effort_name(harmony::ReasoningEffort effort);

// `arg` is either the text itself or the path of a file holding it (read when it exists).
std::string text_or_file(const std::string& arg);

struct PromptTokens {
  std::vector<int> tokens;
  int dropped_turns = 0;  // oldest user turns left out so that it fits
};

class Conversation {
 public:
  Conversation(ChatMode mode, const Tokenizer& tokenizer);

  ChatMode mode() const { return mode_; }
  // Harmony header material (ignored in plain mode).
  harmony::ReasoningEffort effort = harmony::ReasoningEffort::kMedium;
  std::string date = today_iso_date();
  std::optional<std::string> system_identity;  // replaces the model identity line when set
  std::string developer;                       // developer instructions; empty = none
  std::vector<harmony::ToolDescription> function_tools;
  std::vector<harmony::ToolNamespace> builtin_tools;  // e.g. python, in the system message

  void add_user(std::string text);
  // Harmony: the assistant's parsed messages of one turn (analysis, tool calls, final).
  void add_assistant(std::vector<harmony::Message> messages);
  // The result goes back on the channel the call was made on (commentary for functions, analysis
  // for the built-in python tool).
  void add_tool_result(const std::string& tool, std::string output,
                       const std::string& channel = "commentary");
  void add_plain_reply(std::string text);  // plain mode: the model's continuation
  void clear();                            // forget every turn, keep the header material
  void undo_last_user();                   // drops the last user message and everything after it

  // The tokens to generate the next assistant reply from. Turns are dropped from the oldest
  // until prompt + reserve fits `context`; kContextOverflow when even the last user turn alone
  // does not fit (the message gives the numbers).
  PromptTokens prompt(int context, int reserve) const;
  // The rendered prompt as text with special tokens spelled out (for /tokens and tests).
  std::string rendered_text() const;
  harmony::Message system_message() const;

  const std::vector<harmony::Message>& messages() const { return messages_; }
  int user_turns() const;

  harmony::Json to_json() const;
  // Replaces this conversation by one saved with to_json(); kInvalidArgument naming the field
  // for a malformed document, or when its mode differs from this one's.
  void load_json(const harmony::Json& j);

 private:
  std::vector<int> render(size_t first_message) const;
  std::vector<harmony::Message> header_messages() const;

  ChatMode mode_;
  const Tokenizer& tokenizer_;
  std::unique_ptr<harmony::Vocabulary> vocab_;
  std::vector<harmony::Message> messages_;  // plain mode: user / assistant text turns
};

}  // namespace mind4::chat
