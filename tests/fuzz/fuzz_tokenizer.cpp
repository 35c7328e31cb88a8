// libFuzzer target for the tokenizer loader: the input bytes are a tokenizer.json (optionally followed by
// "\n#CONFIG#\n" and a tokenizer_config.json). Loading must either succeed or throw zt::Error; when it
// loads, encode/decode a few texts, which must not crash either.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/base/error.h"
#include "runtime/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    std::string input(reinterpret_cast<const char *>(data), size);
    std::string config;
    const std::string marker = "\n#CONFIG#\n";
    if (size_t at = input.find(marker); at != std::string::npos) {
        config = input.substr(at + marker.size());
        input.resize(at);
    }
    try {
        zt::Tokenizer tok = zt::Tokenizer::from_json(input, config, "fuzz/tokenizer.json", 100'000);
        for (const char * text : {"", "Hello world", "abc <|end|> a\tb\r\n  12345 ", "é\u0301 😀👨‍👩‍👧 中文"}) {
            std::vector<int32_t> ids = tok.encode(text, true);
            (void)tok.decode(ids, false);
            (void)tok.decode(ids, true);
        }
        (void)tok.decode({0, 1, 2, -1, 1 << 30}, false);
        (void)tok.vocab_size();
        (void)tok.is_special(-1);
        (void)tok.token_id("a");
    } catch (const zt::Error &) {
        // clean rejection
    }
    return 0;
}
