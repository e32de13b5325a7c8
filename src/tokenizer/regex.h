// Pre-tokenisation regex on PCRE2 (UTF + UCP, JIT compiled). Patterns are written in the
// syntax of tiktoken (Rust `regex`/`fancy_regex`); where PCRE2 reads them differently the
// pattern is rewritten first: Rust's `\s` is Unicode White_Space (it includes U+0085), PCRE2's
// is the Z category plus ASCII controls, so `\s`/`\S` become explicit classes.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace mind4::tok {

class Regex {
 public:
  // Throws Error(kInvalidArgument) naming `what` when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& what);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Finds the first match at or after `from` in `text`; returns false when there is none.
  // Invalid UTF-8 never matches (PCRE2_MATCH_INVALID_UTF) and is left for the caller to
  // treat as a gap. Uses a per-thread match block: no allocation per call once warm.
  bool find(std::string_view text, size_t from, size_t& begin, size_t& end) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string pattern_;
};

// Rust-regex `\s` / `\S` spelled as explicit PCRE2 classes (exposed for tests).
std::string rewrite_pattern_for_pcre2(std::string_view pattern);

}  // namespace mind4::tok
