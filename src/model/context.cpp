// Context: sequences (token history, positions, KV slot), the queue of appended tokens, and the
// batching of process() into forward steps of at most max_batch_tokens rows that mix sequences.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "mind4/sampler.h"
#include "mind4/status.h"
#include "model/backend.h"
#include "model/model_impl.h"

namespace mind4 {

// A named namespace, not an anonymous one: Context::Impl (external linkage) holds Sequences.
namespace context_detail {
struct Sequence {
  bool active = false;
  int generation = 0;       // bumped on release, so a stale id is recognised
  std::vector<int> tokens;  // processed, then queued
  int processed = 0;
  int process_base = 0;  // processed when the current process() began
  bool has_logits = false;
  bool host_logits = false;       // last_logits holds them (else only the backend's device store)
  int all_rows = 0;               // rows in all_logits from the last process()
  std::vector<float> all_logits;  // [all_rows, V] (keep_all_logits only)
  // append_sampled(): the drawn token's index in tokens while the backend still has it (the
  // token there is kDrawnToken), and the draw once known.
  int draw_at = -1;
  bool has_drawn = false;
  SampledToken drawn;
};
}  // namespace context_detail
using context_detail::Sequence;

struct Context::Impl {
  std::shared_ptr<const Model> model;
  ContextOptions options;
  std::unique_ptr<StepBackend> backend;  // the model's execution line: KV cache and scratch
  std::vector<Sequence> seqs;            // one per KV slot
  FloatBuffer last_logits;               // [max_sequences, V]
  std::vector<StepRow> rows;             // the current step
  std::vector<int> logit_rows;           // step rows whose logits are wanted
  std::vector<int> logit_dest;           // for each: slot
  std::vector<int> logit_row_in_seq;     // for each: row index in the sequence's all_logits, or -1
  bool device_logits = false;            // the backend keeps a per-slot logits store
  // sample() on the CPU line: one Sampler, rebuilt when the config (seed aside) changes.
  std::unique_ptr<Sampler> sampler;
  std::vector<StepBackend::SlotSample> slot_samples;
  std::vector<SampledToken> drawn_now;  // append_sampled() drawing at once

  Impl(std::shared_ptr<const Model> m, ContextOptions o) : model(std::move(m)), options(o) {}

  int slot_of(int seq, const char* what) const {
    const int S = options.max_sequences;
    const int slot = seq >= 0 ? seq % S : -1;
    MIND4_CHECK(slot >= 0 && seqs[slot].active && seqs[slot].generation == seq / S,
                Status::kInvalidArgument, what, ": sequence ", seq,
                " is not a live sequence of this context (never created or released)");
    return slot;
  }

  // Whether a draw of append_sampled() still awaits process() (its token not processed yet).
  bool draw_queued() const {
    for (const Sequence& s : seqs)
      if (s.active && s.draw_at >= 0 && s.processed <= s.draw_at) return true;
    return false;
  }

  // Brings a draw of append_sampled() still in the backend into the sequence's tokens. A draw
  // no process() has run yet runs now; its token is then an ordinary queued one.
  void resolve_draw(int slot) {
    Sequence& s = seqs[slot];
    if (s.draw_at < 0) return;
    try {
      s.drawn = backend->take_drawn(slot);
    } catch (const Error&) {  // the token never existed: drop it and what came after
      s.tokens.resize(size_t(s.draw_at));
      s.processed = std::min(s.processed, s.draw_at);
      s.has_logits = s.host_logits = s.has_drawn = false;
      s.draw_at = -1;
      throw;
    }
    s.tokens[size_t(s.draw_at)] = s.drawn.token;
    s.draw_at = -1;
  }

