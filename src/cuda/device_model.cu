// Weight upload: plan every tensor's place in one arena, check that the GPU has room, then copy.
// Matrices whose checkpoint dtype differs from the activation dtype go through a device staging
// buffer and a conversion kernel, so no converted copy of a large matrix is ever made on the host.
#include <algorithm>
#include <cstring>
#include <functional>

#include "cuda/device_model.h"
#include "mind4/status.h"

namespace mind4::cuda {
namespace {

// kRouter: the router matrix, kept f32 whatever the activation dtype (routing is a discrete choice;
// bf16 rounding of its logits flips near-ties between experts).
enum class Role { kVector, kMatrix, kRouter, kBytes };

struct Planned {
  const TensorView* src;
  Role role;
  size_t offset;
  size_t bytes;
  std::function<void(const void*)> bind;  // stores the device address into the model
};

size_t role_bytes(const TensorView& t, Role role, ActType a) {
  switch (role) {
    case Role::kVector:
      return size_t(t.numel()) * 4;
    case Role::kMatrix:
      return size_t(t.numel()) * act_size(a);
    case Role::kRouter:
      return size_t(t.numel()) * 4;
    case Role::kBytes:
      return t.nbytes();
  }
  return 0;
}

// Plans all tensors of the model (in a fixed order) with 256-byte alignment.
std::vector<Planned> plan(const ModelWeights& w, ActType a, DeviceModel* m, size_t* total) {
  std::vector<Planned> out;
  size_t at = 0;
  auto add = [&](const TensorView& t, Role role, std::function<void(const void*)> bind) {
    const size_t bytes = role_bytes(t, role, a);
    out.push_back({&t, role, at, bytes, std::move(bind)});
    at += (bytes + 255) / 256 * 256;
  };
  add(w.embedding, Role::kMatrix, [m](const void* p) { m->embedding = p; });
  add(w.unembedding, Role::kMatrix, [m](const void* p) { m->unembedding = p; });
  add(w.norm, Role::kVector, [m](const void* p) { m->norm = static_cast<const float*>(p); });
  if (m) m->layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    auto L = [m, l]() -> DeviceLayer& { return m->layers[l]; };
    auto vec = [&](const TensorView& t, const float* DeviceLayer::*field) {
      add(t, Role::kVector,
          [L, field](const void* p) { L().*field = static_cast<const float*>(p); });
    };
    auto mat = [&](const TensorView& t, const void* DeviceLayer::*field) {
      add(t, Role::kMatrix, [L, field](const void* p) { L().*field = p; });
    };
    auto raw = [&](const TensorView& t, const uint8_t* DeviceLayer::*field) {
      add(t, Role::kBytes,
          [L, field](const void* p) { L().*field = static_cast<const uint8_t*>(p); });
    };
    vec(lw.attn_norm, &DeviceLayer::attn_norm);
    mat(lw.qkv_w, &DeviceLayer::qkv_w);
    vec(lw.qkv_b, &DeviceLayer::qkv_b);
    vec(lw.sinks, &DeviceLayer::sinks);
    mat(lw.out_w, &DeviceLayer::out_w);
    vec(lw.out_b, &DeviceLayer::out_b);
    vec(lw.mlp_norm, &DeviceLayer::mlp_norm);
    add(lw.gate_w, Role::kRouter,
        [L](const void* p) { L().gate_w = static_cast<const float*>(p); });
    vec(lw.gate_b, &DeviceLayer::gate_b);
    if (w.experts_mxfp4) {
      raw(lw.mlp1_blocks, &DeviceLayer::mlp1_blocks);
      raw(lw.mlp1_scales, &DeviceLayer::mlp1_scales);
      raw(lw.mlp2_blocks, &DeviceLayer::mlp2_blocks);
      raw(lw.mlp2_scales, &DeviceLayer::mlp2_scales);
    } else {
      mat(lw.mlp1_blocks, &DeviceLayer::mlp1_w);
      mat(lw.mlp2_blocks, &DeviceLayer::mlp2_w);
    }
    vec(lw.mlp1_b, &DeviceLayer::mlp1_b);
    vec(lw.mlp2_b, &DeviceLayer::mlp2_b);
  }
  *total = at;
  return out;
}

ActType act_type_for(const ExecutionConfig& e) {
  MIND4_CHECK(e.dtype != ActivationDType::kFloat16, Status::kUnsupported,
              "backend cuda: activation dtype float16 is not one the CUDA line computes in; it "
              "takes bfloat16 (the default for cuda) or float32");
  return e.dtype == ActivationDType::kFloat32 ? ActType::kF32 : ActType::kBF16;
}

}  // namespace

