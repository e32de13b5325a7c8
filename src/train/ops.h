// Forward and backward of the small ops of a gpt-oss block, for training. Templated on the scalar
// so that the same code runs in float (training) and in double (the finite-difference tests).
// Backward functions overwrite the input gradient (dx) and accumulate parameter gradients (+=),
// unless said otherwise. Shapes: n = row length, D = head_dim, S = sequence length.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace mind4::train {

constexpr double kRmsEps = 1e-5;
constexpr double kSwigluAlpha = 1.702;

// y = x * rstd * g, rstd = 1 / sqrt(mean(x^2) + eps). Returns rstd (kept for the backward).
template <typename T>
T rmsnorm_fwd(const T* x, const T* g, int n, T* y) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const T r = T(1.0 / std::sqrt(ss / n + kRmsEps));
  for (int i = 0; i < n; ++i) y[i] = x[i] * r * g[i];
  return r;
}

// dx = rstd * (dy*g) - x * rstd^3 / n * sum(dy*g*x); dg += dy * x * rstd.
template <typename T>
void rmsnorm_bwd(const T* x, const T* g, T rstd, const T* dy, int n, T* dx, T* dg) {
  double dot = 0.0;
  for (int i = 0; i < n; ++i) dot += double(dy[i]) * g[i] * x[i];
  const T c = T(dot * double(rstd) * rstd * rstd / n);
  for (int i = 0; i < n; ++i) {
    dx[i] = rstd * dy[i] * g[i] - x[i] * c;
    if (dg) dg[i] += dy[i] * x[i] * rstd;
  }
}

// Half-split rotation of `heads` vectors of D by one position's cos/sin row [D/2] (the YaRN
// concentration is folded into the tables, as in the inference kernels).
template <typename T>
void rope_fwd(T* x, int heads, int D, const T* cos_row, const T* sin_row) {
  const int h2 = D / 2;
  for (int h = 0; h < heads; ++h) {
    T* v = x + int64_t(h) * D;
    for (int i = 0; i < h2; ++i) {
      const T x1 = v[i], x2 = v[i + h2];
      v[i] = x1 * cos_row[i] - x2 * sin_row[i];
      v[i + h2] = x2 * cos_row[i] + x1 * sin_row[i];
    }
  }
}

// In place: the transpose of the rotation applied to the gradient (not its inverse: with the
// concentration folded in, the matrix is a scaled rotation).
template <typename T>
void rope_bwd(T* dx, int heads, int D, const T* cos_row, const T* sin_row) {
  const int h2 = D / 2;
  for (int h = 0; h < heads; ++h) {
    T* v = dx + int64_t(h) * D;
    for (int i = 0; i < h2; ++i) {
      const T d1 = v[i], d2 = v[i + h2];
      v[i] = d1 * cos_row[i] + d2 * sin_row[i];
      v[i + h2] = d2 * cos_row[i] - d1 * sin_row[i];
    }
  }
}

