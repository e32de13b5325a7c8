// One training step against PyTorch: HF GptOssForCausalLM (float32) computed the loss, every
// parameter gradient and the weights after clipping and one AdamW step on the same initial weights
// and batch (scripts/fixtures/make_train_step_fixture.py, committed as
// tests/fixtures/train_step/step.safetensors).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "mind4/config.h"
#include "train/model.h"
#include "train/optimizer.h"
#include "train/params.h"

namespace mind4::train {
namespace {

const SafeTensor& parity_get(const SafeTensorsFile& f, const std::string& name) {
  for (const auto& t : f.tensors())
    if (t.name == name) return t;
  throw std::runtime_error("fixture lacks " + name);
}

TEST(TrainParity, OneStepMatchesPyTorch) {
  auto file = SafeTensorsFile::open(std::string(MIND4_SOURCE_DIR) +
                                    "/tests/fixtures/train_step/step.safetensors");
  const ModelConfig c = parse_model_config(file->metadata().at("config"), "fixture config");
  const auto step = nlohmann::json::parse(file->metadata().at("step"));
  const int B = step["batch"], S = step["seq"];
  const ParamLayout layout = make_param_layout(c);
  std::vector<float> params(size_t(layout.total), 0.0f), grads(size_t(layout.total), 0.0f);
  for (const auto& t : layout.tensors) {
    const SafeTensor& s = parity_get(*file, "init." + t.name);
    ASSERT_EQ(s.numel(), t.numel) << t.name;
    std::memcpy(params.data() + t.offset, s.data, size_t(t.numel) * 4);
  }
  std::vector<int> tokens(B * S), targets(B * S);
  std::memcpy(tokens.data(), parity_get(*file, "tokens").data, size_t(B * S) * 4);
  std::memcpy(targets.data(), parity_get(*file, "targets").data, size_t(B * S) * 4);

  ThreadPool pool(2);
  const float coef = step["aux_coef"].get<float>();
  TrainModel<float> model(layout, B, S, coef, pool);
  const LossParts lp = model.run(params.data(), tokens.data(), targets.data(), grads.data(), 1.0f);
  const double loss = lp.ce + coef * lp.aux, ref = step["loss"].get<double>();
  EXPECT_NEAR(loss, ref, 1e-4 * std::abs(ref));
  EXPECT_NEAR(lp.aux, step["aux"].get<double>(), 1e-4 * step["aux"].get<double>());

  for (const auto& t : layout.tensors) {
    const float* want = static_cast<const float*>(
        static_cast<const void*>(parity_get(*file, "grad." + t.name).data));
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < t.numel; ++i) {
      const double d = double(grads[t.offset + i]) - want[i];
      num += d * d, den += double(want[i]) * want[i];
    }
    EXPECT_LE(std::sqrt(num), 1e-3 * std::sqrt(den) + 1e-9) << "gradient of " << t.name;
  }

  const double norm = clip_grad_norm(pool, grads.data(), layout.total, step["clip"].get<double>());
  EXPECT_NEAR(norm, step["grad_norm"].get<double>(), 1e-4 * norm);
  AdamWConfig ac{step["beta1"].get<double>(), step["beta2"].get<double>(),
                 step["eps"].get<double>(), step["weight_decay"].get<double>()};
  AdamW opt(layout, ac);
  opt.update(pool, params.data(), grads.data(), step["lr"].get<double>());
  for (const auto& t : layout.tensors) {
    const float* want = static_cast<const float*>(
        static_cast<const void*>(parity_get(*file, "after." + t.name).data));
    double worst = 0.0;
    for (int64_t i = 0; i < t.numel; ++i)
      worst = std::max(worst, double(std::abs(params[t.offset + i] - want[i])));
    EXPECT_LE(worst, 1e-5) << "weights after the step: " << t.name;
  }
}

}  // namespace
}  // namespace mind4::train
