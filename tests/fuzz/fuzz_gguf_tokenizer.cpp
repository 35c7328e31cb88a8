// libFuzzer target for Tokenizer::from_gguf: the input bytes are a whole GGUF file (seeds: two tiny tokenizer GGUFs
// from examples/make_gguf_tokenizer_fixtures.py). The header reader and then the tokenizer loader must either succeed
// or throw zt::Error; when a tokenizer loads, encoding and decoding a few texts must not crash either.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    std::vector<uint8_t> buf(data, data + size);   // exact size, so ASan sees a read past the end
    try {
        const zt::GgufFile g = zt::parse_gguf_header(buf.data(), buf.size(), "fuzz.gguf");
        const zt::Tokenizer tok = zt::Tokenizer::from_gguf(g, "fuzz.gguf");
        for (const char * text : {"", "ab ab", "abc <|end|><x> a\tb\r\n  12345 ", "é\u0301 😀 中文 <s></s>"}) {
            std::vector<int32_t> ids = tok.encode(text, true);
            (void)tok.decode(ids, false);
            (void)tok.decode(ids, true);
        }
        (void)tok.decode({0, 1, 2, -1, 1 << 30}, false);
    } catch (const zt::Error &) {
    }
    return 0;
}