  // Forgets the sequence's draw (truncated away, or the sequence released).
  void drop_draw(int slot) {
    Sequence& s = seqs[slot];
    if (s.draw_at >= 0) backend->cancel_draw(slot);
    s.draw_at = -1;
    s.has_drawn = false;
  }
};

Context::Context(std::shared_ptr<const Model> model, ContextOptions options) {
  MIND4_CHECK(model != nullptr, Status::kInvalidArgument, "Context: model is null");
  const ModelConfig& c = model->config();
  MIND4_CHECK(options.context_length > 0, Status::kInvalidArgument,
              "Context: context_length = ", options.context_length, " must be positive");
  MIND4_CHECK(options.context_length <= c.max_context_length, Status::kInvalidArgument,
              "Context: context_length = ", options.context_length,
              " exceeds the model's max_context_length = ", c.max_context_length);
  MIND4_CHECK(options.max_sequences > 0, Status::kInvalidArgument,
              "Context: max_sequences = ", options.max_sequences, " must be positive");
  MIND4_CHECK(options.max_batch_tokens > 0, Status::kInvalidArgument,
              "Context: max_batch_tokens = ", options.max_batch_tokens, " must be positive");
  MIND4_CHECK(options.threads >= 0, Status::kInvalidArgument,
              "Context: threads = ", options.threads, " must be >= 0 (0 = all cores)");
  impl_ = std::make_unique<Impl>(std::move(model), options);
  Impl& m = *impl_;
  const int S = options.max_sequences, B = options.max_batch_tokens;
  const int logit_rows = options.keep_all_logits ? B : std::min(B, S);
  const Model::Impl& mi = *m.model->impl_;
  // The backend allocates its KV cache and scratch now (kOutOfMemory names their size).
  m.backend = mi.execution.backend == Backend::kCuda ? make_cuda_backend(mi, options, logit_rows)
                                                     : make_cpu_backend(mi, options, logit_rows);
  m.device_logits = m.backend->has_device_logits();
  m.backend->set_logits_to_host(options.keep_all_logits || options.host_logits);
  try {
    m.last_logits = FloatBuffer(int64_t(S) * c.vocab_size);
    m.seqs.resize(S);
    for (auto& s : m.seqs) s.tokens.reserve(options.context_length);
    m.rows.reserve(B);
    m.logit_rows.reserve(B);
    m.logit_dest.reserve(B);
    m.logit_row_in_seq.reserve(B);
  } catch (const std::bad_alloc&) {
    throw Error(Status::kOutOfMemory, detail::cat("Context: cannot allocate the logits store (", S,
                                                  " sequences x ", c.vocab_size, " floats)"));
  }
}

Context::~Context() = default;
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;

int Context::new_sequence() {
  Impl& m = *impl_;
  for (int slot = 0; slot < int(m.seqs.size()); ++slot) {
    Sequence& s = m.seqs[slot];
    if (s.active) continue;
    s.active = true;
    s.tokens.clear();
    s.processed = 0;
    s.has_logits = false;
    s.host_logits = false;
    s.all_rows = 0;
    s.draw_at = -1;
    s.has_drawn = false;
    return s.generation * m.options.max_sequences + slot;
  }
  throw Error(Status::kOutOfMemory,
              detail::cat("new_sequence: all ", m.options.max_sequences,
                          " sequence slots are in use (ContextOptions.max_sequences); release "
                          "one first"));
}

void Context::append(int seq, std::span<const int> tokens) {
  Impl& m = *impl_;
  Sequence& s = m.seqs[m.slot_of(seq, "append")];
  const int V = m.model->config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i)
    MIND4_CHECK(tokens[i] >= 0 && tokens[i] < V, Status::kTokenOutOfRange, "append: token ",
                tokens[i], " at index ", i, " for sequence ", seq,
                " is outside the vocabulary [0, ", V, ")");
  const int64_t length = int64_t(s.tokens.size());
  MIND4_CHECK(length + int64_t(tokens.size()) <= m.options.context_length, Status::kContextOverflow,
              "append: sequence ", seq, " has ", length, " tokens; appending ", tokens.size(),
              " would exceed context_length ", m.options.context_length);
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
}

