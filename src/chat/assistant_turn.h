// One assistant turn of a chat: render the conversation to a prompt that fits the context, stream
// the reply, and in harmony mode run each tool call the reply ends with and feed the result back,
// until the model answers (or a limit, or Ctrl-C). What the model said, tool calls and results
// included, is added to the conversation, also when the turn was interrupted.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "chat/conversation.h"
#include "chat/generator.h"
#include "chat/reply_stream.h"
#include "chat/tools.h"

namespace mind4::chat {

struct TurnOptions {
  int context = 4096;
  int max_new_tokens = 256;  // per model reply (a turn with tool calls has several)
  int max_tool_rounds = 8;
  std::vector<std::string> plain_stops = {"\n\n"};  // plain mode: where a reply ends
  ReplyStyle style;
  const std::atomic<bool>* cancel = nullptr;
  // Notices for the person: turns dropped to fit, tool calls and their results.
  std::function<void(const std::string&)> notice;
};

struct TurnResult {
  GenerateStats last;  // the last model reply of the turn
  int generated = 0;   // tokens over all replies of the turn
  int tool_calls = 0;
  int dropped_turns = 0;
  bool cancelled = false;
};

TurnResult run_assistant_turn(Conversation& conversation, TokenSource& source,
                              const Tokenizer& tokenizer, const ToolBox* tools,
                              const TurnOptions& options);

}  // namespace mind4::chat
