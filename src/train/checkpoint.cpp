#include "train/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>

#include "core/crc32.h"
#include "core/dtype.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "mind4/status.h"

namespace mind4::train {
namespace fs = std::filesystem;

namespace {

void ckpt_write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MIND4_CHECK(out, Status::kIoError, "cannot write ", tmp);
    out << text;
    out.flush();
    MIND4_CHECK(out.good(), Status::kIoError, "write failed: ", tmp);
  }
  MIND4_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, Status::kIoError, "cannot rename ", tmp,
              " to ", path);
}

constexpr const char* kCkptSumsName = "checksums.crc32";

// Records the CRC-32 and size of every file in a step directory that is about to be renamed into
// place. Written last, so it covers the bytes exactly as they will be read on resume.
void ckpt_write_checksums(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != kCkptSumsName)
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string text = "# CRC-32 (zlib's), size in bytes, file; checked before a resume\n";
  for (const auto& n : names) {
    uint64_t size = 0;
    const uint32_t crc = crc32_file(dir + "/" + n, &size);
    char line[64];
    std::snprintf(line, sizeof line, "%08x %llu ", crc, (unsigned long long)size);
    text += line + n + "\n";
  }
  ckpt_write_text_atomic(dir + "/" + kCkptSumsName, text);
}

std::string ckpt_step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", (long long)step);
  return buf;
}

}  // namespace

namespace {

// Expert weight matrices [E, rows, cols]: the tensors MXFP4 applies to in gpt-oss.
bool ckpt_is_expert_matrix(const ParamTensor& t) {
  return t.name.ends_with("mlp.mlp1_weight") || t.name.ends_with("mlp.mlp2_weight");
}

// Quantises an expert tensor's rows of f32 master weights straight to MXFP4 with the one OCP MX
// rule of core/dtype (the one `mind4 convert` uses), never through bf16: a round trip through
// bf16 could move a block's maximum across a power of two and change its shared exponent.
void ckpt_quantize_experts(const ParamTensor& t, const float* src, std::span<uint8_t> blocks,
                           std::span<uint8_t> scales) {
  const int64_t cols = t.shape.back(), per_row = cols / kMxfp4BlockSize;
  const int64_t rows = t.numel / cols;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < per_row; ++k) {
      const int64_t block = r * per_row + k;
      quantize_mxfp4_block(src + r * cols + k * kMxfp4BlockSize,
                           blocks.data() + block * kMxfp4BlockBytes, scales.data() + block);
    }
}

}  // namespace

void write_model_files(const std::string& dir, const ParamLayout& layout, const float* params,
                       DType matrix_dtype, bool mxfp4_experts) {
  if (mxfp4_experts) validate_model_config(layout.config, dir, true);
  fs::create_directories(dir);
  std::vector<TensorSpec> specs;
  for (const auto& t : layout.tensors) {
    if (mxfp4_experts && ckpt_is_expert_matrix(t)) {
      // The original layout's packing: [E, rows, cols/32, 16] nibble pairs, [E, rows, cols/32]
      // e8m0 scales.
      const int64_t E = t.shape[0], R = t.shape[1], C = t.shape[2];
      specs.push_back({t.name + ".blocks", DType::kU8, {E, R, C / kMxfp4BlockSize, 16}});
      specs.push_back({t.name + ".scales", DType::kU8, {E, R, C / kMxfp4BlockSize}});
    } else {
      specs.push_back({t.name, t.decay ? matrix_dtype : DType::kF32, t.shape});
    }
  }
  SafeTensorsWriter w(dir + "/model.safetensors", specs, {{"format", "pt"}});
  for (const auto& t : layout.tensors) {
    const float* src = params + t.offset;
    if (mxfp4_experts && ckpt_is_expert_matrix(t)) {
      ckpt_quantize_experts(t, src, w.data(t.name + ".blocks"), w.data(t.name + ".scales"));
      continue;
    }
    std::span<uint8_t> dst = w.data(t.name);
    if (t.decay && matrix_dtype == DType::kBF16) {
      auto* out = reinterpret_cast<uint16_t*>(dst.data());
      for (int64_t i = 0; i < t.numel; ++i) out[i] = f32_to_bf16(src[i]);
    } else {
      std::memcpy(dst.data(), src, size_t(t.numel) * 4);
    }
  }
  w.commit();
  ckpt_write_text_atomic(
      dir + "/config.json",
      model_config_json(layout.config, CheckpointLayout::kOriginal, mxfp4_experts));
}

void save_checkpoint(const std::string& ckpt_dir, const ParamLayout& layout, const float* params,
                     const float* adam_m, const float* adam_v, const TrainState& state,
                     int keep_last, const std::vector<std::string>& extra_files) {
  fs::create_directories(ckpt_dir);
  const std::string name = ckpt_step_name(state.step);
  const std::string final_dir = ckpt_dir + "/" + name, tmp_dir = ckpt_dir + "/.tmp-" + name;
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  write_model_files(tmp_dir, layout, params, DType::kF32);
  const std::vector<int64_t> shape = {layout.total};
  std::map<std::string, std::string> meta = {{"step", std::to_string(state.step)},
                                             {"sampler_state", std::to_string(state.sampler_state)},
                                             {"tokens_seen", std::to_string(state.tokens_seen)},
                                             {"fingerprint", state.fingerprint}};
  SafeTensorsWriter w(tmp_dir + "/state.safetensors",
                      {{"params", DType::kF32, shape},
                       {"adam_m", DType::kF32, shape},
                       {"adam_v", DType::kF32, shape}},
                      meta);
  std::memcpy(w.data("params").data(), params, size_t(layout.total) * 4);
  std::memcpy(w.data("adam_m").data(), adam_m, size_t(layout.total) * 4);
  std::memcpy(w.data("adam_v").data(), adam_v, size_t(layout.total) * 4);
  w.commit();
  for (const auto& f : extra_files)
    fs::copy_file(f, tmp_dir + "/" + fs::path(f).filename().string(),
                  fs::copy_options::overwrite_existing);
  ckpt_write_checksums(tmp_dir);
  fs::remove_all(final_dir);  // a previous run's directory of the same step
  fs::rename(tmp_dir, final_dir);
  ckpt_write_text_atomic(ckpt_dir + "/latest", name + "\n");
  // keep-last-N, oldest first.
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(ckpt_dir)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.starts_with("step_")) steps.push_back(n);
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + size_t(keep_last) < steps.size(); ++i)
    if (steps[i] != name) fs::remove_all(ckpt_dir + "/" + steps[i]);
}

