// Tokenizer::from_gguf: the tokenizer a GGUF file carries. tests/data/gguf_tokenizer/ holds GGUFs of the qwen3,
// llama3 and llama2 tokenizers written the way llama.cpp's convert_hf_to_gguf.py writes them (gguf package,
// examples/make_gguf_tokenizer_fixtures.py) with the ids HF transformers gives reading those GGUFs. On every text of
// tests/data/tokenizer_corpus.jsonl the ids equal HF `tokenizers` on the original tokenizer.json
// (tokenizer_reference.jsonl.xz) and equal transformers-from-GGUF wherever transformers agrees with that original;
// decode equals transformers' decode. Hand-made bad metadata gives clear errors naming the key, never a crash.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/tokenizer.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
using json = nlohmann::json;

namespace {

const std::string data_dir = ZT_TEST_DATA;

std::string xz_decompress(const std::string & path) { return command_output("xz -dc '" + path + "'"); }

const GgufFile & fixture(const std::string & name) {
    static std::map<std::string, GgufFile> cache;
    auto it = cache.find(name);
    if (it != cache.end()) return it->second;
    const std::string bytes = xz_decompress(data_dir + "/gguf_tokenizer/" + name + ".gguf.xz");
    return cache.emplace(name, parse_gguf_header(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(),
                                                 name + ".gguf"))
        .first->second;
}

const Tokenizer & tokenizer(const std::string & name) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
    auto it = cache.find(name);
    if (it == cache.end())
        it = cache.emplace(name, std::make_unique<Tokenizer>(Tokenizer::from_gguf(fixture(name), name + ".gguf")))
                 .first;
    return *it->second;
}

std::vector<std::string> corpus() {
    std::vector<std::string> out;
    std::istringstream in(read_file(data_dir + "/tokenizer_corpus.jsonl"));
    std::string line;
    while (std::getline(in, line)) out.push_back(json::parse(line).at("text").get<std::string>());
    return out;
}

struct Row {
    size_t text;
    bool special;
    std::vector<int32_t> ids;
    std::optional<std::string> decoded;
};

// tokenizer -> (text, special) -> row, from one of the two reference files.
using Rows = std::map<std::string, std::map<std::pair<size_t, bool>, Row>>;

Rows load_rows(const std::string & xz_path) {
    Rows out;
    std::istringstream in(xz_decompress(xz_path));
    std::string line;
    std::getline(in, line);   // header
    while (std::getline(in, line)) {
        json r = json::parse(line);
        Row row{r.at("text").get<size_t>(), r.at("special").get<bool>(), r.at("ids").get<std::vector<int32_t>>(),
                std::nullopt};
        if (r.contains("decoded")) row.decoded = r["decoded"].get<std::string>();
        out[r.at("tokenizer").get<std::string>()][{row.text, row.special}] = std::move(row);
    }
    return out;
}

const Rows & gguf_reference() {   // transformers reading the GGUF fixtures
    static const Rows rows = load_rows(data_dir + "/gguf_tokenizer/reference.jsonl.xz");
    return rows;
}
const Rows & json_reference() {   // HF `tokenizers` on the original tokenizer.json
    static const Rows rows = load_rows(data_dir + "/tokenizer_reference.jsonl.xz");
    return rows;
}

std::string show(const std::vector<int32_t> & ids) {
    std::string s;
    for (size_t i = 0; i < ids.size() && i < 40; ++i) s += (i ? " " : "") + std::to_string(ids[i]);
    return s + (ids.size() > 40 ? " ..." : "");
}

