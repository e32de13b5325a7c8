#include "model_session.h"

#include <algorithm>

#include "chat/generator.h"
#include "mind4/status.h"

namespace mind4::cli {

void add_session_flags(CLI::App& app, SessionFlags& flags) {
  add_common_options(app, flags.common);
  app.add_option("--mode", flags.mode,
                 "Prompt format: harmony (chat format of gpt-oss), plain (raw text), or auto "
                 "(harmony when the vocabulary has its special tokens)")
      ->check(CLI::IsMember({"auto", "harmony", "plain"}));
  app.add_option("--context", flags.context,
                 "Context length in tokens (0 = the model's maximum, at most 4096)")
      ->check(CLI::NonNegativeNumber);
}

ModelSession open_model_session(const SessionFlags& flags) {
  ModelSession s;
  s.resolved = resolve_config(flags.common);
  require_checkpoint(s.resolved);
  // "auto": the checkpoint directory's own tokenizer.tiktoken (a model trained here), else
  // o200k_harmony (a gpt-oss checkpoint).
  s.tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(resolve_tokenizer_path(
      s.resolved.config.paths.tokenizer, s.resolved.config.paths.checkpoint)));
  const ModelConfig& mc = s.resolved.config.model;
  // Checked before the weights load, so that a wrong pairing costs nothing.
  chat::check_tokenizer_matches(*s.tokenizer, mc.vocab_size,
                                "'" + s.resolved.config.paths.checkpoint + "'");
  const bool harmony = chat::speaks_harmony(*s.tokenizer);
  if (flags.mode == "harmony") {
    MIND4_CHECK(harmony, Status::kInvalidArgument, "--mode harmony: the tokenizer '",
                s.tokenizer->name(), "' has no harmony special tokens; use --mode plain");
    s.mode = chat::ChatMode::kHarmony;
  } else {
    s.mode = flags.mode == "plain" || !harmony ? chat::ChatMode::kPlain : chat::ChatMode::kHarmony;
  }
  s.model = Model::load(s.resolved.config);
  s.context = flags.context > 0 ? flags.context : std::min(mc.max_context_length, 4096);
  MIND4_CHECK(s.context <= mc.max_context_length, Status::kInvalidArgument, "--context ", s.context,
              " exceeds the model's max_context_length ", mc.max_context_length);
  return s;
}

}  // namespace mind4::cli
