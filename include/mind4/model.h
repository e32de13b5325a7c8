// The engine's public API: an immutable Model (weights, shared by any number of contexts) and a
// Context (KV cache, token history and positions of a set of sequences, scratch buffers), on the
// CPU reference line.
//
//   auto model = mind4::Model::load(config);               // or Model::from_weights(weights)
//   mind4::Context ctx(model, {.context_length = 4096, .max_sequences = 8});
//   int a = ctx.new_sequence(), b = ctx.new_sequence();
//   ctx.append(a, prompt_a); ctx.append(b, prompt_b);      // queued, any lengths
//   ctx.process();                                         // one batched forward over all queued
//   std::span<const float> la = ctx.logits(a);             // last position, vocab_size floats
//   ctx.release(b);                                        // its KV slot returns to the pool
//
// The execution line is the config's: backend cpu (fp32 reference line) or cuda (weights uploaded
// to the GPU once when the model loads; activations bf16, or fp32 with dtype float32). Every
// Context of a model runs on its line; the API is the same for both.
//
// Failures are mind4::Error with the Status named at each function below. A Context is used by
// one thread at a time (it runs its own thread pool inside process()); a Model may be shared by
// contexts on different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "mind4/config.h"
#include "mind4/sampler.h"

namespace mind4 {

struct ModelWeights;  // src/model/weights.h: views of the checkpoint's tensors

class Model {
 public:
  // Loads config.paths.checkpoint (a directory with config.json + *.safetensors in the original
  // or the Hugging Face layout, or one .safetensors file). Errors: kIoError (unreadable file),
  // kCorruptFile (malformed safetensors), kInvalidConfig (bad config.json field),
  // kMissingTensor / kShapeMismatch (a tensor absent or of the wrong dtype/shape, named).
  // config.execution picks the line: for backend cuda, kUnsupported when the build has no CUDA
  // line, when there is no GPU or for an activation dtype the line lacks (float16), and
  // kOutOfMemory when the weights do not fit in the GPU's free memory (checked before uploading).
  static std::shared_ptr<const Model> load(const Config& config);
  // Takes ownership of weights already bound to tensors. Checks every tensor's dtype and shape
  // against weights.config: kShapeMismatch or kMissingTensor naming the tensor, kInvalidConfig
  // for an impossible configuration (e.g. heads not divisible by kv heads, odd head_dim).
  // execution as for load().
  static std::shared_ptr<const Model> from_weights(ModelWeights weights,
                                                   const ExecutionConfig& execution = {});

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const;
  const ModelWeights& weights() const;
  // The execution line (backend, activation dtype) every Context of this model runs on.
  const ExecutionConfig& execution() const;
  // Bytes of weights one decoded token reads at batch 1: every dense matrix, the embedding row,
  // experts_per_token experts per layer, the unembedding (the KV cache comes on top).
  int64_t decode_weight_bytes() const;

  struct Impl;

 private:
  friend class Context;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct ContextOptions {
  int context_length = 4096;  // positions per sequence (KV cache rows); <= max_context_length
  int max_sequences = 1;      // KV slots; new_sequence() fails when all are taken
  // Tokens per internal forward step. process() cuts the queued tokens of all sequences into
  // steps of at most this many rows; scratch buffers are sized for it at construction.
  int max_batch_tokens = 256;
  int threads = 0;  // worker threads for the matrix products; 0 = all hardware threads
  // Keep the logits of every position processed by the last process() (all_logits()).
  bool keep_all_logits = false;
  // The CUDA line copies each processed sequence's logits to the host after process(). false
  // leaves them in GPU memory: sample() reads them there, and logits(seq) copies that one row
  // down when asked (batched decode then moves 16 bytes a sequence instead of 4 * vocab_size).
  // The CPU line ignores it; keep_all_logits implies true.
  bool host_logits = true;
};

// One sequence's draw in Context::sample.
struct SampleRequest {
  int seq = -1;
  // The draw is Sampler::uniform_at(seed, step): a front end keeps one seed per conversation and
  // counts steps as a CPU Sampler does (step() before the call), so both lines draw alike.
  uint64_t seed = 0;
  uint64_t step = 0;
};
struct SampledToken {
  int token = -1;
  float logprob = 0.0f;  // the token's log-probability under the LogprobMode asked for
};

class Context {
 public:
  // Allocates the KV cache (max_sequences x context_length x layers x 2 x kv_heads x head_dim,
  // fp32 on the CPU line, the activation dtype on the CUDA line, in GPU memory) and all scratch
  // now; nothing is allocated per token afterwards (except the all-positions logits store when
  // keep_all_logits is set, grown once per process()). Errors: kInvalidArgument (a non-positive
  // option, context_length > max_context_length), kOutOfMemory when the KV cache cannot be
  // allocated (the message gives its size).
  Context(std::shared_ptr<const Model> model, ContextOptions options = {});
  ~Context();
  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;