void Context::process() {
  Impl& m = *impl_;
  const int V = m.model->config().vocab_size;
  const int B = m.options.max_batch_tokens;
  const bool keep_all = m.options.keep_all_logits;
  for (Sequence& s : m.seqs) {
    if (!s.active) continue;
    const int queued = int(s.tokens.size()) - s.processed;
    s.process_base = s.processed;
    if (keep_all) {
      s.all_rows = queued;
      if (queued > 0) s.all_logits.resize(size_t(queued) * V);
    }
  }
  // Walk the queued tokens of all sequences in slot order, cutting steps of at most B rows.
  int slot = 0, pos = 0;
  auto advance_to_queued = [&] {
    while (slot < int(m.seqs.size()) &&
           (!m.seqs[slot].active || int(m.seqs[slot].tokens.size()) == m.seqs[slot].processed))
      ++slot;
    if (slot < int(m.seqs.size())) pos = m.seqs[slot].processed;
  };
  advance_to_queued();
  while (slot < int(m.seqs.size())) {
    m.rows.clear();
    m.logit_rows.clear();
    m.logit_dest.clear();
    m.logit_row_in_seq.clear();
    while (int(m.rows.size()) < B && slot < int(m.seqs.size())) {
      Sequence& s = m.seqs[slot];
      while (int(m.rows.size()) < B && pos < int(s.tokens.size())) {
        const bool last = pos + 1 == int(s.tokens.size());
        if (keep_all || last) {
          m.logit_rows.push_back(int(m.rows.size()));
          m.logit_dest.push_back(slot);
          m.logit_row_in_seq.push_back(keep_all ? pos - s.process_base : -1);
        }
        m.rows.push_back({slot, pos, s.tokens[pos]});
        ++pos;
      }
      if (pos == int(s.tokens.size())) {
        ++slot;
        advance_to_queued();
      }
    }
    const std::span<const float> step_logits = m.backend->forward(m.rows, m.logit_rows);
    for (size_t i = 0; i < m.logit_rows.size(); ++i) {
      Sequence& s = m.seqs[m.logit_dest[i]];
      const float* src = step_logits.empty() ? nullptr : step_logits.data() + int64_t(i) * V;
      if (m.logit_row_in_seq[i] >= 0)
        std::copy_n(src, V, s.all_logits.data() + int64_t(m.logit_row_in_seq[i]) * V);
      const StepRow& row = m.rows[m.logit_rows[i]];
      if (row.pos + 1 == int(s.tokens.size())) {
        // An empty span: the logits stayed in the backend's device store.
        if (!step_logits.empty())
          std::copy_n(src, V, m.last_logits.data() + int64_t(m.logit_dest[i]) * V);
        s.has_logits = true;
        s.host_logits = !step_logits.empty();
      }
    }
    for (const StepRow& row : m.rows) m.seqs[row.slot].processed = row.pos + 1;
  }
}

void Context::synchronize() {
  impl_->backend->finish();
}

std::span<const float> Context::logits(int seq) const {
  Impl& m = *impl_;  // a lazy copy from the device store may fill last_logits
  const int slot = m.slot_of(seq, "logits");
  Sequence& s = m.seqs[slot];
  MIND4_CHECK(s.has_logits, Status::kInvalidArgument, "logits: sequence ", seq,
              " has not been processed yet (append tokens, then call process())");
  const int V = m.model->config().vocab_size;
  float* row = m.last_logits.data() + int64_t(slot) * V;
  if (!s.host_logits) {
    m.backend->download_logits(slot, row);
    s.host_logits = true;
  }
  return {row, size_t(V)};
}

namespace {
bool same_sampling_but_seed(const SamplingConfig& a, const SamplingConfig& b) {
  return a.temperature == b.temperature && a.top_k == b.top_k && a.top_p == b.top_p &&
         a.min_p == b.min_p && a.repetition_penalty == b.repetition_penalty &&
         a.presence_penalty == b.presence_penalty && a.frequency_penalty == b.frequency_penalty;
}
}  // namespace