template <typename T>
inline T train_dot(const T* a, const T* b, int n) {
  T s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Attention geometry of one sequence in a packed qkv buffer: row s holds q heads [NH, D], then k
// heads [NKV, D], then v heads [NKV, D]; `window` > 0 limits each query to the last `window` keys.
struct AttnShape {
  int S, NH, NKV, D, window;
  int64_t qkv_stride() const { return int64_t(NH + 2 * NKV) * D; }
  int first_key(int s) const { return window > 0 ? std::max(0, s - window + 1) : 0; }
};

// Query heads of kv head `kvh` for every position: out[s, h*D..] = sum_j p_j v_j with
// p = softmax over (scores, sink) and the sink's value zero; lse[s*NH + h] = log of the
// denominator (kept for the backward). scores: scratch of S values.
template <typename T>
void attention_fwd(const AttnShape& a, int kvh, const T* qkv, const T* sinks, T scale, T* out,
                   T* lse, T* scores) {
  const int64_t ld = a.qkv_stride(), ldo = int64_t(a.NH) * a.D;
  const int group = a.NH / a.NKV, D = a.D;
  const T* kbase = qkv + int64_t(a.NH + kvh) * D;
  const T* vbase = qkv + int64_t(a.NH + a.NKV + kvh) * D;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h)
    for (int s = 0; s < a.S; ++s) {
      const T* q = qkv + s * ld + int64_t(h) * D;
      const int j0 = a.first_key(s);
      T m = sinks[h];
      for (int j = j0; j <= s; ++j) {
        scores[j] = train_dot(q, kbase + j * ld, D) * scale;
        m = std::max(m, scores[j]);
      }
      T denom = std::exp(sinks[h] - m);
      for (int j = j0; j <= s; ++j) denom += scores[j] = std::exp(scores[j] - m);
      const T inv = T(1) / denom;
      T* o = out + s * ldo + int64_t(h) * D;
      std::fill_n(o, D, T(0));
      for (int j = j0; j <= s; ++j) {
        const T p = scores[j] * inv;
        const T* v = vbase + j * ld;
        for (int d = 0; d < D; ++d) o[d] += p * v[d];
      }
      lse[int64_t(s) * a.NH + h] = m + std::log(denom);
    }
}

// Gradients of attention_fwd for kv head `kvh`: dqkv's q rows of the group's heads are
// overwritten, its k and v rows of kvh are accumulated; dsinks[h] accumulates.
// With p_j = exp(s_j - lse): dv_j += p_j do, dp_j = do.v_j, ds_j = p_j (dp_j - delta) where
// delta = sum_j p_j dp_j = do.out (the sink's value is zero), dsink = -p_sink delta.
// scratch: 2 * S values (p and ds of one query row).
template <typename T>
void attention_bwd(const AttnShape& a, int kvh, const T* qkv, const T* sinks, T scale, const T* out,
                   const T* lse, const T* dout, T* dqkv, T* dsinks, T* scratch) {
  const int64_t ld = a.qkv_stride(), ldo = int64_t(a.NH) * a.D;
  const int group = a.NH / a.NKV, D = a.D;
  const int64_t koff = int64_t(a.NH + kvh) * D, voff = int64_t(a.NH + a.NKV + kvh) * D;
  T* p = scratch;
  T* ds = scratch + a.S;
  for (int h = kvh * group; h < (kvh + 1) * group; ++h)
    for (int s = 0; s < a.S; ++s) {
      const T* q = qkv + s * ld + int64_t(h) * D;
      const T* o = out + s * ldo + int64_t(h) * D;
      const T* dO = dout + s * ldo + int64_t(h) * D;
      T* dq = dqkv + s * ld + int64_t(h) * D;
      std::fill_n(dq, D, T(0));
      const T L = lse[int64_t(s) * a.NH + h];
      const T delta = train_dot(dO, o, D);
      const int j0 = a.first_key(s), n = s - j0 + 1;
      for (int j = 0; j < n; ++j) {
        const T* k = qkv + (j0 + j) * ld + koff;
        p[j] = std::exp(train_dot(q, k, D) * scale - L);
        ds[j] = p[j] * (train_dot(dO, qkv + (j0 + j) * ld + voff, D) - delta) * scale;
        for (int d = 0; d < D; ++d) dq[d] += ds[j] * k[d];
      }
      for (int j = 0; j < n; ++j) {
        T* dk = dqkv + (j0 + j) * ld + koff;
        T* dv = dqkv + (j0 + j) * ld + voff;
        for (int d = 0; d < D; ++d) {
          dk[d] += ds[j] * q[d];
          dv[d] += p[j] * dO[d];
        }
      }
      dsinks[h] -= std::exp(sinks[h] - L) * delta;
    }
}

// Float: the same algorithms with vectorised row primitives (train/attention.cpp).
template <>
void attention_fwd<float>(const AttnShape& a, int kvh, const float* qkv, const float* sinks,
                          float scale, float* out, float* lse, float* scores);
template <>
void attention_bwd<float>(const AttnShape& a, int kvh, const float* qkv, const float* sinks,
                          float scale, const float* out, const float* lse, const float* dout,
                          float* dqkv, float* dsinks, float* scratch);

