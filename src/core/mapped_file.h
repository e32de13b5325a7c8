// A read-only memory map of a whole file (RAII, move-only). Checkpoints and vocabularies are read
// in place from the page cache: nothing is copied until a kernel touches it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace mind4 {

class MappedFile {
 public:
  // Throws Error(kIoError) naming the path when the file cannot be opened or mapped.
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Reads a whole (small) file into a string; throws Error(kIoError) naming the path.
std::string read_text_file(const std::string& path);

}  // namespace mind4