void check_parity(const std::string & name) {
    const Tokenizer & tok = tokenizer(name);
    const std::vector<std::string> texts = corpus();
    const auto & gguf_rows = gguf_reference().at(name);
    const auto & json_rows = json_reference().at(name);
    ASSERT_GE(texts.size(), 300u);
    size_t rows = 0, equal_json = 0, equal_gguf = 0, transformers_off = 0, decode_ok = 0, decoded = 0;
    for (const auto & [key, ref] : gguf_rows) {
        ASSERT_LT(ref.text, texts.size());
        const std::string & text = texts[ref.text];
        const std::vector<int32_t> ids = tok.encode(text, ref.special);
        ++rows;
        auto original = json_rows.find(key);
        ASSERT_NE(original, json_rows.end()) << name << " text #" << ref.text;
        const bool ok_json = ids == original->second.ids, ok_gguf = ids == ref.ids;
        equal_json += ok_json;
        equal_gguf += ok_gguf;
        EXPECT_TRUE(ok_json) << name << " text #" << ref.text << (ref.special ? " (add_special_tokens)" : "")
                             << ": not HF's ids for the original tokenizer.json\n  got " << show(ids) << "\n want "
                             << show(original->second.ids);
        if (ref.ids != original->second.ids) {
            ++transformers_off;   // transformers' GGUF converter itself departs from the original here
        } else {
            EXPECT_TRUE(ok_gguf) << name << " text #" << ref.text << (ref.special ? " (add_special_tokens)" : "")
                                 << ": not transformers-from-GGUF's ids\n  got " << show(ids) << "\n want "
                                 << show(ref.ids);
        }
        if (!ref.special && ok_gguf) {
            ++decoded;
            const std::string want = ref.decoded ? *ref.decoded : text;
            const std::string got = tok.decode(ids);
            EXPECT_EQ(got, want) << name << " decode of text #" << ref.text;
            decode_ok += got == want;
        }
    }
    EXPECT_EQ(rows, json_rows.size());
    std::printf("[ %s.gguf ] %zu encodes: %zu equal HF on the original tokenizer.json, %zu equal transformers reading "
                "the GGUF (%zu where transformers departs from the original); decode equals transformers for %zu/%zu\n",
                name.c_str(), rows, equal_json, equal_gguf, transformers_off, decode_ok, decoded);
}

std::string error_of(const GgufFile & g) {
    try {
        Tokenizer::from_gguf(g, "bad.gguf");
    } catch (const Error & e) {
        return e.what();
    } catch (const std::exception & e) {
        return std::string("WRONG EXCEPTION TYPE: ") + e.what();
    }
    return "NO ERROR";
}

// A tiny byte-level BPE GGUF's metadata: "a", "b", "ab", "Ġ", "Ġab", <|end|> (control), <x> (user-defined).
GgufFile tiny_gpt2() {
    GgufFile g;
    g.metadata = json{
        {"general.architecture", "qwen2"},
        {"tokenizer.ggml.model", "gpt2"},
        {"tokenizer.ggml.pre", "qwen2"},
        {"tokenizer.ggml.tokens", {"a", "b", "ab", "\u0120", "\u0120ab", "<|end|>", "<x>"}},
        {"tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 3, 4}},
        {"tokenizer.ggml.merges", {"a b", "\u0120 ab"}},
        {"tokenizer.ggml.eos_token_id", 5},
    };
    return g;
}

}  // namespace

TEST(TokenizerGguf, ParityQwen3) { check_parity("qwen3"); }
TEST(TokenizerGguf, ParityLlama3) { check_parity("llama3"); }
TEST(TokenizerGguf, ParityLlama2) { check_parity("llama2"); }

