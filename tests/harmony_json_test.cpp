// Conversations as JSON (the chat's /save and /load): lossless round trip, and clear errors.
#include <gtest/gtest.h>

#include "mind4/harmony.h"
#include "mind4/status.h"

namespace mind4::harmony {
namespace {

std::vector<Message> every_kind_of_message() {
  SystemContent sys;
  sys.current_date = "2025-06-28";
  sys.reasoning_effort = ReasoningEffort::kHigh;
  sys.knowledge_cutoff.reset();
  sys.tools = {ToolNamespace::browser(), ToolNamespace::python()};
  DeveloperContent dev;
  dev.instructions = "Use a friendly tone.";
  // Keys deliberately not in alphabetical order: the order shows in the rendering.
  dev.function_tools = {{"get_weather", "Weather.", Json::parse(R"({"type":"object",
      "properties":{"zcity":{"type":"string"},"acountry":{"type":"string"}}})")},
                        {"now", "The time.", std::nullopt}};
  dev.response_formats = {{"answer", "the answer", Json::parse(R"({"type":"object"})")}};
  Message named = Message::user("hi");
  named.author_name = "alice";
  Message call = Message::tool_call("functions.get_weather", "{\"zcity\":\"Oslo\"}");
  call.recipient_after_channel = true;
  return {Message::system_message(sys),
          Message::developer_message(dev),
          named,
          Message::assistant("analysis", "think"),
          call,
          Message::tool_result("functions.get_weather", "{\"t\": 3}"),
          Message::assistant("final", "3 degrees \xE2\x9D\x84")};
}

TEST(HarmonyJson, RoundTripKeepsEveryFieldAndSchemaKeyOrder) {
  const std::vector<Message> convo = every_kind_of_message();
  const std::string saved = to_json(convo).dump(2);
  const std::vector<Message> loaded = conversation_from_json(Json::parse(saved));
  EXPECT_EQ(loaded, convo);
  EXPECT_EQ(render_for_completion(loaded).str(), render_for_completion(convo).str());
  EXPECT_LT(saved.find("zcity"), saved.find("acountry"));
}

TEST(HarmonyJson, MinimalMessagesUseDefaults) {
  const std::vector<Message> loaded = conversation_from_json(Json::parse(R"({"messages": [
      {"role": "system", "system": {"current_date": "2025-01-01"}},
      {"role": "user", "content": "hello"}]})"));
  ASSERT_EQ(loaded.size(), 2u);
  ASSERT_TRUE(loaded[0].system.has_value());
  EXPECT_EQ(loaded[0].system->knowledge_cutoff, std::optional<std::string>("2024-06"));
  EXPECT_EQ(loaded[0].system->reasoning_effort, ReasoningEffort::kMedium);
  EXPECT_EQ(loaded[1], Message::user("hello"));
}

void expect_error(const std::string& text, const std::string& needle) {
  try {
    conversation_from_json(Json::parse(text));
    FAIL() << "no error for " << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(HarmonyJson, BadInputNamesTheField) {
  expect_error(R"([1, 2])", "\"messages\" array");
  expect_error(R"({"format": "chatml", "messages": []})", "\"format\"");
  expect_error(R"({"messages": [{"content": "x"}]})", "messages[0].role is missing");
  expect_error(R"({"messages": [{"role": "robot"}]})", "\"robot\" is not one of");
  expect_error(R"({"messages": [{"role": "tool", "content": "1"}]})", "without the tool's");
  expect_error(R"({"messages": [{"role": "user", "channel": 7}]})", "messages[0].channel");
  expect_error(R"({"messages": [{"role": "user", "system": {}}]})", "only allowed in a system");
  expect_error(R"({"messages": [{"role": "system", "system": {"reasoning_effort": "max"}}]})",
               "messages[0].system.reasoning_effort");
  expect_error(R"({"messages": [{"role": "developer", "developer":
                   {"function_tools": [{"name": "f", "parameters": "none"}]}}]})",
               "messages[0].developer.function_tools[0].parameters");
  expect_error(R"({"messages": ["hello"]})", "messages[0] must be an object");
}

}  // namespace
}  // namespace mind4::harmony
