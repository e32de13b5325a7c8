#include "chat/assistant_turn.h"

#include <algorithm>

#include "mind4/status.h"

namespace mind4::chat {

namespace {

void turn_notice(const TurnOptions& o, const std::string& text) {
  if (o.notice) o.notice(text);
}

std::string turn_preview(const std::string& text) {
  std::string one_line = text.substr(0, 200);
  for (char& c : one_line)
    if (c == '\n') c = ' ';
  return one_line + (text.size() > 200 ? "..." : "");
}

}  // namespace

TurnResult run_assistant_turn(Conversation& conversation, TokenSource& source,
                              const Tokenizer& tokenizer, const ToolBox* tools,
                              const TurnOptions& o) {
  TurnResult result;
  GenerateLimits limits;
  limits.max_new_tokens = o.max_new_tokens;
  limits.cancel = o.cancel;
  const bool harmony = conversation.mode() == ChatMode::kHarmony;
  if (harmony) {
    for (const char* stop : {"<|return|>", "<|call|>"})
      limits.stop_tokens.push_back(*tokenizer.special_id(stop));
  } else {
    limits.stop_strings = o.plain_stops;
    if (auto eot = tokenizer.special_id("<|endoftext|>")) limits.stop_tokens.push_back(*eot);
  }
  std::unique_ptr<harmony::Vocabulary> vocab;
  if (harmony) vocab = harmony::vocabulary_of(tokenizer);

  // Room kept for the reply when old turns are dropped: all of max_new_tokens, but never more
  // than half the context (a reply may still run until the context is full).
  const int reserve = std::min(o.max_new_tokens, o.context / 2);
  for (int round = 0;; ++round) {
    PromptTokens prompt = conversation.prompt(o.context, reserve);
    if (prompt.dropped_turns > result.dropped_turns) {
      turn_notice(o, "[context: the " + std::to_string(prompt.dropped_turns) +
                         " oldest turn(s) no longer fit and are left out]");
      result.dropped_turns = prompt.dropped_turns;
    }
    if (!harmony) {
      result.last = source.generate(prompt.tokens, limits, [&](const TokenEvent& e) {
        if (o.style.out && !e.text.empty()) {
          std::fwrite(e.text.data(), 1, e.text.size(), o.style.out);
          std::fflush(o.style.out);
        }
      });
      result.generated += result.last.generated;
      result.cancelled = result.last.stop == StopCause::kCancelled;
      conversation.add_plain_reply(result.last.text);
      return result;
    }
    ReplyStream reply(*vocab, o.style);
    result.last = source.generate(prompt.tokens, limits, [&](const TokenEvent& e) {
      if (e.token >= 0) reply.push(e.token);
    });
    reply.finish();
    result.generated += result.last.generated;
    result.cancelled = result.last.stop == StopCause::kCancelled;
    conversation.add_assistant(reply.messages());
    const harmony::Message* call = reply.tool_call();
    if (!call || result.cancelled) return result;
    if (round >= o.max_tool_rounds) {
      turn_notice(
          o, "[tools: stopped after " + std::to_string(o.max_tool_rounds) + " calls in one turn]");
      return result;
    }
    ++result.tool_calls;
    ToolCallResult called;
    if (tools) {
      called = tools->call(*call);
    } else {
      called.tool = call->recipient;
      called.output = "error: no tools are available in this chat";
    }
    turn_notice(o, "[" + called.tool + "(" + turn_preview(call->content) + ") -> " +
                       turn_preview(called.output) + "]");
    conversation.add_tool_result(called.tool, called.output, call->channel);
  }
}

}  // namespace mind4::chat
