// The sampler's hot path. It never sorts the vocabulary: top-k and top-p find their boundary
// with a histogram over the bit patterns of non-negative floats (whose integer order equals their
// numeric order), then order only the tokens of the one bucket the boundary falls in.
#include "mind4/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "mind4/status.h"
#include "sampler/philox.h"
#include "sampler/sampler_math.h"

namespace mind4 {
namespace {

constexpr int kTopKBuckets = 4096;  // key = bits(max - logit) >> 19: exponent + 4 mantissa bits
constexpr int kTopPBuckets = 2048;  // key = (bits(1.0f) - bits(weight)) >> 19, weight in [0, 1]

inline uint32_t float_bits(float x) {
  return std::bit_cast<uint32_t>(x);
}

inline int top_k_key(float distance) {  // distance >= 0 (+inf for masked tokens)
  return static_cast<int>(float_bits(distance) >> 19);
}

inline int top_p_key(float weight) {  // weight in [0, 1]
  return static_cast<int>((0x3F800000u - float_bits(weight)) >> 19);
}

// Indices that include the k largest of values[0, n) (k <= n / 128), found without ordering the
// array: block maxima bound the k-th largest value from below (with at least k blocks, the k-th
// largest block maximum v has k values >= v, so nothing below v can be in the top k). One
// vectorised pass, a selection over the n / B maxima and a compare-only filter leave few indices.
// Returns how many were written to cand (>= k), or -1 when k is too large for the blocks to pay.
int top_candidates(const float* values, int n, int k, float* maxima, int* cand) {
  const int block = (n / (8 * k)) & ~7;
  if (block < 16) return -1;
  const int n_blocks = (n + block - 1) / block;
  for (int b = 0; b < n_blocks; ++b) {
    int begin = b * block;
    maxima[b] = sampler_math::max_of(values + begin, std::min(block, n - begin));
  }
  std::nth_element(maxima, maxima + (k - 1), maxima + n_blocks, std::greater<float>());
  return sampler_math::indices_at_least(values, n, maxima[k - 1], cand);
}

}  // namespace

void Sampler::validate(const SamplingConfig& c) {
  MIND4_CHECK(std::isfinite(c.temperature) && c.temperature >= 0.0f, Status::kInvalidArgument,
              "sampling.temperature must be a finite number >= 0 (0 = greedy), got ",
              c.temperature);
  MIND4_CHECK(c.top_k >= 0, Status::kInvalidArgument, "sampling.top_k must be >= 0 (0 = off), got ",
              c.top_k);
  MIND4_CHECK(c.top_p > 0.0f && c.top_p <= 1.0f, Status::kInvalidArgument,
              "sampling.top_p must be in (0, 1] (1 = off), got ", c.top_p);
  MIND4_CHECK(c.min_p >= 0.0f && c.min_p <= 1.0f, Status::kInvalidArgument,
              "sampling.min_p must be in [0, 1] (0 = off), got ", c.min_p);
  MIND4_CHECK(std::isfinite(c.repetition_penalty) && c.repetition_penalty > 0.0f,
              Status::kInvalidArgument,
              "sampling.repetition_penalty must be a finite number > 0 (1 = off), got ",
              c.repetition_penalty);
  MIND4_CHECK(std::isfinite(c.presence_penalty), Status::kInvalidArgument,
              "sampling.presence_penalty must be finite, got ", c.presence_penalty);
  MIND4_CHECK(std::isfinite(c.frequency_penalty), Status::kInvalidArgument,
              "sampling.frequency_penalty must be finite, got ", c.frequency_penalty);
}

Sampler::Sampler(SamplingConfig config) : config_(config) {
  validate(config_);
  // A temperature so small that 1/T overflows can only pick the argmax.
  greedy_ = config_.temperature == 0.0f || !std::isfinite(1.0f / config_.temperature);
  inv_temperature_ = greedy_ ? 1.0f : 1.0f / config_.temperature;
  bucket_count_.assign(kTopKBuckets, 0);
  bucket_mass_.assign(kTopPBuckets, 0.0);
}

double Sampler::uniform_at(uint64_t seed, uint64_t step) {
  philox::Counter c{static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), 0u, 0u};
  philox::Counter r = philox::block(c, philox::key_from_seed(seed));
  return philox::uniform_f64(r[0], r[1]);
}

