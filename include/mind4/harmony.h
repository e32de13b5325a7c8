// The harmony chat format of gpt-oss: conversations rendered to tokens, and a streaming parser
// from model tokens back to messages. Format reference: openai/harmony docs/format.md and the
// openai-cookbook article "OpenAI Harmony Response Format"; see docs/harmony.md for our API.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mind4 {
class Tokenizer;
}

namespace mind4::harmony {

// JSON Schemas keep the key order the user wrote: the rendered TypeScript follows it.
using Json = nlohmann::ordered_json;

enum class Role { kSystem, kDeveloper, kUser, kAssistant, kTool };
const char* role_name(Role role);
std::optional<Role> role_from_name(std::string_view name);  // "tool" is not a header word

enum class ReasoningEffort { kLow, kMedium, kHigh };

struct ToolDescription {
  std::string name;
  std::string description;
  std::optional<Json> parameters;  // a JSON Schema of type object; none = takes no argument
  bool operator==(const ToolDescription&) const = default;
};

// A namespace of tools ("functions", "browser", "python"): a `## name` section.
struct ToolNamespace {
  std::string name;
  std::string description;  // commented (`// `) when the namespace has tools, plain otherwise
  std::vector<ToolDescription> tools;
  static ToolNamespace browser();  // the built-in browsing tool the models were trained with
  static ToolNamespace python();   // the built-in stateful Jupyter tool
  bool operator==(const ToolNamespace&) const = default;
};

struct SystemContent {
  std::optional<std::string> model_identity =
      "You are ChatGPT, a large language model trained by OpenAI.";
  std::optional<std::string> knowledge_cutoff = "2024-06";
  std::optional<std::string> current_date;  // "YYYY-MM-DD"
  std::optional<ReasoningEffort> reasoning_effort = ReasoningEffort::kMedium;
  std::vector<std::string> valid_channels = {"analysis", "commentary", "final"};
  bool channel_required = true;
  std::vector<ToolNamespace> tools;  // built-in tools; rendered in name order
  bool operator==(const SystemContent&) const = default;
};

// Structured output: a `# Response Formats` section at the end of the developer message.
struct ResponseFormat {
  std::string name;
  std::string description;
  Json schema;
  bool operator==(const ResponseFormat&) const = default;
};

struct DeveloperContent {
  std::optional<std::string> instructions;
  std::vector<ToolDescription> function_tools;  // the `functions` namespace
  std::vector<ToolNamespace> other_tools;       // further namespaces, rendered in name order
  std::vector<ResponseFormat> response_formats;
  bool operator==(const DeveloperContent&) const = default;
};

struct Message {
  Role role = Role::kUser;
  // For kTool: the tool that speaks ("functions.get_weather", "browser.search", "python").
  // For other roles an optional name rendered as `role:name`.
  std::string author_name;
  std::string recipient;     // "functions.get_weather", "assistant"; empty = everyone
  std::string channel;       // "analysis", "commentary", "final"; empty = no channel
  std::string content_type;  // "<|constrain|>json", "code"; empty = none
  // Where ` to=...` sits in the header: after the role (as the reference renderer writes it)
  // or after the channel (as the models usually emit it). The parser records what it saw.
  bool recipient_after_channel = false;
  std::string content;  // the text; for system/developer messages appended after the structure
  std::optional<SystemContent> system;
  std::optional<DeveloperContent> developer;

  static Message system_message(SystemContent content);
  static Message developer_message(DeveloperContent content);
  static Message user(std::string text);
  static Message assistant(std::string channel, std::string text);
  // An assistant tool call, e.g. recipient "functions.get_weather", content type
  // "<|constrain|>json", channel "commentary"; rendered with <|call|> as its end.
  static Message tool_call(std::string recipient, std::string arguments,
                           std::string channel = "commentary",
                           std::string content_type = "<|constrain|>json");
  // A tool's answer: `<|start|>{tool} to=assistant<|channel|>{channel}<|message|>...`.
  static Message tool_result(std::string tool, std::string output,
                             std::string channel = "commentary");

