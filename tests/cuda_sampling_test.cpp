// Sampling on the GPU (src/cuda/sampling.cu) against the CPU sampler, on fresh random logits of
// several vocabulary sizes (201088 = o200k included) and configs, a batch of sequences per launch,
// outputs poisoned first. The GPU walks the kept tokens in token-id order; the CPU sampler walks
// them in id order only when neither top-k nor top-p is on (otherwise in its selection's order),
// so the checks are:
//   - always: the GPU's token has positive probability in the CPU sampler's exact distribution
//     (Sampler::distribution, double), the GPU's kept count equals the CPU's, and the Philox draw
//     u = Sampler::uniform_at(seed, step) lies in the token's cumulative interval of that
//     distribution taken in id order (within 1e-7: the GPU sums fixed-point weights, see
//     sampling.cu);
//   - without top-k / top-p: the same token as Sampler::sample() (a draw within 1e-7 of an
//     interval boundary, where the two sums' rounding may legitimately disagree, is counted and
//     excused);
//   - the logprob against a double-precision log-softmax of the raw / processed / kept
//     distribution.
// And through the engine: Context::sample on the CUDA line (logits left on the device) against the
// CPU Sampler on the same context's logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mind4/model.h"
#include "mind4/sampler.h"
#include "mind4/status.h"

#ifdef MIND4_HAVE_CUDA
#include "cuda_test_util.h"
#endif

