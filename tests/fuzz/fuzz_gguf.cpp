// libFuzzer target: feeds arbitrary bytes to parse_gguf_header as a whole GGUF file. Any zt::Error is a clean
// rejection; a crash, sanitizer report, leak or read outside the buffer is a bug. When the header parses, every
// tensor's data must lie inside the buffer, after the header, at an aligned offset (what the reader promises).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/model/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    std::vector<uint8_t> buf(data, data + size);   // exact size, so ASan sees a read past the end
    try {
        const zt::GgufFile g = zt::parse_gguf_header(buf.data(), buf.size(), "fuzz.gguf");
        for (const zt::GgufTensorInfo & t : g.tensors) {
            if (t.offset < g.data_offset || t.offset > size || t.bytes > size - t.offset) std::abort();
            if ((t.offset - g.data_offset) % g.alignment != 0 || t.shape.empty()) std::abort();
        }
    } catch (const zt::Error &) {
    }
    return 0;
}
