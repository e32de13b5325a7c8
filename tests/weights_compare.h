// Compares two ModelWeights tensor by tensor (dtype, shape, bytes), for layout round trips.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "model/weights.h"

namespace mind4::testing {

inline void expect_same_view(const TensorView& a, const TensorView& b, const std::string& what) {
  ASSERT_EQ(a.empty(), b.empty()) << what;
  if (a.empty()) return;
  ASSERT_EQ(a.dtype, b.dtype) << what;
  ASSERT_EQ(a.shape, b.shape) << what;
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << what << " differs";
}

inline void expect_same_weights(const ModelWeights& a, const ModelWeights& b) {
  ASSERT_EQ(a.layers.size(), b.layers.size());
  EXPECT_EQ(a.experts_mxfp4, b.experts_mxfp4);
  expect_same_view(a.embedding, b.embedding, "embedding");
  expect_same_view(a.norm, b.norm, "norm");
  expect_same_view(a.unembedding, b.unembedding, "unembedding");
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerWeights &x = a.layers[l], &y = b.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    expect_same_view(x.attn_norm, y.attn_norm, p + "attn_norm");
    expect_same_view(x.qkv_w, y.qkv_w, p + "qkv_w");
    expect_same_view(x.qkv_b, y.qkv_b, p + "qkv_b");
    expect_same_view(x.sinks, y.sinks, p + "sinks");
    expect_same_view(x.out_w, y.out_w, p + "out_w");
    expect_same_view(x.out_b, y.out_b, p + "out_b");
    expect_same_view(x.mlp_norm, y.mlp_norm, p + "mlp_norm");
    expect_same_view(x.gate_w, y.gate_w, p + "gate_w");
    expect_same_view(x.gate_b, y.gate_b, p + "gate_b");
    expect_same_view(x.mlp1_blocks, y.mlp1_blocks, p + "mlp1_blocks");
    expect_same_view(x.mlp1_scales, y.mlp1_scales, p + "mlp1_scales");
    expect_same_view(x.mlp1_b, y.mlp1_b, p + "mlp1_b");
    expect_same_view(x.mlp2_blocks, y.mlp2_blocks, p + "mlp2_blocks");
    expect_same_view(x.mlp2_scales, y.mlp2_scales, p + "mlp2_scales");
    expect_same_view(x.mlp2_b, y.mlp2_b, p + "mlp2_b");
  }
}

}  // namespace mind4::testing
