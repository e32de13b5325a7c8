// paths.tokenizer "auto": a model directory describes itself. `mind4 train` exports a model
// with its vocabulary beside it (tokenizer.tiktoken + tokenizer.tiktoken.json), so the bundled
// model needs no tokenizer setting of its own; a checkpoint without one is a gpt-oss model and
// speaks o200k_harmony.
#include <filesystem>

#include "mind4/tokenizer.h"

namespace mind4 {

std::string resolve_tokenizer_path(const std::string& setting, const std::string& checkpoint_path) {
  if (setting != "auto") return setting;
  namespace fs = std::filesystem;
  fs::path dir = checkpoint_path;
  if (!checkpoint_path.empty() && !fs::is_directory(dir)) dir = dir.parent_path();
  const fs::path own = dir / "tokenizer.tiktoken";
  if (!checkpoint_path.empty() && fs::is_regular_file(own)) return own.string();
  return "o200k_harmony";
}

}  // namespace mind4
