#include "train/data.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/mapped_file.h"
#include "mind4/status.h"

namespace mind4::train {
namespace {

constexpr char kShardMagic[8] = {'M', 'I', 'N', 'D', '4', 'T', 'O', 'K'};
constexpr size_t kShardHeaderBytes = 32;

template <typename U>
void shard_put(std::string& out, U v) {
  for (size_t i = 0; i < sizeof(U); ++i) out.push_back(char(uint8_t(uint64_t(v) >> (8 * i))));
}
template <typename U>
U shard_get(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(U); ++i) v |= uint64_t(p[i]) << (8 * i);
  return U(v);
}

}  // namespace

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens,
                       uint32_t vocab_size) {
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
  std::string bytes(kShardMagic, 8);
  shard_put<uint32_t>(bytes, 1);
  shard_put<uint32_t>(bytes, width);
  shard_put<uint32_t>(bytes, vocab_size);
  shard_put<uint32_t>(bytes, 0);
  shard_put<uint64_t>(bytes, tokens.size());
  bytes.reserve(bytes.size() + tokens.size() * width);
  for (int32_t t : tokens) {
    if (width == 2)
      shard_put<uint16_t>(bytes, uint16_t(t));
    else
      shard_put<uint32_t>(bytes, uint32_t(t));
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MIND4_CHECK(out, Status::kIoError, "cannot write ", tmp);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    MIND4_CHECK(out.good(), Status::kIoError, "write failed: ", tmp);
  }
  std::filesystem::rename(tmp, path);
}

TokenSplit read_token_split(const std::string& dir, const std::string& split) {
  namespace fs = std::filesystem;
  MIND4_CHECK(fs::is_directory(dir), Status::kIoError, "data directory ", dir,
              " does not exist (make it with `mind4 prepare-data`)");
  TokenSplit out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(split + "_") && name.ends_with(".bin")) out.files.push_back(e.path());
  }
  std::sort(out.files.begin(), out.files.end());
  MIND4_CHECK(!out.files.empty(), Status::kIoError, "no ", split, "_*.bin shard in ", dir,
              " (make them with `mind4 prepare-data`)");
  for (const auto& file : out.files) {
    MappedFile m = MappedFile::open(file);
    const uint8_t* p = m.data();
    MIND4_CHECK(m.size() > 0, Status::kCorruptFile, file,
                ": empty file (0 bytes), not a token shard (re-run `mind4 prepare-data`)");
    MIND4_CHECK(m.size() >= kShardHeaderBytes && std::memcmp(p, kShardMagic, 8) == 0,
                Status::kCorruptFile, file, ": not a token shard (bad magic)");
    TokenShardHeader h;
    h.version = shard_get<uint32_t>(p + 8);
    h.width = shard_get<uint32_t>(p + 12);
    h.vocab_size = shard_get<uint32_t>(p + 16);
    h.count = shard_get<uint64_t>(p + 24);
    MIND4_CHECK(h.version == 1, Status::kCorruptFile, file, ": shard version ", h.version,
                " is not 1");
    MIND4_CHECK(h.width == 2 || h.width == 4, Status::kCorruptFile, file, ": token width ", h.width,
                " is not 2 or 4");
    MIND4_CHECK(h.vocab_size > 0, Status::kCorruptFile, file, ": vocab_size is 0");
    MIND4_CHECK(h.count <= (m.size() - kShardHeaderBytes) / h.width &&
                    m.size() == kShardHeaderBytes + h.count * h.width,
                Status::kCorruptFile, file, ": the header says ", h.count, " tokens (",
                kShardHeaderBytes + h.count * h.width, " bytes) but the file has ", m.size(),
                " bytes (truncated?)");
    // prepare-data never writes an empty shard: one is a damaged or hand-made file.
    MIND4_CHECK(h.count > 0, Status::kCorruptFile, file,
                ": the shard holds no tokens (re-run `mind4 prepare-data`)");
    MIND4_CHECK(out.vocab_size == 0 || out.vocab_size == h.vocab_size, Status::kCorruptFile, file,
                ": vocab_size ", h.vocab_size, " differs from the other shards' ", out.vocab_size);
    out.vocab_size = h.vocab_size;
    const size_t base = out.tokens.size();
    out.tokens.resize(base + h.count);
    for (uint64_t i = 0; i < h.count; ++i) {
      const uint8_t* q = p + kShardHeaderBytes + i * h.width;
      const uint32_t t = h.width == 2 ? shard_get<uint16_t>(q) : shard_get<uint32_t>(q);
      MIND4_CHECK(t < h.vocab_size, Status::kCorruptFile, file, ": token ", i, " = ", t,
                  " is outside the vocabulary of ", h.vocab_size);
      out.tokens[base + i] = int32_t(t);
    }
  }
  return out;
}

BatchSampler::BatchSampler(const TokenSplit& data, int seq, uint64_t seed)
    : data_(data), seq_(seq), rng_(seed) {}

void BatchSampler::next(int batch, int* inputs, int* targets) {
  const uint64_t span = data_.tokens.size() - uint64_t(seq_);  // offsets [0, span)
  for (int b = 0; b < batch; ++b) {
    const uint64_t off = rng_.next_u64() % span;
    const int32_t* w = data_.tokens.data() + off;
    for (int s = 0; s < seq_; ++s) {
      inputs[b * seq_ + s] = w[s];
      targets[b * seq_ + s] = w[s + 1];
    }
  }
}

void eval_window(const TokenSplit& data, int seq, int index, int count, int* inputs, int* targets) {
  const uint64_t span = data.tokens.size() - uint64_t(seq);
  const uint64_t off = count > 1 ? span * uint64_t(index) / uint64_t(count) : 0;
  const int32_t* w = data.tokens.data() + std::min(off, span - 1);
  for (int s = 0; s < seq; ++s) inputs[s] = w[s], targets[s] = w[s + 1];
}

}  // namespace mind4::train
