#include "chat/tools.h"

#include <cctype>
#include <fstream>
#include <sstream>

#include "mind4/status.h"

namespace mind4::chat {

namespace {

using harmony::Json;

constexpr const char* kApplyPatchDescription =
    "Edit files in the working directory. The patch starts with '*** Begin Patch' and ends with "
    "'*** End Patch'. Between them: '*** Add File: PATH' followed by lines starting with '+'; "
    "'*** Delete File: PATH'; or '*** Update File: PATH' followed by hunks, each starting with "
    "'@@', whose lines start with ' ' (context), '-' (remove) or '+' (add). Paths are relative.";

bool tool_name_ok(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  for (char ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') return false;
  return true;
}

std::string tool_where(const std::string& source, size_t index, const Json& tool) {
  std::string where = source + ": tool " + std::to_string(index);
  if (tool.is_object() && tool.contains("name") && tool["name"].is_string())
    where += " ('" + tool["name"].get<std::string>() + "')";
  return where;
}

}  // namespace

std::vector<FunctionTool> parse_tools(const Json& j, const std::string& source) {
  MIND4_CHECK(j.is_array(), Status::kInvalidConfig, source,
              ": a tools file is a JSON list of {name, description, parameters, command}");
  std::vector<FunctionTool> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& t = j[i];
    const std::string where = tool_where(source, i, t);
    MIND4_CHECK(t.is_object(), Status::kInvalidConfig, where, ": must be a JSON object");
    for (auto it = t.begin(); it != t.end(); ++it) {
      const std::string& key = it.key();
      MIND4_CHECK(key == "name" || key == "description" || key == "parameters" ||
                      key == "command" || key == "timeout_s",
                  Status::kInvalidConfig, where, ": unknown field '", key,
                  "' (fields: name, description, parameters, command, timeout_s)");
    }
    FunctionTool tool;
    MIND4_CHECK(t.contains("name") && t["name"].is_string(), Status::kInvalidConfig, where,
                ": 'name' must be a string");
    tool.name = t["name"].get<std::string>();
    MIND4_CHECK(tool_name_ok(tool.name), Status::kInvalidConfig, where,
                ": 'name' must be letters, digits and '_' (it becomes a TypeScript name)");
    MIND4_CHECK(!t.contains("description") || t["description"].is_string(), Status::kInvalidConfig,
                where, ": 'description' must be a string");
    tool.description = t.value("description", "");
    if (t.contains("parameters")) {
      const Json& p = t["parameters"];
      MIND4_CHECK(p.is_object() && p.contains("type") && p["type"] == "object",
                  Status::kInvalidConfig, where,
                  ": 'parameters' must be a JSON Schema object with \"type\": \"object\"");
      MIND4_CHECK(!p.contains("properties") || p["properties"].is_object(), Status::kInvalidConfig,
                  where, ": 'parameters.properties' must be an object");
      MIND4_CHECK(!p.contains("required") || p["required"].is_array(), Status::kInvalidConfig,
                  where, ": 'parameters.required' must be a list of property names");
      tool.parameters = p;
    }
    MIND4_CHECK(t.contains("command"), Status::kInvalidConfig, where, ": 'command' is missing");
    const Json& c = t["command"];
    if (c.is_string() && !c.get<std::string>().empty()) {
      tool.argv = {"/bin/sh", "-c", c.get<std::string>()};
    } else {
      MIND4_CHECK(c.is_array() && !c.empty(), Status::kInvalidConfig, where,
                  ": 'command' must be a non-empty string or list of strings");
      for (const Json& a : c) {
        MIND4_CHECK(a.is_string(), Status::kInvalidConfig, where,
                    ": 'command' list entries must be strings");
        tool.argv.push_back(a.get<std::string>());
      }
    }
    if (t.contains("timeout_s")) {
      MIND4_CHECK(t["timeout_s"].is_number() && t["timeout_s"].get<double>() > 0,
                  Status::kInvalidConfig, where, ": 'timeout_s' must be a positive number");
      tool.timeout_s = t["timeout_s"].get<double>();
    }
    for (const FunctionTool& other : out)
      MIND4_CHECK(other.name != tool.name, Status::kInvalidConfig, where, ": the name '", tool.name,
                  "' is used twice");
    out.push_back(std::move(tool));
  }
  return out;
}

std::vector<FunctionTool> load_tools_file(const std::string& path) {
  std::ifstream in(path);
  MIND4_CHECK(in.good(), Status::kIoError, "cannot read the tools file '", path, "'");
  Json j;
  try {
    j = Json::parse(in);
  } catch (const Json::parse_error& e) {
    throw Error(Status::kInvalidConfig, path + ": not valid JSON (" + e.what() + ")");
  }
  return parse_tools(j, path);
}

void ToolBox::add_functions(std::vector<FunctionTool> tools) {
  for (FunctionTool& t : tools) {
    MIND4_CHECK(t.name != "apply_patch" || !patch_root_, Status::kInvalidConfig,
                "the tool name 'apply_patch' is taken by --apply-patch");
    functions_.push_back(std::move(t));
  }
}

void ToolBox::enable_python(ProcessLimits limits) {
  python_ = std::move(limits);
}

void ToolBox::enable_apply_patch(const std::filesystem::path& root) {
  std::error_code ec;
  MIND4_CHECK(std::filesystem::is_directory(root, ec), Status::kInvalidArgument, "--apply-patch: '",
              root.string(), "' is not a directory");
  patch_root_ = std::filesystem::canonical(root);
}

std::vector<harmony::ToolDescription> ToolBox::function_descriptions() const {
  std::vector<harmony::ToolDescription> out;
  for (const FunctionTool& t : functions_) out.push_back({t.name, t.description, t.parameters});
  if (patch_root_) {
    out.push_back({"apply_patch", kApplyPatchDescription,
                   Json{{"type", "object"},
                        {"properties", {{"patch", {{"type", "string"}}}}},
                        {"required", {"patch"}}}});
  }
  return out;
}

std::vector<harmony::ToolNamespace> ToolBox::builtin_namespaces() const {
  if (!python_) return {};
  return {harmony::ToolNamespace::python()};
}

ToolCallResult ToolBox::call(const harmony::Message& call) const {
  ToolCallResult r;
  r.tool = call.recipient;
  if (call.recipient == "python" && python_) {
    ProcessResult p = run_process({"python3", "-"}, call.content, *python_);
    r.ok = p.exit_code == 0 && !p.timed_out;
    r.output = p.out + p.err;
    if (!r.ok) r.output += "\n[" + p.summary() + "]";
    return r;
  }
  const std::string prefix = "functions.";
  if (call.recipient.rfind(prefix, 0) != 0) {
    r.output = "error: there is no tool '" + call.recipient + "'";
    return r;
  }
  const std::string name = call.recipient.substr(prefix.size());
  if (name == "apply_patch" && patch_root_) {
    try {
      Json args = Json::parse(call.content);
      MIND4_CHECK(args.is_object() && args.contains("patch") && args["patch"].is_string(),
                  Status::kInvalidArgument, "apply_patch takes {\"patch\": \"...\"}");
      r.output = apply_patch(*patch_root_, args["patch"].get<std::string>());
      r.ok = true;
    } catch (const std::exception& e) {
      r.output = std::string("error: ") + e.what();
    }
    return r;
  }
  for (const FunctionTool& t : functions_) {
    if (t.name != name) continue;
    if (t.parameters && !Json::accept(call.content)) {
      r.output = "error: the arguments are not valid JSON";
      return r;
    }
    ProcessLimits limits;
    limits.timeout_s = t.timeout_s;
    ProcessResult p = run_process(t.argv, call.content, limits);
    r.ok = p.exit_code == 0 && !p.timed_out;
    r.output = p.out;
    if (!r.ok) r.output += "\n[tool " + name + ": " + p.summary() + "] " + p.err;
    return r;
  }
  r.output = "error: there is no function '" + name + "'";
  return r;
}

}  // namespace mind4::chat
