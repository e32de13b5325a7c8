// Token sampling: turns one position's logits into the next token.
//
// Order of application (the order of Hugging Face transformers' generate(): its logits processors
// run before its warpers, and the warpers run temperature, top-k, top-p, min-p):
//   1. repetition penalty  (CTRL / HF RepetitionPenaltyLogitsProcessor) for every token seen in
//                          `history`: logit > 0 ? logit / penalty : logit * penalty
//   2. presence, frequency (OpenAI / llama.cpp / vLLM): logit -= presence * [count > 0]
//                          + frequency * count, count = occurrences in `history`
//   3. temperature         logit / T;  T = 0 means greedy (argmax of the penalised logits, the
//                          lowest token id on ties; the filters below cannot change an argmax)
//   4. top-k               keep the k largest
//   5. top-p (nucleus)     keep the smallest prefix, in descending probability, of the top-k
//                          renormalised distribution whose mass is >= top_p (the token that
//                          crosses top_p is kept)
//   6. min-p               keep tokens with p >= min_p * p_max
//   7. draw                one uniform double u = Philox4x32-10(counter {step, 0, 0, 0}, key seed)
//                          words 0-1 (53 bits); the token is where u * mass falls in the kept
//                          tokens' cumulative weights.
// "Descending" means by processed logit, then by lower token id: a strict order, so ties at a
// top-k or top-p boundary are resolved deterministically (HF would keep all tied tokens at the
// top-k boundary; llama.cpp keeps exactly k, as here).
//
// The draw for step n depends only on (seed, n): the same seed gives the same tokens whatever
// thread or batch ran it, and the CUDA line can reproduce it with the same counter. step() counts
// calls to sample*(), greedy ones included, so switching modes mid-sequence does not shift draws.
//
// A Sampler owns scratch sized to the vocabulary on first use; later calls allocate nothing
// (sample_with_logprobs reuses the capacity of the SampleResult it is given). One Sampler per
// sequence; it is not safe to share one between threads.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "mind4/config.h"

namespace mind4 {

// Which distribution SampleResult's log-probabilities describe.
enum class LogprobMode {
  kRaw,        // log_softmax of the logits as passed in (the model's own distribution)
  kProcessed,  // log_softmax after penalties and temperature (T = 0 counts as 1), before top-k,
               // top-p and min-p: every token has a finite value
  kSampling,   // the final truncated, renormalised distribution the token was drawn from:
               // tokens removed by the filters get -inf; under greedy the chosen token gets 0
};

struct SampleResult {
  int token = -1;
  float logprob = 0.0f;                    // the chosen token's logprob under the mode
  std::vector<std::pair<int, float>> top;  // the top-N tokens and their logprobs, descending
};

class Sampler {
 public:
  // Throws Error(kInvalidArgument) naming the field when the config is out of range:
  // temperature < 0 or not finite, top_k < 0, top_p not in (0, 1], min_p not in [0, 1],
  // repetition_penalty <= 0 or not finite, presence/frequency penalty not finite.
  explicit Sampler(SamplingConfig config);

  // Picks the next token. `logits` has one value per vocabulary entry (NaN and +inf are rejected,
  // -inf masks a token); `history` holds the tokens the penalties count (the caller decides
  // whether that includes the prompt). Throws Error(kInvalidArgument) for empty or bad logits or
  // when every token is masked, Error(kTokenOutOfRange) for a history token outside the logits.
  int sample(std::span<const float> logits, std::span<const int> history);

  // As sample(), and reports log-probabilities: of the chosen token and of the top_n most likely
  // tokens under `mode` (top_n is clamped to the vocabulary; under kSampling to the kept set).
  SampleResult sample_with_logprobs(std::span<const float> logits, std::span<const int> history,
                                    int top_n, LogprobMode mode = LogprobMode::kProcessed);
  void sample_with_logprobs(std::span<const float> logits, std::span<const int> history, int top_n,
                            LogprobMode mode, SampleResult& out);

  // The exact distribution sample() would draw from now (zeros for removed tokens; greedy puts 1
  // on the argmax). Does not advance step(). probs.size() must equal logits.size().
  void distribution(std::span<const float> logits, std::span<const int> history,
                    std::span<double> probs);
  // Logits after penalties and temperature (T = 0: after penalties only). Does not advance step().
  void processed_logits(std::span<const float> logits, std::span<const int> history,
                        std::span<float> out);

  const SamplingConfig& config() const { return config_; }
  uint64_t step() const { return step_; }
  // Jumps to a step, e.g. to replay a sequence from a saved position.
  void set_step(uint64_t step) { step_ = step; }
  // Changes the seed only (one Sampler may serve sequences of different seeds in turn).
  void set_seed(uint64_t seed) { config_.seed = seed; }
  // The uniform draw used at a given step (exposed so other implementations can be checked).
  static double uniform_at(uint64_t seed, uint64_t step);

  static void validate(const SamplingConfig& config);

 private:
  // Copies logits, applies penalties, finds the maximum. Returns the vocabulary size.
  int prepare(std::span<const float> logits, std::span<const int> history);
  bool greedy() const { return greedy_; }
  int argmax() const;
  // Builds the kept set in index_[0, kept_) with weights in weight_, mass in kept_mass_.
  void select();
  void compute_weights_all();
  void compute_weights_list(int n);
  void select_top_k(int k);
  void select_top_p(double top_p);
  void select_min_p(float min_p);
  int draw(double u) const;
  void top_n_by_value(const float* values, int n, std::vector<std::pair<int, float>>& out);
  double log_sum_exp(const float* values, float max, float scale) const;

  SamplingConfig config_;
  bool greedy_ = false;
  float inv_temperature_ = 1.0f;
  uint64_t step_ = 0;

  // Scratch, sized to the vocabulary once.
  int vocab_ = 0;
  std::vector<float> work_;       // penalised logits
  std::vector<float> weight_;     // exp((work - max) / T) where computed
  std::vector<uint32_t> counts_;  // history counts; all zero between calls
  std::vector<int> index_;        // the kept set (when not all tokens)
  std::vector<int> index2_;       // a boundary bucket's tokens
  std::vector<uint32_t> bucket_count_;
  std::vector<double> bucket_mass_;
  float max_ = 0.0f;
  bool all_kept_ = true;
  int kept_ = 0;
  double kept_mass_ = 0.0;
};

}  // namespace mind4
