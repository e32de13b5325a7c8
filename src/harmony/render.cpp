// Rendering of harmony messages and conversations (text runs + special tokens).
#include <algorithm>

#include "harmony/typescript_schema.h"
#include "mind4/harmony.h"
#include "mind4/status.h"

namespace mind4::harmony {
namespace {

constexpr std::string_view kStart = "<|start|>";
constexpr std::string_view kEnd = "<|end|>";
constexpr std::string_view kMessage = "<|message|>";
constexpr std::string_view kChannel = "<|channel|>";
constexpr std::string_view kConstrain = "<|constrain|>";
constexpr std::string_view kReturn = "<|return|>";
constexpr std::string_view kCall = "<|call|>";

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t nl = text.find('\n', begin);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(begin, nl - begin));
    begin = nl + 1;
  }
  return lines;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i) out += separator;
    out += parts[i];
  }
  return out;
}

// `# Tools` followed by one `## name` section per namespace.
std::string tools_section(std::vector<const ToolNamespace*> namespaces) {
  std::stable_sort(
      namespaces.begin(), namespaces.end(),
      [](const ToolNamespace* a, const ToolNamespace* b) { return a->name < b->name; });
  std::vector<std::string> sections = {"# Tools"};
  for (const ToolNamespace* ns : namespaces) {
    std::vector<std::string> lines = {"## " + ns->name + "\n"};
    for (const std::string& line : split_lines(ns->description)) {
      lines.push_back(ns->tools.empty() ? line : "// " + line);
    }
    if (!ns->tools.empty()) {
      lines.push_back("namespace " + ns->name + " {\n");
      for (const ToolDescription& tool : ns->tools) {
        for (const std::string& line : split_lines(tool.description)) lines.push_back("// " + line);
        if (tool.parameters) {
          lines.push_back("type " + tool.name +
                          " = (_: " + schema_to_typescript(*tool.parameters, "") + ") => any;\n");
        } else {
          lines.push_back("type " + tool.name + " = () => any;\n");
        }
      }
      lines.push_back("} // namespace " + ns->name);
    }
    sections.push_back(join(lines, "\n"));
  }
  return join(sections, "\n\n");
}

const char* effort_name(ReasoningEffort effort) {
  switch (effort) {
    case ReasoningEffort::kLow:
      return "low";
    case ReasoningEffort::kMedium:
      return "medium";
    case ReasoningEffort::kHigh:
      return "high";
  }
  return "medium";
}

std::string system_text(const SystemContent& sys, bool has_function_tools) {
  std::vector<std::string> sections;
  std::vector<std::string> top;
  if (sys.model_identity) top.push_back(*sys.model_identity);
  if (sys.knowledge_cutoff) top.push_back("Knowledge cutoff: " + *sys.knowledge_cutoff);
  if (sys.current_date) top.push_back("Current date: " + *sys.current_date);
  if (!top.empty()) sections.push_back(join(top, "\n"));
  if (sys.reasoning_effort) {
    sections.push_back(std::string("Reasoning: ") + effort_name(*sys.reasoning_effort));
  }
  if (!sys.tools.empty()) {
    std::vector<const ToolNamespace*> namespaces;
    for (const auto& ns : sys.tools) namespaces.push_back(&ns);
    sections.push_back(tools_section(namespaces));
  }
  if (!sys.valid_channels.empty()) {
    std::string channels = "# Valid channels: " + join(sys.valid_channels, ", ") + ".";
    if (sys.channel_required) channels += " Channel must be included for every message.";
    if (has_function_tools) {
      channels += "\nCalls to these tools must go to the commentary channel: 'functions'.";
    }
    sections.push_back(channels);
  }
  return join(sections, "\n\n");
}

