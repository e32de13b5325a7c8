// The sampler against a textbook reference written here in double precision: penalties, then
// softmax(logits / T), then top-k, top-p, min-p, each by its definition on a fully sorted
// vocabulary (the sampler itself never sorts the vocabulary). Draws are checked with a
// chi-square test, and distribution() is compared with the reference value by value, on small
// vocabularies and on one of gpt-oss's size.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "mind4/sampler.h"

namespace mind4 {
namespace {

bool under_sanitizer() {
  return std::getenv("MIND4_UNDER_SANITIZER") != nullptr;
}

std::vector<double> reference_logits(const std::vector<float>& logits,
                                     const std::vector<int>& history, const SamplingConfig& c) {
  std::vector<double> x(logits.begin(), logits.end());
  std::vector<int> count(x.size(), 0);
  for (int t : history) ++count[t];
  for (size_t i = 0; i < x.size(); ++i) {
    if (count[i] == 0) continue;
    double r = c.repetition_penalty;
    x[i] = x[i] > 0 ? x[i] / r : x[i] * r;
    x[i] -= c.presence_penalty + c.frequency_penalty * count[i];
  }
  return x;
}

std::vector<double> reference_distribution(const std::vector<float>& logits,
                                           const std::vector<int>& history,
                                           const SamplingConfig& c) {
  std::vector<double> x = reference_logits(logits, history, c);
  const size_t n = x.size();
  std::vector<double> p(n, 0.0);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] > x[b]; });
  if (c.temperature == 0.0f) {
    p[order[0]] = 1.0;
    return p;
  }
  double m = x[order[0]], z = 0.0;
  for (size_t i = 0; i < n; ++i) z += p[i] = std::exp((x[i] - m) / c.temperature);
  for (double& v : p) v /= z;
  std::vector<bool> keep(n, true);
  auto renormalise = [&] {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += keep[i] ? p[i] : 0.0;
    for (size_t i = 0; i < n; ++i) p[i] = keep[i] ? p[i] / s : 0.0;
  };
  if (c.top_k > 0 && static_cast<size_t>(c.top_k) < n) {
    for (size_t j = c.top_k; j < n; ++j) keep[order[j]] = false;
    renormalise();
  }
  if (c.top_p < 1.0f) {
    double before = 0.0;  // mass of the more likely tokens
    for (size_t j = 0; j < n; ++j) {
      if (!keep[order[j]]) continue;
      if (before >= c.top_p) keep[order[j]] = false;
      before += p[order[j]];
    }
    renormalise();
  }
  if (c.min_p > 0.0f) {
    double pmax = p[order[0]];
    for (size_t i = 0; i < n; ++i)
      if (p[i] < c.min_p * pmax) keep[i] = false;
    renormalise();
  }
  return p;
}

