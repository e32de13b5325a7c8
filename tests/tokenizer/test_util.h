// Helpers shared by the tokenizer tests, beside io_test_util.h (scratch directory, file reads and
// writes): the King James text from Debian's bible-kjv packages (real prose, installed by
// scripts/setup.sh), and a printable form of arbitrary bytes for failure messages.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "io_test_util.h"

namespace mind4::testing {

// The whole King James Bible (about 4.3 MB of text) through the `bible` command of bible-kjv.
// False when the command or its data (bible-kjv-text) is missing.
inline bool write_kjv_text(const std::filesystem::path& path) {
  std::string cmd = "bible 'Gen1:1-Rev22:21' > '" + path.string() + "' 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return false;
  std::error_code ec;
  return std::filesystem::file_size(path, ec) > 1000000;
}

// Bytes as a C-style literal: printable ASCII as is, everything else as \xHH.
inline std::string escaped(const std::string& s, size_t limit = 200) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\\' || c == '"') {
      out += '\\';
      out += char(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > limit) out += "...";
  return out + "\"";
}

}  // namespace mind4::testing
