#include "chat/generator.h"

#include <algorithm>
#include <chrono>
#include <string_view>

#include "mind4/status.h"

namespace mind4::chat {

namespace {

using GenClock = std::chrono::steady_clock;

double seconds_between(GenClock::time_point a, GenClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A model may sample an id the vocabulary leaves unused (o200k_base has gaps below its specials):
// it shows as nothing rather than ending the generation.
std::string_view generator_token_text(const Tokenizer& tokenizer, int token) {
  try {
    return tokenizer.token_bytes(token);
  } catch (const Error&) {
    return {};
  }
}

}  // namespace

const char* stop_cause_name(StopCause cause) {
  switch (cause) {
    case StopCause::kMaxTokens:
      return "max_tokens";
    case StopCause::kStopToken:
      return "stop_token";
    case StopCause::kStopString:
      return "stop_string";
    case StopCause::kContextFull:
      return "context_full";
    case StopCause::kCancelled:
      return "cancelled";
  }
  return "?";
}

double GenerateStats::prefill_tok_s() const {
  const int n = prompt_tokens - reused_tokens;
  return prefill_s > 0 ? n / prefill_s : 0.0;
}

double GenerateStats::decode_tok_s() const {
  return decode_s > 0 && generated > 1 ? (generated - 1) / decode_s : 0.0;
}

void check_tokenizer_matches(const Tokenizer& tokenizer, int vocab_size, const std::string& model) {
  MIND4_CHECK(tokenizer.vocab_size() == vocab_size, Status::kInvalidArgument, "the tokenizer '",
              tokenizer.name(), "' has ", tokenizer.vocab_size(), " ids but the model ", model,
              " has vocab_size ", vocab_size,
              ": the vocabulary does not match the model. Pass --tokenizer with the one it was "
              "trained with (gpt-oss checkpoints use o200k_harmony)");
}

size_t find_stop_string(std::string_view text, std::span<const std::string> stops, size_t* hold) {
  size_t first = std::string_view::npos, longest_hold = 0;
  for (const std::string& s : stops) {
    if (s.empty()) continue;
    first = std::min(first, text.find(s));
    // The longest proper prefix of s that ends the text: it may still grow into s.
    for (size_t k = std::min(s.size() - 1, text.size()); k > longest_hold; --k) {
      if (text.substr(text.size() - k) == std::string_view(s).substr(0, k)) {
        longest_hold = k;
        break;
      }
    }
  }
  if (hold) *hold = longest_hold;
  return first;
}

Generator::Generator(std::shared_ptr<const Model> model, const Tokenizer& tokenizer,
                     SamplingConfig sampling, GeneratorOptions options)
    : model_(std::move(model)), tokenizer_(tokenizer), sampler_(sampling) {
  const ModelConfig& mc = model_->config();
  check_tokenizer_matches(tokenizer_, mc.vocab_size, "in use");
  MIND4_CHECK(options.context_length > 0, Status::kInvalidArgument,
              "context length must be positive, got ", options.context_length);
  context_length_ = std::min(options.context_length, mc.max_context_length);
  ctx_ =
      std::make_unique<Context>(model_, ContextOptions{.context_length = context_length_,
                                                       .max_sequences = 1,
                                                       .max_batch_tokens = options.max_batch_tokens,
                                                       .threads = options.threads,
                                                       .host_logits = false});
  seq_ = ctx_->new_sequence();
}

Generator::~Generator() = default;

std::span<const int> Generator::tokens() const {
  return history_;
}

void Generator::reset() {
  ctx_->release(seq_);
  seq_ = ctx_->new_sequence();
  history_.clear();
}

void Generator::sync_prompt(std::span<const int> prompt, GenerateStats& stats) {
  MIND4_CHECK(!prompt.empty(), Status::kInvalidArgument, "the prompt has no tokens");
  MIND4_CHECK(int(prompt.size()) < context_length_, Status::kContextOverflow, "the prompt has ",
              prompt.size(), " tokens but the context holds ", context_length_,
              " (one more is needed to generate): shorten the prompt or raise --context");
  std::span<const int> cached = ctx_->tokens(seq_);
  size_t common = 0;
  while (common < cached.size() && common < prompt.size() && cached[common] == prompt[common])
    ++common;
  // The last prompt token is always processed again: its logits are the ones to sample from.
  if (common == prompt.size()) --common;
  if (common < cached.size()) ctx_->truncate(seq_, int(common));
  stats.reused_tokens = int(common);
  ctx_->append(seq_, prompt.subspan(common));
  ctx_->process();
  ctx_->synchronize();  // the prefill's time is the GPU's too (process() need not wait for it)
}

GenerateStats Generator::generate(std::span<const int> prompt, const GenerateLimits& limits,
                                  const std::function<void(const TokenEvent&)>& on_token) {
  MIND4_CHECK(limits.max_new_tokens >= 0 && limits.logprobs >= 0, Status::kInvalidArgument,
              "max_new_tokens and logprobs must not be negative");
  GenerateStats stats;
  stats.prompt_tokens = int(prompt.size());
  const auto start = GenClock::now();
  sync_prompt(prompt, stats);
  const auto prefilled = GenClock::now();
  stats.prefill_s = seconds_between(start, prefilled);
  history_.assign(prompt.begin(), prompt.end());

  Utf8StreamDecoder utf8;
  std::string pending;  // decoded text not yet shown: it may be the start of a stop string
  TokenEvent event;
  SampleResult sampled;
  GenClock::time_point first{}, last{};
  auto emit = [&](size_t n) {
    event.text.assign(pending, 0, n);
    pending.erase(0, n);
    stats.text += event.text;
    if (on_token) on_token(event);
  };
  // The next token's draw and its forward step are queued on the Context (append_sampled): the
  // host learns token n while the step of token n runs, so the GPU does not wait for it.
  bool queued = false;
  for (;;) {
    if (limits.cancel && limits.cancel->load(std::memory_order_relaxed)) {
      stats.stop = StopCause::kCancelled;
      break;
    }
    if (stats.generated >= limits.max_new_tokens) {
      stats.stop = StopCause::kMaxTokens;
      break;
    }
    if (queued) {
      const SampledToken drawn = ctx_->drawn(seq_);
      queued = false;
      sampled.token = drawn.token;
      sampled.logprob = drawn.logprob;
      sampled.top.clear();
    } else if (limits.logprobs > 0) {
      // Top alternatives need the whole row on the host.
      sampler_.sample_with_logprobs(ctx_->logits(seq_), history_, limits.logprobs,
                                    LogprobMode::kRaw, sampled);
    } else {
      // Through the Context, so that the CUDA line samples on the GPU and only the token comes
      // back; the draw is the one sampler_ would make (same seed, same step).
      const SampleRequest request{seq_, sampler_.config().seed, sampler_.step()};
      SampledToken drawn;
      ctx_->sample(std::span<const SampleRequest>(&request, 1), sampler_.config(),
                   LogprobMode::kRaw, std::span<SampledToken>(&drawn, 1));
      sampler_.set_step(request.step + 1);
      sampled.token = drawn.token;
      sampled.logprob = drawn.logprob;
      sampled.top.clear();
    }
    last = GenClock::now();
    if (stats.generated++ == 0) {
      first = last;
      stats.first_token_s = seconds_between(start, first);
    }
    const int token = sampled.token;
    history_.push_back(token);
    event.token = token;
    event.logprob = sampled.logprob;
    event.top = sampled.top;
    if (std::find(limits.stop_tokens.begin(), limits.stop_tokens.end(), token) !=
        limits.stop_tokens.end()) {
      stats.stop = StopCause::kStopToken;
      stats.stop_token = token;
      emit(pending.size());  // held text was not a stop string after all
      break;
    }
    pending += utf8.push(generator_token_text(tokenizer_, token));
    size_t hold = 0;
    const size_t at = find_stop_string(pending, limits.stop_strings, &hold);
    if (at != std::string::npos) {
      for (const std::string& s : limits.stop_strings)
        if (!s.empty() && pending.compare(at, s.size(), s) == 0) stats.stop_string = s;
      emit(at);
      pending.clear();
      stats.stop = StopCause::kStopString;
      break;
    }
    emit(pending.size() - hold);
    if (stats.generated >= limits.max_new_tokens) {  // no forward pass for a token never used
      stats.stop = StopCause::kMaxTokens;
      break;
    }
    if (ctx_->processed(seq_) < int(history_.size())) {  // not drawn into its step
      if (ctx_->processed(seq_) + 1 > context_length_) {
        stats.stop = StopCause::kContextFull;
        break;
      }
      ctx_->append(seq_, std::span<const int>(&token, 1));
      ctx_->process();
    }
    // The next token drawn into its own step on the GPU, unless it is the last one wanted (it
    // needs no step) or would not fit (the next turn samples it as before and stops), or the top
    // alternatives are wanted (the host needs the whole row), or penalties are on (they count the
    // tokens on the host).
    if (ctx_->draws_on_device() && !sampler_.config().has_penalties() && limits.logprobs == 0 &&
        stats.generated + 1 < limits.max_new_tokens &&
        ctx_->processed(seq_) + 1 <= context_length_) {
      const SampleRequest request{seq_, sampler_.config().seed, sampler_.step()};
      ctx_->append_sampled(std::span<const SampleRequest>(&request, 1), sampler_.config(),
                           LogprobMode::kRaw);
      sampler_.set_step(request.step + 1);
      ctx_->process();
      queued = true;
    }
  }
  // A token drawn into a step but never taken (a cancel) leaves the sequence again.
  if (queued) ctx_->truncate(seq_, int(history_.size()));
  if (stats.generated > 0) stats.decode_s = seconds_between(first, last);
  pending += utf8.flush();
  if (!pending.empty() && stats.stop != StopCause::kStopString) {
    event.token = -1;
    event.top.clear();
    emit(pending.size());
  }
  return stats;
}

}  // namespace mind4::chat
