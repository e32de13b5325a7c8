#include "tokenizer/builtin.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "mind4/status.h"

namespace mind4::tok {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFile = "o200k_base.json";
constexpr const char* kInPackage = "third_party/node_modules/tiktoken/encoders/o200k_base.json";

std::vector<fs::path> candidates() {
  std::vector<fs::path> out;
  if (const char* dir = std::getenv("MIND4_DATA_DIR"); dir && *dir) {
    fs::path d(dir);
    out.push_back(d / kFile);
    out.push_back(d / "tiktoken/encoders" / kFile);
    out.push_back(d / "node_modules/tiktoken/encoders" / kFile);
    out.push_back(d / kInPackage);
    return out;  // an explicit data dir overrides the other locations
  }
#ifdef MIND4_SOURCE_DIR
  out.push_back(fs::path(MIND4_SOURCE_DIR) / kInPackage);
#endif
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path d = exe.parent_path(); !d.empty(); d = d.parent_path()) {
      out.push_back(d / kInPackage);
      if (d == d.root_path()) break;
    }
  }
  return out;
}

// o200k_harmony's specials: gpt-oss's chat-format markers; every other id from 199998 to
// 201087 is a reserved placeholder, so the vocabulary is 201088 ids.
std::vector<std::pair<std::string, int>> harmony_specials() {
  std::vector<std::pair<std::string, int>> named = {
      {"<|startoftext|>", 199998}, {"<|endoftext|>", 199999}, {"<|return|>", 200002},
      {"<|constrain|>", 200003},   {"<|channel|>", 200005},   {"<|start|>", 200006},
      {"<|end|>", 200007},         {"<|message|>", 200008},   {"<|call|>", 200012},
  };
  std::vector<std::pair<std::string, int>> out;
  for (int id = 199998; id <= 201087; ++id) {
    std::string text = "<|reserved_" + std::to_string(id) + "|>";
    for (auto& [t, i] : named) {
      if (i == id) text = t;
    }
    out.emplace_back(std::move(text), id);
  }
  return out;
}

}  // namespace

std::string find_o200k_base_json() {
  std::vector<fs::path> tried = candidates();
  std::error_code ec;
  for (const auto& p : tried) {
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  std::string list;
  for (const auto& p : tried) list += "\n  " + p.string();
  throw Error(Status::kIoError,
              "the o200k_base vocabulary (" + std::string(kFile) +
                  " from the tiktoken npm package) was not found; looked in:" + list +
                  "\nInstall it with `bash scripts/setup.sh` in the Mind 4 source tree (or `cd "
                  "third_party && npm install tiktoken`), or set MIND4_DATA_DIR to a directory "
                  "holding " + kFile + ".");
}

std::optional<Vocabulary> load_builtin(const std::string& name) {
  if (name != "o200k_base" && name != "o200k_harmony") return std::nullopt;
  Vocabulary v = load_vocabulary_file(find_o200k_base_json());
  MIND4_CHECK(v.tokens.size() == 199998, Status::kCorruptFile, "o200k_base vocabulary '", v.name,
              "' has ", v.tokens.size(), " ranks, expected 199998");
  v.name = name;
  if (name == "o200k_harmony") v.specials = harmony_specials();
  return v;
}

}  // namespace mind4::tok
