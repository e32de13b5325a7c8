// Byte-level BPE tokenizer giving the same ids as tiktoken (o200k_base, o200k_harmony, or a
// vocabulary trained by `mind4 train-tokenizer`).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mind4 {

class Tokenizer {
 public:
  // name_or_path: a built-in name ("o200k_base", "o200k_harmony") or a vocabulary file
  // (.tiktoken, tiktoken's JSON form, or a Hugging Face tokenizer.json). Throws Error with a
  // message that says how to get a missing built-in vocabulary.
  static Tokenizer load(const std::string& name_or_path);
  // A vocabulary file, never a built-in name (for paths that might look like one).
  static Tokenizer from_vocabulary_file(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Ordinary text: special-token text such as "<|start|>" is encoded as plain text.
  std::vector<int> encode(std::string_view text) const;
  // Special-token text is recognised for the names in `allowed` (empty = all specials).
  std::vector<int> encode_allowing_special(std::string_view text,
                                           std::span<const std::string> allowed = {}) const;
  // Bytes of the concatenated tokens (may be invalid UTF-8 mid-character). Throws
  // Error(kTokenOutOfRange) for an id outside the vocabulary.
  std::string decode(std::span<const int> ids) const;
  std::string_view token_bytes(int id) const;

  // Id of a special token by its text ("<|start|>"), if this vocabulary has it.
  std::optional<int> special_id(std::string_view text) const;
  bool is_special(int id) const;
  int vocab_size() const;  // one past the largest id, specials included
  const std::string& name() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The vocabulary a paths.tokenizer setting names for a checkpoint: "auto" is the checkpoint
// directory's own tokenizer.tiktoken (what `mind4 train` exports beside a model; for a
// .safetensors file, the file's directory) when present, else "o200k_harmony" (gpt-oss models).
// Any other setting is returned unchanged. Pass the result to Tokenizer::load.
std::string resolve_tokenizer_path(const std::string& setting, const std::string& checkpoint_path);

// Token-by-token output that never prints half a UTF-8 character: push() returns the longest
// complete prefix so far; flush() returns what is left. Invalid bytes become U+FFFD as soon as
// they are clearly invalid (one U+FFFD per maximal invalid subpart, as Unicode recommends), and
// an incomplete character left at flush() becomes one U+FFFD.
class Utf8StreamDecoder {
 public:
  std::string push(std::string_view bytes);
  std::string flush();

 private:
  std::string pending_;
};

}  // namespace mind4
