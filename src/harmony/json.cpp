// Conversations <-> JSON, the form the chat's /save and /load use.
#include "mind4/harmony.h"
#include "mind4/status.h"

namespace mind4::harmony {
namespace {

// Reading with a path ("message 2: system.tools[0].name") so errors say where the fault is.
class Reader {
 public:
  Reader(const Json& j, std::string path) : j_(j), path_(std::move(path)) {
    MIND4_CHECK(j_.is_object(), Status::kInvalidArgument, "harmony json: ", path_,
                " must be an object");
  }
  bool has(const char* key) const { return j_.contains(key); }
  const Json& at(const char* key) const { return j_.at(key); }
  std::string path(const char* key) const { return path_ + "." + key; }

  std::string string(const char* key, std::string fallback = {}) const {
    if (!has(key)) return fallback;
    MIND4_CHECK(at(key).is_string(), Status::kInvalidArgument, "harmony json: ", path(key),
                " must be a string");
    return at(key).get<std::string>();
  }
  // Absent: the fallback; null: none.
  std::optional<std::string> optional_string(const char* key,
                                             std::optional<std::string> fallback) const {
    if (!has(key)) return fallback;
    if (at(key).is_null()) return std::nullopt;
    return string(key);
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    MIND4_CHECK(at(key).is_boolean(), Status::kInvalidArgument, "harmony json: ", path(key),
                " must be true or false");
    return at(key).get<bool>();
  }
  const Json* array(const char* key) const {
    if (!has(key)) return nullptr;
    MIND4_CHECK(at(key).is_array(), Status::kInvalidArgument, "harmony json: ", path(key),
                " must be an array");
    return &at(key);
  }

