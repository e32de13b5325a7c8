// Streaming parser: model tokens -> harmony messages, tolerant of malformed output.
//
// Recovery principle: a sampled stream is never rejected. Whatever is malformed is reported as
// a diagnostic, the parser takes the most plausible reading, and it keeps going, so a chat can
// still show the answer and the rest of the stream is not lost.
#include <algorithm>

#include "mind4/harmony.h"

namespace mind4::harmony {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence that starts at s[i]: n > 0 complete and valid, 0 = incomplete
// but valid so far (wait for more bytes), -1 = invalid (replace one byte).
int utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = b(i);
  if (lead < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    n = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n = 3;
    if (lead == 0xE0) lo = 0xA0;  // overlong
    if (lead == 0xED) hi = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n = 4;
    if (lead == 0xF0) lo = 0x90;  // overlong
    if (lead == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return 0;
    const unsigned char c = b(i + k);
    const unsigned char low = k == 1 ? lo : 0x80, high = k == 1 ? hi : 0xBF;
    if (c < low || c > high) return -1;
  }
  return n;
}

// Moves the complete characters of `pending` into the result; an incomplete tail stays in
// `pending` unless `final`, in which case it becomes U+FFFD.
std::string take_utf8(std::string& pending, bool final) {
  std::string out;
  std::size_t i = 0;
  while (i < pending.size()) {
    const int n = utf8_sequence(pending, i);
    if (n > 0) {
      out.append(pending, i, n);
      i += n;
    } else if (n < 0) {
      out += kReplacement;
      ++i;
    } else if (final) {
      out += kReplacement;
      i = pending.size();
    } else {
      break;
    }
  }
  pending.erase(0, i);
  return out;
}

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

struct Word {
  std::size_t begin;
  std::string_view text;
};

std::vector<Word> split_words(std::string_view s) {
  std::vector<Word> words;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    const std::size_t begin = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > begin) words.push_back({begin, s.substr(begin, i - begin)});
  }
  return words;
}

bool plausible_tool_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-' || c == ':' || c == '/';
  });
}

std::string excerpt(std::string_view text) {
  constexpr std::size_t kShown = 80;
  std::string out = "'";
  out += text.substr(0, kShown);
  if (text.size() > kShown) out += "...";
  return out + "'";
}

}  // namespace

const char* diagnostic_name(Diagnostic kind) {
  switch (kind) {
    case Diagnostic::kTextOutsideMessage:
      return "text_outside_message";
    case Diagnostic::kMissingStart:
      return "missing_start";
    case Diagnostic::kUnknownRole:
      return "unknown_role";
    case Diagnostic::kMissingMessage:
      return "missing_message";
    case Diagnostic::kHeaderTooLong:
      return "header_too_long";
    case Diagnostic::kMissingEnd:
      return "missing_end";
    case Diagnostic::kUnexpectedSpecial:
      return "unexpected_special";
    case Diagnostic::kInvalidToken:
      return "invalid_token";
    case Diagnostic::kTruncated:
      return "truncated";
  }
  return "unknown";
}

StreamParser::StreamParser(const Vocabulary& vocab, Options options)
    : vocab_(vocab), ids_(SpecialIds::from(vocab)), options_(options) {
  if (options_.start_role) begin_header(options_.start_role, "", -1);
}

std::span<const ParseEvent> StreamParser::push(int token) {
  events_.clear();
  token_index_ = tokens_seen_++;
  if (token < 0 || token >= vocab_.vocab_size()) {
    diagnose(Diagnostic::kInvalidToken, "token id " + std::to_string(token) +
                                            " is outside the vocabulary (size " +
                                            std::to_string(vocab_.vocab_size()) + "); ignored");
  } else if (vocab_.is_special(token)) {
    on_special(token);
  } else {
    on_text(vocab_.token_bytes(token));
  }
  return events_;
}

std::span<const ParseEvent> StreamParser::finish() {
  events_.clear();
  token_index_ = tokens_seen_;
  flush_stray_text();
  if (state_ == State::kHeader) {
    const bool empty = std::all_of(header_.begin(), header_.end(), [](const HeaderSegment& s) {
      return s.marker < 0 && s.text.empty();
    });
    // A header still empty is only the prompt's `<|start|>assistant`: nothing was generated.
    if (!empty) {
      diagnose(Diagnostic::kTruncated,
               "the stream ended inside a message header; kept as a message");
      parse_header(true);
      open_content();
      close_message(StopReason::kNone);
    }
  } else if (state_ == State::kContent) {
    diagnose(Diagnostic::kTruncated, "the stream ended inside a message (no <|end|>); kept");
    close_message(StopReason::kNone);
  }
  state_ = State::kExpectStart;
  return events_;
}

