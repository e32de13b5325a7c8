// A kernel timeline recorder for any CUDA program, loaded by the driver itself:
//   CUDA_INJECTION64_PATH=build/libmind4_kernel_trace.so MIND4_KERNEL_TRACE=trace.csv <program>
// It asks CUPTI for one activity record per kernel (launched alone or as a node of a CUDA graph)
// and, when the program exits, writes them as CSV: start and end in ns on the GPU's clock, the
// stream, the graph and node ids, the launch's correlation id (shared by the nodes of one graph
// launch), grid and block sizes and the name. scripts/kernel_trace.py turns that into where a
// step's time goes, launch gaps included. Why not Nsight Systems: it is not on every machine we
// use, and this needs nothing beyond CUPTI, which ships with the CUDA toolkit.
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct KernelRecord {
  uint64_t start, end, graph_node;
  uint32_t stream, graph, correlation;
  int32_t grid, block, registers;
  std::string name;
};

std::mutex records_mutex;
std::vector<KernelRecord>* records = nullptr;  // leaked on purpose: written from atexit
constexpr size_t kBufferBytes = 8 << 20;

void report(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, text ? text : "unknown CUPTI error");
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard lock(records_mutex);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    records->push_back({k->start, k->end, k->graphNodeId, k->streamId, k->graphId, k->correlationId,
                        k->gridX * k->gridY * k->gridZ, k->blockX * k->blockY * k->blockZ,
                        k->registersPerThread, k->name ? k->name : "?"});
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
  if (dropped) std::fprintf(stderr, "kernel_trace: %zu records dropped\n", dropped);
  std::free(buffer);
}

void write_trace() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  const char* path = std::getenv("MIND4_KERNEL_TRACE");
  if (!path || !*path) path = "kernel_trace.csv";
  std::FILE* f = std::fopen(path, "w");
  if (!f) {
    std::fprintf(stderr, "kernel_trace: cannot write %s: %s\n", path, std::strerror(errno));
    return;
  }
  std::lock_guard lock(records_mutex);
  std::fprintf(f, "start_ns,end_ns,stream,graph,node,correlation,grid,block,registers,name\n");
  for (const KernelRecord& r : *records)
    std::fprintf(f, "%llu,%llu,%u,%u,%llu,%u,%d,%d,%d,\"%s\"\n", (unsigned long long)r.start,
                 (unsigned long long)r.end, r.stream, r.graph, (unsigned long long)r.graph_node,
                 r.correlation, r.grid, r.block, r.registers, r.name.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_trace: %zu kernels -> %s\n", records->size(), path);
}

}  // namespace

// Called by the CUDA driver when it loads this library (CUDA_INJECTION64_PATH).
extern "C" int InitializeInjection() {
  records = new std::vector<KernelRecord>();
  records->reserve(1 << 20);
  report(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "register callbacks");
  report(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enable kernel records");
  std::atexit(write_trace);
  return 1;
}
