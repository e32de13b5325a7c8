#include "core/crc32.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "mind4/status.h"

namespace mind4 {
namespace {

using Crc32Tables = std::array<std::array<uint32_t, 256>, 8>;

// tables[k][b] is the CRC of byte b followed by k zero bytes: the eight look-ups of one 8-byte
// step then combine independently (no serial dependency between them).
Crc32Tables crc32_make_tables() {
  Crc32Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; ++b)
    for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  return t;
}

const Crc32Tables& crc32_tables() {
  static const Crc32Tables t = crc32_make_tables();
  return t;
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) {
  const Crc32Tables& t = crc32_tables();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; size >= 8; size -= 8, p += 8) {
    // Little-endian loads by bytes: no alignment or host-order assumption.
    const uint32_t lo =
        c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    const uint32_t hi =
        uint32_t(p[4]) | uint32_t(p[5]) << 8 | uint32_t(p[6]) << 16 | uint32_t(p[7]) << 24;
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
  }
  for (; size > 0; --size, ++p) c = t[0][(c ^ *p) & 0xFF] ^ (c >> 8);
  return ~c;
}

uint32_t crc32_file(const std::string& path, uint64_t* size) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  MIND4_CHECK(f, Status::kIoError, "cannot read ", path);
  std::vector<uint8_t> buf(size_t(1) << 20);
  uint32_t crc = 0;
  uint64_t total = 0;
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
    crc = crc32_update(crc, buf.data(), n);
    total += n;
    if (n < buf.size()) break;
  }
  MIND4_CHECK(!std::ferror(f.get()), Status::kIoError, "read error in ", path);
  if (size) *size = total;
  return crc;
}

}  // namespace mind4
