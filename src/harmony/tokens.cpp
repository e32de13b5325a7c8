// Rendering -> token ids, and the special ids of the format looked up by text.
#include "mind4/harmony.h"
#include "mind4/status.h"

namespace mind4::harmony {
namespace {

int require_special(const Vocabulary& vocab, std::string_view text) {
  std::optional<int> id = vocab.special_id(text);
  MIND4_CHECK(id.has_value(), Status::kInvalidArgument,
              "harmony: the vocabulary has no special token ", text,
              "; the harmony format needs a vocabulary such as o200k_harmony");
  return *id;
}

}  // namespace

SpecialIds SpecialIds::from(const Vocabulary& vocab) {
  SpecialIds ids{};
  ids.start = require_special(vocab, "<|start|>");
  ids.end = require_special(vocab, "<|end|>");
  ids.message = require_special(vocab, "<|message|>");
  ids.channel = require_special(vocab, "<|channel|>");
  ids.constrain = require_special(vocab, "<|constrain|>");
  ids.return_token = require_special(vocab, "<|return|>");
  ids.call = require_special(vocab, "<|call|>");
  return ids;
}

std::vector<int> to_tokens(const Rendering& rendering, const Vocabulary& vocab) {
  std::vector<int> ids;
  for (const Rendering::Piece& piece : rendering.pieces()) {
    if (piece.special) {
      ids.push_back(require_special(vocab, piece.text));
    } else {
      // Content is ordinary text: "<|end|>" typed by a user stays seven characters, never the
      // special token, so user text cannot forge message boundaries.
      std::vector<int> text_ids = vocab.encode_ordinary(piece.text);
      ids.insert(ids.end(), text_ids.begin(), text_ids.end());
    }
  }
  return ids;
}

}  // namespace mind4::harmony
