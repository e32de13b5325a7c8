// Tools in chat: the tools file's validation, child processes with limits, apply_patch confined
// to its directory, and a whole tool-call round trip through harmony with a scripted model.
#include <gtest/gtest.h>

#include <chrono>

#include "chat/assistant_turn.h"
#include "chat/process.h"
#include "chat/tools.h"
#include "chat_test_util.h"
#include "mind4/status.h"

namespace mind4 {
namespace {

using harmony::Json;

std::string tools_error_of(const std::string& text) {
  try {
    chat::parse_tools(Json::parse(text), "tools.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidConfig);
    return e.what();
  }
  return "";
}

TEST(ChatTools, ToolsFileErrorsNameTheToolAndTheField) {
  EXPECT_NE(tools_error_of("{}").find("JSON list"), std::string::npos);
  EXPECT_NE(
      tools_error_of(R"([{"name": "w", "command": "true", "parameters": {"type": "string"}}])")
          .find("tool 0 ('w'): 'parameters' must be a JSON Schema object"),
      std::string::npos);
  EXPECT_NE(
      tools_error_of(R"([{"name": "ok", "command": "true"}, {"name": "bad name", "command": "x"}])")
          .find("tool 1 ('bad name'): 'name'"),
      std::string::npos);
  EXPECT_NE(tools_error_of(R"([{"name": "w"}])").find("'command' is missing"), std::string::npos);
  EXPECT_NE(tools_error_of(R"([{"name": "w", "command": "x", "timeout": 3}])")
                .find("unknown field 'timeout'"),
            std::string::npos);
  EXPECT_NE(tools_error_of(R"([{"name": "w", "command": "x"}, {"name": "w", "command": "y"}])")
                .find("used twice"),
            std::string::npos);
  auto tools = chat::parse_tools(
      Json::parse(R"([{"name": "w", "description": "d", "command": ["cat"], "timeout_s": 2,
                       "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}])"),
      "tools.json");
  ASSERT_EQ(tools.size(), 1u);
  EXPECT_EQ(tools[0].argv, std::vector<std::string>{"cat"});
  EXPECT_EQ(tools[0].timeout_s, 2);
}

TEST(ChatTools, ProcessGetsItsInputAndAHangingOneIsKilledAtItsLimit) {
  auto echo = chat::run_process({"/bin/sh", "-c", "tr a-z A-Z; echo err >&2; exit 3"}, "hello",
                                {.timeout_s = 10});
  EXPECT_EQ(echo.out, "HELLO");
  EXPECT_EQ(echo.err, "err\n");
  EXPECT_EQ(echo.exit_code, 3);
  EXPECT_FALSE(echo.timed_out);

  const auto start = std::chrono::steady_clock::now();
  auto hang = chat::run_process({"/bin/sh", "-c", "sleep 30"}, "", {.timeout_s = 0.3});
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(hang.timed_out);
  EXPECT_LT(took, 5.0);
  EXPECT_NE(hang.summary().find("time limit"), std::string::npos);

  auto flood = chat::run_process({"/bin/sh", "-c", "yes | head -c 100000"}, "",
                                 {.timeout_s = 10, .max_output = 1000});
  EXPECT_EQ(flood.out.size(), 1000u);
  EXPECT_TRUE(flood.truncated);

  EXPECT_THROW(chat::run_process({"/nonexistent/tool"}, "", {}), Error);
}

TEST(ChatTools, ApplyPatchAddsUpdatesAndDeletesInsideItsDirectoryOnly) {
  testing::ScratchDir dir("patch");
  testing::write_file(dir / "a.txt", "one\ntwo\nthree\n");
  testing::write_file(dir / "gone.txt", "x\n");
  std::string summary = chat::apply_patch(dir.path(),
                                          "*** Begin Patch\n"
                                          "*** Add File: sub/new.txt\n"
                                          "+hello\n"
                                          "+world\n"
                                          "*** Update File: a.txt\n"
                                          "@@\n"
                                          " one\n"
                                          "-two\n"
                                          "+TWO\n"
                                          "+two and a half\n"
                                          " three\n"
                                          "*** Delete File: gone.txt\n"
                                          "*** End Patch\n");
  EXPECT_NE(summary.find("M a.txt"), std::string::npos);
  EXPECT_EQ(testing::read_file(dir / "a.txt"), "one\nTWO\ntwo and a half\nthree\n");
  EXPECT_EQ(testing::read_file(dir / "sub/new.txt"), "hello\nworld\n");
  EXPECT_FALSE(std::filesystem::exists(dir / "gone.txt"));

  auto refused = [&](const std::string& patch, const std::string& why) {
    try {
      chat::apply_patch(dir.path(), patch);
      ADD_FAILURE() << "accepted: " << patch;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  refused("*** Begin Patch\n*** Add File: ../escape.txt\n+x\n*** End Patch", "outside");
  refused("*** Begin Patch\n*** Add File: /tmp/abs.txt\n+x\n*** End Patch", "absolute");
  refused("*** Begin Patch\n*** Update File: a.txt\n@@\n-not there\n+y\n*** End Patch",
          "does not match");
  refused("no header", "Begin Patch");
  // A patch that fails half-way changes nothing: the add before the bad hunk is not written.
  refused(
      "*** Begin Patch\n*** Add File: c.txt\n+c\n*** Update File: a.txt\n@@\n-nope\n*** End "
      "Patch",
      "does not match");
  EXPECT_FALSE(std::filesystem::exists(dir / "c.txt"));
  EXPECT_FALSE(std::filesystem::exists(dir.path().parent_path() / "escape.txt"));
}

// Replays fixed harmony completions, one per call, recording the prompts it was given.
class ScriptedModel : public chat::TokenSource {
 public:
  explicit ScriptedModel(std::vector<std::string> replies) : replies_(std::move(replies)) {}
  chat::GenerateStats generate(
      std::span<const int> prompt, const chat::GenerateLimits& limits,
      const std::function<void(const chat::TokenEvent&)>& on_token) override {
    prompts.emplace_back(prompt.begin(), prompt.end());
    chat::GenerateStats stats;
    stats.prompt_tokens = int(prompt.size());
    const auto& tok = testing::harmony_tokenizer();
    std::vector<int> ids = tok.encode_allowing_special(replies_.at(prompts.size() - 1));
    for (int id : ids) {
      chat::TokenEvent e;
      e.token = id;
      e.text = std::string(tok.token_bytes(id));
      ++stats.generated;
      if (on_token) on_token(e);
      if (std::find(limits.stop_tokens.begin(), limits.stop_tokens.end(), id) !=
          limits.stop_tokens.end()) {
        stats.stop = chat::StopCause::kStopToken;
        break;
      }
    }
    return stats;
  }
  std::vector<std::vector<int>> prompts;

 private:
  std::vector<std::string> replies_;
};

TEST(ChatTools, ToolCallRoundTripThroughHarmony) {
  const auto& tok = testing::harmony_tokenizer();
  chat::Conversation conv(chat::ChatMode::kHarmony, tok);
  conv.date = "2026-11-26";
  chat::ToolBox tools;
  tools.add_functions(chat::parse_tools(Json::parse(R"([{
      "name": "get_weather", "description": "Current weather of a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
      "command": "python3 -c \"import json,sys; a=json.load(sys.stdin); print('sunny in ' + a['city'])\""}])"),
                                        "tools.json"));
  conv.function_tools = tools.function_descriptions();
  conv.add_user("What is the weather in Paris?");
  ScriptedModel model({
      "<|channel|>analysis<|message|>Need to call the weather tool.<|end|>"
      "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
      "<|message|>{\"city\": \"Paris\"}<|call|>",
      "<|channel|>final<|message|>It is sunny in Paris.<|return|>",
  });
  std::vector<std::string> notices;
  chat::TurnOptions options;
  options.style.out = nullptr;
  options.notice = [&](const std::string& n) { notices.push_back(n); };
  auto result = chat::run_assistant_turn(conv, model, tok, &tools, options);
  EXPECT_EQ(result.tool_calls, 1);
  ASSERT_EQ(model.prompts.size(), 2u);
  // The second prompt carries the call and its result rendered as the harmony format documents
  // it (openai/harmony docs/format.md, "Receiving tool calls" and "Handling tool results").
  const std::string second = tok.decode(model.prompts[1]);
  EXPECT_NE(second.find("<|start|>assistant<|channel|>commentary to=functions.get_weather "
                        "<|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>"),
            std::string::npos)
      << second;
  EXPECT_NE(second.find("<|start|>functions.get_weather to=assistant<|channel|>commentary"
                        "<|message|>sunny in Paris\n<|end|><|start|>assistant"),
            std::string::npos)
      << second;
  EXPECT_NE(second.find("type get_weather = (_: {\ncity?: string,\n}) => any;"), std::string::npos)
      << second;
  const auto& m = conv.messages();
  ASSERT_EQ(m.size(), 5u);  // user, analysis, call, result, final
  EXPECT_EQ(m[2].recipient, "functions.get_weather");
  EXPECT_EQ(m[3].role, harmony::Role::kTool);
  EXPECT_EQ(m[3].content, "sunny in Paris\n");
  EXPECT_EQ(m[4].channel, "final");
  EXPECT_EQ(m[4].content, "It is sunny in Paris.");
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("sunny in Paris"), std::string::npos);
}

TEST(ChatTools, AHangingToolIsKilledAndTheTurnGoesOn) {
  const auto& tok = testing::harmony_tokenizer();
  chat::Conversation conv(chat::ChatMode::kHarmony, tok);
  chat::ToolBox tools;
  tools.add_functions(chat::parse_tools(
      Json::parse(R"([{"name": "slow", "command": "sleep 30", "timeout_s": 0.3}])"), "t.json"));
  conv.add_user("go");
  ScriptedModel model({"<|channel|>commentary to=functions.slow <|message|>{}<|call|>",
                       "<|channel|>final<|message|>The tool timed out.<|return|>"});
  chat::TurnOptions options;
  options.style.out = nullptr;
  auto result = chat::run_assistant_turn(conv, model, tok, &tools, options);
  EXPECT_EQ(result.tool_calls, 1);
  ASSERT_EQ(conv.messages().size(), 4u);
  EXPECT_NE(conv.messages()[2].content.find("time limit"), std::string::npos);
  EXPECT_EQ(conv.messages()[3].content, "The tool timed out.");
}

TEST(ChatTools, PythonRunsWithTimeAndMemoryLimitsAndAnswersOnTheCallsChannel) {
  const auto& tok = testing::harmony_tokenizer();
  chat::ToolBox tools;
  testing::ScratchDir dir("python_tool");
  tools.enable_python(
      {.timeout_s = 2, .memory_bytes = size_t(512) << 20, .working_dir = dir.str()});
  ASSERT_EQ(tools.builtin_namespaces().size(), 1u);
  auto call = [&](const std::string& code) {
    harmony::Message m = harmony::Message::tool_call("python", code, "analysis", "code");
    return tools.call(m);
  };
  auto ok = call("import os\nprint(6 * 7, os.getcwd())");
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.output, "42 " + std::filesystem::canonical(dir.path()).string() + "\n");
  auto big = call("x = bytearray(2 * 1024 ** 3)");
  EXPECT_FALSE(big.ok);
  EXPECT_NE(big.output.find("MemoryError"), std::string::npos) << big.output;
  auto loop = call("while True: pass");
  EXPECT_FALSE(loop.ok);
  EXPECT_NE(loop.output.find("time limit"), std::string::npos) << loop.output;