std::vector<float> random_logits(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Draws `draws` tokens and returns the chi-square statistic against p; tokens with p = 0 must
// never be drawn.
void expect_draws_follow(Sampler& sampler, const std::vector<float>& logits,
                         const std::vector<int>& history, const std::vector<double>& p) {
  const int draws = under_sanitizer() ? 40000 : 200000;
  std::vector<int> seen(p.size(), 0);
  for (int i = 0; i < draws; ++i) ++seen[sampler.sample(logits, history)];
  double chi2 = 0.0;
  int bins = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      EXPECT_EQ(seen[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    double expected = p[i] * draws;
    chi2 += (seen[i] - expected) * (seen[i] - expected) / expected;
    ++bins;
  }
  // Mean dof, sd sqrt(2 dof): 6 sd above is far in the tail (p < 1e-6) for a correct sampler,
  // while a sampler off by 1% on a 10%-token moves chi2 by (0.001 * draws)^2 / (0.1 * draws) = 2.
  // The total-variation distance gives a second, easily read bound.
  int dof = std::max(bins - 1, 1);
  EXPECT_LT(chi2, dof + 6.0 * std::sqrt(2.0 * dof)) << "bins " << bins;
  double tv = 0.0;
  for (size_t i = 0; i < p.size(); ++i) tv += std::fabs(seen[i] / double(draws) - p[i]);
  EXPECT_LT(tv / 2, under_sanitizer() ? 0.03 : 0.012);
}

struct Case {
  const char* name;
  SamplingConfig config;
  std::vector<int> history;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  auto add = [&](const char* name, auto edit, std::vector<int> history = {}) {
    SamplingConfig c;
    c.seed = 1234;
    edit(c);
    out.push_back({name, c, std::move(history)});
  };
  add("plain", [](SamplingConfig&) {});
  add("temperature", [](SamplingConfig& c) { c.temperature = 0.6f; });
  add("hot", [](SamplingConfig& c) { c.temperature = 1.8f; });
  add("top_k", [](SamplingConfig& c) {
    c.top_k = 5;
    c.temperature = 0.8f;
  });
  add("top_p", [](SamplingConfig& c) {
    c.top_p = 0.8f;
    c.temperature = 1.3f;
  });
  add("min_p", [](SamplingConfig& c) {
    c.min_p = 0.1f;
    c.temperature = 0.9f;
  });
  add("top_k_top_p", [](SamplingConfig& c) {
    c.top_k = 8;
    c.top_p = 0.7f;
  });
  add("everything",
      [](SamplingConfig& c) {
        c.temperature = 0.8f;
        c.top_k = 12;
        c.top_p = 0.9f;
        c.min_p = 0.05f;
        c.repetition_penalty = 1.3f;
        c.presence_penalty = 0.5f;
        c.frequency_penalty = 0.2f;
      },
      {0, 3, 3, 7, 11, 11, 11, 2});
  return out;
}

TEST(SamplerDistribution, DrawsFollowTheReferenceDistribution) {
  std::vector<float> logits = random_logits(24, 99, 1.5f);
  logits[5] = -INFINITY;  // a masked token
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Sampler sampler(c.config);
    std::vector<double> p = reference_distribution(logits, c.history, c.config);
    expect_draws_follow(sampler, logits, c.history, p);
  }
}

TEST(SamplerDistribution, DrawTestDetectsAWrongDistribution) {
  // The oracle must be able to fail: draws at temperature 1 against the T = 0.8 distribution.
  std::vector<float> logits = random_logits(24, 99, 1.5f);
  SamplingConfig hot;
  SamplingConfig cold;
  cold.temperature = 0.8f;
  Sampler sampler(hot);
  std::vector<double> p = reference_distribution(logits, {}, cold);
  const int draws = under_sanitizer() ? 40000 : 200000;
  std::vector<int> seen(p.size(), 0);
  for (int i = 0; i < draws; ++i) ++seen[sampler.sample(logits, {})];
  double chi2 = 0.0;
  for (size_t i = 0; i < p.size(); ++i)
    chi2 += (seen[i] - p[i] * draws) * (seen[i] - p[i] * draws) / (p[i] * draws);
  EXPECT_GT(chi2, 23 + 6.0 * std::sqrt(46.0));
}

void expect_distribution_matches(const std::vector<float>& logits, const Case& c) {
  Sampler sampler(c.config);
  std::vector<double> got(logits.size());
  sampler.distribution(logits, c.history, got);
  std::vector<double> want = reference_distribution(logits, c.history, c.config);
  size_t mismatched_support = 0;
  double worst = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if ((got[i] == 0.0) != (want[i] == 0.0)) ++mismatched_support;
    worst = std::max(worst, std::fabs(got[i] - want[i]));
  }
  EXPECT_EQ(mismatched_support, 0u);
  EXPECT_LT(worst, 2e-6);
  EXPECT_EQ(sampler.step(), 0u) << "distribution() must not consume a draw";
}

TEST(SamplerDistribution, ExactOnSmallVocabulary) {
  std::vector<float> logits = random_logits(24, 7, 2.0f);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    expect_distribution_matches(logits, c);
  }
}

