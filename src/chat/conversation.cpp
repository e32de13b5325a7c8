#include "chat/conversation.h"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mind4/status.h"

namespace mind4::chat {

namespace {

using harmony::Message;
using harmony::Role;

constexpr const char* kChatFormat = "mind4-chat";
constexpr int kChatFormatVersion = 1;

// Plain mode: the transcript is the turns' text, each ending in a newline, for the model to go on.
std::string plain_transcript(std::span<const Message> turns) {
  std::string text;
  for (const Message& m : turns) {
    text += m.content;
    if (text.empty() || text.back() != '\n') text += '\n';
  }
  return text;
}

}  // namespace

const char* chat_mode_name(ChatMode mode) {
  return mode == ChatMode::kHarmony ? "harmony" : "plain";
}

bool speaks_harmony(const Tokenizer& tokenizer) {
  for (const char* name :
       {"<|start|>", "<|message|>", "<|end|>", "<|return|>", "<|channel|>", "<|call|>"})
    if (!tokenizer.special_id(name)) return false;
  return true;
}

std::string today_iso_date() {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &local);
  return buf;
}

harmony::ReasoningEffort parse_effort(const std::string& text) {
  if (text == "low") return harmony::ReasoningEffort::kLow;
  if (text == "medium") return harmony::ReasoningEffort::kMedium;
  if (text == "high") return harmony::ReasoningEffort::kHigh;
  throw Error(Status::kInvalidArgument,
              "reasoning effort '" + text + "' is not one of low, medium, high");
}

const char* effort_name(harmony::ReasoningEffort effort) {
  switch (effort) {
    case harmony::ReasoningEffort::kLow:
      return "low";
    case harmony::ReasoningEffort::kMedium:
      return "medium";
    case harmony::ReasoningEffort::kHigh:
      return "high";
  }
  return "medium";
}

