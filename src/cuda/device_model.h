// The weights of a Model on the GPU, uploaded once when the model loads and shared by every
// Context of it. All tensors are carved from one allocation. Dense matrices (QKV, out, router,
// embedding, unembedding, and plain experts) are stored in the activation dtype; MXFP4 experts
// stay packed as the checkpoint stores them; vectors (norm scales, biases, sinks) are f32.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/buffer.h"
#include "cuda/kernels.h"
#include "mind4/config.h"
#include "model/weights.h"

namespace mind4::cuda {

struct DeviceLayer {
  const float* attn_norm;
  const void* qkv_w;  // act [QKV, H]
  const float* qkv_b;
  const float* sinks;
  const void* out_w;  // act [H, NH D]
  const float* out_b;
  const float* mlp_norm;
  const float* gate_w;  // f32 [E, H] in every activation dtype (see device_model.cu)
  const float* gate_b;
  // MXFP4 experts: blocks/scales as stored; plain experts: w act [E, rows, cols].
  const uint8_t* mlp1_blocks = nullptr;
  const uint8_t* mlp1_scales = nullptr;
  const void* mlp1_w = nullptr;
  const float* mlp1_b;
  const uint8_t* mlp2_blocks = nullptr;
  const uint8_t* mlp2_scales = nullptr;
  const void* mlp2_w = nullptr;
  const float* mlp2_b;
};

struct DeviceModel {
  ModelConfig config;
  ActType act = ActType::kBF16;
  bool experts_mxfp4 = true;
  int device = 0;
  DeviceBuffer arena;
  const void* embedding = nullptr;    // act [V, H]
  const void* unembedding = nullptr;  // act [V, H]
  const float* norm = nullptr;
  std::vector<DeviceLayer> layers;
};

// Checks the GPU (present, Hopper or newer, enough free memory for the weights) and uploads.
std::shared_ptr<const DeviceModel> upload_model(const ModelWeights& weights,
                                                const ExecutionConfig& execution);

// Bytes of GPU memory the weights take in activation dtype t.
int64_t device_weight_bytes(const ModelWeights& weights, ActType t);

// Selects the device for `execution` on this thread (device 0: one GPU per process for now) and
// returns it; kUnsupported naming the reason when there is none usable.
int select_device(const char* what);

}  // namespace mind4::cuda