TEST(TokenizerGguf, SpecialTokensAndFlags) {
    const Tokenizer & qwen = tokenizer("qwen3");
    EXPECT_EQ(qwen.vocab_size(), 151936);                    // padded to config.json's vocab_size with [PAD..]
    EXPECT_EQ(qwen.bos_id(), 151643);
    EXPECT_EQ(qwen.eos_id(), 151645);
    EXPECT_FALSE(qwen.add_bos());
    EXPECT_TRUE(qwen.is_special(151643));
    EXPECT_FALSE(qwen.is_special(151667));                   // <think>: user-defined, not special
    EXPECT_EQ(qwen.encode("<think>"), std::vector<int32_t>{151667});
    EXPECT_GT(qwen.encode("[PAD151700]").size(), 1u);        // unused tokens are not matched in text
    EXPECT_EQ(qwen.decode({9707, 151643, 1879}, true), "Hello world");

    const Tokenizer & llama2 = tokenizer("llama2");
    EXPECT_EQ(llama2.bos_id(), 1);
    EXPECT_EQ(llama2.eos_id(), 2);
    EXPECT_TRUE(llama2.add_bos());
    EXPECT_EQ(llama2.encode("Hello world", true), (std::vector<int32_t>{1, 22557, 1526}));
    EXPECT_EQ(llama2.encode(" <s>x"), (std::vector<int32_t>{259, 1, 1318}));   // ▁▁ <s> ▁x: "▁" again after <s>
    EXPECT_EQ(llama2.decode({1, 22557, 1526, 2}, true), "Hello world");
    EXPECT_EQ(llama2.token_id("<0x0A>"), 13);

    const Tokenizer & llama3 = tokenizer("llama3");
    EXPECT_EQ(llama3.bos_id(), 128000);
    EXPECT_EQ(llama3.eos_id(), 128001);
    EXPECT_EQ(llama3.vocab_size(), 128256);
}

TEST(TokenizerGguf, TinyByteLevelVocab) {
    Tokenizer tok = Tokenizer::from_gguf(tiny_gpt2(), "tiny.gguf");
    EXPECT_EQ(tok.encode("ab ab<|end|><x>"), (std::vector<int32_t>{2, 4, 5, 6}));
    EXPECT_EQ(tok.decode({2, 4, 5, 6}), "ab ab<|end|><x>");
    EXPECT_EQ(tok.decode({2, 4, 5, 6}, true), "ab ab<x>");
    EXPECT_EQ(tok.eos_id(), 5);
    EXPECT_FALSE(tok.bos_id().has_value());
    EXPECT_TRUE(tok.is_special(5));
    EXPECT_FALSE(tok.is_special(6));

    GgufFile g = tiny_gpt2();   // add_bos with a bos id wraps the text
    g.metadata["tokenizer.ggml.bos_token_id"] = 5;
    g.metadata["tokenizer.ggml.add_bos_token"] = true;
    EXPECT_EQ(Tokenizer::from_gguf(g, "tiny.gguf").encode("ab", true), (std::vector<int32_t>{5, 2}));
}

TEST(TokenizerGguf, FuzzSeedsLoad) {   // tests/fuzz/corpus_gguf_tokenizer: what the gguf package writes
    const std::string dir = std::string(ZT_SOURCE_DIR) + "/tests/fuzz/corpus_gguf_tokenizer/";
    Tokenizer gpt2 = Tokenizer::from_gguf(read_gguf_header(dir + "tiny_gpt2.gguf"), "tiny_gpt2.gguf");
    EXPECT_EQ(gpt2.encode("ab ab<|end|><x>"), (std::vector<int32_t>{2, 4, 5, 6}));
    Tokenizer spm = Tokenizer::from_gguf(read_gguf_header(dir + "tiny_spm.gguf"), "tiny_spm.gguf");
    EXPECT_EQ(spm.encode("ab a", true), (std::vector<int32_t>{1, 7, 6, 3}));   // <s> ▁ab ▁ a
    EXPECT_EQ(spm.decode({1, 7, 6, 3, 8 + 'z'}, true), "ab az");
}

