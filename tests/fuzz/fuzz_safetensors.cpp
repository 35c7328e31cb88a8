// libFuzzer target: feeds arbitrary bytes to parse_safetensors_header as a whole file. Any zt::Error is a clean
// rejection; a crash, sanitizer report, leak or read outside the buffer is a bug. When the header parses, the
// returned entries are checked against the invariants the reader promises (contiguous, inside the buffer).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    // Copy into an exact-size heap buffer so that ASan catches any read past the end.
    std::vector<uint8_t> buf(data, data + size);
    try {
        const zt::SafetensorsHeader h = zt::parse_safetensors_header(buf.data(), buf.size(), "fuzz.safetensors");
        uint64_t pos = h.data_start;
        for (const auto & e : h.entries) {
            if (e.file_offset != pos || e.file_offset + e.bytes > size) std::abort();
            pos += e.bytes;
            volatile uint8_t sink = 0;
            if (e.bytes) sink = sink ^ buf[e.file_offset] ^ buf[e.file_offset + e.bytes - 1];
            (void)sink;
        }
        if (pos != size) std::abort();
    } catch (const zt::Error &) {
    }
    return 0;
}
