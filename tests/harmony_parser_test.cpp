// The streaming harmony parser: documented model outputs, one test per kind of malformation,
// UTF-8 safe streaming, and render -> parse round trips. Documented token streams come from
// openai/harmony docs/format.md ([FMT]) and its tests ([TD] = tests/test_harmony.py /
// src/tests.rs).
#include <gtest/gtest.h>

#include <random>

#include "harmony/test_vocab.h"
#include "mind4/harmony.h"

namespace mind4::harmony {
namespace {

using testing::ByteVocab;

struct Parsed {
  std::vector<Message> messages;
  std::vector<DiagnosticRecord> diagnostics;
  std::vector<ParseEvent> events;
  StopReason stop;
};

Parsed parse(const std::string& text, std::optional<Role> start_role = Role::kAssistant,
             std::size_t max_header_tokens = 128) {
  ByteVocab vocab;
  StreamParser parser(vocab, {.start_role = start_role, .max_header_tokens = max_header_tokens});
  Parsed out;
  for (int id : vocab.encode_allowing_special(text)) {
    for (const ParseEvent& e : parser.push(id)) out.events.push_back(e);
  }
  for (const ParseEvent& e : parser.finish()) out.events.push_back(e);
  out.messages = parser.messages();
  out.diagnostics = parser.diagnostics();
  out.stop = parser.turn_stop();
  return out;
}

bool has_diagnostic(const Parsed& p, Diagnostic kind) {
  for (const auto& d : p.diagnostics) {
    if (d.kind == kind) return true;
  }
  return false;
}

TEST(HarmonyParser, DocumentedReasoningOutput) {
  // [FMT] "Chat conversation format", example output (after the prompt `<|start|>assistant`).
  Parsed p = parse(
      "<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple arithmetic. Provide "
      "answer.<|end|><|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>");
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[0], Message::assistant("analysis",
                                              "User asks: \"What is 2 + 2?\" Simple arithmetic. "
                                              "Provide answer."));
  EXPECT_EQ(p.messages[1], Message::assistant("final", "2 + 2 = 4."));
  EXPECT_EQ(p.stop, StopReason::kReturn);
  EXPECT_TRUE(p.diagnostics.empty());
}

TEST(HarmonyParser, DocumentedToolCallRecipientAfterChannel) {
  // [FMT] "Receiving tool calls".
  Parsed p = parse(
      "<|channel|>analysis<|message|>Need to use function get_weather.<|end|><|start|>assistant"
      "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
      "{\"location\":\"San Francisco\"}<|call|>");
  ASSERT_EQ(p.messages.size(), 2u);
  Message call = Message::tool_call("functions.get_weather", "{\"location\":\"San Francisco\"}");
  call.recipient_after_channel = true;
  EXPECT_EQ(p.messages[1], call);
  EXPECT_EQ(p.stop, StopReason::kCall);
  EXPECT_TRUE(p.diagnostics.empty());
}

TEST(HarmonyParser, ConstrainAdjacentAndRecipientInRole) {
  // [TD] test_tool_call_with_constrain_marker_adjacent and
  // test_tool_call_with_channel_before_recipient_and_constrain_adjacent.
  Parsed a = parse(
      "<|start|>assistant to=functions.get_weather<|channel|>commentary<|constrain|>json"
      "<|message|>{\"location\": \"Tokyo\"}<|end|>",
      std::nullopt);
  ASSERT_EQ(a.messages.size(), 1u);
  EXPECT_EQ(a.messages[0],
            Message::tool_call("functions.get_weather", "{\"location\": \"Tokyo\"}"));
  Parsed b = parse(
      "<|start|>assistant<|channel|>commentary to=functions.get_weather<|constrain|>json"
      "<|message|>{\"latitude\":48.8566,\"longitude\":2.3522}<|call|>",
      std::nullopt);
  ASSERT_EQ(b.messages.size(), 1u);
  EXPECT_EQ(b.messages[0].recipient, "functions.get_weather");
  EXPECT_EQ(b.messages[0].content_type, "<|constrain|>json");
  EXPECT_EQ(b.messages[0].channel, "commentary");
  EXPECT_TRUE(a.diagnostics.empty() && b.diagnostics.empty());
}

TEST(HarmonyParser, BuiltInToolCallAndToolAnswer) {
  // [TD] test_streamable_parser.txt: a browser call with content type `code`, and the tool's
  // answer authored by browser.search.
  Parsed p = parse(
      "<|channel|>analysis<|message|>Let's browse.<|end|><|start|>assistant<|channel|>commentary "
      "to=browser.search code<|message|>{\"query\": \"current US president July 2025\"}<|call|>"
      "<|start|>browser.search to=assistant<|channel|>commentary<|message|>{\"result\": "
      "\"https://openai.com/\"}<|end|>");
  ASSERT_EQ(p.messages.size(), 3u);
  EXPECT_EQ(p.messages[1].recipient, "browser.search");
  EXPECT_EQ(p.messages[1].content_type, "code");
  Message answer = Message::tool_result("browser.search", "{\"result\": \"https://openai.com/\"}");
  EXPECT_EQ(p.messages[2], answer);
  EXPECT_TRUE(p.diagnostics.empty());
}

TEST(HarmonyParser, EventsStreamHeaderDeltasAndEnd) {
  Parsed p = parse("<|channel|>final<|message|>Hi there<|return|>");
  ASSERT_GE(p.events.size(), 4u);
  EXPECT_EQ(p.events.front().type, ParseEvent::Type::kHeader);
  EXPECT_EQ(p.events.front().message.channel, "final");
  std::string streamed;
  for (const auto& e : p.events) {
    if (e.type == ParseEvent::Type::kDelta) streamed += e.text;
  }
  EXPECT_EQ(streamed, "Hi there");
  EXPECT_EQ(p.events[p.events.size() - 2].type, ParseEvent::Type::kMessage);
  EXPECT_EQ(p.events.back().type, ParseEvent::Type::kTurnEnd);
  EXPECT_EQ(p.events.back().stop, StopReason::kReturn);
}

TEST(HarmonyParser, Utf8DeltasWaitForWholeCharacters) {
  ByteVocab vocab;
  StreamParser parser(vocab);
  for (int id : vocab.encode_allowing_special("<|channel|>final<|message|>")) parser.push(id);
  const std::string heart = "\xF0\x9F\x92\x96";  // U+1F496, four byte tokens
  for (std::size_t i = 0; i + 1 < heart.size(); ++i) {
    for (const auto& e : parser.push(static_cast<unsigned char>(heart[i]))) {
      EXPECT_NE(e.type, ParseEvent::Type::kDelta) << "half a character was emitted";
    }
  }
  auto events = parser.push(static_cast<unsigned char>(heart.back()));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].text, heart);
}

