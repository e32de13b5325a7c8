// Shared by the chat tests: a tiny random model whose vocabulary is o200k_harmony's (so that the
// real tokenizer and harmony rendering apply), written once per test binary, and the tokenizer.
#pragma once

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

// The checkpoint directory of a 2-layer random model with vocab_size 201088.
inline const std::string& tiny_harmony_checkpoint() {
  static ScratchDir dir("chat_tiny_model");
  static const std::string path = [] {
    ModelConfig c = model_preset("tiny");
    c.vocab_size = harmony_tokenizer().vocab_size();
    write_checkpoint(dir.str(), c, CheckpointLayout::kOriginal, true,
                     random_checkpoint_tensors(c, true, 7), 0);
    return dir.str();
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