TEST(TokenizerGguf, UnknownModelOrPreTokenizerIsAClearError) {
    GgufFile g = tiny_gpt2();
    g.metadata["tokenizer.ggml.pre"] = "tekken-2099";
    std::string e = error_of(g);
    EXPECT_HAS(e, "bad.gguf");
    EXPECT_HAS(e, "tekken-2099");
    EXPECT_HAS(e, "llama-bpe");
    EXPECT_HAS(e, "qwen2");
    EXPECT_HAS(e, "\"tokenizer\": \"DIR\"");

    g = tiny_gpt2();
    g.metadata["tokenizer.ggml.model"] = "t5";
    e = error_of(g);
    EXPECT_HAS(e, "\"t5\"");
    EXPECT_HAS(e, "gpt2");
    EXPECT_HAS(e, "\"tokenizer\": \"DIR\"");

    g = tiny_gpt2();
    g.metadata.erase("tokenizer.ggml.model");
    EXPECT_HAS(error_of(g), "no tokenizer.ggml.model");

    g = tiny_gpt2();   // SentencePiece kinds other than Llama 2 / Mistral are refused, not misread
    g.metadata["tokenizer.ggml.model"] = "llama";
    g.metadata["general.architecture"] = "gemma2";
    e = error_of(g);
    EXPECT_HAS(e, "gemma2");
    EXPECT_HAS(e, "\"tokenizer\": \"DIR\"");

    g = tiny_gpt2();   // a byte-level vocab without merges cannot tokenize
    g.metadata.erase("tokenizer.ggml.merges");
    EXPECT_HAS(error_of(g), "needs tokenizer.ggml.merges");
}

TEST(TokenizerGguf, HostileMetadataIsAClearError) {
    struct Case { const char * what; std::function<void(json &)> edit; const char * expect; };
    const std::vector<Case> cases = {
        {"model not a string", [](json & m) { m["tokenizer.ggml.model"] = 3; }, "must be a string"},
        {"tokens not an array", [](json & m) { m["tokenizer.ggml.tokens"] = "a"; }, "must be an array of strings"},
        {"a token not a string", [](json & m) { m["tokenizer.ggml.tokens"][2] = 7; }, "tokenizer.ggml.tokens[2]"},
        {"no tokens", [](json & m) { m.erase("tokenizer.ggml.tokens"); }, "no tokenizer.ggml.tokens"},
        {"empty tokens", [](json & m) { m["tokenizer.ggml.tokens"] = json::array(); }, "is empty"},
        {"duplicate token", [](json & m) { m["tokenizer.ggml.tokens"][1] = "a"; }, "twice"},
        {"invalid UTF-8 token", [](json & m) { m["tokenizer.ggml.tokens"][6] = std::string("\xff", 1); },
         "not valid UTF-8"},
        {"types shorter", [](json & m) { m["tokenizer.ggml.token_type"].erase(0); }, "has 6 entries but"},
        {"types as floats", [](json & m) { m["tokenizer.ggml.token_type"][0] = 1.5; }, "token_type[0]"},
        {"type out of range", [](json & m) { m["tokenizer.ggml.token_type"][3] = 9; }, "not a token type"},
        {"negative type", [](json & m) { m["tokenizer.ggml.token_type"][3] = -1; }, "not a token type"},
        {"eos past the vocab", [](json & m) { m["tokenizer.ggml.eos_token_id"] = 7; }, "is not a token id"},
        {"negative bos", [](json & m) { m["tokenizer.ggml.bos_token_id"] = -1; }, "is not a token id"},
        {"huge bos", [](json & m) { m["tokenizer.ggml.bos_token_id"] = uint64_t(1) << 40; }, "is not a token id"},
        {"bos as a string", [](json & m) { m["tokenizer.ggml.bos_token_id"] = "1"; }, "integer token id"},
        {"padding past the vocab", [](json & m) { m["tokenizer.ggml.padding_token_id"] = 99; }, "padding_token_id"},
        {"add_bos not a bool", [](json & m) { m["tokenizer.ggml.add_bos_token"] = 1; }, "must be a bool"},
        {"add_bos without bos", [](json & m) { m["tokenizer.ggml.add_bos_token"] = true; }, "no tokenizer.ggml.bos"},
        {"merges not strings", [](json & m) { m["tokenizer.ggml.merges"][0] = 1; }, "merges[0]"},
        {"merge without a space", [](json & m) { m["tokenizer.ggml.merges"][0] = "ab"; }, "separated by a space"},
        {"merge of unknown tokens", [](json & m) { m["tokenizer.ggml.merges"][1] = "b b"; }, "merges[1]"},
        {"pre not a string", [](json & m) { m["tokenizer.ggml.pre"] = json::array(); }, "must be a string"},
    };
    for (const Case & c : cases) {
        GgufFile g = tiny_gpt2();
        c.edit(g.metadata);
        const std::string e = error_of(g);
        EXPECT_HAS(e, "bad.gguf") << c.what;
        EXPECT_HAS(e, c.expect) << c.what;
        EXPECT_EQ(e.find("WRONG EXCEPTION"), std::string::npos) << c.what << ": " << e;
    }

    // SentencePiece vocabularies: scores must be numbers, as many as the tokens, never NaN.
    GgufFile spm = tiny_gpt2();
    spm.metadata["tokenizer.ggml.model"] = "llama";
    spm.metadata.erase("tokenizer.ggml.merges");
    spm.metadata["tokenizer.ggml.scores"] = {0, 0, -1.0, 0, -2.0, 0, 0};
    EXPECT_NO_THROW(Tokenizer::from_gguf(spm, "spm.gguf"));
    GgufFile g = spm;
    g.metadata["tokenizer.ggml.scores"].erase(0);
    EXPECT_HAS(error_of(g), "tokenizer.ggml.scores has 6 entries");
    g = spm;
    g.metadata["tokenizer.ggml.scores"][1] = "x";
    EXPECT_HAS(error_of(g), "scores[1]");
    g = spm;
    g.metadata["tokenizer.ggml.scores"][1] = std::nan("");
    EXPECT_HAS(error_of(g), "is NaN");
}

