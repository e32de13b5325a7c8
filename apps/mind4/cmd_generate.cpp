// `mind4 generate [PROMPT]`: one completion, streamed token by token. Raw mode continues the
// text; harmony mode makes the prompt a user message and prints the final answer (the analysis
// with --show-reasoning). Ends with the timing: time to first token, prefill and decode tok/s.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "chat/conversation.h"
#include "chat/generator.h"
#include "chat/reply_stream.h"
#include "command.h"
#include "mind4/status.h"
#include "model_session.h"

namespace {

using mind4::chat::ChatMode;

struct GenerateOptions {
  mind4::cli::SessionFlags session;
  std::string prompt, prompt_file, developer, effort = "medium";
  std::vector<std::string> stop_strings, stop_tokens;
  int logprobs = 0;
  bool json = false, show_reasoning = false, no_stats = false, no_echo = false;
};

std::atomic<bool> generate_interrupted{false};

std::string generate_read_prompt(const GenerateOptions& o) {
  MIND4_CHECK(o.prompt.empty() || o.prompt_file.empty(), mind4::Status::kInvalidArgument,
              "give the prompt either as an argument or with --prompt-file, not both");
  if (!o.prompt_file.empty()) {
    std::string text = mind4::chat::text_or_file(o.prompt_file);
    MIND4_CHECK(text != o.prompt_file || o.prompt_file == "-", mind4::Status::kIoError,
                "--prompt-file: cannot read '", o.prompt_file, "'");
    return text;
  }
  if (!o.prompt.empty() && o.prompt != "-") return o.prompt;
  MIND4_CHECK(o.prompt == "-" || !isatty(STDIN_FILENO), mind4::Status::kInvalidArgument,
              "no prompt: pass it as an argument, with --prompt-file F, or on standard input");
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

// A stop token is an id or a special token's text (<|return|>).
int generate_stop_token(const mind4::Tokenizer& tok, const std::string& text) {
  if (auto id = tok.special_id(text)) return *id;
  size_t used = 0;
  int id = -1;
  try {
    id = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MIND4_CHECK(used == text.size() && id >= 0 && id < tok.vocab_size(),
              mind4::Status::kInvalidArgument, "--stop-token '", text,
              "' is neither a special token of ", tok.name(), " nor an id below ",
              tok.vocab_size());
  return id;
}

// A token's bytes for display: valid UTF-8 as is, any other byte as \xNN (a token may hold part
// of a character, and JSON strings must be UTF-8).
std::string generate_printable(std::string_view bytes, bool escape_controls) {
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (escape_controls && (b < 0x20 || b == 0x7f)) {
      out += b == '\n' ? "\\n" : b == '\t' ? "\\t" : b == '\r' ? "\\r" : "";
      if (b != '\n' && b != '\t' && b != '\r') {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02X", b);
        out += buf;
      }
      ++i;
      continue;
    }
    const size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= bytes.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(bytes[i + k]) >> 6) == 2;
    if (ok) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", b);
      out += buf;
      ++i;
    }
  }
  return out;
}

std::string_view generate_token_bytes(const mind4::Tokenizer& tok, int id) {
  try {
    return tok.token_bytes(id);
  } catch (const mind4::Error&) {
    return {};  // an id the vocabulary leaves unused
  }
}