int Sampler::prepare(std::span<const float> logits, std::span<const int> history) {
  MIND4_CHECK(!logits.empty(), Status::kInvalidArgument, "sampler: the logits are empty");
  MIND4_CHECK(logits.size() <= static_cast<size_t>(std::numeric_limits<int>::max()),
              Status::kInvalidArgument, "sampler: ", logits.size(), " logits is too many");
  const int n = static_cast<int>(logits.size());
  if (n != vocab_) {
    // Grows once to the vocabulary; a smaller vocabulary later reuses the capacity.
    work_.resize(n);
    weight_.resize(n);
    counts_.assign(n, 0);
    index_.resize(n);
    index2_.resize(n);
    vocab_ = n;
  }
  float* w = work_.data();
  const float* in = logits.data();
  bool bad = false;
  float m = sampler_math::copy_max(in, w, n, &bad);
  if (bad) {
    for (int i = 0; i < n; ++i) {
      MIND4_CHECK(!std::isnan(in[i]), Status::kInvalidArgument, "sampler: logit of token ", i,
                  " is NaN");
      MIND4_CHECK(in[i] < std::numeric_limits<float>::infinity(), Status::kInvalidArgument,
                  "sampler: logit of token ", i, " is +inf");
    }
  }
  for (size_t j = 0; j < history.size(); ++j) {
    MIND4_CHECK(history[j] >= 0 && history[j] < n, Status::kTokenOutOfRange, "sampler: history[", j,
                "] = ", history[j], " is outside the ", n, "-token vocabulary");
  }
  if (config_.has_penalties() && !history.empty()) {
    uint32_t* counts = counts_.data();
    for (int t : history) ++counts[t];
    const float rep = config_.repetition_penalty;
    const float presence = config_.presence_penalty;
    const float frequency = config_.frequency_penalty;
    int overflow = -1;
    for (int t : history) {
      uint32_t c = counts[t];
      if (c == 0) continue;  // already penalised (a repeated token) this call
      counts[t] = 0;
      float x = w[t];
      if (rep != 1.0f) x = x > 0.0f ? x / rep : x * rep;
      x -= presence + frequency * static_cast<float>(c);
      if (std::isnan(x) || x == std::numeric_limits<float>::infinity()) overflow = t;
      w[t] = x;
    }
    if (overflow >= 0) {
      throw Error(Status::kInvalidArgument,
                  detail::cat("sampler: the penalties push the logit of token ", overflow,
                              " out of range"));
    }
    m = sampler_math::max_of(w, n);
  }
  MIND4_CHECK(m > -std::numeric_limits<float>::infinity(), Status::kInvalidArgument,
              "sampler: every token is masked (all ", n, " logits are -inf)");
  max_ = m;
  return n;
}

int Sampler::argmax() const {
  const float* w = work_.data();
  // The first index holding the maximum: ties go to the lowest token id.
  for (int i = 0; i < vocab_; ++i)
    if (w[i] == max_) return i;
  return 0;
}

void Sampler::compute_weights_all() {
  kept_mass_ =
      sampler_math::exp_shifted(work_.data(), weight_.data(), vocab_, max_, inv_temperature_);
}

void Sampler::compute_weights_list(int n) {
  const float* w = work_.data();
  float* e = weight_.data();
  const int* idx = index_.data();
  double sum = 0.0;
  for (int j = 0; j < n; ++j) {
    int i = idx[j];
    float v = sampler_math::exp_neg((max_ - w[i]) * inv_temperature_);
    e[i] = v;
    sum += v;
  }
  kept_mass_ = sum;
}

