// Harmony with the real o200k_harmony vocabulary: rendered conversations, token for token, against
// the tiktoken npm package encoding the documented strings with the harmony specials
// (tests/harmony/encode_harmony.js); and the streaming parser fed the real tokens of a reply.
// The expected strings follow openai/harmony docs/format.md and test-data/*.txt, as cited in
// harmony_render_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "mind4/harmony.h"
#include "mind4/tokenizer.h"
#include "tokenizer/test_util.h"

namespace mind4::harmony {
namespace {

const Tokenizer& o200k_harmony() {
  static Tokenizer t = Tokenizer::load("o200k_harmony");
  return t;
}

std::vector<Message> weather_conversation() {
  DeveloperContent dev;
  dev.instructions = "Answer briefly.";
  dev.function_tools = {{"get_current_weather", "Gets the current weather in the provided location.",
                         Json::parse(R"({"type": "object", "properties": {
                             "location": {"type": "string", "description": "The city"}},
                             "required": ["location"]})")}};
  SystemContent sys;
  sys.current_date = "2026-11-25";
  sys.reasoning_effort = ReasoningEffort::kHigh;
  Message call = Message::tool_call("functions.get_current_weather", "{\"location\":\"Tokyo\"}");
  return {Message::system_message(sys),
          Message::developer_message(dev),
          Message::user("Погода в Токио? 東京の天気は？ 🌦️"),
          Message::assistant("analysis", "Need the tool."),
          call,
          Message::tool_result("functions.get_current_weather", "{\"temp\": 21, \"sky\": \"clear\"}"),
          Message::assistant("final", "It is 21 °C and clear in Tokyo.")};
}

TEST(HarmonyTokens, RenderingMatchesTiktokenWithHarmonySpecials) {
  ASSERT_EQ(std::system("node --version > /dev/null 2>&1"), 0) << "node is missing (scripts/setup.sh)";
  std::vector<std::vector<Message>> conversations = {
      {Message::system_message({}), Message::user("What is 2 + 2?")},
      weather_conversation(),
      // Special-token text typed by a user stays text: tiktoken sees it escaped below.
      {Message::user("say <|end|> please")},
  };
  auto vocab = vocabulary_of(o200k_harmony());
  std::vector<std::vector<int>> ours;
  std::string strings;
  for (size_t i = 0; i < conversations.size(); ++i) {
    Rendering r = render_for_completion(conversations[i]);
    ours.push_back(to_tokens(r, *vocab));
    if (i + 1 < conversations.size()) strings += r.str() + '\0';
  }
  mind4::testing::ScratchDir dir("harmony_tokens");
  mind4::testing::write_file(dir.path() / "strings.txt", strings);
  std::string cmd = "node tests/harmony/encode_harmony.js " + (dir.path() / "strings.txt").string() +
                    " > " + (dir.path() / "ids.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::istringstream lines(mind4::testing::read_file(dir.path() / "ids.txt"));
  std::string line;
  for (size_t i = 0; i + 1 < conversations.size(); ++i) {
    ASSERT_TRUE(std::getline(lines, line)) << "oracle gave too few lines";
    std::istringstream words(line);
    std::vector<int> expected;
    for (int id; words >> id;) expected.push_back(id);
    EXPECT_EQ(ours[i], expected) << "conversation " << i;
  }
  // The typed "<|end|>" is ordinary text, so the only <|end|> is the one closing the message.
  const std::vector<int>& typed = ours.back();
  EXPECT_EQ(std::count(typed.begin(), typed.end(), 200007), 1);
  EXPECT_EQ(typed.front(), 200006);  // <|start|>
}

TEST(HarmonyTokens, StreamingParserOnRealTokensOfAReply) {
  const Tokenizer& tok = o200k_harmony();
  auto vocab = vocabulary_of(tok);
  // What a model writes after "<|start|>assistant": analysis, then a final answer, then
  // <|return|>. Multi-byte text splits inside characters across tokens.
  std::vector<int> reply = tok.encode_allowing_special(
      "<|channel|>analysis<|message|>Думаю… 🤔 about 東京<|end|>"
      "<|start|>assistant<|channel|>final<|message|>Ответ: 42 °C 🌡️<|return|>");
  StreamParser parser(*vocab);
  std::string streamed;
  for (int id : reply)
    for (const ParseEvent& e : parser.push(id))
      if (e.type == ParseEvent::Type::kDelta) streamed += e.text;
  parser.finish();
  ASSERT_EQ(parser.messages().size(), 2u);
  EXPECT_EQ(parser.messages()[0].channel, "analysis");
  EXPECT_EQ(parser.messages()[0].content, "Думаю… 🤔 about 東京");
  EXPECT_EQ(parser.messages()[1].channel, "final");
  EXPECT_EQ(parser.messages()[1].content, "Ответ: 42 °C 🌡️");
  EXPECT_EQ(streamed, "Думаю… 🤔 about 東京Ответ: 42 °C 🌡️");
  EXPECT_EQ(parser.turn_stop(), StopReason::kReturn);
  EXPECT_TRUE(parser.diagnostics().empty());
}

}  // namespace
}  // namespace mind4::harmony