std::string latest_checkpoint(const std::string& ckpt_dir) {
  std::ifstream in(ckpt_dir + "/latest");
  if (!in) return "";
  std::string name;
  std::getline(in, name);
  MIND4_CHECK(name.starts_with("step_") && fs::is_directory(ckpt_dir + "/" + name),
              Status::kCorruptFile, ckpt_dir, "/latest names '", name,
              "', which is not a checkpoint directory here");
  return ckpt_dir + "/" + name;
}

void verify_checkpoint_files(const std::string& step_dir) {
  const std::string sums = step_dir + "/" + kCkptSumsName;
  // What to do about it, in every message: the run must not start from damaged state.
  const std::string advice =
      "; the run will not start from it. Point " +
      (fs::path(step_dir).parent_path() / "latest").string() +
      " at an earlier step_ directory, or use another checkpoint.dir to start afresh";
  MIND4_CHECK(fs::exists(sums), Status::kCorruptFile, "checkpoint ", step_dir, " has no ",
              kCkptSumsName, " (written by an older mind4, or the directory was copied in part)",
              advice);
  std::ifstream in(sums);
  std::string line;
  bool has_state = false;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    unsigned crc = 0;
    unsigned long long size = 0;
    int name_at = 0;
    MIND4_CHECK(std::sscanf(line.c_str(), "%8x %llu %n", &crc, &size, &name_at) == 2 &&
                    name_at > 0 && size_t(name_at) < line.size(),
                Status::kCorruptFile, sums, ":", lineno, ": not a 'crc size file' line", advice);
    const std::string name = line.substr(size_t(name_at));
    MIND4_CHECK(name.find('/') == std::string::npos && name != "." && name != "..",
                Status::kCorruptFile, sums, ":", lineno, ": '", name,
                "' is not a file name of this directory", advice);
    const std::string path = step_dir + "/" + name;
    MIND4_CHECK(fs::is_regular_file(path), Status::kCorruptFile, path, " is missing", advice);
    uint64_t actual_size = 0;
    const uint32_t actual = crc32_file(path, &actual_size);
    MIND4_CHECK(actual_size == size, Status::kCorruptFile, path, " has ", actual_size,
                " bytes but ", kCkptSumsName, " records ", size, " (truncated?)", advice);
    char got[16], want[16];
    std::snprintf(got, sizeof got, "%08x", actual);
    std::snprintf(want, sizeof want, "%08x", crc);
    MIND4_CHECK(actual == crc, Status::kCorruptFile, path, " is corrupt: its CRC-32 is ", got,
                " but ", kCkptSumsName, " records ", want, advice);
    has_state |= name == "state.safetensors";
  }
  MIND4_CHECK(has_state, Status::kCorruptFile, sums, " does not cover state.safetensors", advice);
}

TrainState load_checkpoint_state(const std::string& step_dir, const ParamLayout& layout,
                                 float* params, float* adam_m, float* adam_v) {
  const std::string path = step_dir + "/state.safetensors";
  MIND4_CHECK(fs::exists(path), Status::kCorruptFile, "checkpoint ", step_dir,
              " has no state.safetensors; cannot resume from it");
  verify_checkpoint_files(step_dir);
  auto file = SafeTensorsFile::open(path);
  TrainState s;
  const auto& meta = file->metadata();
  auto field = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    MIND4_CHECK(it != meta.end(), Status::kCorruptFile, path, ": metadata lacks '", key, "'");
    return it->second;
  };
  try {
    s.step = std::stoll(field("step"));
    s.sampler_state = std::stoull(field("sampler_state"));
    s.tokens_seen = std::stoll(field("tokens_seen"));
  } catch (const std::logic_error&) {
    throw Error(Status::kCorruptFile, path + ": a numeric metadata field is not a number");
  }
  s.fingerprint = field("fingerprint");
  float* dst[3] = {params, adam_m, adam_v};
  const char* names[3] = {"params", "adam_m", "adam_v"};
  for (int i = 0; i < 3; ++i) {
    const SafeTensor* t = nullptr;
    for (const auto& x : file->tensors())
      if (x.name == names[i]) t = &x;
    MIND4_CHECK(t, Status::kCorruptFile, path, ": tensor '", names[i], "' is missing");
    MIND4_CHECK(t->dtype == DType::kF32 && t->numel() == layout.total, Status::kCorruptFile, path,
                ": tensor '", names[i], "' has ", t->numel(), " values; this model has ",
                layout.total);
    std::memcpy(dst[i], t->data, size_t(layout.total) * 4);
  }
  return s;
}

}  // namespace mind4::train
