// What generate and chat both start with: the resolved config, the model, a tokenizer that
// belongs to it, and the chat mode (harmony when the vocabulary speaks it, else plain text).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "chat/conversation.h"
#include "mind4/model.h"
#include "mind4/tokenizer.h"
#include "options.h"

namespace mind4::cli {

struct SessionFlags {
  CommonOptions common;
  std::string mode = "auto";  // auto | harmony | plain
  int context = 0;            // KV rows; 0 = min(model max, 4096)
};

// Adds the common model flags plus --mode and --context.
void add_session_flags(CLI::App& app, SessionFlags& flags);

struct ModelSession {
  ResolvedConfig resolved;
  std::shared_ptr<const Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  chat::ChatMode mode = chat::ChatMode::kPlain;
  int context = 0;
};

// Loads everything, with clear messages: a missing checkpoint (what to pass), a tokenizer whose
// size differs from the model's vocabulary, --mode harmony with a vocabulary that lacks harmony.
ModelSession open_model_session(const SessionFlags& flags);

}  // namespace mind4::cli
