// gguf_tokenize: the tokenizer a GGUF file carries (Tokenizer::from_gguf), on JSONL texts, for
// examples/check_gguf_tokenizer.py. Usage: gguf_tokenize MODEL.gguf TEXTS.jsonl
// Reads {"text": ...} lines; writes one line per text: {"ids": [...], "ids_special": [...], "decoded": "..."},
// ids_special being encode(text, add_special_tokens=true) and decoded the decode of ids. Exit 1 with the error
// message on a file it cannot read.
#include <fstream>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/tokenizer.h"

int main(int argc, char ** argv) {
    if (argc != 3) {
        std::cerr << "usage: gguf_tokenize MODEL.gguf TEXTS.jsonl\n";
        return 2;
    }
    try {
        const zt::GgufFile file = zt::read_gguf_header(argv[1]);
        const zt::Tokenizer tok = zt::Tokenizer::from_gguf(file, argv[1]);
        std::ifstream in(argv[2], std::ios::binary);
        ZT_CHECK(in.good(), "cannot open {}", argv[2]);
        std::string line;
        while (std::getline(in, line)) {
            const std::string text = nlohmann::json::parse(line).at("text").get<std::string>();
            const std::vector<int32_t> ids = tok.encode(text);
            nlohmann::json out = {{"ids", ids}, {"ids_special", tok.encode(text, true)}, {"decoded", tok.decode(ids)}};
            std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
        }
    } catch (const std::exception & e) {
        std::cerr << e.what() << '\n';
        return 1;
    }
    return 0;
}