  bool operator==(const Message&) const = default;
};

// A rendering: text runs and special tokens in order. Text runs are encoded with the ordinary
// tokenizer (special-token text inside content stays plain text); specials become their ids.
class Rendering {
 public:
  struct Piece {
    bool special = false;
    std::string text;  // the text run, or the special token's text ("<|start|>")
  };
  void add_text(std::string_view text);  // merges with a preceding text run
  void add_special(std::string_view token_text);
  void append(const Rendering& other);
  const std::vector<Piece>& pieces() const { return pieces_; }
  std::string str() const;  // for display and tests; ambiguous where content holds "<|...|>"

 private:
  std::vector<Piece> pieces_;
};

struct RenderOptions {
  // Drop the analysis (chain-of-thought) messages of earlier finished turns: an assistant
  // analysis message followed by an assistant final message that a later user message follows.
  // The last turn keeps its analysis: a tool-call chain in progress needs it, and so does a
  // training target.
  bool drop_finished_analysis = true;
};

Rendering render_message(const Message& message, bool conversation_has_function_tools = false);
Rendering render_conversation(std::span<const Message> messages, const RenderOptions& options = {});
// The conversation followed by `<|start|>{next_role}`: the prompt for the next reply.
Rendering render_for_completion(std::span<const Message> messages,
                                Role next_role = Role::kAssistant,
                                const RenderOptions& options = {});
// A training target: like render_conversation, but a last assistant message on the final
// channel ends with <|return|> (what the model emits) instead of <|end|> (what history keeps).
Rendering render_for_training(std::span<const Message> messages, const RenderOptions& options = {});

// The parser's and the token renderer's view of a vocabulary.
class Vocabulary {
 public:
  virtual ~Vocabulary() = default;
  virtual std::optional<int> special_id(std::string_view text) const = 0;
  virtual bool is_special(int id) const = 0;
  virtual std::string_view token_bytes(int id) const = 0;  // only for 0 <= id < vocab_size()
  virtual int vocab_size() const = 0;
  virtual std::vector<int> encode_ordinary(std::string_view text) const = 0;
};
// A Vocabulary over a mind4::Tokenizer (which must outlive it).
std::unique_ptr<Vocabulary> vocabulary_of(const Tokenizer& tokenizer);

// The format's special tokens, looked up by text; throws Error(kInvalidArgument) naming the
// first one the vocabulary lacks.
struct SpecialIds {
  int start, end, message, channel, constrain, return_token, call;
  static SpecialIds from(const Vocabulary& vocab);
};

std::vector<int> to_tokens(const Rendering& rendering, const Vocabulary& vocab);

// ---- Streaming parser ----------------------------------------------------------------------

enum class Diagnostic {
  kTextOutsideMessage,  // text tokens where a <|start|> was expected (kept in `detail`)
  kMissingStart,        // a header began (<|channel|>) without <|start|>
  kUnknownRole,         // a header without a usable role or tool name
  kMissingMessage,      // a header ended (<|end|>, <|return|>, <|call|>) without <|message|>
  kHeaderTooLong,       // no <|message|> within Options::max_header_tokens
  kMissingEnd,          // a message interrupted by <|start|> or <|channel|> without <|end|>
  kUnexpectedSpecial,   // a special token that has no meaning where it appeared (ignored)
  kInvalidToken,        // an id outside the vocabulary (ignored)
  kTruncated,           // the stream ended inside a message (kept as a message)
};
const char* diagnostic_name(Diagnostic kind);

enum class StopReason { kNone, kEnd, kReturn, kCall };  // how a message ended

struct ParseEvent {
  enum class Type {
    kHeader,      // a message's header is complete: `message` holds role, channel, ...
    kDelta,       // `text` is new content text (whole UTF-8 characters)
    kMessage,     // a message is complete: `message`, `stop`
    kTurnEnd,     // <|return|> or <|call|>: stop sampling (`stop` says which)
    kDiagnostic,  // `diagnostic`, `text` says what was wrong and what was done
  };
  Type type;
  Message message;
  std::string text;
  StopReason stop = StopReason::kNone;
  Diagnostic diagnostic = Diagnostic::kTextOutsideMessage;
};

struct DiagnosticRecord {
  Diagnostic kind;
  std::size_t token_index;  // position in the stream of the token that revealed it
  std::string detail;
};

class StreamParser {
 public:
  struct Options {
    // The role of a message whose <|start|>role was in the prompt (`<|start|>assistant`);
    // none = the stream begins with <|start|> (parsing a whole rendered conversation).
    std::optional<Role> start_role = Role::kAssistant;
    std::size_t max_header_tokens = 128;
  };
  // `vocab` must outlive the parser.
  explicit StreamParser(const Vocabulary& vocab) : StreamParser(vocab, Options{}) {}
  StreamParser(const Vocabulary& vocab, Options options);

