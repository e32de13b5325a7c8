// `mind4 inspect [PATH]`: what a checkpoint holds (tensors, dtypes, shapes, bytes), its detected
// layout and expert format, its config, and whether it binds to a gpt-oss model. Without PATH it
// inspects the checkpoint the configuration resolves to (--config, --checkpoint, ...) and prints
// the resolved configuration first.
#include <cinttypes>
#include <cstdio>
#include <filesystem>

#include "command.h"
#include "io/checkpoint.h"
#include "mind4/status.h"
#include "options.h"

namespace {

struct InspectArgs {
  std::string path;
  bool summary = false;
  mind4::cli::CommonOptions common;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void setup_inspect(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  app.add_option("path", a->path,
                 "Checkpoint directory, .safetensors file or index (default: the configured one)");
  app.add_flag("--summary", a->summary, "Skip the per-tensor listing");
  mind4::cli::add_common_options(app, a->common);
  app.callback([a] {
    using namespace mind4;
    if (a->path.empty()) {
      cli::ResolvedConfig resolved = cli::resolve_config(a->common);
      std::printf("resolved configuration (%s, checkpoint config, flags):\n%s",
                  a->common.config_path.c_str(), config_to_json(resolved.config).c_str());
      cli::require_checkpoint(resolved);
      a->path = resolved.config.paths.checkpoint;
    }
    SafeTensorsSet set = SafeTensorsSet::open(a->path);
    uint64_t total = 0;
    if (!a->summary)
      std::printf("%-56s %-5s %-26s %14s  %s\n", "tensor", "dtype", "shape", "bytes", "file");
    for (const SafeTensor* t : set.tensors()) {
      total += t->nbytes;
      if (!a->summary)
        std::printf("%-56s %-5s %-26s %14zu  %s\n", t->name.c_str(),
                    std::string(dtype_name(t->dtype)).c_str(), shape_text(t->shape).c_str(),
                    t->nbytes, std::filesystem::path(*t->file).filename().string().c_str());
    }
    std::printf("tensors: %zu in %zu file(s), %.3f GB\n", set.size(), set.files().size(),
                double(total) / 1e9);
    CheckpointFormat f = detect_checkpoint_format(set);
    std::printf("layout: %s\nexperts: %s\n", layout_name(f.layout),
                f.mxfp4_experts ? "mxfp4" : "bf16");
    std::string config_path = checkpoint_config_path(a->path);
    ModelConfig c = load_model_config(a->path);
    std::printf("config (%s, %s layout):\n%s", config_path.c_str(),
                layout_name(detect_config_layout(read_text_file(config_path), config_path)),
                model_config_json(c, CheckpointLayout::kOriginal, f.mxfp4_experts).c_str());
    bind_checkpoint(std::move(set), c, a->path);  // throws, naming the tensor, when it does not fit
    std::printf("check: every tensor present with the dtype and shape the config implies\n");
  });
}

mind4::cli::Command register_inspect{
    "inspect", "List a checkpoint's tensors, layout and config, and check them", setup_inspect};

}  // namespace
