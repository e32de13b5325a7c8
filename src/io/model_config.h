// A checkpoint's config.json in its two layouts (see docs/config.md for the field mapping).
#pragma once

#include <string>

#include "mind4/config.h"

namespace mind4 {

namespace io {
class JsonFields;
// The model fields, in the original gpt-oss names, read from one JSON object: a checkpoint's
// config.json, the project config's "model" block, or train.yaml's. Without max_context_length
// (the published configs omit it) YaRN's reach is used: initial_context_length x factor, when
// `max_context_optional`; otherwise its absence is an error naming it.
ModelConfig read_model_fields(JsonFields& f, bool max_context_optional);
}  // namespace io

enum class CheckpointLayout { kOriginal, kHuggingFace };
const char* layout_name(CheckpointLayout l);  // "original" | "hf"

// config.json text for a checkpoint in `layout`; the HF one carries what transformers'
// GptOssConfig needs (model_type, layer_types, rope_scaling with truncate=false, and a
// quantization_config when the experts are MXFP4).
std::string model_config_json(const ModelConfig& m, CheckpointLayout layout, bool mxfp4_experts);

// Which layout a checkpoint config.json text uses (HF iff it has "model_type").
CheckpointLayout detect_config_layout(const std::string& text, const std::string& source);

// Where the config.json of a checkpoint path (directory or .safetensors file) lives.
std::string checkpoint_config_path(const std::string& checkpoint_path);

}  // namespace mind4
