// The two built-in tools gpt-oss was trained with. Their wording is part of the format: the
// text below is the tool description published in the harmony format guide (openai/harmony
// docs/format.md, "Built-in tools"), so the model sees exactly what it saw in training.
#include "mind4/harmony.h"

namespace mind4::harmony {

ToolNamespace ToolNamespace::browser() {
  ToolNamespace ns;
  ns.name = "browser";
  ns.description =
      "Tool for browsing.\n"
      "The `cursor` appears in brackets before each browsing display: `[{cursor}]`.\n"
      "Cite information from the tool using the following format:\n"
      "`\xE3\x80\x90{cursor}\xE2\x80\xA0L{line_start}(-L{line_end})?\xE3\x80\x91`, for example: "
      "`\xE3\x80\x90"
      "6\xE2\x80\xA0L9-L11\xE3\x80\x91` or `\xE3\x80\x90"
      "8\xE2\x80\xA0L3\xE3\x80\x91`.\n"
      "Do not quote more than 10 words directly from the tool output.\n"
      "sources=web (default: web)";
  ns.tools.push_back({"search",
                      "Searches for information related to `query` and displays `topn` results.",
                      Json::parse(R"({"type": "object",
                       "properties": {"query": {"type": "string"},
                                      "topn": {"type": "number", "default": 10},
                                      "source": {"type": "string"}},
                       "required": ["query"]})")});
  ns.tools.push_back(
      {"open",
       "Opens the link `id` from the page indicated by `cursor` starting at line number `loc`, "
       "showing `num_lines` lines.\n"
       "Valid link ids are displayed with the formatting: "
       "`\xE3\x80\x90{id}\xE2\x80\xA0.*\xE3\x80\x91`.\n"
       "If `cursor` is not provided, the most recent page is implied.\n"
       "If `id` is a string, it is treated as a fully qualified URL associated with `source`.\n"
       "If `loc` is not provided, the viewport will be positioned at the beginning of the "
       "document or centered on the most relevant passage, if available.\n"
       "Use this function without `id` to scroll to a new location of an opened page.",
       Json::parse(R"({"type": "object",
                       "properties": {"id": {"type": ["number", "string"], "default": -1},
                                      "cursor": {"type": "number", "default": -1},
                                      "loc": {"type": "number", "default": -1},
                                      "num_lines": {"type": "number", "default": -1},
                                      "view_source": {"type": "boolean", "default": false},
                                      "source": {"type": "string"}}})")});
  ns.tools.push_back(
      {"find",
       "Finds exact matches of `pattern` in the current page, or the page given by `cursor`.",
       Json::parse(R"({"type": "object",
                       "properties": {"pattern": {"type": "string"},
                                      "cursor": {"type": "number", "default": -1}},
                       "required": ["pattern"]})")});
  return ns;
}

ToolNamespace ToolNamespace::python() {
  ToolNamespace ns;
  ns.name = "python";
  ns.description =
      "Use this tool to execute Python code in your chain of thought. The code will not be "
      "shown to the user. This tool should be used for internal reasoning, but not for code "
      "that is intended to be visible to the user (e.g. when creating plots, tables, or "
      "files).\n\n"
      "When you send a message containing Python code to python, it will be executed in a "
      "stateful Jupyter notebook environment. python will respond with the output of the "
      "execution or time out after 120.0 seconds. The drive at '/mnt/data' can be used to save "
      "and persist user files. Internet access for this session is UNKNOWN. Depends on the "
      "cluster.";
  return ns;
}

}  // namespace mind4::harmony
