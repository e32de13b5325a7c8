// `mind4 train-tokenizer`: byte-level BPE vocabulary from text files, written as .tiktoken
// plus a sidecar PATH.json (pattern, special tokens) that `--tokenizer PATH` reads back.
#include <chrono>
#include <cstdio>

#include "command.h"
#include "mind4/status.h"
#include "tokenizer/trainer.h"
#include "tokenizer/vocabulary.h"

namespace {

struct TrainTokenizerOptions {
  std::vector<std::string> inputs;
  int vocab_size = 4096;
  std::string out;
  std::string pattern = "o200k";
  std::vector<std::string> specials = {"<|endoftext|>"};
};

// Progress on stderr; kept local so it can be swapped for mind4::ProgressBar.
void show_progress(const char* stage, uint64_t done, uint64_t total) {
  const int width = 30;
  double frac = total ? static_cast<double>(done) / total : 1.0;
  int fill = static_cast<int>(frac * width);
  std::fprintf(stderr, "\r%-6s [%.*s%*s] %3d%% %llu/%llu", stage, fill,
               "##############################", width - fill, "", static_cast<int>(frac * 100),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total));
  if (done >= total) std::fprintf(stderr, "\n");
}

void run(const TrainTokenizerOptions& o) {
  mind4::tok::TrainOptions t;
  if (o.pattern == "o200k") {
    t.pattern = mind4::tok::kO200kPattern;
  } else if (o.pattern == "gpt2") {
    t.pattern = mind4::tok::kGpt2Pattern;
  } else {
    t.pattern = o.pattern;
  }
  t.vocab_size = o.vocab_size;
  t.specials = o.specials;
  t.progress = show_progress;
  auto start = std::chrono::steady_clock::now();
  mind4::tok::TrainStats stats;
  mind4::tok::Vocabulary v = mind4::tok::train_bpe(o.inputs, t, &stats);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  mind4::tok::write_tiktoken_file(v, o.out);
  std::printf("trained %d merges (%d ids with specials) from %.1f MB, %llu pieces (%llu unique) "
              "in %.1f s\nwrote %s and %s.json\n",
              stats.merges, v.vocab_size(), stats.bytes / 1e6,
              static_cast<unsigned long long>(stats.pieces),
              static_cast<unsigned long long>(stats.unique_pieces), secs, o.out.c_str(),
              o.out.c_str());
  if (v.vocab_size() < o.vocab_size)
    std::printf("note: the corpus ran out of pairs before %d ids\n", o.vocab_size);
}

void setup_train_tokenizer(CLI::App& app) {
  auto o = std::make_shared<TrainTokenizerOptions>();
  app.add_option("--input", o->inputs, "Text files to train on")->required()->expected(1, -1);
  app.add_option("--vocab-size", o->vocab_size, "Ids in the vocabulary, specials included");
  app.add_option("--out", o->out, "Output .tiktoken path (plus PATH.json)")->required();
  app.add_option("--pattern", o->pattern, "Pre-tokenisation regex, or o200k / gpt2");
  app.add_option("--special", o->specials, "Special tokens appended after the merges")
      ->expected(0, -1);
  app.callback([o] { run(*o); });
}

mind4::cli::Command register_train_tokenizer{"train-tokenizer", "Train a byte-level BPE vocabulary (.tiktoken)",
                        setup_train_tokenizer};

}  // namespace
