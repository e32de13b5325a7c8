// Built-in vocabularies: o200k_base (read from the tiktoken npm package's encoders/o200k_base.json,
// which `bash scripts/setup.sh` installs into third_party/) and o200k_harmony (o200k_base ranks plus
// the special tokens of the gpt-oss harmony chat format).
#pragma once

#include <optional>
#include <string>

#include "tokenizer/vocabulary.h"

namespace mind4::tok {

// Where o200k_base.json is looked for: $MIND4_DATA_DIR alone when set (the file itself, or
// tiktoken/encoders/ or node_modules/tiktoken/encoders/ under it); otherwise the source tree
// this binary was built from, then third_party/ in the directories above the executable.
std::string find_o200k_base_json();

// The built-in vocabulary of that name, or nullopt when `name` is no built-in name.
std::optional<Vocabulary> load_builtin(const std::string& name);

}  // namespace mind4::tok