void Context::sample(std::span<const SampleRequest> requests, const SamplingConfig& config,
                     LogprobMode mode, std::span<SampledToken> out) {
  Impl& m = *impl_;
  Sampler::validate(config);
  MIND4_CHECK(out.size() == requests.size(), Status::kInvalidArgument, "sample: ", out.size(),
              " outputs for ", requests.size(), " requests");
  MIND4_CHECK(requests.size() <= size_t(m.options.max_sequences), Status::kInvalidArgument,
              "sample: ", requests.size(),
              " requests in one call; at most max_sequences = ", m.options.max_sequences);
  for (const SampleRequest& r : requests) {
    const int slot = m.slot_of(r.seq, "sample");
    MIND4_CHECK(m.seqs[slot].has_logits, Status::kInvalidArgument, "sample: sequence ", r.seq,
                " has not been processed yet (append tokens, then call process())");
    m.resolve_draw(slot);  // the penalties count its tokens
  }
  if (m.device_logits) {
    m.slot_samples.clear();
    for (const SampleRequest& r : requests) {
      const int slot = m.slot_of(r.seq, "sample");
      const Sequence& s = m.seqs[slot];
      m.slot_samples.push_back({slot, r.seed, r.step, {s.tokens.data(), size_t(s.processed)}});
    }
    m.backend->sample(m.slot_samples, config, mode, out);
    return;
  }
  if (!m.sampler || !same_sampling_but_seed(m.sampler->config(), config))
    m.sampler = std::make_unique<Sampler>(config);
  SampleResult result;
  for (size_t i = 0; i < requests.size(); ++i) {
    const int seq = requests[i].seq;
    const Sequence& s = m.seqs[m.slot_of(seq, "sample")];
    m.sampler->set_seed(requests[i].seed);
    m.sampler->set_step(requests[i].step);
    m.sampler->sample_with_logprobs(logits(seq), {s.tokens.data(), size_t(s.processed)}, 0, mode,
                                    result);
    out[i] = {result.token, result.logprob};
  }
}

void Context::append_sampled(std::span<const SampleRequest> requests, const SamplingConfig& config,
                             LogprobMode mode) {
  Impl& m = *impl_;
  Sampler::validate(config);
  MIND4_CHECK(requests.size() <= size_t(m.options.max_sequences), Status::kInvalidArgument,
              "append_sampled: ", requests.size(),
              " requests in one call; at most max_sequences = ", m.options.max_sequences);
  MIND4_CHECK(!m.draw_queued(), Status::kInvalidArgument,
              "append_sampled: the tokens drawn by the last append_sampled() are still queued; "
              "call process() first");
  for (const SampleRequest& r : requests) {
    const int slot = m.slot_of(r.seq, "append_sampled");
    Sequence& s = m.seqs[slot];
    MIND4_CHECK(s.has_logits, Status::kInvalidArgument, "append_sampled: sequence ", r.seq,
                " has not been processed yet (append tokens, then call process())");
    MIND4_CHECK(int(s.tokens.size()) == s.processed, Status::kInvalidArgument,
                "append_sampled: sequence ", r.seq, " has ", int(s.tokens.size()) - s.processed,
                " queued tokens; call process() first (the draw needs their logits)");
    MIND4_CHECK(int(s.tokens.size()) < m.options.context_length, Status::kContextOverflow,
                "append_sampled: sequence ", r.seq, " has ", s.tokens.size(),
                " tokens; one more would exceed context_length ", m.options.context_length);
    m.resolve_draw(slot);
  }
  if (!m.backend->draws_on_device() || config.has_penalties()) {
    m.drawn_now.resize(requests.size());
    sample(requests, config, mode, m.drawn_now);
    for (size_t i = 0; i < requests.size(); ++i) {
      Sequence& s = m.seqs[m.slot_of(requests[i].seq, "append_sampled")];
      s.tokens.push_back(m.drawn_now[i].token);
      s.drawn = m.drawn_now[i];
      s.has_drawn = true;
    }
    return;
  }
  m.slot_samples.clear();
  for (const SampleRequest& r : requests)
    m.slot_samples.push_back({m.slot_of(r.seq, "append_sampled"), r.seed, r.step, {}});
  m.backend->queue_draws(m.slot_samples, config, mode);
  for (const StepBackend::SlotSample& j : m.slot_samples) {
    Sequence& s = m.seqs[j.slot];
    s.draw_at = int(s.tokens.size());
    s.tokens.push_back(kDrawnToken);
    s.has_drawn = true;
  }
}