  chat::Conversation conv(chat::ChatMode::kHarmony, tok);
  conv.builtin_tools = tools.builtin_namespaces();
  conv.add_user("compute");
  ScriptedModel model({"<|channel|>analysis to=python code<|message|>print(6 * 7)<|call|>",
                       "<|channel|>final<|message|>42<|return|>"});
  chat::TurnOptions options;
  options.style.out = nullptr;
  chat::run_assistant_turn(conv, model, tok, &tools, options);
  ASSERT_EQ(model.prompts.size(), 2u);
  const std::string second = tok.decode(model.prompts[1]);
  EXPECT_NE(second.find("## python"), std::string::npos) << second;
  EXPECT_NE(second.find("<|start|>python to=assistant<|channel|>analysis<|message|>42\n<|end|>"),
            std::string::npos)
      << second;
}

TEST(ChatTools, OldestTurnsAreDroppedWhenTheContextIsFull) {
  const auto& tok = testing::harmony_tokenizer();
  chat::Conversation conv(chat::ChatMode::kHarmony, tok);
  std::string filler;
  for (int i = 0; i < 40; ++i) filler += "word ";
  for (int i = 0; i < 4; ++i) {
    conv.add_user("turn " + std::to_string(i) + " " + filler);
    conv.add_assistant({harmony::Message::assistant("final", "ok " + filler)});
  }
  conv.add_user("last question");
  const int whole = int(conv.prompt(100000, 0).tokens.size());
  auto fitted = conv.prompt(whole - 50, 10);
  EXPECT_GE(fitted.dropped_turns, 1);
  EXPECT_LE(int(fitted.tokens.size()) + 10, whole - 50);
  EXPECT_NE(tok.decode(fitted.tokens).find("last question"), std::string::npos);
  EXPECT_NE(tok.decode(fitted.tokens).find("<|start|>system"), std::string::npos);
  try {
    conv.prompt(60, 10);
    FAIL() << "a context smaller than the last turn must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kContextOverflow);
  }
}

}  // namespace
}  // namespace mind4
