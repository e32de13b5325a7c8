// SafeTensors files (https://github.com/huggingface/safetensors, format described in its README):
//   8-byte little-endian header length N | N bytes of JSON header | data section.
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end)} relative to the data
// section, plus an optional "__metadata__" object of string -> string.
//
// The reader maps the file and copies nothing: a tensor is a pointer into the mapping. Because a
// lying header would otherwise turn into out-of-bounds reads later, in the forward pass, everything
// is validated up front, the way the reference (Rust) implementation does: header length, JSON,
// dtypes, shape x dtype size == byte span, spans inside the data section, contiguous and not
// overlapping. Each problem is an Error(kCorruptFile) naming the file and the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace mind4 {

// Headers larger than this are refused before parsing (the Rust reference uses the same bound):
// a corrupt length must not make us parse gigabytes of "JSON".
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

struct SafeTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping of `file`
  size_t nbytes = 0;
  const std::string* file = nullptr;  // path of the file holding it (owned by the file object)

  int64_t numel() const;
};

// One mapped .safetensors file.
class SafeTensorsFile {
 public:
  // Maps and validates `path`. Throws Error(kIoError) when it cannot be read, Error(kCorruptFile)
  // for any inconsistency in the header.
  static std::unique_ptr<SafeTensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  // Sorted by data offset (file order).
  const std::vector<SafeTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t data_offset() const { return data_offset_; }  // where the data section starts in the file

 private:
  SafeTensorsFile() = default;
  std::string path_;
  MappedFile file_;
  size_t data_offset_ = 0;
  std::vector<SafeTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The tensors of a checkpoint spread over one or more files.
class SafeTensorsSet {
 public:
  // `path` is one .safetensors file, a model.safetensors.index.json, or a directory holding, in
  // order of preference, an index, a single model.safetensors, or *.safetensors files (all of
  // them). With an index, every file it names must exist and every tensor must be in the file the
  // index says, exactly once.
  static SafeTensorsSet open(const std::string& path);

  SafeTensorsSet() = default;
  SafeTensorsSet(SafeTensorsSet&&) = default;
  SafeTensorsSet& operator=(SafeTensorsSet&&) = default;

  // nullptr when absent.
  const SafeTensor* find(const std::string& name) const;
  // Throws Error(kMissingTensor) naming the tensor and where it was looked for.
  const SafeTensor& get(const std::string& name) const;
  // Every tensor, sorted by name.
  std::vector<const SafeTensor*> tensors() const;
  size_t size() const { return by_name_.size(); }
  const std::vector<std::unique_ptr<SafeTensorsFile>>& files() const { return files_; }
  // The path given to open(), for messages.
  const std::string& source() const { return source_; }

 private:
  void add_file(std::unique_ptr<SafeTensorsFile> file);
  std::string source_;
  std::vector<std::unique_ptr<SafeTensorsFile>> files_;
  std::map<std::string, const SafeTensor*> by_name_;
};

// ---- writing ----

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  size_t nbytes() const;
};

// Writes one .safetensors file without holding it in memory: the file is created at its final
// size under a temporary name and mapped, the caller fills each tensor's bytes in place (from any
// number of threads), and commit() flushes it and renames it over `path`, so a reader never sees a
// half-written file. Dropping the writer without commit() deletes the temporary file.
// Tensors are laid out contiguously (as the reference implementation requires), ordered by
// descending element size so that every tensor stays aligned to its element size.
class SafeTensorsWriter {
 public:
  SafeTensorsWriter(const std::string& path, std::vector<TensorSpec> specs,
                    const std::map<std::string, std::string>& metadata = {});
  SafeTensorsWriter(const SafeTensorsWriter&) = delete;
  SafeTensorsWriter& operator=(const SafeTensorsWriter&) = delete;
  ~SafeTensorsWriter();

  // Destination bytes of the tensor named `name` (Error(kInvalidArgument) if it was not declared).
  std::span<uint8_t> data(const std::string& name);
  const std::vector<TensorSpec>& specs() const { return specs_; }  // in file order
  void commit();

 private:
  std::string path_, temp_path_;
  std::vector<TensorSpec> specs_;
  std::map<std::string, std::span<uint8_t>> spans_;
  uint8_t* map_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes small tensors given as (spec, source bytes) pairs; a convenience for tests and tools.
struct TensorData {
  TensorSpec spec;
  const void* data = nullptr;
};
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace mind4
