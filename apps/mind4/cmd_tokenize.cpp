// `mind4 tokenize`: text -> token ids (plain or JSON), ids -> text, or a token count.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "mind4/status.h"
#include "mind4/tokenizer.h"

namespace {

struct TokenizeOptions {
  std::string tokenizer = "o200k_harmony";
  std::string text;
  bool text_given = false;
  bool json = false, decode = false, count = false, allow_special = false;
};

std::string read_stdin() {
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return std::move(ss).str();
}

std::vector<int> parse_ids(const std::string& in) {
  std::vector<int> ids;
  std::string s = in;
  for (char& c : s) {
    if (c == ',' || c == '[' || c == ']' || c == '\n' || c == '\t' || c == '\r') c = ' ';
  }
  std::istringstream is(s);
  std::string word;
  while (is >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MIND4_CHECK(used == word.size() && v >= INT32_MIN && v <= INT32_MAX,
                mind4::Status::kInvalidArgument, "'", word, "' is not a token id");
    ids.push_back(static_cast<int>(v));
  }
  return ids;
}

void run(const TokenizeOptions& o) {
  auto tok = mind4::Tokenizer::load(o.tokenizer);
  std::string input = o.text_given ? o.text : read_stdin();
  if (o.decode) {
    std::string bytes = tok.decode(parse_ids(input));
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    if (!bytes.empty() && bytes.back() != '\n' && o.text_given) std::fputc('\n', stdout);
    return;
  }
  std::vector<int> ids = o.allow_special ? tok.encode_allowing_special(input) : tok.encode(input);
  if (o.count) {
    std::printf("%zu\n", ids.size());
  } else if (o.json) {
    nlohmann::json j;
    j["tokenizer"] = tok.name();
    j["ids"] = ids;
    j["count"] = ids.size();
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
  }
}

void setup_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  app.add_option("--tokenizer", o->tokenizer,
                 "Built-in name (o200k_harmony, o200k_base) or vocabulary file (.tiktoken, "
                 "tiktoken JSON, tokenizer.json)");
  app.add_option("--text", o->text, "Text to encode (or ids to decode); default: read stdin");
  app.add_flag("--json", o->json, "Print {\"ids\": [...], \"count\": N} as JSON");
  app.add_flag("--decode", o->decode, "Read token ids (spaces/commas) and print their text");
  app.add_flag("--count", o->count, "Print only the number of tokens");
  app.add_flag("--allow-special", o->allow_special,
               "Recognise special-token text such as <|start|> (default: plain text)");
  app.callback([o, &app] {
    o->text_given = app.count("--text") > 0;
    run(*o);
  });
}

mind4::cli::Command register_tokenize{"tokenize", "Text to token ids and back (tiktoken-exact BPE)",
                        setup_tokenize};

}  // namespace