TEST(HarmonyParser, InvalidUtf8BecomesReplacementAndDoesNotLeak) {
  // [TD] test_streamable_parser_does_not_leak_bytes_between_messages: a message ending in half
  // a character gets U+FFFD; the next message is clean.
  Parsed p = parse(std::string("<|channel|>final<|message|>a\xFF"
                               "b\xE2\x82<|end|>") +
                   "<|start|>assistant<|channel|>final<|message|>Hi<|end|>");
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[0].content,
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  EXPECT_EQ(p.messages[1].content, "Hi");
}

// ---- One test per kind of malformation -----------------------------------------------------

TEST(HarmonyParserRecovery, MissingMessageToken) {
  // [TD] test_missing_message_token_requires_non_strict_mode: the header's first word is the
  // channel, the rest is content.
  Parsed p = parse("<|channel|>commentary Hello<|end|>");
  ASSERT_EQ(p.messages.size(), 1u);
  EXPECT_EQ(p.messages[0], Message::assistant("commentary", "Hello"));
  EXPECT_TRUE(has_diagnostic(p, Diagnostic::kMissingMessage));
  Parsed call = parse("<|channel|>commentary to=functions.f {\"a\": 1}<|call|>");
  ASSERT_EQ(call.messages.size(), 1u);
  EXPECT_EQ(call.messages[0].recipient, "functions.f");
  EXPECT_EQ(call.messages[0].content, "{\"a\": 1}");
  EXPECT_EQ(call.stop, StopReason::kCall);
}

TEST(HarmonyParserRecovery, UnknownOrMissingRole) {
  Parsed bad = parse("<|start|>r@le!<|message|>text<|end|><|start|>user<|message|>next<|end|>",
                     std::nullopt);
  ASSERT_EQ(bad.messages.size(), 2u);
  EXPECT_TRUE(has_diagnostic(bad, Diagnostic::kUnknownRole));
  EXPECT_EQ(bad.messages[0].content, "text");
  EXPECT_EQ(bad.messages[1], Message::user("next"));
  Parsed missing = parse("<|start|><|channel|>final<|message|>ok<|end|>", std::nullopt);
  ASSERT_EQ(missing.messages.size(), 1u);
  EXPECT_EQ(missing.messages[0], Message::assistant("final", "ok"));
  EXPECT_TRUE(has_diagnostic(missing, Diagnostic::kUnknownRole));
}