void Sampler::select_top_k(int k) {
  const float* w = work_.data();
  auto before = [w](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
  int* cand = index2_.data();
  const int n_cand = top_candidates(w, vocab_, k, weight_.data(), cand);
  if (n_cand >= 0) {
    std::nth_element(cand, cand + (k - 1), cand + n_cand, before);
    std::copy(cand, cand + k, index_.data());
    kept_ = k;
    all_kept_ = false;
    return;
  }
  // Large k: a histogram over the distances from the maximum finds the boundary bucket.
  uint32_t* count = bucket_count_.data();
  std::fill(count, count + kTopKBuckets, 0u);
  for (int i = 0; i < vocab_; ++i) ++count[top_k_key(max_ - w[i])];
  int boundary = 0;
  uint32_t above = 0;  // tokens in buckets strictly before the boundary bucket
  while (above + count[boundary] < static_cast<uint32_t>(k)) above += count[boundary++];
  int* out = index_.data();
  int* edge = index2_.data();
  int n_out = 0, n_edge = 0;
  for (int i = 0; i < vocab_; ++i) {
    int key = top_k_key(max_ - w[i]);
    if (key < boundary)
      out[n_out++] = i;
    else if (key == boundary)
      edge[n_edge++] = i;
  }
  int need = k - n_out;
  std::nth_element(edge, edge + (need - 1), edge + n_edge, before);
  std::copy(edge, edge + need, out + n_out);
  kept_ = k;
  all_kept_ = false;
}

void Sampler::select_top_p(double top_p) {
  // Weights of the current set (all tokens or the top-k list) are in weight_, mass in kept_mass_.
  const float* w = work_.data();
  const float* e = weight_.data();
  double* mass = bucket_mass_.data();
  uint32_t* count = bucket_count_.data();
  std::fill(mass, mass + kTopPBuckets, 0.0);
  std::fill(count, count + kTopPBuckets, 0u);
  if (all_kept_) {
    // Tokens below tau = (1 - p) * mass / V together weigh less than (1 - p) * mass, so the
    // tokens at or above it hold at least p of the mass and the boundary is among them: the
    // rest are dropped by one compare-only pass (0.99 absorbs rounding).
    const float tau = static_cast<float>(0.99 * (1.0 - top_p) * kept_mass_ / vocab_);
    kept_ = sampler_math::indices_at_least(e, vocab_, tau, index_.data());
    all_kept_ = false;
  }
  const int n = kept_;
  const int* list = index_.data();
  for (int j = 0; j < n; ++j) {
    int i = list[j];
    int key = top_p_key(e[i]);
    mass[key] += e[i];
    ++count[key];
  }
  const double target = top_p * kept_mass_;
  int boundary = 0;
  double cum = 0.0;  // mass of the buckets before the boundary bucket
  int last_nonzero = 0;
  for (; boundary < kTopPBuckets; ++boundary) {
    if (mass[boundary] > 0.0) last_nonzero = boundary;
    if (cum + mass[boundary] >= target) break;
    cum += mass[boundary];
  }
  if (boundary == kTopPBuckets) {
    // Rounding left the running sum a hair below p * mass: keep every token with weight.
    boundary = last_nonzero;
    cum = 0.0;
    for (int b = 0; b < boundary; ++b) cum += mass[b];
  }
  // Collect the kept buckets and the boundary bucket. Writing into index_ while reading it is
  // safe: the write position never passes the read position.
  int* out = index_.data();
  int* edge = index2_.data();
  int n_out = 0, n_edge = 0;
  double kept_mass = cum;
  for (int j = 0; j < n; ++j) {
    int i = list[j];
    int key = top_p_key(e[i]);
    if (key < boundary)
      out[n_out++] = i;
    else if (key == boundary)
      edge[n_edge++] = i;
  }
  std::sort(edge, edge + n_edge,
            [w](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
  // Keep tokens while the mass before them is below the target: the crossing token is kept.
  for (int j = 0; j < n_edge; ++j) {
    if (cum >= target && n_out > 0) break;
    out[n_out++] = edge[j];
    cum += e[edge[j]];
    kept_mass = cum;
  }
  kept_ = n_out;
  kept_mass_ = kept_mass;
  all_kept_ = false;
}

void Sampler::select_min_p(float min_p) {
  // The maximum has weight exactly 1, so p_i >= min_p * p_max is weight_i >= min_p.
  const float* e = weight_.data();
  int* list = index_.data();
  double sum = 0.0;
  int n_out = 0;
  const int n = all_kept_ ? vocab_ : kept_;
  for (int j = 0; j < n; ++j) {
    int i = all_kept_ ? j : list[j];
    if (e[i] >= min_p) {
      list[n_out++] = i;
      sum += e[i];
    }
  }
  kept_ = n_out;
  kept_mass_ = sum;
  all_kept_ = false;
}

void Sampler::select() {
  all_kept_ = true;
  kept_ = vocab_;
  const int k = config_.top_k;
  if (k > 0 && k < vocab_) select_top_k(k);
  const bool top_p = config_.top_p < 1.0f;
  const bool min_p = config_.min_p > 0.0f;
  if (all_kept_ && !top_p && min_p) {
    // Only min-p: drop tokens that cannot pass before paying for their exp. The bound has slack;
    // the exact test on the weight follows.
    const float limit = -std::log(config_.min_p) * 1.0001f + 1e-4f;
    const float lowest = max_ - limit / inv_temperature_ - 1e-4f * std::fabs(max_);
    kept_ = sampler_math::indices_at_least(work_.data(), vocab_, lowest, index_.data());
    all_kept_ = false;
  }
  if (all_kept_)
    compute_weights_all();
  else
    compute_weights_list(kept_);
  if (top_p) select_top_p(config_.top_p);
  if (min_p) select_min_p(config_.min_p);
}

int Sampler::draw(double u) const {
  const float* e = weight_.data();
  const double target = u * kept_mass_;
  if (all_kept_) return sampler_math::find_cumulative(e, vocab_, target);
  double cum = 0.0;
  int last = -1;
  const int n = kept_;
  const int* list = index_.data();
  for (int j = 0; j < n; ++j) {
    int i = all_kept_ ? j : list[j];
    float v = e[i];
    if (v <= 0.0f) continue;
    cum += v;
    last = i;
    if (target < cum) return i;
  }
  // u * mass rounded up to the full (re-summed) mass: the last token with weight.
  return last;
}

int Sampler::sample(std::span<const float> logits, std::span<const int> history) {
  prepare(logits, history);
  const uint64_t step = step_++;
  if (greedy_) return argmax();
  select();
  return draw(uniform_at(config_.seed, step));
}

void Sampler::distribution(std::span<const float> logits, std::span<const int> history,
                           std::span<double> probs) {
  MIND4_CHECK(probs.size() == logits.size(), Status::kInvalidArgument,
              "sampler: distribution output has ", probs.size(), " entries for ", logits.size(),
              " logits");
  prepare(logits, history);
  std::fill(probs.begin(), probs.end(), 0.0);
  if (greedy_) {
    probs[argmax()] = 1.0;
    return;
  }
  select();
  for (int j = 0; j < kept_; ++j) {
    int i = all_kept_ ? j : index_[j];
    probs[i] = weight_[i] / kept_mass_;
  }
}

void Sampler::processed_logits(std::span<const float> logits, std::span<const int> history,
                               std::span<float> out) {
  MIND4_CHECK(out.size() == logits.size(), Status::kInvalidArgument,
              "sampler: processed_logits output has ", out.size(), " entries for ", logits.size(),
              " logits");
  int n = prepare(logits, history);
  for (int i = 0; i < n; ++i) out[i] = greedy_ ? work_[i] : work_[i] * inv_temperature_;
}

double Sampler::log_sum_exp(const float* values, float max, float scale) const {
  // log sum_i exp(scale * (v_i - max)) + scale * max, with weight_ as the exp scratch.
  double sum =
      sampler_math::exp_shifted(values, const_cast<float*>(weight_.data()), vocab_, max, scale);
  return std::log(sum) + static_cast<double>(scale) * max;
}

void Sampler::top_n_by_value(const float* values, int n, std::vector<std::pair<int, float>>& out) {
  // The n largest values (then lowest ids) without sorting the vocabulary. weight_ is free here.
  int* idx = index2_.data();
  int n_cand = top_candidates(values, vocab_, n, weight_.data(), idx);
  if (n_cand < 0) {
    for (int i = 0; i < vocab_; ++i) idx[i] = i;
    n_cand = vocab_;
  }
  std::partial_sort(idx, idx + n, idx + n_cand, [values](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  out.clear();
  for (int j = 0; j < n; ++j) out.emplace_back(idx[j], values[idx[j]]);
}

SampleResult Sampler::sample_with_logprobs(std::span<const float> logits,
                                           std::span<const int> history, int top_n,
                                           LogprobMode mode) {
  SampleResult result;
  sample_with_logprobs(logits, history, top_n, mode, result);
  return result;
}

void Sampler::sample_with_logprobs(std::span<const float> logits, std::span<const int> history,
                                   int top_n, LogprobMode mode, SampleResult& out) {
  MIND4_CHECK(top_n >= 0, Status::kInvalidArgument, "sampler: top_n must be >= 0, got ", top_n);
  out.token = sample(logits, history);
  out.top.clear();
  const int n_top = std::min(top_n, vocab_);
  if (mode == LogprobMode::kSampling) {
    if (greedy_) {
      out.logprob = 0.0f;
      if (n_top > 0) out.top.emplace_back(out.token, 0.0f);
      return;
    }
    // The kept set and its weights are still in the scratch from sample().
    const float* e = weight_.data();
    const double log_mass = std::log(kept_mass_);
    out.logprob = static_cast<float>(std::log(static_cast<double>(e[out.token])) - log_mass);
    int m = std::min(n_top, kept_);
    int* list = index2_.data();
    for (int j = 0; j < kept_; ++j) list[j] = all_kept_ ? j : index_[j];
    const float* w = work_.data();
    std::partial_sort(list, list + m, list + kept_,
                      [w](int a, int b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
    for (int j = 0; j < m; ++j) {
      out.top.emplace_back(
          list[j], static_cast<float>(std::log(static_cast<double>(e[list[j]])) - log_mass));
    }
    return;
  }
  const float* values = mode == LogprobMode::kRaw ? logits.data() : work_.data();
  const float scale = mode == LogprobMode::kRaw ? 1.0f : inv_temperature_;
  float max = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < vocab_; ++i) max = values[i] > max ? values[i] : max;
  const double lse = log_sum_exp(values, max, scale);
  out.logprob = static_cast<float>(static_cast<double>(scale) * values[out.token] - lse);
  if (n_top > 0) {
    top_n_by_value(values, n_top, out.top);
    for (auto& [token, value] : out.top)
      value = static_cast<float>(static_cast<double>(scale) * value - lse);
  }
}

}  // namespace mind4
