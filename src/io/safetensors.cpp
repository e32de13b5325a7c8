#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "mind4/status.h"

namespace mind4 {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  throw Error(Status::kCorruptFile, "safetensors file '" + path + "': " + what);
}

// Product of dims times element size, or false on overflow / negative dims.
bool span_bytes(const std::vector<int64_t>& shape, DType dtype, uint64_t* out) {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n)) return false;
  }
  *out = n;
  return true;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// nlohmann keeps the last of duplicate keys silently; a header naming a tensor twice is corrupt,
// so top-level keys are checked while parsing.
json parse_header_json(const std::string& path, const char* begin, const char* end) {
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, check);
  } catch (const json::exception& e) {
    corrupt(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) corrupt(path, "header names tensor '" + duplicate + "' twice");
  if (!header.is_object()) corrupt(path, "header is not a JSON object");
  return header;
}

SafeTensor parse_entry(const std::string& path, const std::string& name, const json& entry,
                       uint64_t data_size, uint64_t* begin, uint64_t* end) {
  auto bad = [&](const std::string& what) { corrupt(path, "tensor '" + name + "': " + what); };
  if (!entry.is_object()) bad("entry is not an object");
  for (auto it = entry.begin(); it != entry.end(); ++it) {
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
      bad("unexpected field '" + it.key() + "'");
  }
  SafeTensor t;
  t.name = name;
  auto dt = entry.find("dtype");
  if (dt == entry.end() || !dt->is_string()) bad("missing or non-string 'dtype'");
  if (!parse_dtype(dt->get<std::string>(), &t.dtype))
    bad("unknown dtype '" + dt->get<std::string>() + "'");
  auto sh = entry.find("shape");
  if (sh == entry.end() || !sh->is_array()) bad("missing or non-array 'shape'");
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) bad("shape has a non-integer or negative dimension");
    uint64_t v = d.get<uint64_t>();
    if (v > uint64_t(INT64_MAX)) bad("shape dimension too large");
    t.shape.push_back(int64_t(v));
  }
  auto off = entry.find("data_offsets");
  if (off == entry.end() || !off->is_array() || off->size() != 2 ||
      !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
    bad("'data_offsets' must be two non-negative integers [begin, end]");
  *begin = (*off)[0].get<uint64_t>();
  *end = (*off)[1].get<uint64_t>();
  if (*begin > *end)
    bad("data_offsets begin " + std::to_string(*begin) + " > end " + std::to_string(*end));
  if (*end > data_size)
    bad("data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) +
        ") run past the data section of " + std::to_string(data_size) + " bytes");
  uint64_t expected = 0;
  if (!span_bytes(t.shape, t.dtype, &expected))
    bad("shape " + shape_string(t.shape) + " overflows");
  if (expected != *end - *begin)
    bad("shape " + shape_string(t.shape) + " of " + std::string(dtype_name(t.dtype)) + " needs " +
        std::to_string(expected) + " bytes but data_offsets span " + std::to_string(*end - *begin));
  t.nbytes = size_t(expected);
  return t;
}

}  // namespace

