// Helpers shared by the tokenizer tests: a scratch directory, whole-file reads and writes, the
// King James text from Debian's bible-kjv packages (real prose, installed by scripts/setup.sh),
// and a printable form of arbitrary bytes for failure messages.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace mind4::testing {

// A directory under the system temp dir, unique per process and instance, removed at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("mind4_tok_" + tag + "_" + std::to_string(::getpid()) + "_" +
             std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_all(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

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
