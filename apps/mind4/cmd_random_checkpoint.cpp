// `mind4 random-checkpoint`: a random gpt-oss checkpoint (original layout) of a preset shape,
// written straight to disk: gpt-oss-20b's shape is ~13 GB and never sits in memory.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "command.h"
#include "io/random_checkpoint.h"
#include "mind4/status.h"
#include "options.h"

namespace {

struct RandomArgs {
  std::string out, preset = "20b", experts = "mxfp4", shard_size = "0";
  uint64_t seed = 0;
  int layers = 0, num_experts = 0, vocab_size = 0;
};

void setup_random(CLI::App& app) {
  auto a = std::make_shared<RandomArgs>();
  app.add_option("--out", a->out, "Output directory")->required();
  app.add_option("--preset", a->preset, "Shape: 20b (gpt-oss-20b), 120b, tiny")
      ->check(CLI::IsMember({"20b", "120b", "tiny"}));
  app.add_option("--seed", a->seed, "Random seed (same seed, same bytes)");
  app.add_option("--layers", a->layers, "Override num_hidden_layers (0 = the preset's)");
  app.add_option("--num-experts", a->num_experts, "Override num_experts (0 = the preset's)");
  app.add_option("--vocab-size", a->vocab_size, "Override vocab_size (0 = the preset's)");
  app.add_option("--experts", a->experts, "Expert format")->check(CLI::IsMember({"mxfp4", "bf16"}));
  app.add_option("--shard-size", a->shard_size, "Largest file, e.g. 2GB (0 = one file)");
  app.callback([a] {
    using namespace mind4;
    ModelConfig c = model_preset(a->preset);
    if (a->layers) c.num_hidden_layers = a->layers;
    if (a->num_experts)
      c.num_experts = a->num_experts,
      c.experts_per_token = std::min(c.experts_per_token, a->num_experts);
    if (a->vocab_size) c.vocab_size = a->vocab_size;
    auto start = std::chrono::steady_clock::now();
    write_random_checkpoint(a->out, c, a->experts == "mxfp4", a->seed,
                            cli::parse_byte_size(a->shard_size, "--shard-size"));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    uint64_t bytes = 0;
    for (const auto& e : std::filesystem::directory_iterator(a->out))
      if (e.path().extension() == ".safetensors") bytes += e.file_size();
    std::printf("wrote %s: %.2f GB in %.1f s (%.2f GB/s)\n", a->out.c_str(), double(bytes) / 1e9, s,
                double(bytes) / 1e9 / s);
  });
}

mind4::cli::Command register_random_checkpoint{
    "random-checkpoint", "Write a random gpt-oss checkpoint (20b, 120b or tiny shape)",
    setup_random};

}  // namespace