// h holds interleaved (gate, linear) pairs [2n]: out[i] = g*sigmoid(alpha g)*(l + 1) with
// g = min(h[2i], limit), l = clamp(h[2i+1], -limit, limit).
template <typename T>
void swiglu_fwd(const T* h, int n, T limit, T* out) {
  for (int i = 0; i < n; ++i) {
    const T g = std::min(h[2 * i], limit);
    const T l = std::clamp(h[2 * i + 1], -limit, limit);
    out[i] = g / (T(1) + std::exp(-T(kSwigluAlpha) * g)) * (l + T(1));
  }
}

// dh (overwritten) from dout. A clamped input gets no gradient (as torch.clamp: the bound itself
// passes it).
template <typename T>
void swiglu_bwd(const T* h, int n, T limit, const T* dout, T* dh) {
  const T alpha = T(kSwigluAlpha);
  for (int i = 0; i < n; ++i) {
    const T g = std::min(h[2 * i], limit);
    const T l = std::clamp(h[2 * i + 1], -limit, limit);
    const T sig = T(1) / (T(1) + std::exp(-alpha * g));
    dh[2 * i] =
        h[2 * i] <= limit ? dout[i] * (l + T(1)) * sig * (T(1) + alpha * g * (T(1) - sig)) : T(0);
    dh[2 * i + 1] = std::abs(h[2 * i + 1]) <= limit ? dout[i] * g * sig : T(0);
  }
}

// The k largest router logits (ties: lower index first) and the softmax over them.
template <typename T>
void router_fwd(const T* logits, int E, int k, int* experts, T* weights) {
  for (int s = 0; s < k; ++s) {
    int best = -1;
    for (int e = 0; e < E; ++e) {
      bool taken = false;
      for (int p = 0; p < s; ++p) taken |= experts[p] == e;
      if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
    }
    experts[s] = best;
  }
  T m = logits[experts[0]], sum = 0;
  for (int s = 0; s < k; ++s) sum += weights[s] = std::exp(logits[experts[s]] - m);
  for (int s = 0; s < k; ++s) weights[s] /= sum;
}

// dlogits (accumulated) from the gradient of the k softmax weights.
template <typename T>
void router_bwd(const int* experts, const T* weights, const T* dweights, int k, T* dlogits) {
  T dot = 0;
  for (int s = 0; s < k; ++s) dot += weights[s] * dweights[s];
  for (int s = 0; s < k; ++s) dlogits[experts[s]] += weights[s] * (dweights[s] - dot);
}

// Softmax over all E router logits (the probabilities of the load-balancing loss).
template <typename T>
void softmax_fwd(const T* x, int n, T* p) {
  T m = x[0];
  for (int i = 1; i < n; ++i) m = std::max(m, x[i]);
  T sum = 0;
  for (int i = 0; i < n; ++i) sum += p[i] = std::exp(x[i] - m);
  for (int i = 0; i < n; ++i) p[i] /= sum;
}

// dx (accumulated) += p * (dp - p.dp).
template <typename T>
void softmax_bwd(const T* p, const T* dp, int n, T* dx) {
  T dot = 0;
  for (int i = 0; i < n; ++i) dot += p[i] * dp[i];
  for (int i = 0; i < n; ++i) dx[i] += p[i] * (dp[i] - dot);
}

// -log softmax(logits)[target] over V; dlogits (overwritten, may alias logits) = (softmax -
// onehot) * scale. Returns the loss in double.
template <typename T>
double cross_entropy_fwd_bwd(T* logits, int V, int target, T scale) {
  T m = logits[0];
  for (int i = 1; i < V; ++i) m = std::max(m, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < V; ++i) sum += std::exp(double(logits[i] - m));
  const double lse = double(m) + std::log(sum);
  const double loss = lse - double(logits[target]);
  for (int i = 0; i < V; ++i) logits[i] = T(std::exp(double(logits[i]) - lse)) * scale;
  logits[target] -= scale;
  return loss;
}

}  // namespace mind4::train