std::string developer_text(const DeveloperContent& dev) {
  std::vector<std::string> sections;
  if (dev.instructions) {
    sections.push_back("# Instructions");
    sections.push_back(*dev.instructions);
  }
  ToolNamespace functions{"functions", "", dev.function_tools};
  std::vector<const ToolNamespace*> namespaces;
  if (!functions.tools.empty()) namespaces.push_back(&functions);
  for (const auto& ns : dev.other_tools) namespaces.push_back(&ns);
  if (!namespaces.empty()) sections.push_back(tools_section(namespaces));
  if (!dev.response_formats.empty()) {
    std::vector<std::string> formats = {"# Response Formats"};
    for (const ResponseFormat& format : dev.response_formats) {
      std::string block = "## " + format.name + "\n\n";
      for (const std::string& line : split_lines(format.description)) block += "// " + line + "\n";
      block += format.schema.dump();
      formats.push_back(block);
    }
    sections.push_back(join(formats, "\n\n"));
  }
  return join(sections, "\n\n");
}

bool has_function_tools(std::span<const Message> messages) {
  return std::any_of(messages.begin(), messages.end(), [](const Message& m) {
    return m.developer && !m.developer->function_tools.empty();
  });
}

// Indices of the messages to render. The analysis of a finished earlier turn is dropped: an
// assistant analysis message followed by an assistant final message that a user message
// follows. The last turn keeps its analysis (a training target, or a tool-call chain that is
// still going on), as the published format asks (docs/format.md, "Handling reasoning output in
// subsequent sampling"; openai/harmony test-data/test_keep_analysis_between_finals.txt).
std::vector<std::size_t> kept_indices(std::span<const Message> messages,
                                      const RenderOptions& options) {
  std::vector<bool> drop(messages.size(), false);
  bool user_later = false;           // scanning backwards: a user message comes later
  bool finished_turn_later = false;  // a final answer that a user message follows comes later
  for (std::size_t i = messages.size(); i-- > 0;) {
    const Message& m = messages[i];
    if (m.role == Role::kUser) user_later = true;
    if (m.role != Role::kAssistant) continue;
    if (m.channel == "final" && user_later) finished_turn_later = true;
    if (m.channel == "analysis" && finished_turn_later && options.drop_finished_analysis) {
      drop[i] = true;
    }
  }
  std::vector<std::size_t> kept;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (!drop[i]) kept.push_back(i);
  }
  return kept;
}

}  // namespace

const char* role_name(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kDeveloper:
      return "developer";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
    case Role::kTool:
      return "tool";
  }
  return "user";
}

std::optional<Role> role_from_name(std::string_view name) {
  if (name == "system") return Role::kSystem;
  if (name == "developer") return Role::kDeveloper;
  if (name == "user") return Role::kUser;
  if (name == "assistant") return Role::kAssistant;
  return std::nullopt;
}

void Rendering::add_text(std::string_view text) {
  if (text.empty()) return;
  if (!pieces_.empty() && !pieces_.back().special) {
    pieces_.back().text += text;
  } else {
    pieces_.push_back({false, std::string(text)});
  }
}

void Rendering::add_special(std::string_view token_text) {
  pieces_.push_back({true, std::string(token_text)});
}

void Rendering::append(const Rendering& other) {
  for (const Piece& piece : other.pieces_) {
    if (piece.special) {
      add_special(piece.text);
    } else {
      add_text(piece.text);
    }
  }
}

std::string Rendering::str() const {
  std::string out;
  for (const Piece& piece : pieces_) out += piece.text;
  return out;
}

