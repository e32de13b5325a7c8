// Shows a harmony reply as it streams: the final channel in full, the analysis (and commentary)
// dimmed or hidden, tool calls as one line each; and keeps the parsed messages for the history.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "mind4/harmony.h"

namespace mind4::chat {

struct ReplyStyle {
  std::FILE* out = stdout;  // nullptr: print nothing (JSON output, tests)
  bool show_reasoning = false;
  bool color = false;  // ANSI dim for the analysis; otherwise "[analysis]" markers
};

class ReplyStream {
 public:
  ReplyStream(const harmony::Vocabulary& vocab, ReplyStyle style);

  void push(int token);
  void finish();  // the stream ended (stop token, limit or cancel): closes an open message

  const std::vector<harmony::Message>& messages() const { return parser_.messages(); }
  const std::vector<harmony::DiagnosticRecord>& diagnostics() const {
    return parser_.diagnostics();
  }
  harmony::StopReason turn_stop() const { return parser_.turn_stop(); }
  // The text of the final channel (or of messages with no channel), and of the others.
  const std::string& final_text() const { return final_; }
  const std::string& reasoning_text() const { return reasoning_; }
  // The reply's last message when the turn ended with <|call|>: a call to a tool.
  const harmony::Message* tool_call() const;

 private:
  void handle(std::span<const harmony::ParseEvent> events);
  void print(const std::string& text);

  harmony::StreamParser parser_;
  ReplyStyle style_;
  bool visible_ = false, reasoning_open_ = false;
  bool is_final_ = false;
  std::string final_, reasoning_;
};

}  // namespace mind4::chat