TEST(SamplerDistribution, ExactOnGptOssVocabulary) {
  // 201088 tokens with logits spread like a language model's (a few large, a long tail), so the
  // bucketed top-k/top-p selection is exercised on the size it is built for.
  const size_t n = under_sanitizer() ? 50000 : 201088;
  std::vector<float> logits = random_logits(n, 3, 2.5f);
  for (int i = 0; i < 40; ++i) logits[(i * 7919) % n] += 9.0f;
  std::vector<Case> big;
  auto add = [&](const char* name, auto edit) {
    SamplingConfig c;
    edit(c);
    big.push_back({name, c, {1, 2, 3, 7919, 7919}});
  };
  add("top_k_50", [](SamplingConfig& c) { c.top_k = 50; });
  add("top_k_5000", [](SamplingConfig& c) {
    c.top_k = 5000;
    c.temperature = 0.7f;
  });
  add("top_p_0.9", [](SamplingConfig& c) { c.top_p = 0.9f; });
  add("top_p_0.5_hot", [](SamplingConfig& c) {
    c.top_p = 0.5f;
    c.temperature = 3.0f;
  });
  add("min_p", [](SamplingConfig& c) { c.min_p = 0.02f; });
  add("all", [](SamplingConfig& c) {
    c.top_k = 1000;
    c.top_p = 0.95f;
    c.min_p = 0.001f;
    c.temperature = 1.2f;
    c.repetition_penalty = 1.1f;
    c.frequency_penalty = 0.3f;
  });
  for (const Case& c : big) {
    SCOPED_TRACE(c.name);
    expect_distribution_matches(logits, c);
  }
}

TEST(SamplerDistribution, GreedyPicksLowestIdOnTies) {
  SamplingConfig c;
  c.temperature = 0.0f;
  c.top_p = 0.3f;  // filters cannot change the argmax
  Sampler sampler(c);
  std::vector<float> logits = {1.0f, 3.0f, -INFINITY, 3.0f, 2.0f};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sampler.sample(logits, {}), 1);
  // The penalty lowers token 1, so the tie breaks to 3.
  SamplingConfig p = c;
  p.presence_penalty = 0.5f;
  Sampler penalised(p);
  std::vector<int> history = {1};
  EXPECT_EQ(penalised.sample(logits, history), 3);
}

TEST(SamplerDistribution, TopPKeepsTheCrossingToken) {
  // p = 0.5, 0.3, 0.15, 0.05.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  auto kept = [&](float top_p) {
    SamplingConfig c;
    c.top_p = top_p;
    Sampler s(c);
    std::vector<double> probs(4);
    s.distribution(logits, {}, probs);
    int n = 0;
    for (double v : probs) n += v > 0;
    return std::make_pair(n, probs);
  };
  EXPECT_EQ(kept(0.3f).first, 1);   // 0.5 already crosses 0.3
  EXPECT_EQ(kept(0.51f).first, 2);  // 0.5 < 0.51: the next token (0.3) crosses and is kept
  EXPECT_EQ(kept(0.79f).first, 2);
  EXPECT_EQ(kept(0.81f).first, 3);
  EXPECT_EQ(kept(0.96f).first, 4);
  auto [n, probs] = kept(0.79f);
  EXPECT_NEAR(probs[0], 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(probs[1], 0.3 / 0.8, 1e-6);
}

TEST(SamplerDistribution, MinPIsRelativeToTheMostLikelyToken) {
  // Weights relative to the maximum: 1, 0.5, 0.1, 0.09.
  std::vector<float> logits = {0.0f, std::log(0.5f), std::log(0.1f), std::log(0.09f)};
  auto kept = [&](float min_p, float temperature) {
    SamplingConfig c;
    c.min_p = min_p;
    c.temperature = temperature;
    Sampler s(c);
    std::vector<double> probs(4);
    s.distribution(logits, {}, probs);
    int n = 0;
    for (double v : probs) n += v > 0;
    return n;
  };
  EXPECT_EQ(kept(0.095f, 1.0f), 3);
  EXPECT_EQ(kept(0.2f, 1.0f), 2);
  EXPECT_EQ(kept(0.6f, 1.0f), 1);
  EXPECT_EQ(kept(0.05f, 1.0f), 4);
  // Temperature applies first: at T = 2 the ratios are square roots (1, 0.71, 0.32, 0.3).
  EXPECT_EQ(kept(0.31f, 2.0f), 3);
  EXPECT_EQ(kept(1.0f, 2.0f), 1);
}

}  // namespace
}  // namespace mind4