  // Feeds one token; the returned events are valid until the next call.
  std::span<const ParseEvent> push(int token);
  // End of stream: a message in progress is kept (kTruncated), pending bytes are flushed.
  std::span<const ParseEvent> finish();

  const std::vector<Message>& messages() const { return messages_; }
  const std::vector<DiagnosticRecord>& diagnostics() const { return diagnostics_; }
  bool turn_ended() const { return turn_stop_ != StopReason::kNone; }
  StopReason turn_stop() const { return turn_stop_; }
  bool in_message() const { return state_ == State::kContent; }
  // The message whose header is complete and whose content is arriving (in_message()).
  const Message& current() const { return current_; }

 private:
  enum class State { kExpectStart, kHeader, kContent };
  struct HeaderSegment {
    int marker;  // -1 (role part), or the id of <|channel|> / <|constrain|>
    std::string text;
  };

  void on_special(int token);
  void on_text(std::string_view bytes);
  void begin_header(std::optional<Role> role, std::string author, int first_marker);
  void on_content_bytes(std::string_view bytes);
  // Turns header segments into current_; with `content_in_header`, the words after the last
  // segment's fields become content (the recovery for a missing <|message|>).
  void parse_header(bool content_in_header);
  void open_content();
  void close_message(StopReason stop);
  void flush_stray_text();
  void diagnose(Diagnostic kind, std::string detail);
  void emit_delta(std::string text);

  const Vocabulary& vocab_;
  SpecialIds ids_;
  Options options_;
  State state_ = State::kExpectStart;
  std::optional<Role> header_role_;  // role known before the header text (prompt or recovery)
  std::string header_author_;
  std::vector<HeaderSegment> header_;
  std::size_t header_tokens_ = 0;
  Message current_;
  std::string pending_utf8_;     // bytes of an incomplete UTF-8 character
  std::string stray_text_;       // text outside any message, reported as one diagnostic
  std::size_t token_index_ = 0;  // position of the token being processed
  std::size_t tokens_seen_ = 0;
  StopReason turn_stop_ = StopReason::kNone;
  std::vector<Message> messages_;
  std::vector<DiagnosticRecord> diagnostics_;
  std::vector<ParseEvent> events_;
};

// Parses a finished completion (tokens after `<|start|>assistant`) into messages.
std::vector<Message> parse_completion(std::span<const int> tokens, const Vocabulary& vocab,
                                      std::vector<DiagnosticRecord>* diagnostics = nullptr);

// ---- Conversation as JSON (for /save and /load) ----------------------------------------------

// Ordered JSON, so that tool schemas keep their key order (it shows in the rendering).
Json to_json(const Message& message);
Json to_json(std::span<const Message> messages);
// Throws Error(kInvalidArgument) naming the message and field at fault.
Message message_from_json(const Json& j);
std::vector<Message> conversation_from_json(const Json& j);

}  // namespace mind4::harmony
