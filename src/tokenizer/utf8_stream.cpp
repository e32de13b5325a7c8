// Utf8StreamDecoder: streaming output of token bytes without splitting a character.
#include "mind4/tokenizer.h"

namespace mind4 {

namespace {

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the character a lead byte announces, or 0 for a byte that cannot start one.
size_t sequence_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// The second byte's valid range excludes overlong forms, surrogates and code points > U+10FFFF.
bool valid_second(unsigned char lead, unsigned char c) {
  switch (lead) {
    case 0xE0: return c >= 0xA0 && c <= 0xBF;
    case 0xED: return c >= 0x80 && c <= 0x9F;
    case 0xF0: return c >= 0x90 && c <= 0xBF;
    case 0xF4: return c >= 0x80 && c <= 0x8F;
    default: return c >= 0x80 && c <= 0xBF;
  }
}

// Moves every decidable prefix of `pending` to the result; with `final`, the undecided tail too.
std::string drain(std::string& pending, bool final) {
  std::string out;
  size_t i = 0;
  while (i < pending.size()) {
    unsigned char lead = pending[i];
    size_t n = sequence_length(lead);
    if (n == 0) {
      out += kReplacement, ++i;
      continue;
    }
    size_t valid = 1;  // bytes of this sequence known good so far
    while (valid < n && i + valid < pending.size()) {
      unsigned char c = pending[i + valid];
      bool ok = valid == 1 ? valid_second(lead, c) : (c & 0xC0) == 0x80;
      if (!ok) break;
      ++valid;
    }
    if (valid == n) {
      out.append(pending, i, n);
      i += n;
    } else if (i + valid == pending.size() && !final) {
      break;  // incomplete but still possibly valid: wait for more bytes
    } else {
      out += kReplacement;  // the maximal invalid subpart becomes one U+FFFD
      i += valid;
    }
  }
  pending.erase(0, i);
  return out;
}

}  // namespace

std::string Utf8StreamDecoder::push(std::string_view bytes) {
  pending_.append(bytes);
  return drain(pending_, false);
}

std::string Utf8StreamDecoder::flush() { return drain(pending_, true); }

}  // namespace mind4
