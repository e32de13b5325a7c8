// `mind4 prepare-data`: tokenizes text files into binary token shards (src/train/data.h) with a
// train/validation split. Text is cut into chunks at line boundaries; every k-th chunk goes to
// validation (k = round(1 / val_fraction)), so both splits sample the whole corpus.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "command.h"
#include "core/progress.h"
#include "mind4/status.h"
#include "mind4/tokenizer.h"
#include "train/data.h"

namespace {

struct PrepareDataOptions {
  std::vector<std::string> inputs;
  std::string tokenizer;
  std::string out;
  double val_fraction = 0.05;
  int chunk_bytes = 16384;
  int64_t shard_tokens = 100000000;
};

std::string prepare_read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MIND4_CHECK(f, mind4::Status::kIoError, "cannot read input ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The end of the chunk starting at pos: chunk_bytes on, then on to the next line's start, so that
// no line is split between train and validation.
size_t prepare_chunk_end(const std::string& text, size_t pos, int chunk_bytes) {
  size_t end = std::min(text.size(), pos + size_t(chunk_bytes));
  if (end < text.size()) {
    const size_t nl = text.find('\n', end);
    end = nl == std::string::npos ? text.size() : nl + 1;
  }
  return end;
}

void prepare_flush(const std::string& dir, const std::string& split, std::vector<int32_t>& toks,
                   int& index, uint32_t vocab) {
  char name[64];
  std::snprintf(name, sizeof name, "/%s_%04d.bin", split.c_str(), index++);
  mind4::train::write_token_shard(dir + name, toks, vocab);
  toks.clear();
}

void prepare_run(const PrepareDataOptions& o) {
  namespace fs = std::filesystem;
  MIND4_CHECK(o.val_fraction > 0 && o.val_fraction < 1, mind4::Status::kInvalidArgument,
              "--val-fraction must be in (0, 1), got ", o.val_fraction);
  // Inputs are checked before anything is written, so a bad one leaves an earlier output as it was.
  uint64_t total = 0;
  std::string input_list;
  for (const auto& in : o.inputs) {
    MIND4_CHECK(fs::is_regular_file(in), mind4::Status::kIoError, "input ", in,
                " is not a readable file");
    const uint64_t size = fs::file_size(in);
    MIND4_CHECK(size > 0, mind4::Status::kInvalidArgument, "input ", in,
                " is empty (0 bytes): there is no text to tokenize");
    total += size;
    input_list += (input_list.empty() ? "" : ", ") + in;
  }
  const int every = std::max(2, int(std::lround(1.0 / o.val_fraction)));
  // Both splits need a chunk (every chunk of text has at least one token): fewer than `every`
  // chunks leave validation empty. Counted by a pass that cuts chunks as the real one does.
  int64_t chunks = 0;
  for (const auto& in : o.inputs) {
    const std::string text = prepare_read(in);
    for (size_t pos = 0; pos < text.size(); ++chunks)
      pos = prepare_chunk_end(text, pos, o.chunk_bytes);
  }
  MIND4_CHECK(
      chunks >= every, mind4::Status::kInvalidArgument, "input ", input_list, " (", total,
      " bytes) is too small to split: it makes ", chunks, " chunk(s) of --chunk-bytes ",
      o.chunk_bytes, " (cut at newlines) and 1 chunk in ", every,
      " goes to validation (--val-fraction ", o.val_fraction,
      "), so the val split would be empty. It needs ", every,
      " chunks: lower --chunk-bytes (to about ", std::max<uint64_t>(1, total / uint64_t(every)),
      "; a chunk ends at a line's end, so that needs ", every, " lines or more) or give more text");
  auto tok = mind4::Tokenizer::load(o.tokenizer);
  const uint32_t vocab = uint32_t(tok.vocab_size());
  fs::create_directories(o.out);
  for (const auto& e : fs::directory_iterator(o.out)) {
    const std::string n = e.path().filename().string();
    if ((n.starts_with("train_") || n.starts_with("val_")) && n.ends_with(".bin"))
      fs::remove(e.path());  // shards of an earlier run would mix with these
  }
  std::vector<int32_t> split_tokens[2];
  int shard_index[2] = {0, 0};
  int64_t counts[2] = {0, 0};
  const char* names[2] = {"train", "val"};
  mind4::ProgressBar bar("tokenize", total, "B");
  int64_t chunk_no = 0;
  for (const auto& in : o.inputs) {
    const std::string text = prepare_read(in);
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t end = prepare_chunk_end(text, pos, o.chunk_bytes);
      const int which = (chunk_no++ % every == every - 1) ? 1 : 0;
      for (int id : tok.encode(std::string_view(text).substr(pos, end - pos)))
        split_tokens[which].push_back(id);
      if (int64_t(split_tokens[which].size()) >= o.shard_tokens) {
        counts[which] += int64_t(split_tokens[which].size());
        prepare_flush(o.out, names[which], split_tokens[which], shard_index[which], vocab);
      }
      bar.add(end - pos);
      pos = end;
    }
  }
  bar.finish();
  for (int w = 0; w < 2; ++w) {
    // Unreachable after the chunk count above (a non-empty chunk has a token); kept as the guard
    // that no empty split is ever written.
    MIND4_CHECK(counts[w] + int64_t(split_tokens[w].size()) > 0, mind4::Status::kInternal, "the ",
                names[w], " split of ", input_list, " came out empty");
    counts[w] += int64_t(split_tokens[w].size());
    if (!split_tokens[w].empty())
      prepare_flush(o.out, names[w], split_tokens[w], shard_index[w], vocab);
  }
  std::printf(
      "wrote %lld train tokens (%d shards) and %lld val tokens (%d shards) to %s; "
      "vocabulary %s (%u ids)\n",
      (long long)counts[0], shard_index[0], (long long)counts[1], shard_index[1], o.out.c_str(),
      tok.name().c_str(), vocab);
}

void setup_prepare_data(CLI::App& app) {
  auto o = std::make_shared<PrepareDataOptions>();
  app.add_option("--input", o->inputs, "Text files to tokenize")->required()->expected(1, -1);
  app.add_option("--tokenizer", o->tokenizer, "Vocabulary file (or built-in name)")->required();
  app.add_option("--out", o->out, "Output directory for train_*.bin and val_*.bin")->required();
  app.add_option("--val-fraction", o->val_fraction, "Share of text chunks held out")
      ->capture_default_str();
  app.add_option("--chunk-bytes", o->chunk_bytes, "Bytes per split chunk (cut at a newline)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--shard-tokens", o->shard_tokens, "Tokens per shard file at most")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.callback([o] { prepare_run(*o); });
}

mind4::cli::Command register_prepare_data{
    "prepare-data", "Tokenize text files into train/val token shards", setup_prepare_data};

}  // namespace