bool Context::draws_on_device() const {
  return impl_->backend->draws_on_device();
}

SampledToken Context::drawn(int seq) {
  Impl& m = *impl_;
  const int slot = m.slot_of(seq, "drawn");
  Sequence& s = m.seqs[slot];
  MIND4_CHECK(s.has_drawn, Status::kInvalidArgument, "drawn: sequence ", seq,
              " has no token drawn by append_sampled() since the last drawn(), truncate() or "
              "release()");
  m.resolve_draw(slot);
  s.has_drawn = false;
  return s.drawn;
}

void StepBackend::download_logits(int, float*) {
  throw Error(Status::kInternal, "StepBackend: this line keeps no logits on a device");
}

void StepBackend::sample(std::span<const SlotSample>, const SamplingConfig&, LogprobMode,
                         std::span<SampledToken>) {
  throw Error(Status::kInternal, "StepBackend: this line does not sample on a device");
}

void StepBackend::queue_draws(std::span<const SlotSample>, const SamplingConfig&, LogprobMode) {
  throw Error(Status::kInternal, "StepBackend: this line does not draw into its steps");
}

SampledToken StepBackend::take_drawn(int) {
  throw Error(Status::kInternal, "StepBackend: this line does not draw into its steps");
}

std::span<const float> Context::all_logits(int seq) const {
  const Impl& m = *impl_;
  const int slot = m.slot_of(seq, "all_logits");
  MIND4_CHECK(m.options.keep_all_logits, Status::kInvalidArgument,
              "all_logits: the context was created without ContextOptions.keep_all_logits");
  const Sequence& s = m.seqs[slot];
  return {s.all_logits.data(), size_t(s.all_rows) * m.model->config().vocab_size};
}

std::span<const int> Context::tokens(int seq) const {
  const int slot = impl_->slot_of(seq, "tokens");
  impl_->resolve_draw(slot);
  const Sequence& s = impl_->seqs[slot];
  return {s.tokens.data(), s.tokens.size()};
}

int Context::processed(int seq) const {
  return impl_->seqs[impl_->slot_of(seq, "processed")].processed;
}

void Context::truncate(int seq, int length) {
  const int slot = impl_->slot_of(seq, "truncate");
  Sequence& s = impl_->seqs[slot];
  MIND4_CHECK(length >= 0 && length <= int(s.tokens.size()), Status::kInvalidArgument,
              "truncate: sequence ", seq, " has ", s.tokens.size(), " tokens; cannot keep ",
              length);
  if (s.draw_at >= length) impl_->drop_draw(slot);
  s.has_drawn = false;
  s.tokens.resize(size_t(length));
  // Attention reads the cache only up to each row's own position, so rows past `length` need no
  // clearing: they are rewritten before anything reads them again.
  if (length < s.processed) {  // the last processed token's logits are gone with it
    s.processed = length;
    s.has_logits = false;
    s.host_logits = false;
    s.all_rows = 0;
  }
}

void Context::release(int seq) {
  const int slot = impl_->slot_of(seq, "release");
  Sequence& s = impl_->seqs[slot];
  impl_->drop_draw(slot);
  s.active = false;
  s.generation = (s.generation + 1) % (INT32_MAX / impl_->options.max_sequences);
  s.tokens.clear();
  s.has_logits = false;
  s.all_rows = 0;
}

const Model& Context::model() const {
  return *impl_->model;
}
const ContextOptions& Context::options() const {
  return impl_->options;
}
int Context::threads() const {
  return impl_->backend->threads();
}

}  // namespace mind4
