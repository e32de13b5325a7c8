// Shared by the chat tests: a tiny random model whose vocabulary is o200k_harmony's (so that the
// real tokenizer and harmony rendering apply), and the tokenizer.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "io/checkpoint.h"
#include "io/random_checkpoint.h"
#include "io_test_util.h"
#include "mind4/model.h"
#include "mind4/tokenizer.h"

namespace mind4::testing {

inline const Tokenizer& harmony_tokenizer() {
  static const Tokenizer tok = Tokenizer::load("o200k_harmony");
  return tok;
}

// The checkpoint directory of a 2-layer random model with vocab_size 201088 (about 50 MB). ctest
// runs every test in a process of its own, so it is written once per machine and user into the
// temporary directory and shared: each file appears atomically (written, then renamed), and
// the same seed gives the same bytes whichever process writes it.
inline const std::string& tiny_harmony_checkpoint() {
  static const std::string path = [] {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("mind4_chat_tiny_o200k_v1_uid" + std::to_string(::getuid()));
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) {
      // Written whole into a directory of this process, then renamed into place in one step;
      // when another process got there first, its copy (the same bytes) is kept.
      const auto mine = dir.string() + ".tmp" + std::to_string(::getpid());
      std::filesystem::remove_all(mine, ec);
      std::filesystem::create_directories(mine);
      ModelConfig c = model_preset("tiny");
      c.vocab_size = harmony_tokenizer().vocab_size();
      write_checkpoint(mine, c, CheckpointLayout::kOriginal, true,
                       random_checkpoint_tensors(c, true, 7), 0);
      std::filesystem::rename(mine, dir, ec);
      std::filesystem::remove_all(mine, ec);
    }
    return dir.string();
  }();
  return path;
}

inline std::shared_ptr<const Model> tiny_harmony_model() {
  static std::shared_ptr<const Model> model = [] {
    Config config;
    config.paths.checkpoint = tiny_harmony_checkpoint();
    return Model::load(config);
  }();
  return model;
}

}  // namespace mind4::testing