TEST(TokenizerGguf, SentencePieceMergesComeFromScores) {
    // No merges in the file: pieces merge by the score of what they make ("ab" at -1 before "bc" at -2), and
    // byte fallback covers characters outside the vocabulary; "▁" is prepended (add_space_prefix defaults on).
    GgufFile g;
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "\u2581", "\u2581ab"};
    std::vector<double> scores = {0, 0, 0, -10, -10, -10, -1, -2, -10, -3};
    std::vector<int> types = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        tokens.push_back(name);
        scores.push_back(0);
        types.push_back(6);
    }
    g.metadata = json{{"tokenizer.ggml.model", "llama"}, {"tokenizer.ggml.tokens", tokens},
                      {"tokenizer.ggml.scores", scores}, {"tokenizer.ggml.token_type", types}};
    Tokenizer tok = Tokenizer::from_gguf(g, "spm.gguf");
    EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{9, 5}));            // ▁ab c
    EXPECT_EQ(tok.encode("bc"), (std::vector<int32_t>{8, 7}));             // ▁ bc
    EXPECT_EQ(tok.encode("ad", true), (std::vector<int32_t>{1, 8, 3, 10 + 'd'}));   // <s> ▁ a <0x64>
    EXPECT_EQ(tok.decode({1, 9, 5, 10 + 'd'}, true), "abcd");

    g.metadata["tokenizer.ggml.add_space_prefix"] = false;   // no "▁" in front
    Tokenizer bare = Tokenizer::from_gguf(g, "spm.gguf");
    EXPECT_EQ(bare.encode("abc"), (std::vector<int32_t>{6, 5}));           // ab c
    EXPECT_EQ(bare.encode("a bc"), (std::vector<int32_t>{3, 8, 7}));       // a ▁ bc
    EXPECT_EQ(bare.decode({6, 5, 8, 7}), "abc bc");

    g.metadata["tokenizer.ggml.tokens"][4] = std::string(2000, 'b');   // derivation refuses absurd tokens
    EXPECT_HAS(error_of(g), "tokenizer.ggml.tokens[4] is 2000 bytes long");
}