int64_t SafeTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::unique_ptr<SafeTensorsFile> SafeTensorsFile::open(const std::string& path) {
  std::unique_ptr<SafeTensorsFile> f(new SafeTensorsFile());
  f->path_ = path;
  f->file_ = MappedFile::open(path);
  const uint64_t size = f->file_.size();
  if (size < 8)
    corrupt(path,
            "only " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | f->file_.data()[i];  // little-endian on any host
  if (n > kMaxSafetensorsHeaderBytes)
    corrupt(path, "header length " + std::to_string(n) + " exceeds the limit of " +
                      std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  if (n > size - 8)
    corrupt(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                      std::to_string(size) + " bytes): truncated?");
  const char* text = reinterpret_cast<const char*>(f->file_.data() + 8);
  json header = parse_header_json(path, text, text + n);
  f->data_offset_ = size_t(8 + n);
  const uint64_t data_size = size - 8 - n;

  struct Span {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) corrupt(path, "'__metadata__' is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          corrupt(path, "'__metadata__' value of '" + m.key() + "' is not a string");
        f->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    uint64_t begin = 0, end = 0;
    f->tensors_.push_back(parse_entry(path, it.key(), *it, data_size, &begin, &end));
    spans.push_back({begin, end, f->tensors_.size() - 1});
  }
  // The data section must be exactly the tensors, back to back: an overlap means two tensors share
  // bytes, a gap or trailing bytes mean the header does not describe the file.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  std::string previous = "the start of the data section";
  for (const Span& s : spans) {
    const std::string& name = f->tensors_[s.index].name;
    if (s.begin < cursor)
      corrupt(path, "tensor '" + name + "' [" + std::to_string(s.begin) + ", " +
                        std::to_string(s.end) + ") overlaps " + previous + " (which ends at " +
                        std::to_string(cursor) + ")");
    if (s.begin > cursor)
      corrupt(path, "gap of " + std::to_string(s.begin - cursor) + " bytes between " + previous +
                        " and tensor '" + name + "'");
    cursor = s.end;
    previous = "tensor '" + name + "'";
  }
  if (cursor != data_size)
    corrupt(path, "data section has " + std::to_string(data_size) +
                      " bytes but the tensors cover " + std::to_string(cursor));
  std::vector<SafeTensor> ordered;
  ordered.reserve(spans.size());
  for (const Span& s : spans) {
    SafeTensor t = std::move(f->tensors_[s.index]);
    t.data = f->file_.data() + f->data_offset_ + s.begin;
    t.file = &f->path_;
    ordered.push_back(std::move(t));
  }
  f->tensors_ = std::move(ordered);
  return f;
}

// ---- sets of files ----

void SafeTensorsSet::add_file(std::unique_ptr<SafeTensorsFile> file) {
  for (const SafeTensor& t : file->tensors()) {
    auto [it, inserted] = by_name_.emplace(t.name, &t);
    if (!inserted)
      throw Error(Status::kCorruptFile, "tensor '" + t.name + "' appears in both '" +
                                            *it->second->file + "' and '" + file->path() + "'");
  }
  files_.push_back(std::move(file));
}

SafeTensorsSet SafeTensorsSet::open(const std::string& path) {
  SafeTensorsSet set;
  set.source_ = path;
  std::error_code ec;
  MIND4_CHECK(fs::exists(path, ec), Status::kIoError, "checkpoint path '", path,
              "' does not exist");
  std::string index_path;
  if (fs::is_directory(path, ec)) {
    fs::path idx = fs::path(path) / "model.safetensors.index.json";
    fs::path single = fs::path(path) / "model.safetensors";
    if (fs::exists(idx, ec)) {
      index_path = idx.string();
    } else if (fs::exists(single, ec)) {
      // The original gpt-oss layout: one model.safetensors. Other *.safetensors files beside it
      // (reference logits, say) are not part of the model.
      set.add_file(SafeTensorsFile::open(single.string()));
      return set;
    } else {
      std::vector<std::string> names;
      for (const auto& e : fs::directory_iterator(path, ec))
        if (e.path().extension() == ".safetensors") names.push_back(e.path().string());
      MIND4_CHECK(!ec, Status::kIoError, "cannot list '", path, "': ", ec.message());
      MIND4_CHECK(!names.empty(), Status::kIoError, "directory '", path,
                  "' holds no *.safetensors file and no model.safetensors.index.json");
      std::sort(names.begin(), names.end());
      for (const auto& n : names) set.add_file(SafeTensorsFile::open(n));
      return set;
    }
  } else if (path.size() >= 5 && path.ends_with(".json")) {
    index_path = path;
  } else {
    set.add_file(SafeTensorsFile::open(path));
    return set;
  }

  // An index: {"metadata": {...}, "weight_map": {tensor: file}} with files relative to the index.
  json index;
  try {
    index = json::parse(read_text_file(index_path));
  } catch (const json::exception& e) {
    throw Error(Status::kCorruptFile, "index '" + index_path + "' is not valid JSON: " + e.what());
  }
  auto wm = index.is_object() ? index.find("weight_map") : index.end();
  MIND4_CHECK(index.is_object() && wm != index.end() && wm->is_object(), Status::kCorruptFile,
              "index '", index_path, "' has no 'weight_map' object");
  std::map<std::string, std::string> expected_file;  // tensor -> file name
  std::vector<std::string> shard_names;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    MIND4_CHECK(it->is_string(), Status::kCorruptFile, "index '", index_path,
                "': weight_map entry '", it.key(), "' is not a file name");
    std::string file = it->get<std::string>();
    MIND4_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..",
                Status::kCorruptFile, "index '", index_path, "': weight_map entry '", it.key(),
                "' names '", file, "', which is not a file in the index's directory");
    expected_file[it.key()] = file;
    if (std::find(shard_names.begin(), shard_names.end(), file) == shard_names.end())
      shard_names.push_back(file);
  }
  MIND4_CHECK(!shard_names.empty(), Status::kCorruptFile, "index '", index_path,
              "' lists no tensors");
  std::sort(shard_names.begin(), shard_names.end());
  fs::path dir = fs::path(index_path).parent_path();
  for (const auto& name : shard_names) {
    fs::path shard = dir / name;
    MIND4_CHECK(fs::exists(shard, ec), Status::kIoError, "index '", index_path, "' names '", name,
                "', which does not exist");
    set.add_file(SafeTensorsFile::open(shard.string()));
  }
  for (const auto& [tensor, file] : expected_file) {
    auto it = set.by_name_.find(tensor);
    MIND4_CHECK(it != set.by_name_.end(), Status::kCorruptFile, "index '", index_path,
                "' places tensor '", tensor, "' in '", file, "', which does not hold it");
    MIND4_CHECK(fs::path(*it->second->file).filename() == file, Status::kCorruptFile, "index '",
                index_path, "' places tensor '", tensor, "' in '", file, "' but it is in '",
                *it->second->file, "'");
  }
  for (const auto& [tensor, t] : set.by_name_)
    MIND4_CHECK(expected_file.count(tensor), Status::kCorruptFile, "tensor '", tensor, "' in '",
                *t->file, "' is missing from the index '", index_path, "'");
  return set;
}