namespace mind4 {
namespace {

#ifdef MIND4_HAVE_CUDA

using cuda_test::download;
using cuda_test::poisoned;
using cuda_test::upload;

struct GpuSampleCase {
  const char* name;
  SamplingConfig config;
  LogprobMode mode;
  bool penalties;
};

std::vector<GpuSampleCase> gpu_sample_cases() {
  auto cfg = [](float t, int k, float p, float min_p) {
    SamplingConfig c;
    c.temperature = t;
    c.top_k = k;
    c.top_p = p;
    c.min_p = min_p;
    return c;
  };
  SamplingConfig pen = cfg(0.9f, 0, 1.0f, 0.0f);
  pen.repetition_penalty = 1.3f;
  pen.presence_penalty = 0.4f;
  pen.frequency_penalty = 0.25f;
  SamplingConfig pen_filtered = cfg(1.1f, 64, 0.9f, 0.0f);
  pen_filtered.repetition_penalty = 0.8f;
  pen_filtered.frequency_penalty = -0.3f;
  return {
      {"t1", cfg(1.0f, 0, 1.0f, 0.0f), LogprobMode::kRaw, false},
      {"t0.6", cfg(0.6f, 0, 1.0f, 0.0f), LogprobMode::kProcessed, false},
      {"t1.7", cfg(1.7f, 0, 1.0f, 0.0f), LogprobMode::kSampling, false},
      {"greedy", cfg(0.0f, 0, 1.0f, 0.0f), LogprobMode::kProcessed, false},
      {"min_p", cfg(1.0f, 0, 1.0f, 0.05f), LogprobMode::kSampling, false},
      {"top_k1", cfg(1.0f, 1, 1.0f, 0.0f), LogprobMode::kSampling, false},
      {"top_k50", cfg(0.8f, 50, 1.0f, 0.0f), LogprobMode::kSampling, false},
      {"top_p0.9", cfg(1.0f, 0, 0.9f, 0.0f), LogprobMode::kSampling, false},
      {"top_p0.3", cfg(0.7f, 0, 0.3f, 0.0f), LogprobMode::kProcessed, false},
      {"k_p_minp", cfg(1.3f, 200, 0.8f, 0.02f), LogprobMode::kSampling, false},
      {"penalties", pen, LogprobMode::kProcessed, true},
      {"penalties_filtered", pen_filtered, LogprobMode::kSampling, true},
  };
}

// log_softmax(scale * v)[tok] in double.
double ref_log_softmax(const std::vector<float>& v, double scale, int tok) {
  double m = -INFINITY;
  for (float x : v) m = std::max(m, scale * x);
  double s = 0.0;
  for (float x : v) s += std::exp(scale * x - m);
  return scale * v[tok] - m - std::log(s);
}

class CudaSampling : public ::testing::TestWithParam<int> {
  void SetUp() override { MIND4_REQUIRE_GPU(); }
};

TEST_P(CudaSampling, AgreesWithTheCpuSamplerOnRandomLogits) {
  const int V = GetParam();
  constexpr int kJobs = 6;
  constexpr double kTol = 1e-7;
  std::mt19937_64 rng(uint64_t(V) * 7919);
  int excused = 0, same_token = 0;
  for (const GpuSampleCase& tc : gpu_sample_cases()) {
    SCOPED_TRACE(std::string(tc.name) + " V=" + std::to_string(V));
    // Fresh logits per case: a spread like a language model's (a few large, a long tail), some
    // exact ties, some masked tokens.
    std::vector<float> logits(size_t(kJobs) * V);
    std::normal_distribution<float> normal(0.0f, 2.5f);
    for (float& x : logits) x = normal(rng);
    for (int j = 0; j < kJobs; ++j) {
      float* row = logits.data() + int64_t(j) * V;
      for (int h = 0; h < 8; ++h) row[rng() % V] += 9.0f + float(h);
      row[rng() % V] = row[0];  // a tie in the tail
      // A tie at the top: greedy and top-k 1 must take the lower id, top-p the ties in id order.
      row[rng() % V] = 21.0f;
      row[rng() % V] = 21.0f;
      row[rng() % V] = -INFINITY;
    }
    std::vector<std::vector<int>> history(kJobs);
    std::vector<int> pairs;  // (token, count) per job, each token once
    std::vector<cuda::SampleJob> jobs(kJobs);
    for (int j = 0; j < kJobs; ++j) {
      jobs[j] = {j, 1000 + uint64_t(j) * 77 + rng() % 1000, rng() % 100000, int(pairs.size() / 2),
                 int(pairs.size() / 2)};
      if (!tc.penalties) continue;
      std::vector<int> count(V, 0);
      for (int h = 0; h < 40; ++h) {
        // Repeats of a few tokens, the current top tokens among them.
        const int t = h % 3 == 0 ? int(std::max_element(logits.begin() + int64_t(j) * V,
                                                        logits.begin() + int64_t(j + 1) * V) -
                                       (logits.begin() + int64_t(j) * V))
                                 : int(rng() % V);
        history[j].push_back(t);
        ++count[t];
      }
      for (int t = 0; t < V; ++t)
        if (count[t] > 0) pairs.insert(pairs.end(), {t, count[t]});
      jobs[j].pen_end = int(pairs.size() / 2);
    }
    const SamplingConfig& c = tc.config;
    const cuda::SampleParams p = cuda::sample_params(c, tc.mode);
    auto d_logits = upload(logits);
    auto d_jobs = upload(jobs);
    auto d_pairs = upload(pairs.empty() ? std::vector<int>{0, 0} : pairs);
    // A job's blocks: one, the portable cluster of 8, the largest, and the launcher's own choice;
    // the tokens must not depend on it (exact integer masses), the logprobs only in rounding.
    std::vector<cuda::SampleOut> first_out;
    for (const int ranks : {1, 8, cuda::sample_max_ranks(), 0}) {
      SCOPED_TRACE("ranks " + std::to_string(ranks));
      auto d_work = poisoned(size_t(kJobs) * V * 4);
      auto d_out = poisoned(kJobs * sizeof(cuda::SampleOut));
      cuda::sample_tokens(d_logits.data<float>(), V, d_jobs.data<cuda::SampleJob>(), kJobs,
                          d_pairs.data<int2>(), p, d_work.data<float>(),
                          d_out.data<cuda::SampleOut>(), nullptr, ranks);
      const auto out = download<cuda::SampleOut>(d_out, kJobs);
      if (first_out.empty()) first_out = out;
      for (int j = 0; j < kJobs; ++j) {
        EXPECT_EQ(out[j].token, first_out[j].token)
            << "job " << j << ": another token than one block drew";
        EXPECT_EQ(out[j].kept, first_out[j].kept) << "job " << j;
      }

      for (int j = 0; j < kJobs; ++j) {
        const std::vector<float> row(logits.begin() + int64_t(j) * V,
                                     logits.begin() + int64_t(j + 1) * V);
        ASSERT_EQ(out[j].status, cuda::kSampleOk) << "job " << j;
        const int tok = out[j].token;
        ASSERT_TRUE(tok >= 0 && tok < V) << "job " << j << " token " << tok;
        SamplingConfig sc = c;
        sc.seed = jobs[j].seed;
        Sampler cpu(sc);
        std::vector<double> probs(V);
        cpu.distribution(row, history[j], probs);
        int kept = 0;
        for (double q : probs) kept += q > 0.0;
        EXPECT_GT(probs[tok], 0.0)
            << "job " << j << ": token " << tok << " is outside the kept set";
        EXPECT_EQ(out[j].kept, kept) << "job " << j;
        cpu.set_step(jobs[j].step);
        const int cpu_tok = cpu.sample(row, history[j]);
        if (p.greedy) {
          EXPECT_EQ(tok, cpu_tok) << "job " << j;
        } else {
          const double u = Sampler::uniform_at(jobs[j].seed, jobs[j].step);
          double lo = 0.0;
          for (int i = 0; i < tok; ++i) lo += probs[i];
          const double hi = lo + probs[tok];
          EXPECT_TRUE(u >= lo - kTol && u <= hi + kTol)
              << "job " << j << ": u = " << u << " outside [" << lo << ", " << hi << ") of token "
              << tok;
          if (c.top_k == 0 && c.top_p >= 1.0f) {
            const bool near_edge = std::abs(u - lo) < kTol || std::abs(u - hi) < kTol;
            if (tok != cpu_tok && near_edge)
              ++excused;
            else
              EXPECT_EQ(tok, cpu_tok) << "job " << j << ": u = " << u;
            same_token += tok == cpu_tok;
          }
        }
        // The logprob in double.
        std::vector<float> processed(V);
        cpu.processed_logits(row, history[j], processed);
        double ref = 0.0;
        if (tc.mode == LogprobMode::kRaw)
          ref = ref_log_softmax(row, 1.0, tok);
        else if (tc.mode == LogprobMode::kProcessed)
          ref = ref_log_softmax(processed, 1.0, tok);
        else
          ref = p.greedy ? 0.0 : std::log(probs[tok]);
        EXPECT_NEAR(out[j].logprob, ref, 2e-4 + 1e-5 * std::abs(ref)) << "job " << j;
      }
    }
  }
  EXPECT_GT(same_token, 0);
  if (excused > 0)
    std::printf("V=%d: %d draws within %g of a boundary excused\n", V, excused, kTol);
}

INSTANTIATE_TEST_SUITE_P(Vocab, CudaSampling, ::testing::Values(7, 1000, 32768, 201088));

TEST(CudaSamplingErrors, BadLogitsAreReportedPerJob) {
  MIND4_REQUIRE_GPU();
  const int V = 4096;
  std::vector<float> logits(3 * size_t(V), 0.5f);
  logits[17] = std::numeric_limits<float>::quiet_NaN();   // job 0: NaN
  for (int i = 0; i < V; ++i) logits[V + i] = -INFINITY;  // job 1: all masked
  std::vector<cuda::SampleJob> jobs = {{0, 1, 0, 0, 0}, {1, 1, 0, 0, 0}, {2, 1, 0, 0, 0}};
  auto d_logits = upload(logits);
  auto d_jobs = upload(jobs);
  auto d_out = poisoned(3 * sizeof(cuda::SampleOut));
  cuda::sample_tokens(d_logits.data<float>(), V, d_jobs.data<cuda::SampleJob>(), 3, nullptr, {},
                      nullptr, d_out.data<cuda::SampleOut>(), nullptr);
  const auto out = download<cuda::SampleOut>(d_out, 3);
  EXPECT_EQ(out[0].status, cuda::kSampleBadLogit);
  EXPECT_EQ(out[1].status, cuda::kSampleAllMasked);
  EXPECT_EQ(out[2].status, cuda::kSampleOk);
  EXPECT_EQ(out[2].kept, V);  // all equal: every token kept
}

// store_logit_rows: rows go to their slots exactly, rows marked -1 nowhere, other slots keep
// their bytes; 16-byte words (V % 4 == 0, aligned) and floats (odd V, or a store 4 bytes off).
TEST(CudaLogitStore, CopiesEachRowToItsSlot) {
  MIND4_REQUIRE_GPU();
  std::mt19937 rng(20261126);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (auto [V, offset] : {std::pair{201088, 0}, {1001, 0}, {1000, 1}, {4, 0}}) {
    const int L = 3, slots = 5;
    std::vector<float> logits(size_t(L) * V);
    for (float& v : logits) v = normal(rng);
    const std::vector<int> dest = {3, -1, 0};
    auto d_logits = upload(logits);
    auto d_dest = upload(dest);
    auto d_store = poisoned((size_t(slots) * V + offset) * 4);
    float* store = d_store.data<float>() + offset;
    cuda::store_logit_rows(d_logits.data<float>(), d_dest.data<int>(), L, V, store, nullptr);
    const auto got = download<float>(d_store, size_t(slots) * V + offset);
    for (int slot = 0; slot < slots; ++slot)
      for (int i = 0; i < V; ++i) {
        const float g = got[offset + size_t(slot) * V + i];
        const int row = slot == 3 ? 0 : slot == 0 ? 2 : -1;
        if (row >= 0)
          ASSERT_EQ(g, logits[size_t(row) * V + i]) << "V=" << V << " slot " << slot << " i " << i;
        else
          ASSERT_TRUE(std::isnan(g)) << "V=" << V << " untouched slot " << slot << " i " << i;
      }
  }
}

// Context::sample on the CUDA line against the CPU Sampler on the same context's logits.
TEST(CudaSamplingContext, ContextSampleMatchesTheCpuSampler) {
  MIND4_REQUIRE_GPU();
  Config cfg;
  cfg.paths.checkpoint = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/yarn_mxfp4_gqa";
  cfg.execution.backend = Backend::kCuda;
  cfg.execution.dtype = ActivationDType::kFloat32;
  auto model = Model::load(cfg);
  const int V = model->config().vocab_size;
  Context ctx(model, {.context_length = 64, .max_sequences = 4, .host_logits = false});
  std::vector<int> seqs;
  for (int s = 0; s < 4; ++s) {
    seqs.push_back(ctx.new_sequence());
    std::vector<int> prompt;
    for (int i = 0; i < 5 + s; ++i) prompt.push_back((i * 31 + s * 7 + 3) % V);
    ctx.append(seqs.back(), prompt);
  }
  ctx.process();
  SamplingConfig c;
  c.temperature = 0.9f;
  c.repetition_penalty = 1.2f;
  for (int step = 0; step < 4; ++step) {
    std::vector<SampleRequest> req;
    for (int s = 0; s < 4; ++s) req.push_back({seqs[s], 11 + uint64_t(s), uint64_t(step)});
    std::vector<SampledToken> got(req.size(), SampledToken{-7, NAN});
    ctx.sample(req, c, LogprobMode::kRaw, got);
    for (int s = 0; s < 4; ++s) {
      SamplingConfig sc = c;
      sc.seed = req[s].seed;
      Sampler cpu(sc);
      cpu.set_step(req[s].step);
      const auto history = ctx.tokens(seqs[s]);
      SampleResult ref =
          cpu.sample_with_logprobs(ctx.logits(seqs[s]), history, 0, LogprobMode::kRaw);
      EXPECT_EQ(got[s].token, ref.token) << "seq " << s << " step " << step;
      EXPECT_NEAR(got[s].logprob, ref.logprob, 1e-4) << "seq " << s << " step " << step;
      ctx.append(seqs[s], std::span<const int>(&got[s].token, 1));
    }
    ctx.process();
  }
  // Greedy through the engine: the argmax of the downloaded logits.
  SamplingConfig g;
  g.temperature = 0.0f;
  std::vector<SampleRequest> req = {{seqs[0], 0, 0}};
  std::vector<SampledToken> got(1);
  ctx.sample(req, g, LogprobMode::kSampling, got);
  const auto l = ctx.logits(seqs[0]);
  EXPECT_EQ(got[0].token, int(std::max_element(l.begin(), l.end()) - l.begin()));
  EXPECT_EQ(got[0].logprob, 0.0f);
  EXPECT_THROW(ctx.sample(req, g, LogprobMode::kRaw, std::span<SampledToken>()), Error);
}

// Context::append_sampled on the CUDA line: each token is drawn on the GPU into its own step's
// input. The draws must be sample()'s and the CPU Sampler's on the logits before them, the steps
// must see the
// drawn tokens (the logits afterwards are the CPU line's, fed the same tokens), and the tokens
// must not depend on whether the host reads anything between steps.
TEST(CudaSamplingContext, TokensDrawnIntoTheirStepsMatchTheCpuLine) {
  MIND4_REQUIRE_GPU();
  Config cfg;
  cfg.paths.checkpoint = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/yarn_mxfp4_gqa";
  auto cpu_model = Model::load(cfg);
  cfg.execution.backend = Backend::kCuda;
  cfg.execution.dtype = ActivationDType::kFloat32;
  auto gpu_model = Model::load(cfg);
  const int V = gpu_model->config().vocab_size, S = 3, steps = 12;
  // No top-k or top-p: with them the CPU sampler walks its kept tokens in another order than
  // the GPU (the same law, not the same sample; docs/cuda.md), so the tokens would differ.
  SamplingConfig c;
  c.temperature = 0.9f;
  c.min_p = 0.02f;
  auto prompt = [&](int s) {
    std::vector<int> p;
    for (int i = 0; i < 4 + s; ++i) p.push_back((i * 29 + s * 11 + 2) % V);
    return p;
  };
  // Phase 1: the logits read before each draw, the CPU Sampler as the reference.
  Context gpu(gpu_model, {.context_length = 64, .max_sequences = S, .host_logits = false});
  Context cpu(cpu_model, {.context_length = 64, .max_sequences = S});
  std::vector<int> g, h;
  for (int s = 0; s < S; ++s) {
    g.push_back(gpu.new_sequence());
    h.push_back(cpu.new_sequence());
    gpu.append(g[s], prompt(s));
    cpu.append(h[s], prompt(s));
  }
  gpu.process();
  cpu.process();
  std::vector<std::vector<int>> drawn_tokens(S);
  for (int step = 0; step < steps; ++step) {
    std::vector<SampleRequest> req;
    std::vector<SampleResult> ref(S);
    for (int s = 0; s < S; ++s) {
      req.push_back({g[s], 5 + uint64_t(s), uint64_t(step)});
      SamplingConfig sc = c;
      sc.seed = req[s].seed;
      Sampler sampler(sc);
      sampler.set_step(req[s].step);
      ref[s] =
          sampler.sample_with_logprobs(gpu.logits(g[s]), gpu.tokens(g[s]), 0, LogprobMode::kRaw);
    }
    std::vector<SampledToken> sampled(S);
    gpu.sample(req, c, LogprobMode::kRaw, sampled);
    gpu.append_sampled(req, c, LogprobMode::kRaw);
    gpu.process();
    for (int s = 0; s < S; ++s) {
      const SampledToken t = gpu.drawn(g[s]);
      EXPECT_EQ(sampled[s].token, ref[s].token) << "sample(): seq " << s << " step " << step;
      EXPECT_EQ(t.token, sampled[s].token) << "seq " << s << " step " << step;
      EXPECT_EQ(t.token, ref[s].token) << "seq " << s << " step " << step;
      EXPECT_NEAR(t.logprob, ref[s].logprob, 1e-4) << "seq " << s << " step " << step;
      EXPECT_EQ(gpu.tokens(g[s]).back(), t.token);
      EXPECT_EQ(gpu.processed(g[s]), int(gpu.tokens(g[s]).size()));
      drawn_tokens[s].push_back(t.token);
      cpu.append(h[s], std::span<const int>(&t.token, 1));
    }
    cpu.process();
  }
  for (int s = 0; s < S; ++s) {
    auto lg = gpu.logits(g[s]), lc = cpu.logits(h[s]);
    double worst = 0, top = 0;
    for (int v = 0; v < V; ++v) {
      worst = std::max(worst, double(std::abs(lg[v] - lc[v])));
      top = std::max(top, double(std::abs(lc[v])));
    }
    EXPECT_LE(worst, 1e-3 * top) << "seq " << s;
  }
  // Phase 2: nothing read between steps but the drawn tokens (the GPU runs ahead of the host);
  // the same draws (seeds and steps) as phase 1 must come out.
  Context ahead(gpu_model, {.context_length = 64, .max_sequences = S, .host_logits = false});
  std::vector<int> a;
  for (int s = 0; s < S; ++s) {
    a.push_back(ahead.new_sequence());
    ahead.append(a[s], prompt(s));
  }
  ahead.process();
  for (int step = 0; step < steps; ++step) {
    std::vector<SampleRequest> req;
    for (int s = 0; s < S; ++s) req.push_back({a[s], 5 + uint64_t(s), uint64_t(step)});
    ahead.append_sampled(req, c, LogprobMode::kRaw);
    ahead.process();
    for (int s = 0; s < S; ++s)
      EXPECT_EQ(ahead.drawn(a[s]).token, drawn_tokens[s][step]) << "seq " << s << " step " << step;
  }
  // Misuse is named, and a draw truncated away before or after its step leaves no trace.
  std::vector<SampleRequest> one = {{a[0], 1, 0}};
  EXPECT_THROW(ahead.drawn(a[0]), Error);  // already taken
  ahead.append_sampled(one, c, LogprobMode::kRaw);
  EXPECT_THROW(ahead.append_sampled(one, c, LogprobMode::kRaw), Error);  // not processed yet
  const int before = int(ahead.tokens(a[1]).size());
  ahead.truncate(a[0], int(ahead.processed(a[0])));  // the queued draw goes, the logits stay
  EXPECT_THROW(ahead.drawn(a[0]), Error);
  ahead.append_sampled(one, c, LogprobMode::kRaw);
  ahead.process();
  const int length = int(ahead.processed(a[0]));
  ahead.truncate(a[0], length - 1);  // drawn and run, never taken
  EXPECT_EQ(int(ahead.tokens(a[0]).size()), length - 1);
  EXPECT_EQ(int(ahead.tokens(a[1]).size()), before);
  const int extra = 3;
  ahead.append(a[0], std::span<const int>(&extra, 1));
  EXPECT_THROW(ahead.append_sampled(one, c, LogprobMode::kRaw), Error);  // a queued token
  ahead.process();
  ahead.append_sampled(one, c, LogprobMode::kRaw);
  ahead.process();
  EXPECT_EQ(ahead.tokens(a[0]).back(), ahead.drawn(a[0]).token);
  // drawn() before process(): the draw runs then, and its token is queued as any other.
  ahead.append_sampled(one, c, LogprobMode::kRaw);
  const int early = ahead.drawn(a[0]).token;
  EXPECT_EQ(ahead.tokens(a[0]).back(), early);
  EXPECT_EQ(ahead.processed(a[0]) + 1, int(ahead.tokens(a[0]).size()));
  ahead.process();
  ahead.append_sampled(one, c, LogprobMode::kRaw);  // nothing is left queued
  ahead.process();
  EXPECT_GE(ahead.drawn(a[0]).token, 0);
}

#else

TEST(CudaSampling, SkippedWithoutTheCudaLine) {
  GTEST_SKIP() << "CUDA sampling tests skipped: the CUDA line is not compiled into this build";
}

#endif  // MIND4_HAVE_CUDA

// Context::sample on the CPU line: the Sampler of sampler.h, with each request's seed and step and
// the sequence's processed tokens as the penalties' history; the same config reuses one Sampler.
TEST(ContextSample, CpuLineRunsTheSamplerWithEachRequestsSeedAndStep) {
  Config cfg;
  cfg.paths.checkpoint = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/yarn_mxfp4_gqa";
  auto model = Model::load(cfg);
  const int V = model->config().vocab_size;
  Context ctx(model, {.context_length = 32, .max_sequences = 4});
  std::vector<int> seqs;
  for (int s = 0; s < 3; ++s) {
    seqs.push_back(ctx.new_sequence());
    std::vector<int> prompt;
    for (int i = 0; i < 4 + s; ++i) prompt.push_back((i * 13 + s * 5 + 1) % V);
    ctx.append(seqs.back(), prompt);
  }
  ctx.process();
  SamplingConfig a;
  a.temperature = 0.8f;
  a.top_k = 20;
  a.top_p = 0.9f;
  a.repetition_penalty = 1.3f;
  a.frequency_penalty = 0.1f;
  SamplingConfig b;
  b.temperature = 1.2f;
  b.min_p = 0.01f;
  for (const SamplingConfig& c : {a, b, a}) {
    for (LogprobMode mode : {LogprobMode::kRaw, LogprobMode::kProcessed, LogprobMode::kSampling}) {
      std::vector<SampleRequest> req;
      for (int s = 0; s < 3; ++s) req.push_back({seqs[s], 100 + uint64_t(s), 7 + uint64_t(s)});
      std::vector<SampledToken> got(req.size(), SampledToken{-7, NAN});
      ctx.sample(req, c, mode, got);
      for (int s = 0; s < 3; ++s) {
        SamplingConfig sc = c;
        sc.seed = req[s].seed;
        Sampler cpu(sc);
        cpu.set_step(req[s].step);
        const SampleResult ref =
            cpu.sample_with_logprobs(ctx.logits(seqs[s]), ctx.tokens(seqs[s]), 0, mode);
        EXPECT_EQ(got[s].token, ref.token) << "seq " << s;
        EXPECT_EQ(got[s].logprob, ref.logprob) << "seq " << s;
      }
    }
  }
  std::vector<SampleRequest> req = {{seqs[0], 1, 1}};
  std::vector<SampledToken> one(1);
  SamplingConfig bad;
  bad.top_p = 0.0f;
  EXPECT_THROW(ctx.sample(req, bad, LogprobMode::kRaw, one), Error);
  EXPECT_THROW(ctx.sample(req, a, LogprobMode::kRaw, std::span<SampledToken>()), Error);
  const int fresh = ctx.new_sequence();  // no logits yet
  std::vector<SampleRequest> unprocessed = {{fresh, 1, 1}};
  EXPECT_THROW(ctx.sample(unprocessed, a, LogprobMode::kRaw, one), Error);
  ctx.release(fresh);
  EXPECT_THROW(ctx.sample(unprocessed, a, LogprobMode::kRaw, one), Error);
}

// Context::append_sampled on the CPU line draws at once: the token sample() gives, appended.
TEST(ContextSample, AppendSampledOnTheCpuLineIsSampleThenAppend) {
  Config cfg;
  cfg.paths.checkpoint = std::string(MIND4_SOURCE_DIR) + "/tests/fixtures/yarn_mxfp4_gqa";
  auto model = Model::load(cfg);
  Context ctx(model, {.context_length = 16});
  const int seq = ctx.new_sequence();
  const std::vector<int> prompt = {3, 14, 15, 9};
  ctx.append(seq, prompt);
  ctx.process();
  EXPECT_FALSE(ctx.draws_on_device());
  SamplingConfig c;
  c.temperature = 0.7f;
  c.top_k = 40;
  const std::vector<SampleRequest> req = {{seq, 21, 4}};
  std::vector<SampledToken> want(1);
  ctx.sample(req, c, LogprobMode::kSampling, want);
  ctx.append_sampled(req, c, LogprobMode::kSampling);
  EXPECT_EQ(ctx.tokens(seq).back(), want[0].token);
  EXPECT_EQ(ctx.processed(seq), int(prompt.size()));  // queued, for the next process()
  const SampledToken got = ctx.drawn(seq);
  EXPECT_EQ(got.token, want[0].token);
  EXPECT_EQ(got.logprob, want[0].logprob);
  EXPECT_THROW(ctx.drawn(seq), Error);
  EXPECT_THROW(ctx.append_sampled(req, c, LogprobMode::kSampling), Error);  // a queued token
  ctx.process();
  ctx.append(seq, std::vector<int>(16 - ctx.tokens(seq).size(), 1));  // the context is full
  ctx.process();
  EXPECT_THROW(ctx.append_sampled(req, c, LogprobMode::kSampling), Error);  // would not fit
}

}  // namespace
}  // namespace mind4
