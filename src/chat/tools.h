// Tools the model may call in chat:
//   - function tools from a JSON file (--tools FILE): a list of
//       {"name": "get_weather", "description": "...", "parameters": {JSON Schema, type object},
//        "command": "sh command" | ["argv", ...], "timeout_s": 10}
//     the command receives the call's arguments (JSON) on stdin; its stdout is the result;
//   - the built-in `python` tool (--python): the code runs in a python3 subprocess with time and
//     memory limits, in a scratch directory;
//   - the built-in `apply_patch` function (--apply-patch DIR): edits files under DIR only.
// Every failure of a call (unknown tool, bad arguments, timeout, non-zero exit) becomes text the
// model reads as the result; the chat goes on.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "chat/process.h"
#include "mind4/harmony.h"

namespace mind4::chat {

struct FunctionTool {
  std::string name, description;
  std::optional<harmony::Json> parameters;
  std::vector<std::string> argv;  // a string command becomes {"/bin/sh", "-c", command}
  double timeout_s = 10;
};

// Reads and validates a tools file; kInvalidConfig naming the file, the tool's index and name,
// and the field for anything malformed.
std::vector<FunctionTool> load_tools_file(const std::string& path);
std::vector<FunctionTool> parse_tools(const harmony::Json& j, const std::string& source);

struct ToolCallResult {
  std::string tool;    // the recipient, as the result message's author ("functions.x", "python")
  std::string output;  // what the model reads
  bool ok = false;
};

class ToolBox {
 public:
  void add_functions(std::vector<FunctionTool> tools);
  void enable_python(ProcessLimits limits);
  void enable_apply_patch(const std::filesystem::path& root);

  bool empty() const { return functions_.empty() && !python_ && !patch_root_; }
  // For the developer message (function tools) and the system message (built-in python).
  std::vector<harmony::ToolDescription> function_descriptions() const;
  std::vector<harmony::ToolNamespace> builtin_namespaces() const;

  ToolCallResult call(const harmony::Message& call) const;

 private:
  std::vector<FunctionTool> functions_;
  std::optional<ProcessLimits> python_;
  std::optional<std::filesystem::path> patch_root_;
};

// Applies a patch in the apply_patch format ("*** Begin Patch", "*** Add File: p",
// "*** Update File: p" with "@@" hunks of ' ', '-', '+' lines, "*** Delete File: p",
// "*** End Patch") to files under `root`. Paths must stay inside root. Returns a summary;
// kInvalidArgument describing the first problem, with nothing changed on disk.
std::string apply_patch(const std::filesystem::path& root, const std::string& patch);

}  // namespace mind4::chat