 private:
  const Json& j_;
  std::string path_;
};

Json optional_json(const std::optional<std::string>& s) {
  return s ? Json(*s) : Json(nullptr);
}

const char* effort_text(ReasoningEffort e) {
  return e == ReasoningEffort::kLow ? "low" : e == ReasoningEffort::kHigh ? "high" : "medium";
}

Json tool_json(const ToolDescription& tool) {
  Json j = {{"name", tool.name}, {"description", tool.description}};
  if (tool.parameters) j["parameters"] = *tool.parameters;
  return j;
}

Json namespace_json(const ToolNamespace& ns) {
  Json tools = Json::array();
  for (const auto& t : ns.tools) tools.push_back(tool_json(t));
  return {{"name", ns.name}, {"description", ns.description}, {"tools", tools}};
}

ToolDescription tool_from(const Json& j, const std::string& path) {
  Reader r(j, path);
  ToolDescription tool{r.string("name"), r.string("description"), std::nullopt};
  MIND4_CHECK(!tool.name.empty(), Status::kInvalidArgument, "harmony json: ", path,
              ".name is missing or empty");
  if (r.has("parameters") && !r.at("parameters").is_null()) {
    MIND4_CHECK(r.at("parameters").is_object(), Status::kInvalidArgument,
                "harmony json: ", r.path("parameters"), " must be a JSON Schema object");
    tool.parameters = r.at("parameters");
  }
  return tool;
}

std::vector<ToolDescription> tools_from(const Reader& r, const char* key) {
  std::vector<ToolDescription> tools;
  if (const Json* a = r.array(key)) {
    for (std::size_t i = 0; i < a->size(); ++i) {
      tools.push_back(tool_from((*a)[i], r.path(key) + "[" + std::to_string(i) + "]"));
    }
  }
  return tools;
}

std::vector<ToolNamespace> namespaces_from(const Reader& r, const char* key) {
  std::vector<ToolNamespace> namespaces;
  if (const Json* a = r.array(key)) {
    for (std::size_t i = 0; i < a->size(); ++i) {
      Reader nr((*a)[i], r.path(key) + "[" + std::to_string(i) + "]");
      namespaces.push_back({nr.string("name"), nr.string("description"), tools_from(nr, "tools")});
    }
  }
  return namespaces;
}

Json system_json(const SystemContent& sys) {
  Json tools = Json::array();
  for (const auto& ns : sys.tools) tools.push_back(namespace_json(ns));
  return {{"model_identity", optional_json(sys.model_identity)},
          {"knowledge_cutoff", optional_json(sys.knowledge_cutoff)},
          {"current_date", optional_json(sys.current_date)},
          {"reasoning_effort",
           sys.reasoning_effort ? Json(effort_text(*sys.reasoning_effort)) : Json(nullptr)},
          {"valid_channels", sys.valid_channels},
          {"channel_required", sys.channel_required},
          {"tools", tools}};
}

SystemContent system_from(const Json& j, const std::string& path) {
  Reader r(j, path);
  SystemContent sys;
  sys.model_identity = r.optional_string("model_identity", sys.model_identity);
  sys.knowledge_cutoff = r.optional_string("knowledge_cutoff", sys.knowledge_cutoff);
  sys.current_date = r.optional_string("current_date", sys.current_date);
  std::optional<std::string> effort = r.optional_string("reasoning_effort", "medium");
  if (!effort) {
    sys.reasoning_effort.reset();
  } else if (*effort == "low") {
    sys.reasoning_effort = ReasoningEffort::kLow;
  } else if (*effort == "medium") {
    sys.reasoning_effort = ReasoningEffort::kMedium;
  } else if (*effort == "high") {
    sys.reasoning_effort = ReasoningEffort::kHigh;
  } else {
    throw Error(Status::kInvalidArgument, "harmony json: " + r.path("reasoning_effort") +
                                              " must be \"low\", \"medium\" or \"high\", not \"" +
                                              *effort + "\"");
  }
  if (const Json* channels = r.array("valid_channels")) {
    sys.valid_channels.clear();
    for (const Json& c : *channels) {
      MIND4_CHECK(c.is_string(), Status::kInvalidArgument,
                  "harmony json: ", r.path("valid_channels"), " must hold strings");
      sys.valid_channels.push_back(c.get<std::string>());
    }
  }
  sys.channel_required = r.boolean("channel_required", sys.channel_required);
  sys.tools = namespaces_from(r, "tools");
  return sys;
}

Json developer_json(const DeveloperContent& dev) {
  Json functions = Json::array(), others = Json::array(), formats = Json::array();
  for (const auto& t : dev.function_tools) functions.push_back(tool_json(t));
  for (const auto& ns : dev.other_tools) others.push_back(namespace_json(ns));
  for (const auto& f : dev.response_formats) {
    formats.push_back({{"name", f.name}, {"description", f.description}, {"schema", f.schema}});
  }
  return {{"instructions", optional_json(dev.instructions)},
          {"function_tools", functions},
          {"other_tools", others},
          {"response_formats", formats}};
}

DeveloperContent developer_from(const Json& j, const std::string& path) {
  Reader r(j, path);
  DeveloperContent dev;
  dev.instructions = r.optional_string("instructions", std::nullopt);
  dev.function_tools = tools_from(r, "function_tools");
  dev.other_tools = namespaces_from(r, "other_tools");
  if (const Json* formats = r.array("response_formats")) {
    for (std::size_t i = 0; i < formats->size(); ++i) {
      Reader fr((*formats)[i], r.path("response_formats") + "[" + std::to_string(i) + "]");
      MIND4_CHECK(fr.has("schema"), Status::kInvalidArgument, "harmony json: ", fr.path("schema"),
                  " is missing");
      dev.response_formats.push_back(
          {fr.string("name"), fr.string("description"), fr.at("schema")});
    }
  }
  return dev;
}

Message message_from(const Json& j, const std::string& path) {
  Reader r(j, path);
  Message m;
  MIND4_CHECK(r.has("role"), Status::kInvalidArgument, "harmony json: ", path, ".role is missing");
  const std::string role = r.string("role");
  if (role == "tool") {
    m.role = Role::kTool;
  } else if (std::optional<Role> known = role_from_name(role)) {
    m.role = *known;
  } else {
    throw Error(Status::kInvalidArgument,
                "harmony json: " + path + ".role \"" + role +
                    "\" is not one of system, developer, user, assistant, tool");
  }
  m.author_name = r.string("name");
  MIND4_CHECK(m.role != Role::kTool || !m.author_name.empty(), Status::kInvalidArgument,
              "harmony json: ", path, " is a tool message without the tool's \"name\"");
  m.recipient = r.string("recipient");
  m.channel = r.string("channel");
  m.content_type = r.string("content_type");
  m.recipient_after_channel = r.boolean("recipient_after_channel", false);
  m.content = r.string("content");
  if (r.has("system")) {
    MIND4_CHECK(m.role == Role::kSystem, Status::kInvalidArgument, "harmony json: ", path,
                ".system is only allowed in a system message");
    m.system = system_from(r.at("system"), r.path("system"));
  }
  if (r.has("developer")) {
    MIND4_CHECK(m.role == Role::kDeveloper, Status::kInvalidArgument, "harmony json: ", path,
                ".developer is only allowed in a developer message");
    m.developer = developer_from(r.at("developer"), r.path("developer"));
  }
  return m;
}

}  // namespace

Json to_json(const Message& m) {
  Json j = {{"role", role_name(m.role)}};
  if (!m.author_name.empty()) j["name"] = m.author_name;
  if (!m.recipient.empty()) j["recipient"] = m.recipient;
  if (!m.channel.empty()) j["channel"] = m.channel;
  if (!m.content_type.empty()) j["content_type"] = m.content_type;
  if (m.recipient_after_channel) j["recipient_after_channel"] = true;
  if (m.system) j["system"] = system_json(*m.system);
  if (m.developer) j["developer"] = developer_json(*m.developer);
  if (!m.content.empty() || (!m.system && !m.developer)) j["content"] = m.content;
  return j;
}

Json to_json(std::span<const Message> messages) {
  Json j = Json::array();
  for (const Message& m : messages) j.push_back(to_json(m));
  return {{"format", "harmony"}, {"messages", j}};
}

Message message_from_json(const Json& j) {
  return message_from(j, "message");
}

std::vector<Message> conversation_from_json(const Json& j) {
  MIND4_CHECK(j.is_object() && j.contains("messages") && j.at("messages").is_array(),
              Status::kInvalidArgument,
              "harmony json: a conversation is an object with a \"messages\" array");
  if (j.contains("format")) {
    MIND4_CHECK(j.at("format") == "harmony", Status::kInvalidArgument,
                "harmony json: \"format\" is ", j.at("format").dump(), ", expected \"harmony\"");
  }
  std::vector<Message> messages;
  const Json& a = j.at("messages");
  for (std::size_t i = 0; i < a.size(); ++i) {
    messages.push_back(message_from(a[i], "messages[" + std::to_string(i) + "]"));
  }
  return messages;
}

}  // namespace mind4::harmony