std::string text_or_file(const std::string& arg) {
  std::error_code ec;
  if (arg.size() < 4096 && std::filesystem::is_regular_file(arg, ec)) {
    std::ifstream in(arg, std::ios::binary);
    MIND4_CHECK(in.good(), Status::kIoError, "cannot read ", arg);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  return arg;
}

Conversation::Conversation(ChatMode mode, const Tokenizer& tokenizer)
    : mode_(mode), tokenizer_(tokenizer) {
  if (mode_ == ChatMode::kHarmony) {
    MIND4_CHECK(speaks_harmony(tokenizer_), Status::kInvalidArgument, "the tokenizer '",
                tokenizer_.name(),
                "' has no harmony special tokens (<|start|>, <|message|>, ...): use the plain "
                "chat mode for this model");
    vocab_ = harmony::vocabulary_of(tokenizer_);
  }
}

void Conversation::add_user(std::string text) {
  messages_.push_back(Message::user(std::move(text)));
}

void Conversation::add_assistant(std::vector<Message> messages) {
  for (Message& m : messages) {
    m.role = Role::kAssistant;
    messages_.push_back(std::move(m));
  }
}

void Conversation::add_tool_result(const std::string& tool, std::string output,
                                   const std::string& channel) {
  messages_.push_back(
      Message::tool_result(tool, std::move(output), channel.empty() ? "commentary" : channel));
}

void Conversation::add_plain_reply(std::string text) {
  Message m;
  m.role = Role::kAssistant;
  m.content = std::move(text);
  messages_.push_back(std::move(m));
}

void Conversation::clear() {
  messages_.clear();
}

void Conversation::undo_last_user() {
  for (size_t i = messages_.size(); i-- > 0;) {
    if (messages_[i].role == Role::kUser) {
      messages_.resize(i);
      return;
    }
  }
}

int Conversation::user_turns() const {
  int n = 0;
  for (const Message& m : messages_) n += m.role == Role::kUser;
  return n;
}

Message Conversation::system_message() const {
  harmony::SystemContent sys;
  if (system_identity) sys.model_identity = *system_identity;
  sys.current_date = date;
  sys.reasoning_effort = effort;
  sys.tools = builtin_tools;
  return Message::system_message(std::move(sys));
}

std::vector<Message> Conversation::header_messages() const {
  std::vector<Message> out = {system_message()};
  if (!developer.empty() || !function_tools.empty()) {
    harmony::DeveloperContent dev;
    if (!developer.empty()) dev.instructions = developer;
    dev.function_tools = function_tools;
    out.push_back(Message::developer_message(std::move(dev)));
  }
  return out;
}

std::vector<int> Conversation::render(size_t first_message) const {
  std::span<const Message> turns(messages_.data() + first_message,
                                 messages_.size() - first_message);
  if (mode_ == ChatMode::kPlain) return tokenizer_.encode(plain_transcript(turns));
  std::vector<Message> all = header_messages();
  all.insert(all.end(), turns.begin(), turns.end());
  return harmony::to_tokens(harmony::render_for_completion(all, Role::kAssistant), *vocab_);
}

PromptTokens Conversation::prompt(int context, int reserve) const {
  // Candidate starts: the beginning, then every later user message (a turn never starts mid-way).
  std::vector<size_t> starts = {0};
  for (size_t i = 1; i < messages_.size(); ++i)
    if (messages_[i].role == Role::kUser) starts.push_back(i);
  PromptTokens out;
  for (size_t k = 0; k < starts.size(); ++k) {
    out.tokens = render(starts[k]);
    out.dropped_turns = int(k);
    if (int(out.tokens.size()) + reserve <= context) return out;
  }
  throw Error(Status::kContextOverflow,
              "the last message needs " + std::to_string(out.tokens.size()) +
                  " prompt tokens plus " + std::to_string(reserve) +
                  " for the reply, but the context holds " + std::to_string(context) +
                  ": shorten the message, lower --max-new-tokens or raise --context");
}

std::string Conversation::rendered_text() const {
  if (mode_ == ChatMode::kPlain) return plain_transcript(messages_);
  std::vector<Message> all = header_messages();
  all.insert(all.end(), messages_.begin(), messages_.end());
  return harmony::render_for_completion(all, Role::kAssistant).str();
}

harmony::Json Conversation::to_json() const {
  harmony::Json j;
  j["format"] = kChatFormat;
  j["version"] = kChatFormatVersion;
  j["mode"] = chat_mode_name(mode_);
  j["reasoning_effort"] = effort_name(effort);
  j["date"] = date;
  j["developer"] = developer;
  j["conversation"] = harmony::to_json(messages_);  // {"format": "harmony", "messages": [...]}
  return j;
}

void Conversation::load_json(const harmony::Json& j) {
  auto field = [&](const char* name, harmony::Json::value_t type) -> const harmony::Json& {
    MIND4_CHECK(j.is_object() && j.contains(name), Status::kInvalidArgument,
                "conversation file: missing field '", name, "'");
    const harmony::Json& v = j.at(name);
    MIND4_CHECK(v.type() == type, Status::kInvalidArgument, "conversation file: field '", name,
                "' has the wrong type");
    return v;
  };
  MIND4_CHECK(field("format", harmony::Json::value_t::string).get<std::string>() == kChatFormat,
              Status::kInvalidArgument, "conversation file: 'format' is not ", kChatFormat);
  const std::string mode = field("mode", harmony::Json::value_t::string).get<std::string>();
  MIND4_CHECK(mode == chat_mode_name(mode_), Status::kInvalidArgument, "conversation file is a ",
              mode, " chat, but this chat is ", chat_mode_name(mode_));
  harmony::ReasoningEffort new_effort =
      parse_effort(field("reasoning_effort", harmony::Json::value_t::string).get<std::string>());
  std::string new_date = field("date", harmony::Json::value_t::string).get<std::string>();
  std::string new_developer = field("developer", harmony::Json::value_t::string).get<std::string>();
  std::vector<Message> new_messages =
      harmony::conversation_from_json(field("conversation", harmony::Json::value_t::object));
  // Only now that everything parsed: a bad file leaves the conversation as it was.
  effort = new_effort;
  date = std::move(new_date);
  developer = std::move(new_developer);
  messages_ = std::move(new_messages);
}

}  // namespace mind4::chat