void StreamParser::on_text(std::string_view bytes) {
  switch (state_) {
    case State::kExpectStart:
      stray_text_ += bytes;
      break;
    case State::kHeader:
      header_.back().text += bytes;
      if (++header_tokens_ > options_.max_header_tokens) {
        diagnose(Diagnostic::kHeaderTooLong,
                 "no <|message|> within " + std::to_string(options_.max_header_tokens) +
                     " header tokens; the header's first fields were kept and the rest read as "
                     "content");
        parse_header(true);
        open_content();
      }
      break;
    case State::kContent:
      on_content_bytes(bytes);
      break;
  }
}

void StreamParser::on_content_bytes(std::string_view bytes) {
  pending_utf8_ += bytes;
  emit_delta(take_utf8(pending_utf8_, false));
}

void StreamParser::on_special(int token) {
  const bool is_stop = token == ids_.end || token == ids_.return_token || token == ids_.call;
  if (token == ids_.start) {
    if (state_ == State::kExpectStart) {
      flush_stray_text();
    } else if (state_ == State::kHeader) {
      std::string partial;
      for (const HeaderSegment& s : header_) partial += s.text;
      diagnose(Diagnostic::kUnexpectedSpecial, "<|start|> inside a header; the partial header " +
                                                   excerpt(partial) +
                                                   " was abandoned and a new message begins");
    } else {
      diagnose(Diagnostic::kMissingEnd,
               "<|start|> inside the content of a message: the message was closed there and a "
               "new one begins");
      close_message(StopReason::kNone);
    }
    begin_header(std::nullopt, "", -1);
  } else if (token == ids_.channel || token == ids_.constrain) {
    const bool channel = token == ids_.channel;
    if (state_ == State::kHeader) {
      header_.push_back({token, ""});
      ++header_tokens_;
    } else if (state_ == State::kExpectStart) {
      flush_stray_text();
      diagnose(Diagnostic::kMissingStart,
               std::string(channel ? "<|channel|>" : "<|constrain|>") +
                   " without <|start|>: read as a new assistant message");
      begin_header(Role::kAssistant, "", token);
    } else if (channel) {
      // The model began its next message without <|end|><|start|>role: keep the role.
      diagnose(Diagnostic::kMissingEnd,
               "<|channel|> inside the content of a message: the message was closed there and a "
               "new one of the same author begins");
      const Role role = current_.role;
      std::string author = current_.author_name;
      close_message(StopReason::kNone);
      begin_header(role, std::move(author), token);
    } else {
      diagnose(Diagnostic::kUnexpectedSpecial, "<|constrain|> inside content; ignored");
    }
  } else if (token == ids_.message) {
    if (state_ == State::kHeader) {
      parse_header(false);
      open_content();
    } else if (state_ == State::kExpectStart) {
      flush_stray_text();
      diagnose(Diagnostic::kMissingStart,
               "<|message|> without <|start|>: read as an assistant message without header");
      begin_header(Role::kAssistant, "", -1);
      parse_header(false);
      open_content();
    } else {
      diagnose(Diagnostic::kUnexpectedSpecial, "<|message|> inside content; ignored");
    }
  } else if (is_stop) {
    const StopReason stop = token == ids_.end            ? StopReason::kEnd
                            : token == ids_.return_token ? StopReason::kReturn
                                                         : StopReason::kCall;
    if (state_ == State::kContent) {
      close_message(stop);
    } else if (state_ == State::kHeader) {
      diagnose(Diagnostic::kMissingMessage,
               "a header ended by " + std::string(vocab_.token_bytes(token)) +
                   " without <|message|>; the words after its fields were read as content");
      parse_header(true);
      open_content();
      close_message(stop);
    } else {
      flush_stray_text();
      diagnose(Diagnostic::kUnexpectedSpecial,
               std::string(vocab_.token_bytes(token)) + " outside any message");
      if (stop != StopReason::kEnd) {
        turn_stop_ = stop;
        ParseEvent e{ParseEvent::Type::kTurnEnd, {}, {}, stop};
        events_.push_back(std::move(e));
      }
    }
  } else {
    diagnose(Diagnostic::kUnexpectedSpecial,
             "special token " + std::string(vocab_.token_bytes(token)) + " (id " +
                 std::to_string(token) + ") has no meaning in the harmony format; ignored");
  }
}

void StreamParser::begin_header(std::optional<Role> role, std::string author, int first_marker) {
  state_ = State::kHeader;
  header_.clear();
  header_.push_back({-1, ""});
  if (first_marker >= 0) header_.push_back({first_marker, ""});
  header_role_ = role;
  header_author_ = std::move(author);
  header_tokens_ = 0;
  turn_stop_ = StopReason::kNone;
}