TEST(HarmonyParserRecovery, StrayStartInsideContent) {
  Parsed p = parse(
      "<|channel|>analysis<|message|>thinking<|start|>assistant<|channel|>final<|message|>"
      "Answer<|return|>");
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[0], Message::assistant("analysis", "thinking"));
  EXPECT_EQ(p.messages[1], Message::assistant("final", "Answer"));
  EXPECT_TRUE(has_diagnostic(p, Diagnostic::kMissingEnd));
  EXPECT_EQ(p.stop, StopReason::kReturn);
}

TEST(HarmonyParserRecovery, MissingEndBeforeNextChannelAndAtEndOfStream) {
  Parsed p =
      parse("<|channel|>analysis<|message|>think<|channel|>final<|message|>answer<|return|>");
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[0], Message::assistant("analysis", "think"));
  EXPECT_EQ(p.messages[1], Message::assistant("final", "answer"));
  EXPECT_TRUE(has_diagnostic(p, Diagnostic::kMissingEnd));
  Parsed cut = parse("<|channel|>final<|message|>cut sh");
  ASSERT_EQ(cut.messages.size(), 1u);
  EXPECT_EQ(cut.messages[0].content, "cut sh");
  EXPECT_TRUE(has_diagnostic(cut, Diagnostic::kTruncated));
  EXPECT_EQ(cut.stop, StopReason::kNone);
}

TEST(HarmonyParserRecovery, TextBeforeStart) {
  Parsed p = parse("Sure! <|start|>assistant<|channel|>final<|message|>Hi<|end|>", std::nullopt);
  ASSERT_EQ(p.messages.size(), 1u);
  EXPECT_EQ(p.messages[0], Message::assistant("final", "Hi"));
  ASSERT_TRUE(has_diagnostic(p, Diagnostic::kTextOutsideMessage));
  EXPECT_NE(p.diagnostics[0].detail.find("Sure!"), std::string::npos);  // the text is kept
  // Between messages after the prompt's turn: text then a channel without <|start|>.
  Parsed q = parse("<|channel|>analysis<|message|>a<|end|>oops<|channel|>final<|message|>b<|end|>");
  ASSERT_EQ(q.messages.size(), 2u);
  EXPECT_EQ(q.messages[1], Message::assistant("final", "b"));
  EXPECT_TRUE(has_diagnostic(q, Diagnostic::kTextOutsideMessage));
  EXPECT_TRUE(has_diagnostic(q, Diagnostic::kMissingStart));
}

TEST(HarmonyParserRecovery, HeaderTooLong) {
  const std::string rambling(300, 'x');
  Parsed p = parse("<|channel|>final " + rambling + "<|end|>", Role::kAssistant, 64);
  ASSERT_EQ(p.messages.size(), 1u);
  EXPECT_EQ(p.messages[0].channel, "final");
  EXPECT_EQ(p.messages[0].content, rambling);  // nothing lost
  EXPECT_TRUE(has_diagnostic(p, Diagnostic::kHeaderTooLong));
}

TEST(HarmonyParserRecovery, UnexpectedSpecialTokens) {
  ByteVocab vocab;
  StreamParser parser(vocab);
  std::vector<int> ids = vocab.encode_allowing_special(
      "<|channel|>final<|message|>a<|endoftext|>b<|message|>c<|constrain|>d");
  ids.push_back(-5);      // not a token
  ids.push_back(999999);  // beyond the vocabulary
  for (int id :
       vocab.encode_allowing_special("e<|start|>assistant<|start|>user<|message|>f<|end|>"))
    ids.push_back(id);
  for (int id : ids) parser.push(id);
  parser.finish();
  ASSERT_EQ(parser.messages().size(), 2u);
  EXPECT_EQ(parser.messages()[0].content, "abcde");
  EXPECT_EQ(parser.messages()[1], Message::user("f"));
  int unexpected = 0, invalid = 0;
  for (const auto& d : parser.diagnostics()) {
    unexpected += d.kind == Diagnostic::kUnexpectedSpecial;
    invalid += d.kind == Diagnostic::kInvalidToken;
  }
  EXPECT_EQ(unexpected, 4);  // <|endoftext|>, <|message|>, <|constrain|>, <|start|> in header
  EXPECT_EQ(invalid, 2);
  // A stop token outside a message still ends the turn.
  Parsed p = parse("<|channel|>final<|message|>x<|end|><|return|>");
  EXPECT_EQ(p.stop, StopReason::kReturn);
  EXPECT_TRUE(has_diagnostic(p, Diagnostic::kUnexpectedSpecial));
}