const SafeTensor* SafeTensorsSet::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const SafeTensor& SafeTensorsSet::get(const std::string& name) const {
  const SafeTensor* t = find(name);
  MIND4_CHECK(t, Status::kMissingTensor, "checkpoint '", source_, "' has no tensor '", name, "'");
  return *t;
}

std::vector<const SafeTensor*> SafeTensorsSet::tensors() const {
  std::vector<const SafeTensor*> out;
  out.reserve(by_name_.size());
  for (const auto& [name, t] : by_name_) out.push_back(t);
  return out;
}

// ---- writing ----

size_t TensorSpec::nbytes() const {
  uint64_t n = 0;
  MIND4_CHECK(span_bytes(shape, dtype, &n), Status::kInvalidArgument, "tensor '", name, "' shape ",
              shape_string(shape), " is invalid");
  return size_t(n);
}

SafeTensorsWriter::SafeTensorsWriter(const std::string& path, std::vector<TensorSpec> specs,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), specs_(std::move(specs)) {
  std::stable_sort(specs_.begin(), specs_.end(), [](const TensorSpec& a, const TensorSpec& b) {
    return dtype_size(a.dtype) > dtype_size(b.dtype);
  });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const TensorSpec& s : specs_) {
    MIND4_CHECK(s.name != "__metadata__" && names.insert(s.name).second, Status::kInvalidArgument,
                "tensor name '", s.name, "' is reserved or used twice in '", path, "'");
    uint64_t n = s.nbytes();
    header[s.name] = {{"dtype", std::string(dtype_name(s.dtype))},
                      {"shape", s.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the format recommends.
  text.append((8 - text.size() % 8) % 8, ' ');
  size_ = 8 + text.size() + offset;

  temp_path_ = path + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(temp_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MIND4_CHECK(fd_ >= 0, Status::kIoError, "cannot create '", temp_path_,
              "': ", std::strerror(errno));
  // Reserve the blocks now: a full disk then fails here with a message instead of SIGBUS later when
  // a page of the mapping is first written.
  int err = ::posix_fallocate(fd_, 0, off_t(size_));
  if (err == EOPNOTSUPP || err == EINVAL) err = ::ftruncate(fd_, off_t(size_)) == 0 ? 0 : errno;
  if (err != 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
    throw Error(Status::kIoError, "cannot allocate " + std::to_string(size_) + " bytes for '" +
                                      path + "': " + std::strerror(err));
  }
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::close(fd_);
    ::unlink(temp_path_.c_str());
    throw Error(Status::kIoError, "cannot map '" + temp_path_ + "': " + std::strerror(e));
  }
  map_ = static_cast<uint8_t*>(p);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) map_[i] = uint8_t(n >> (8 * i));
  std::memcpy(map_ + 8, text.data(), text.size());
  uint8_t* cursor = map_ + 8 + text.size();
  for (const TensorSpec& s : specs_) {
    spans_[s.name] = {cursor, s.nbytes()};
    cursor += s.nbytes();
  }
}

std::span<uint8_t> SafeTensorsWriter::data(const std::string& name) {
  auto it = spans_.find(name);
  MIND4_CHECK(it != spans_.end(), Status::kInvalidArgument, "tensor '", name,
              "' was not declared for '", path_, "'");
  return it->second;
}

void SafeTensorsWriter::commit() {
  MIND4_CHECK(!committed_, Status::kInternal, "'", path_, "' committed twice");
  int rc = ::msync(map_, size_, MS_SYNC);
  int err = errno;
  ::munmap(map_, size_);
  map_ = nullptr;
  MIND4_CHECK(rc == 0, Status::kIoError, "cannot write '", temp_path_, "': ", std::strerror(err));
  MIND4_CHECK(::close(std::exchange(fd_, -1)) == 0, Status::kIoError, "cannot close '", temp_path_,
              "': ", std::strerror(errno));
  MIND4_CHECK(::rename(temp_path_.c_str(), path_.c_str()) == 0, Status::kIoError, "cannot rename '",
              temp_path_, "' to '", path_, "': ", std::strerror(errno));
  committed_ = true;
}

SafeTensorsWriter::~SafeTensorsWriter() {
  if (map_) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  for (const auto& t : tensors) specs.push_back(t.spec);
  SafeTensorsWriter w(path, std::move(specs), metadata);
  for (const auto& t : tensors) {
    auto dst = w.data(t.spec.name);
    if (!dst.empty()) std::memcpy(dst.data(), t.data, dst.size());
  }
  w.commit();
}

}  // namespace mind4