void run_generate(const GenerateOptions& o) {
  std::string prompt_text = generate_read_prompt(o);
  auto session = mind4::cli::open_model_session(o.session);
  const mind4::Config& config = session.resolved.config;
  const mind4::Tokenizer& tok = *session.tokenizer;

  mind4::chat::GenerateLimits limits;
  limits.max_new_tokens = config.sampling.max_new_tokens;
  limits.logprobs = o.logprobs;
  limits.stop_strings = o.stop_strings;
  limits.cancel = &generate_interrupted;
  for (const std::string& s : o.stop_tokens)
    limits.stop_tokens.push_back(generate_stop_token(tok, s));

  mind4::chat::Conversation conversation(session.mode, tok);
  std::vector<int> prompt;
  if (session.mode == ChatMode::kHarmony) {
    conversation.effort = mind4::chat::parse_effort(o.effort);
    if (!o.developer.empty()) conversation.developer = mind4::chat::text_or_file(o.developer);
    conversation.add_user(prompt_text);
    prompt = conversation.prompt(session.context, 1).tokens;
    for (const char* stop : {"<|return|>", "<|call|>"})
      limits.stop_tokens.push_back(*tok.special_id(stop));
  } else {
    prompt = tok.encode(prompt_text);
    if (auto eot = tok.special_id("<|endoftext|>")) limits.stop_tokens.push_back(*eot);
  }

  mind4::chat::Generator generator(
      session.model, tok, config.sampling,
      {.context_length = session.context, .threads = config.execution.threads});
  std::unique_ptr<mind4::harmony::Vocabulary> vocab;
  std::unique_ptr<mind4::chat::ReplyStream> reply;
  const bool tty = isatty(STDOUT_FILENO);
  if (session.mode == ChatMode::kHarmony) {
    vocab = mind4::harmony::vocabulary_of(tok);
    reply = std::make_unique<mind4::chat::ReplyStream>(
        *vocab,
        mind4::chat::ReplyStyle{
            .out = o.json ? nullptr : stdout, .show_reasoning = o.show_reasoning, .color = tty});
  }
  // Raw mode reads as one text: the prompt, then its continuation (echoed once the prompt has
  // been accepted, so that an over-long one is not printed before its error).
  bool echo = !reply && !o.json && !o.no_echo;
  nlohmann::ordered_json token_log = nlohmann::ordered_json::array();
  std::signal(SIGINT, [](int) { generate_interrupted = true; });
  auto stats = generator.generate(prompt, limits, [&](const mind4::chat::TokenEvent& e) {
    if (e.token >= 0 && reply) reply->push(e.token);
    if (echo) {
      std::fwrite(prompt_text.data(), 1, prompt_text.size(), stdout);
      echo = false;
    }
    if (!reply && !o.json) {
      std::fwrite(e.text.data(), 1, e.text.size(), stdout);
      std::fflush(stdout);
    }
    if (e.token >= 0 && (o.json || o.logprobs > 0)) {
      nlohmann::ordered_json entry = {
          {"id", e.token}, {"text", generate_printable(generate_token_bytes(tok, e.token), false)}};
      if (o.logprobs > 0) {
        entry["logprob"] = e.logprob;
        auto top = nlohmann::ordered_json::array();
        for (auto [id, lp] : e.top)
          top.push_back({{"id", id},
                         {"text", generate_printable(generate_token_bytes(tok, id), false)},
                         {"logprob", lp}});
        entry["top"] = std::move(top);
      }
      token_log.push_back(std::move(entry));
    }
  });
  std::signal(SIGINT, SIG_DFL);
  if (reply) reply->finish();

  if (o.json) {
    nlohmann::ordered_json out;
    out["mode"] = mind4::chat::chat_mode_name(session.mode);
    out["text"] = reply ? reply->final_text() : stats.text;
    if (reply) out["reasoning"] = reply->reasoning_text();
    out["prompt_tokens"] = stats.prompt_tokens;
    out["generated_tokens"] = stats.generated;
    out["stop"] = mind4::chat::stop_cause_name(stats.stop);
    out["tokens"] = token_log;
    out["timing"] = {{"first_token_s", stats.first_token_s},
                     {"prefill_tok_s", stats.prefill_tok_s()},
                     {"decode_tok_s", stats.decode_tok_s()}};
    std::puts(out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  if (!(reply ? reply->final_text() : stats.text).empty()) std::putchar('\n');
  if (o.logprobs > 0) {
    // The model's own distribution (before penalties and temperature), natural log.
    std::fprintf(stderr, "\n%-20s %9s   top %d alternatives\n", "token", "logprob", o.logprobs);
    auto shown = [&](int id) {
      return "'" + generate_printable(generate_token_bytes(tok, id), true) + "'";
    };
    for (const auto& t : token_log) {
      std::string line;
      for (const auto& alt : t["top"]) {
        char lp[32];
        std::snprintf(lp, sizeof lp, " %.3f", alt["logprob"].get<float>());
        line += "  " + shown(alt["id"].get<int>()) + lp;
      }
      std::fprintf(stderr, "%-20s %9.3f  %s\n", shown(t["id"].get<int>()).c_str(),
                   t["logprob"].get<float>(), line.c_str());
    }
  }
  if (!o.no_stats) {
    std::fprintf(stderr,
                 "\n[%d prompt tokens, %d generated, stop: %s] first token %.3f s · prefill %.1f "
                 "tok/s · decode %.2f tok/s\n",
                 stats.prompt_tokens, stats.generated, mind4::chat::stop_cause_name(stats.stop),
                 stats.first_token_s, stats.prefill_tok_s(), stats.decode_tok_s());
  }
}

void setup_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  app.add_option("prompt", o->prompt, "Prompt text ('-' or nothing: read standard input)");
  app.add_option("--prompt-file", o->prompt_file, "Read the prompt from this file");
  mind4::cli::add_session_flags(app, o->session);
  app.add_option("--stop", o->stop_strings, "Stop before this text (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--stop-token", o->stop_tokens,
                 "Stop at this token: an id or a special token such as <|endoftext|> (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--logprobs", o->logprobs, "Show each token's logprob and its top-N alternatives")
      ->check(CLI::Range(0, 20));
  app.add_flag("--show-reasoning", o->show_reasoning, "Harmony: print the analysis channel too");
  app.add_option("--reasoning-effort", o->effort, "Harmony: low | medium | high")
      ->check(CLI::IsMember({"low", "medium", "high"}));
  app.add_option("--developer", o->developer, "Harmony: developer instructions (text or a file)");
  app.add_flag("--json", o->json, "Print one JSON object (text, tokens, logprobs, timing)");
  app.add_flag("--no-stats", o->no_stats, "Do not print the timing line");
  app.add_flag("--no-echo", o->no_echo, "Raw mode: print only the continuation, not the prompt");
  app.callback([o] { run_generate(*o); });
}

mind4::cli::Command register_generate{"generate", "Generate text from a prompt, streamed",
                                      setup_generate};

}  // namespace