Rendering render_message(const Message& message, bool conversation_has_function_tools) {
  Rendering r;
  r.add_special(kStart);
  if (message.role == Role::kTool) {
    MIND4_CHECK(!message.author_name.empty(), Status::kInvalidArgument,
                "harmony: a tool message needs the tool's name as author (e.g. "
                "\"functions.get_weather\")");
    r.add_text(message.author_name);
  } else {
    r.add_text(role_name(message.role));
    if (!message.author_name.empty()) r.add_text(":" + message.author_name);
  }
  const bool has_recipient = !message.recipient.empty() && message.recipient != "all";
  const bool recipient_after_channel = message.recipient_after_channel && !message.channel.empty();
  if (has_recipient && !recipient_after_channel) r.add_text(" to=" + message.recipient);
  if (!message.channel.empty()) {
    r.add_special(kChannel);
    r.add_text(message.channel);
  }
  if (has_recipient && recipient_after_channel) r.add_text(" to=" + message.recipient);
  if (!message.content_type.empty()) {
    // `<|constrain|>json` is the special token followed by the format name.
    r.add_text(" ");
    if (message.content_type.starts_with(kConstrain)) {
      r.add_special(kConstrain);
      r.add_text(std::string_view(message.content_type).substr(kConstrain.size()));
    } else {
      r.add_text(message.content_type);
    }
  }
  r.add_special(kMessage);
  if (message.system) {
    MIND4_CHECK(message.role == Role::kSystem, Status::kInvalidArgument,
                "harmony: system content in a ", role_name(message.role), " message");
    r.add_text(system_text(*message.system, conversation_has_function_tools));
  }
  if (message.developer) {
    MIND4_CHECK(message.role == Role::kDeveloper, Status::kInvalidArgument,
                "harmony: developer content in a ", role_name(message.role), " message");
    r.add_text(developer_text(*message.developer));
  }
  r.add_text(message.content);
  // A tool call ends the turn with <|call|>; every other stored message ends with <|end|>
  // (a reply's <|return|> is a sampling stop only, history keeps <|end|>).
  r.add_special(message.role == Role::kAssistant && has_recipient ? kCall : kEnd);
  return r;
}

Rendering render_conversation(std::span<const Message> messages, const RenderOptions& options) {
  const bool functions = has_function_tools(messages);
  Rendering r;
  for (std::size_t i : kept_indices(messages, options))
    r.append(render_message(messages[i], functions));
  return r;
}

Rendering render_for_completion(std::span<const Message> messages, Role next_role,
                                const RenderOptions& options) {
  MIND4_CHECK(next_role != Role::kTool, Status::kInvalidArgument,
              "harmony: the next turn's role must be system, developer, user or assistant");
  Rendering r = render_conversation(messages, options);
  r.add_special(kStart);
  r.add_text(role_name(next_role));
  return r;
}

Rendering render_for_training(std::span<const Message> messages, const RenderOptions& options) {
  Rendering r = render_conversation(messages, options);
  if (!messages.empty() && messages.back().role == Role::kAssistant &&
      messages.back().channel == "final" && messages.back().recipient.empty()) {
    Rendering with_return;
    const auto& pieces = r.pieces();
    for (std::size_t i = 0; i + 1 < pieces.size(); ++i) {
      if (pieces[i].special) {
        with_return.add_special(pieces[i].text);
      } else {
        with_return.add_text(pieces[i].text);
      }
    }
    with_return.add_special(kReturn);
    return with_return;
  }
  return r;
}

Message Message::system_message(SystemContent content) {
  Message m;
  m.role = Role::kSystem;
  m.system = std::move(content);
  return m;
}

Message Message::developer_message(DeveloperContent content) {
  Message m;
  m.role = Role::kDeveloper;
  m.developer = std::move(content);
  return m;
}

Message Message::user(std::string text) {
  Message m;
  m.role = Role::kUser;
  m.content = std::move(text);
  return m;
}

Message Message::assistant(std::string channel, std::string text) {
  Message m;
  m.role = Role::kAssistant;
  m.channel = std::move(channel);
  m.content = std::move(text);
  return m;
}

Message Message::tool_call(std::string recipient, std::string arguments, std::string channel,
                           std::string content_type) {
  Message m;
  m.role = Role::kAssistant;
  m.recipient = std::move(recipient);
  m.content = std::move(arguments);
  m.channel = std::move(channel);
  m.content_type = std::move(content_type);
  return m;
}

Message Message::tool_result(std::string tool, std::string output, std::string channel) {
  Message m;
  m.role = Role::kTool;
  m.author_name = std::move(tool);
  m.recipient = "assistant";
  m.channel = std::move(channel);
  m.content = std::move(output);
  return m;
}

}  // namespace mind4::harmony
