// `mind4 forward`: logits of every position of a token sequence, written as the safetensors
// tensor `logits` F32 [T, vocab] (compare with another implementation, or feed an eval).
#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "io/safetensors.h"
#include "mind4/model.h"
#include "mind4/status.h"

namespace {

struct ForwardOptions {
  std::string checkpoint, tokens, tokens_file, out;
  int threads = 0;
  int batch = 256;
  std::string backend = "cpu", dtype = "float32";
};

// "1, 2,3" or whitespace/newline separated; every entry must be an integer.
std::vector<int> parse_tokens(const std::string& text, const std::string& where) {
  std::vector<int> out;
  std::string item;
  std::istringstream in(text);
  auto flush = [&] {
    if (item.empty()) return;
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (...) {
      used = 0;
    }
    MIND4_CHECK(used == item.size() && v >= INT32_MIN && v <= INT32_MAX,
                mind4::Status::kInvalidArgument, where, ": '", item, "' is not a token id");
    out.push_back(int(v));
    item.clear();
  };
  for (char ch; in.get(ch);) {
    if (ch == ',' || std::isspace(static_cast<unsigned char>(ch)))
      flush();
    else
      item += ch;
  }
  flush();
  MIND4_CHECK(!out.empty(), mind4::Status::kInvalidArgument, where, ": no tokens");
  return out;
}

void run_forward(const ForwardOptions& o) {
  MIND4_CHECK(o.tokens.empty() != o.tokens_file.empty(), mind4::Status::kInvalidArgument,
              "forward: give exactly one of --tokens and --tokens-file");
  std::vector<int> tokens;
  if (!o.tokens.empty()) {
    tokens = parse_tokens(o.tokens, "--tokens");
  } else {
    std::ifstream f(o.tokens_file);
    MIND4_CHECK(f.good(), mind4::Status::kIoError, "forward: cannot read --tokens-file ",
                o.tokens_file);
    std::stringstream ss;
    ss << f.rdbuf();
    tokens = parse_tokens(ss.str(), o.tokens_file);
  }
  mind4::Config config;
  config.paths.checkpoint = o.checkpoint;
  config.execution.backend = mind4::parse_backend(o.backend, "--backend");
  config.execution.dtype = mind4::parse_activation_dtype(o.dtype, "--dtype");
  auto model = mind4::Model::load(config);
  const int T = int(tokens.size()), V = model->config().vocab_size;
  MIND4_CHECK(T <= model->config().max_context_length, mind4::Status::kContextOverflow,
              "forward: ", T, " tokens exceed the model's max_context_length ",
              model->config().max_context_length);
  mind4::Context ctx(model, {.context_length = T,
                             .max_sequences = 1,
                             .max_batch_tokens = std::min(T, o.batch),
                             .threads = o.threads,
                             .keep_all_logits = true});
  const int seq = ctx.new_sequence();
  ctx.append(seq, tokens);  // kTokenOutOfRange names a bad id
  ctx.process();
  auto logits = ctx.all_logits(seq);
  mind4::SafeTensorsWriter writer(o.out, {{"logits", mind4::DType::kF32, {T, V}}},
                                  {{"checkpoint", o.checkpoint}});
  auto dst = writer.data("logits");
  std::memcpy(dst.data(), logits.data(), dst.size());
  writer.commit();
  std::fprintf(stderr, "forward: %d tokens -> %s (logits [%d, %d])\n", T, o.out.c_str(), T, V);
}

void setup_forward(CLI::App& app) {
  auto o = std::make_shared<ForwardOptions>();
  app.add_option("--checkpoint", o->checkpoint, "Checkpoint directory or .safetensors file")
      ->required();
  app.add_option("--tokens", o->tokens, "Token ids, comma separated (e.g. 1,2,3)");
  app.add_option("--tokens-file", o->tokens_file,
                 "File of token ids separated by commas or whitespace");
  app.add_option("--out", o->out, "Output .safetensors file (tensor `logits` F32 [T, vocab])")
      ->required();
  app.add_option("--threads", o->threads, "Worker threads (0 = all cores)");
  app.add_option("--batch", o->batch, "Tokens per forward step")->check(CLI::PositiveNumber);
  app.add_option("--backend", o->backend, "Execution line: cpu | cuda");
  app.add_option("--dtype", o->dtype,
                 "Activations: float32 (default: logits for comparison) | bfloat16 (cuda)");
  app.callback([o] { run_forward(*o); });
}

mind4::cli::Command register_forward{
    "forward", "Logits of every position of a token sequence (safetensors)", setup_forward};

}  // namespace
