// The gpt-oss weights as the forward pass sees them, whatever layout the checkpoint used.
// Big matrices are views into the mmapped checkpoint (bf16, f32, or packed MXFP4), never expanded;
// only what a layout stores differently (HF's split q/k/v, transposed bf16 experts) and the small
// vectors (norm scales, biases, sinks, converted to f32) are owned copies.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "mind4/config.h"

namespace mind4 {

// A view of one tensor: row-major, contiguous. data points into a mapped file or an owned buffer.
struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;

  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  const float* f32() const { return static_cast<const float*>(data); }
  const uint16_t* bf16() const { return static_cast<const uint16_t*>(data); }
  const uint8_t* u8() const { return static_cast<const uint8_t*>(data); }
  bool empty() const { return data == nullptr; }
};

// Shapes use H = hidden_size, NH/NKV = attention / kv heads, D = head_dim, E = num_experts,
// I = intermediate_size, V = vocab_size. "matrix" = BF16 or F32; "vector" = owned F32.
struct LayerWeights {
  TensorView attn_norm;  // vector [H]
  TensorView qkv_w;      // matrix [(NH + 2*NKV) * D, H]: rows q heads, then k heads, then v heads
  TensorView qkv_b;      // vector [(NH + 2*NKV) * D]
  TensorView sinks;      // vector [NH]
  TensorView out_w;      // matrix [H, NH * D]
  TensorView out_b;      // vector [H]
  TensorView mlp_norm;   // vector [H]
  TensorView gate_w;     // matrix [E, H] (the router)
  TensorView gate_b;     // vector [E]
  // Experts. MXFP4: *_blocks U8 [E, rows, cols/32, 16] and *_scales U8 [E, rows, cols/32].
  // BF16: *_blocks is the matrix [E, rows, cols] and *_scales is empty.
  // mlp1 rows interleave gate (even) and linear (odd): rows = 2*I, cols = H.
  TensorView mlp1_blocks, mlp1_scales;
  TensorView mlp1_b;  // vector [E, 2*I]
  TensorView mlp2_blocks, mlp2_scales;  // rows = H, cols = I
  TensorView mlp2_b;  // vector [E, H]
};

struct ModelWeights {
  ModelConfig config;
  bool experts_mxfp4 = true;
  TensorView embedding;    // matrix [V, H]
  std::vector<LayerWeights> layers;
  TensorView norm;         // vector [H]
  TensorView unembedding;  // matrix [V, H]
  // The dtype the checkpoint stored the small vectors in (BF16 in published checkpoints, F32 when
  // any of them was F32), so that a conversion writes them back bit for bit.
  DType vector_dtype = DType::kBF16;
  // The same for the expert biases (mlp1/mlp2 biases), which a checkpoint may store apart.
  DType expert_bias_dtype = DType::kBF16;
  // Keeps the mapped files and owned buffers alive as long as the views.
  std::shared_ptr<void> storage;
};

}  // namespace mind4
