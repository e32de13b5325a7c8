#include "chat/reply_stream.h"

namespace mind4::chat {

ReplyStream::ReplyStream(const harmony::Vocabulary& vocab, ReplyStyle style)
    : parser_(vocab, harmony::StreamParser::Options{.start_role = harmony::Role::kAssistant}),
      style_(style) {}

void ReplyStream::print(const std::string& text) {
  if (!style_.out || text.empty()) return;
  std::fwrite(text.data(), 1, text.size(), style_.out);
  std::fflush(style_.out);
}

void ReplyStream::push(int token) {
  handle(parser_.push(token));
}

void ReplyStream::finish() {
  handle(parser_.finish());
}

const harmony::Message* ReplyStream::tool_call() const {
  if (parser_.turn_stop() != harmony::StopReason::kCall || parser_.messages().empty())
    return nullptr;
  const harmony::Message& last = parser_.messages().back();
  return last.recipient.empty() ? nullptr : &last;
}

void ReplyStream::handle(std::span<const harmony::ParseEvent> events) {
  using Type = harmony::ParseEvent::Type;
  for (const harmony::ParseEvent& e : events) {
    switch (e.type) {
      case Type::kHeader: {
        const harmony::Message& m = e.message;
        is_final_ = m.recipient.empty() && (m.channel == "final" || m.channel.empty());
        if (!m.recipient.empty()) {
          print("[calling " + m.recipient + "]\n");
          visible_ = style_.show_reasoning;
        } else {
          visible_ = is_final_ || style_.show_reasoning;
        }
        if (visible_ && !is_final_) {
          print(style_.color ? "\x1b[2m"
                             : "[" + (m.channel.empty() ? "message" : m.channel) + "] ");
          reasoning_open_ = true;
        }
        break;
      }
      case Type::kDelta:
        (is_final_ ? final_ : reasoning_) += e.text;
        if (visible_) print(e.text);
        break;
      case Type::kMessage:
        if (reasoning_open_) {
          print(style_.color ? "\x1b[0m\n" : "\n");
          reasoning_open_ = false;
        }
        visible_ = false;
        break;
      case Type::kTurnEnd:
      case Type::kDiagnostic:
        break;
    }
  }
}

}  // namespace mind4::chat
