// `mind4 convert`: rewrite a checkpoint in another layout (original gpt-oss <-> Hugging Face)
// and/or expert format (MXFP4 <-> BF16; BF16 -> MXFP4 quantises by the OCP MX rule).
#include <chrono>
#include <cstdio>

#include "command.h"
#include "io/checkpoint.h"
#include "mind4/status.h"
#include "options.h"

namespace {

struct ConvertArgs {
  std::string from, to, layout = "original", experts = "mxfp4", shard_size = "auto";
};

void setup_convert(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  app.add_option("--from", args->from, "Source checkpoint (directory or .safetensors file)")
      ->required();
  app.add_option("--to", args->to, "Output directory")->required();
  app.add_option("--layout", args->layout, "Output layout")
      ->check(CLI::IsMember({"original", "hf"}));
  app.add_option("--experts", args->experts, "Output expert format")
      ->check(CLI::IsMember({"mxfp4", "bf16"}));
  app.add_option(
      "--shard-size", args->shard_size,
      "Largest file: e.g. 2GB, 0 = one file; auto = one file (original) or 5GB shards (hf)");
  app.callback([args] {
    using namespace mind4;
    CheckpointLayout layout =
        args->layout == "hf" ? CheckpointLayout::kHuggingFace : CheckpointLayout::kOriginal;
    uint64_t shard = args->shard_size == "auto"
                         ? (layout == CheckpointLayout::kHuggingFace ? uint64_t(5e9) : 0)
                         : cli::parse_byte_size(args->shard_size, "--shard-size");
    auto start = std::chrono::steady_clock::now();
    convert_checkpoint(args->from, args->to, layout, args->experts == "mxfp4", shard);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %s (layout %s, experts %s) in %.1f s\n", args->to.c_str(),
                args->layout.c_str(), args->experts.c_str(), s);
  });
}

mind4::cli::Command register_convert{
    "convert", "Convert a checkpoint between layouts (original | hf) and expert formats",
    setup_convert};

}  // namespace