int select_device(const char* what) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  MIND4_CHECK(e == cudaSuccess && count > 0, Status::kUnsupported, what,
              ": backend cuda needs an NVIDIA GPU, and none is usable here (",
              e == cudaSuccess ? "no device found" : cudaGetErrorString(e), "); use backend cpu");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  MIND4_CHECK(prop.major >= 9, Status::kUnsupported, what, ": GPU 0 (", prop.name,
              ") has compute capability ", prop.major, ".", prop.minor,
              "; this build's CUDA code needs 9.0 (Hopper) or newer");
  check(cudaSetDevice(0), "cudaSetDevice");
  return 0;
}

int64_t device_weight_bytes(const ModelWeights& weights, ActType t) {
  size_t total = 0;
  plan(weights, t, nullptr, &total);
  return int64_t(total);
}

std::shared_ptr<const DeviceModel> upload_model(const ModelWeights& w,
                                                const ExecutionConfig& execution) {
  const ActType act = act_type_for(execution);
  auto m = std::make_shared<DeviceModel>();
  m->device = select_device("Model::load");
  m->config = w.config;
  m->act = act;
  m->experts_mxfp4 = w.experts_mxfp4;
  size_t total = 0;
  std::vector<Planned> items = plan(w, act, m.get(), &total);
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  // Keep room for a context's KV cache and scratch, and for cuBLAS.
  const size_t reserve = size_t(512) << 20;
  MIND4_CHECK(total + reserve <= free_b, Status::kOutOfMemory, "Model::load: the weights need ",
              total / double(1 << 30), " GiB on the GPU (", act_name(act),
              " dense matrices), plus 0.5 GiB of headroom, but only ", free_b / double(1 << 30),
              " GiB of ", total_b / double(1 << 30), " GiB are free");
  m->arena = DeviceBuffer(total, "cudaMalloc (model weights)");
  char* base = m->arena.data<char>();
  Stream stream;
  DeviceBuffer staging;
  const size_t kChunk = size_t(64) << 20;  // bytes of source per conversion
  for (const Planned& it : items) {
    const TensorView& t = *it.src;
    char* dst = base + it.offset;
    const ActType target = it.role == Role::kRouter ? ActType::kF32 : act;
    const bool same = it.role == Role::kBytes || it.role == Role::kVector ||
                      (target == ActType::kF32) == (t.dtype == DType::kF32);
    if (same) {
      // Vectors are owned f32 copies already (weights.h); bytes and same-dtype matrices too.
      // On `stream`, not cudaMemcpy: a pageable copy may return before its DMA has landed, and
      // kernels on non-blocking streams do not wait for the legacy stream.
      check(cudaMemcpyAsync(dst, t.data, it.bytes, cudaMemcpyHostToDevice, stream.get()),
            "cudaMemcpyAsync (weights)");
    } else {
      if (staging.bytes() == 0) staging = DeviceBuffer(kChunk, "cudaMalloc (upload staging)");
      const size_t esize = dtype_size(t.dtype);
      const int64_t per = int64_t(kChunk / esize);
      for (int64_t i = 0; i < t.numel(); i += per) {
        const int64_t n = std::min<int64_t>(per, t.numel() - i);
        check(cudaMemcpyAsync(staging.data(), static_cast<const char*>(t.data) + i * esize,
                              size_t(n) * esize, cudaMemcpyHostToDevice, stream.get()),
              "cudaMemcpyAsync (weights to staging)");
        convert_to_act(target, staging.data(), t.dtype == DType::kBF16, n,
                       dst + i * act_size(target), stream.get());
        check(cudaStreamSynchronize(stream.get()), "convert_to_act (weights)");
      }
    }
    it.bind(dst);
  }
  check(cudaStreamSynchronize(stream.get()), "weight upload (cudaStreamSynchronize)");
  return m;
}

}  // namespace mind4::cuda