void StreamParser::parse_header(bool content_in_header) {
  current_ = Message{};
  std::vector<std::string> type_words;
  std::string content;
  for (std::size_t s = 0; s < header_.size(); ++s) {
    const HeaderSegment& segment = header_[s];
    const bool last = s + 1 == header_.size();
    const std::vector<Word> words = split_words(segment.text);
    std::size_t w = 0;
    if (segment.marker < 0) {
      if (header_role_) {
        current_.role = *header_role_;
        current_.author_name = header_author_;
      } else if (w < words.size() && !words[w].text.starts_with("to=")) {
        std::string_view word = words[w++].text;
        const std::size_t colon = word.find(':');
        std::optional<Role> role = role_from_name(word.substr(0, colon));
        if (role) {
          current_.role = *role;
          if (colon != std::string_view::npos) current_.author_name = word.substr(colon + 1);
        } else {
          current_.role = Role::kTool;
          current_.author_name = word;
          if (!plausible_tool_name(word)) {
            diagnose(Diagnostic::kUnknownRole,
                     "header role " + excerpt(word) +
                         " is neither a role nor a tool name; kept as a tool author");
          }
        }
      } else {
        diagnose(Diagnostic::kUnknownRole, "a header without a role; read as assistant");
        current_.role = Role::kAssistant;
      }
    } else if (segment.marker == ids_.channel) {
      if (w < words.size() && !words[w].text.starts_with("to=")) current_.channel = words[w++].text;
    } else if (w < words.size()) {  // <|constrain|>
      current_.content_type = "<|constrain|>" + std::string(words[w++].text);
    }
    // Attributes after the field value: recipients, then a content type ("code", "json").
    for (; w < words.size(); ++w) {
      std::string_view word = words[w].text;
      if (word.starts_with("to=")) {
        current_.recipient = word.substr(3);
        current_.recipient_after_channel = segment.marker == ids_.channel;
      } else if (last && content_in_header) {
        break;
      } else {
        type_words.emplace_back(word);
      }
    }
    if (last && content_in_header && w < words.size()) {
      content = segment.text.substr(words[w].begin);
    }
  }
  if (current_.content_type.empty() && !type_words.empty()) {
    for (std::size_t i = 0; i < type_words.size(); ++i) {
      if (i) current_.content_type += ' ';
      current_.content_type += type_words[i];
    }
  }
  current_.content = std::move(content);
}

void StreamParser::open_content() {
  state_ = State::kContent;
  pending_utf8_.clear();
  std::string early_content = std::move(current_.content);
  current_.content.clear();
  events_.push_back({ParseEvent::Type::kHeader, current_, {}, StopReason::kNone});
  if (!early_content.empty()) on_content_bytes(early_content);
}

void StreamParser::close_message(StopReason stop) {
  emit_delta(take_utf8(pending_utf8_, true));
  messages_.push_back(current_);
  events_.push_back({ParseEvent::Type::kMessage, current_, {}, stop});
  current_ = Message{};
  state_ = State::kExpectStart;
  if (stop == StopReason::kReturn || stop == StopReason::kCall) {
    turn_stop_ = stop;
    events_.push_back({ParseEvent::Type::kTurnEnd, {}, {}, stop});
  }
}

void StreamParser::flush_stray_text() {
  if (stray_text_.empty()) return;
  std::string text = take_utf8(stray_text_, true);
  stray_text_.clear();
  // Whitespace between messages (a newline after <|end|>) is harmless; anything else is noted.
  if (std::all_of(text.begin(), text.end(), is_space)) return;
  // The whole text goes into the record: nothing the model wrote is lost.
  diagnose(Diagnostic::kTextOutsideMessage,
           "text outside any message (no <|start|> before it): '" + text + "'");
}

void StreamParser::diagnose(Diagnostic kind, std::string detail) {
  ParseEvent e{ParseEvent::Type::kDiagnostic, {}, detail, StopReason::kNone, kind};
  events_.push_back(std::move(e));
  diagnostics_.push_back({kind, token_index_, std::move(detail)});
}

void StreamParser::emit_delta(std::string text) {
  if (text.empty()) return;
  current_.content += text;
  events_.push_back({ParseEvent::Type::kDelta, {}, std::move(text), StopReason::kNone});
}

std::vector<Message> parse_completion(std::span<const int> tokens, const Vocabulary& vocab,
                                      std::vector<DiagnosticRecord>* diagnostics) {
  StreamParser parser(vocab);
  for (int token : tokens) parser.push(token);
  parser.finish();
  if (diagnostics) *diagnostics = parser.diagnostics();
  return parser.messages();
}

}  // namespace mind4::harmony