TEST(HarmonyParserRecovery, RandomStreamsNeverThrowAndKeepText) {
  // Adversarial soup of specials and text: the parser must neither throw nor lose text bytes.
  ByteVocab vocab;
  const std::vector<int> pool = {200002, 200003, 200005, 200006, 200007, 200008, 200012,
                                 199999, 'a',    ' ',    't',    'o',    '=',    'x',
                                 0xE2,   0x82,   0xAC,   0xFF,   '\n'};
  std::mt19937 rng(1234);
  for (int round = 0; round < 300; ++round) {
    StreamParser parser(vocab, {.start_role = round % 2 ? std::optional<Role>() : Role::kAssistant,
                                .max_header_tokens = 16});
    const int n = std::uniform_int_distribution<int>(0, 80)(rng);
    for (int i = 0; i < n; ++i) {
      ASSERT_NO_THROW(parser.push(pool[rng() % pool.size()]));
    }
    ASSERT_NO_THROW(parser.finish());
  }
}

// ---- Round trips and history ------------------------------------------------------------------

TEST(HarmonyParser, RoundTripRenderThenParse) {
  SystemContent sys;
  sys.current_date = "2025-06-28";
  sys.tools = {ToolNamespace::browser()};
  DeveloperContent dev;
  dev.instructions = "Be brief.";
  dev.function_tools = {{"get_weather", "Weather.", Json::parse(R"({"type":"object",
      "properties":{"city":{"type":"string"}},"required":["city"]})")}};
  Message named = Message::user("Hello <|end|> \xF0\x9F\x92\x96");  // special text stays text
  named.author_name = "alice";
  Message preamble = Message::assistant("commentary", "Checking the weather.");
  Message call = Message::tool_call("functions.get_weather", "{\"city\":\"Paris\"}");
  Message call_after_channel = Message::tool_call("python", "print(1)", "analysis", "code");
  call_after_channel.recipient_after_channel = true;
  std::vector<Message> convo = {Message::system_message(sys),
                                Message::developer_message(dev),
                                named,
                                Message::assistant("analysis", "Need weather."),
                                preamble,
                                call,
                                Message::tool_result("functions.get_weather", "{\"temp\": 21}"),
                                call_after_channel,
                                Message::tool_result("python", "1", "analysis"),
                                Message::assistant("final", "It is 21 degrees.\nEnjoy!")};
  ByteVocab vocab;
  std::vector<int> ids =
      to_tokens(render_conversation(convo, {.drop_finished_analysis = false}), vocab);
  StreamParser parser(vocab, {.start_role = std::nullopt});
  for (int id : ids) parser.push(id);
  parser.finish();
  EXPECT_TRUE(parser.diagnostics().empty());
  ASSERT_EQ(parser.messages().size(), convo.size());
  for (std::size_t i = 0; i < convo.size(); ++i) {
    Message expected = convo[i];
    if (expected.system || expected.developer) {
      // Structured content comes back as the text it rendered to.
      std::string rendered = render_message(expected, true).str();
      const std::size_t begin = rendered.find("<|message|>") + 11;
      expected.content = rendered.substr(begin, rendered.size() - begin - 7);
      expected.system.reset();
      expected.developer.reset();
    }
    EXPECT_EQ(parser.messages()[i], expected) << "message " << i;
  }
}

TEST(HarmonyParser, StoredReplyEndsWithEndAndDropsItsAnalysisNextTurn) {
  // [FMT] "Handling reasoning output in subsequent sampling" and the implementation note of
  // "Chat conversation format": the reply's <|return|> becomes <|end|> in history, and the
  // analysis of the finished turn is not sent again.
  std::vector<Message> convo = {Message::user("What is 2 + 2?")};
  ByteVocab vocab;
  std::vector<int> reply = vocab.encode_allowing_special(
      "<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple arithmetic. Provide "
      "answer.<|end|><|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>");
  for (Message& m : parse_completion(reply, vocab)) convo.push_back(std::move(m));
  convo.push_back(Message::user("What about 9 / 2?"));
  EXPECT_EQ(render_for_completion(convo).str(),
            "<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant<|channel|>final"
            "<|message|>2 + 2 = 4.<|end|><|start|>user<|message|>What about 9 / 2?<|end|>"
            "<|start|>assistant");
}

}  // namespace
}  // namespace mind4::harmony
