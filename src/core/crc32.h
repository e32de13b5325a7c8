// CRC-32 (IEEE 802.3, the polynomial of zlib, gzip and PNG) for integrity checks of files that
// must be read back exactly (training checkpoints). A CRC rather than a hash because it detects
// every burst error of up to 32 bits with certainty, so a flipped byte is always caught.
// Slicing-by-8: eight table look-ups per 8 bytes, about 1-2 GB/s on one core, which keeps the
// check of a multi-GB optimizer state a few seconds at most.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mind4 {

// Continues a CRC: crc32_update(crc32_update(0, a), b) == crc32 of a followed by b.
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

// The CRC-32 of a whole file, read in blocks. Error(kIoError) naming the file when it cannot be
// read.
uint32_t crc32_file(const std::string& path, uint64_t* size = nullptr);

}  // namespace mind4
