// The token loop every front end shares (generate, chat, later the server's single-sequence path):
// keep one sequence's KV cache in step with a prompt, then sample token after token, streaming
// each one out with its text, until a stop token, a stop string, the token limit, a full context
// or a cancel request.
//
//   chat::Generator gen(model, tokenizer, config.sampling, {.context_length = 4096});
//   chat::GenerateLimits limits{.max_new_tokens = 200, .stop_tokens = {eot}};
//   auto stats = gen.generate(prompt, limits, [&](const chat::TokenEvent& e) {
//     std::fputs(e.text.c_str(), stdout);   // whole UTF-8 characters, stop strings held back
//   });
//
// Nothing is allocated per token in the loop beyond the event's text and logprob lists.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mind4/config.h"
#include "mind4/model.h"
#include "mind4/sampler.h"
#include "mind4/tokenizer.h"

namespace mind4::chat {

struct GeneratorOptions {
  int context_length = 4096;  // KV rows of the one sequence; clamped to the model's maximum
  int threads = 0;            // 0 = all cores
  int max_batch_tokens = 256;
};

struct GenerateLimits {
  int max_new_tokens = 256;
  std::vector<int> stop_tokens;           // sampled, then the loop ends; its text is not emitted
  std::vector<std::string> stop_strings;  // the text ends before the first match
  int logprobs = 0;                       // top alternatives reported per token (0 = none)
  const std::atomic<bool>* cancel = nullptr;  // checked before every forward step
};

enum class StopCause { kMaxTokens, kStopToken, kStopString, kContextFull, kCancelled };
const char* stop_cause_name(StopCause cause);

struct TokenEvent {
  int token = -1;
  std::string text;  // new visible text: whole UTF-8 characters, possible stop-string starts held
  float logprob = 0.0f;
  std::vector<std::pair<int, float>> top;  // with GenerateLimits::logprobs > 0
};

struct GenerateStats {
  int prompt_tokens = 0;     // the whole prompt
  int reused_tokens = 0;     // prompt tokens already in the KV cache (not recomputed)
  int generated = 0;         // sampled tokens, the stop token included
  double prefill_s = 0;      // processing the new part of the prompt
  double first_token_s = 0;  // from the call to the first sampled token
  double decode_s = 0;       // from the first sampled token to the last
  StopCause stop = StopCause::kMaxTokens;
  int stop_token = -1;      // with kStopToken
  std::string stop_string;  // with kStopString
  std::string text;         // everything emitted
  double prefill_tok_s() const;
  double decode_tok_s() const;  // tokens after the first over decode_s
};

// Where the tokens of a reply come from: the model (Generator), or a script in tests.
class TokenSource {
 public:
  virtual ~TokenSource() = default;
  virtual GenerateStats generate(std::span<const int> prompt, const GenerateLimits& limits,
                                 const std::function<void(const TokenEvent&)>& on_token) = 0;
};

class Generator : public TokenSource {
 public:
  // Errors: kInvalidArgument when the tokenizer's id count differs from the model's vocab_size
  // (the message gives both), or for bad options; Context errors as documented in model.h.
  Generator(std::shared_ptr<const Model> model, const Tokenizer& tokenizer, SamplingConfig sampling,
            GeneratorOptions options = {});
  ~Generator() override;

  // Brings the sequence to exactly `prompt` (keeping the longest cached prefix), then samples.
  // kContextOverflow, naming both numbers, when the prompt alone does not fit the context.
  GenerateStats generate(std::span<const int> prompt, const GenerateLimits& limits,
                         const std::function<void(const TokenEvent&)>& on_token) override;

  // The sequence as it stands: the prompt and every token sampled since (stop token included).
  std::span<const int> tokens() const;
  int context_length() const { return context_length_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  Sampler& sampler() { return sampler_; }
  void reset();  // forget the cache (the next generate() prefills from scratch)

 private:
  void sync_prompt(std::span<const int> prompt, GenerateStats& stats);

  std::shared_ptr<const Model> model_;
  const Tokenizer& tokenizer_;
  Sampler sampler_;
  int context_length_ = 0;
  std::unique_ptr<Context> ctx_;
  int seq_ = -1;
  std::vector<int> history_;  // the KV cache's tokens, then the last sampled token
};

// kInvalidArgument, giving both sizes and what to do, unless the tokenizer has exactly
// vocab_size ids: a model sampling ids its tokenizer cannot spell (or never reaching some) is
// the sign of a vocabulary that does not belong to it.
void check_tokenizer_matches(const Tokenizer& tokenizer, int vocab_size, const std::string& model);

// Finds the earliest stop string in `text`; returns its offset or npos. `hold` receives how many
// trailing bytes of `text` could still begin a stop string (they must not be shown yet).
size_t find_stop_string(std::string_view text, std::span<const std::string> stops, size_t* hold);

}  // namespace mind4::chat