  // A fresh, empty sequence; returns its id. kOutOfMemory when all max_sequences slots are in
  // use (the message says so and names the limit).
  int new_sequence();
  // Queues tokens for the next process(). kInvalidArgument for an unknown or released id;
  // kTokenOutOfRange naming the token and its index for an id outside [0, vocab_size);
  // kContextOverflow naming the sequence, its length (processed + queued), the number appended
  // and context_length when it would not fit. On error nothing is queued.
  void append(int seq, std::span<const int> tokens);
  // One batched forward over every queued token of every sequence (weight rows read once per
  // step for all rows of all sequences). Afterwards logits(s) is the last position's logits of
  // each sequence that had queued tokens. No-op when nothing is queued. On the CUDA line with
  // host_logits = false it returns once the steps are queued (see synchronize()).
  void process();
  // Waits until the GPU has finished every queued step. On the CUDA line, process() returns
  // without waiting when the logits stay on the GPU (host_logits = false), so that the host
  // prepares and queues the next step while this one runs; whatever reads results (logits(),
  // sample()) waits by itself, so only a caller timing the GPU's work needs this. The CPU line
  // returns at once. A GPU fault in a queued step is reported here (or by the next read).
  void synchronize();

  // Logits (vocab_size floats) of the last position processed for seq; kInvalidArgument when
  // seq is unknown or has not been processed yet. Valid until the next process() or release().
  std::span<const float> logits(int seq) const;
  // Logits [n, vocab_size] of the n positions of seq processed by the last process() (row i =
  // i-th of them). kInvalidArgument unless options.keep_all_logits.
  std::span<const float> all_logits(int seq) const;
  // Every token of seq: processed ones followed by queued ones (a token append_sampled() drew is
  // waited for).
  std::span<const int> tokens(int seq) const;
  int processed(int seq) const;  // positions in the KV cache
  // Keeps the first `length` tokens of seq (processed or queued) and forgets the rest, so that a
  // conversation that changed after some point (an edited or dropped message) is processed again
  // only from there. The KV rows past `length` are overwritten as new tokens are processed.
  // When processed tokens go, logits(seq) is unavailable until the next process() (dropping only
  // queued tokens keeps it). kInvalidArgument for an unknown id or a length outside
  // [0, tokens(seq).size()].
  void truncate(int seq, int length);
  // Frees seq's slot (its KV memory returns to the pool); kInvalidArgument for an unknown id.
  void release(int seq);

  // Picks the next token of each requested sequence from its last logits (as logits(seq)) with
  // one SamplingConfig (config.seed is not used: each request names its seed), out[i] for
  // requests[i]. The penalties count the sequence's processed tokens (prompt included). The CPU
  // line runs the Sampler of sampler.h; the CUDA line samples on the GPU with the same order of
  // operations and the same Philox draw, so that only token and logprob cross to the host (how
  // the two may differ: docs/cuda.md, "Sampling on the GPU"). Does not append the token.
  // Errors: kInvalidArgument for a config out of range (as Sampler::validate), an unknown
  // sequence or one without logits, out.size() != requests.size(), more requests than
  // max_sequences, or logits the Sampler rejects (NaN, +inf, all masked).
  void sample(std::span<const SampleRequest> requests, const SamplingConfig& config,
              LogprobMode mode, std::span<SampledToken> out);
  // sample() and append() in one, without the token coming to the host first: on the CUDA line
  // the next process() draws each requested sequence's token on the GPU, writes it into its own
  // step's input and runs that step, all queued at once; drawn(seq) then returns the token as
  // soon as its draw is done, while the step may still run. A generation loop thus queues the
  // step of token n before it learns token n, and the GPU does not wait for the host between
  // tokens (chat::Generator runs so). With penalties, and on the CPU line, the token is drawn
  // now (the penalties count tokens on the host). Errors as sample(), and kInvalidArgument for a
  // sequence with queued tokens (its logits are not its last token's yet) or when the draws of
  // an earlier append_sampled() have not been through process() yet; kContextOverflow when the
  // token would not fit.
  void append_sampled(std::span<const SampleRequest> requests, const SamplingConfig& config,
                      LogprobMode mode);
  // The token append_sampled() drew for seq (waiting for its draw). kInvalidArgument when seq
  // has none since its last drawn(), truncate() or release(); a draw the sampler rejects (NaN or
  // +inf logits, all masked) is reported here as sample() reports it, and its token is dropped
  // from the sequence (with any token appended after it).
  SampledToken drawn(int seq);
  // Whether append_sampled() leaves its draws to the device (the CUDA line; without penalties):
  // only then does a loop gain from queueing a token's step before it knows the token.
  bool draws_on_device() const;

  const Model& model() const;
  const ContextOptions& options() const;
  int threads() const;  // the CPU line's worker threads; 1 on the CUDA line

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mind4
