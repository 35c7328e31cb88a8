// Tokenizer tests: ids equal Hugging Face `tokenizers` for Qwen3, Llama 3 and Llama 2 on every text of
// tests/data/tokenizer_corpus.jsonl (reference ids from examples/make_tokenizer_reference.py), decode
// round trips, BOS/EOS and post-processor behaviour, long inputs, and hostile tokenizer.json files that
// must be rejected with a clear zt::Error (never a crash).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "runtime/base/error.h"
#include "runtime/model/tokenizer.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
using json = nlohmann::json;

namespace {

const std::string data_dir = ZT_TEST_DATA;



std::string xz_decompress(const std::string & path) { return command_output("xz -dc '" + path + "'"); }

// The tokenizer.json text of a real tokenizer, or of a variant built from one exactly as
// examples/make_tokenizer_reference.py builds it.
std::string tokenizer_json_text(const std::string & name) {
    if (name == "llama2_metaspace") {
        json doc = json::parse(xz_decompress(data_dir + "/tokenizers/llama2/tokenizer.json.xz"));
        json meta = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}};
        doc["normalizer"] = nullptr;
        doc["pre_tokenizer"] = meta;
        doc["decoder"] = meta;
        return doc.dump();
    }
    if (name == "qwen3_flags") {   // text surgery: re-serialising 11 MB of JSON would slow the test down
        std::string text = xz_decompress(data_dir + "/tokenizers/qwen3/tokenizer.json.xz");
        const std::string key = "\"added_tokens\": [";
        const size_t at = text.find(key);
        if (at == std::string::npos) throw std::runtime_error("qwen3 tokenizer.json has no added_tokens");
        text.insert(at + key.size(),
                    R"({"id": 151669, "content": "<x>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": true},)"
                    R"({"id": 151670, "content": "<y>", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": true},)"
                    R"({"id": 151671, "content": "<z>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false},)"
                    R"({"id": 151672, "content": "<w>", "single_word": false, "lstrip": true, "rstrip": false, "normalized": false, "special": true},)");
        return text;
    }
    return xz_decompress(data_dir + "/tokenizers/" + name + "/tokenizer.json.xz");
}

// Tokenizers loaded once per test binary. The three real ones load from a model-like folder (Tokenizer::load).
const Tokenizer & real_tokenizer(const std::string & name) {
    static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
    auto it = cache.find(name);
    if (it != cache.end()) return *it->second;
    if (name == "llama2_metaspace" || name == "qwen3_flags") {
        auto tok = std::make_unique<Tokenizer>(Tokenizer::from_json(tokenizer_json_text(name), "", name));
        return *cache.emplace(name, std::move(tok)).first->second;
    }
    char tmpl[] = "/tmp/zt_tokenizer_XXXXXX";
    const char * dir = mkdtemp(tmpl);
    if (!dir) throw std::runtime_error("mkdtemp failed");
    const std::string src = data_dir + "/tokenizers/" + name;
    {
        std::ofstream(std::string(dir) + "/tokenizer.json", std::ios::binary) << tokenizer_json_text(name);
        std::ofstream(std::string(dir) + "/tokenizer_config.json", std::ios::binary)
            << read_file(src + "/tokenizer_config.json");
    }
    auto tok = std::make_unique<Tokenizer>(Tokenizer::load(dir));
    std::remove((std::string(dir) + "/tokenizer.json").c_str());
    std::remove((std::string(dir) + "/tokenizer_config.json").c_str());
    std::remove(dir);
    return *cache.emplace(name, std::move(tok)).first->second;
}

const std::vector<std::string> & corpus() {
    static std::vector<std::string> texts = [] {
        std::vector<std::string> out;
        std::ifstream f(data_dir + "/tokenizer_corpus.jsonl");
        std::string line;
        while (std::getline(f, line)) out.push_back(json::parse(line).at("text").get<std::string>());
        return out;
    }();
    return texts;
}

struct Reference {
    size_t text;
    bool special;
    std::vector<int32_t> ids;
    std::optional<std::string> decoded;
};

const std::vector<Reference> & reference(const std::string & name) {
    static std::map<std::string, std::vector<Reference>> all = [] {
        std::map<std::string, std::vector<Reference>> out;
        std::istringstream in(xz_decompress(data_dir + "/tokenizer_reference.jsonl.xz"));
        std::string line;
        std::getline(in, line);   // header
        while (std::getline(in, line)) {
            json r = json::parse(line);
            Reference ref{r.at("text").get<size_t>(), r.at("special").get<bool>(),
                          r.at("ids").get<std::vector<int32_t>>(), std::nullopt};
            if (r.contains("decoded")) ref.decoded = r["decoded"].get<std::string>();
            out[r.at("tokenizer").get<std::string>()].push_back(std::move(ref));
        }
        return out;
    }();
    return all[name];
}

std::string show(const std::vector<int32_t> & ids) {
    std::string s;
    for (size_t i = 0; i < ids.size() && i < 40; ++i) s += (i ? " " : "") + std::to_string(ids[i]);
    return s + (ids.size() > 40 ? " ..." : "");
}

void check_parity(const std::string & name) {
    const Tokenizer & tok = real_tokenizer(name);
    const auto & texts = corpus();
    const auto & refs = reference(name);
    ASSERT_GE(texts.size(), 300u);
    size_t plain = 0, plain_ok = 0, special_ok = 0, special = 0, decode_ok = 0, round_trip_exact = 0;
    for (const auto & ref : refs) {
        ASSERT_LT(ref.text, texts.size());
        const std::string & text = texts[ref.text];
        std::vector<int32_t> ids = tok.encode(text, ref.special);
        bool ok = ids == ref.ids;
        EXPECT_TRUE(ok) << name << " text #" << ref.text << (ref.special ? " (add_special_tokens)" : "") << "\n  got "
                        << show(ids) << "\n want " << show(ref.ids);
        if (ref.special) {
            ++special;
            special_ok += ok;
            continue;
        }
        ++plain;
        plain_ok += ok;
        std::string decoded = tok.decode(ref.ids);
        const std::string & want = ref.decoded ? *ref.decoded : text;
        EXPECT_EQ(decoded, want) << name << " decode of text #" << ref.text;
        decode_ok += decoded == want;
        round_trip_exact += decoded == text;
    }
    EXPECT_EQ(plain, texts.size());
    std::printf("[ %s ] %zu/%zu texts match HF ids, %zu/%zu with add_special_tokens, decode equals HF for %zu, "
                "decode(encode(x)) == x for %zu\n",
                name.c_str(), plain_ok, plain, special_ok, special, decode_ok, round_trip_exact);
}

// A small valid byte-level BPE tokenizer.json to mutate in the hostile-file tests.
json tiny_tokenizer() {
    json vocab = json::object();
    int id = 0;
    for (const char * t : {"a", "b", "c", "ab", "abc", "Ġ", "Ġa"}) vocab[t] = id++;
    return json{
        {"version", "1.0"},
        {"added_tokens", json::array({json{{"id", 7}, {"content", "<|end|>"}, {"special", true},
                                            {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                                            {"normalized", false}}})},
        {"normalizer", json{{"type", "NFC"}}},
        {"pre_tokenizer", json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"post_processor", nullptr},
        {"decoder", json{{"type", "ByteLevel"}}},
        {"model", json{{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b", "ab c", "Ġ a"})}}},
    };
}

std::string load_error(const std::string & text, const std::string & config = "",
                       int64_t limit = Tokenizer::max_vocab_entries) {
    try {
        Tokenizer::from_json(text, config, "bad/tokenizer.json", limit);
    } catch (const Error & e) {
        return e.what();
    } catch (const std::exception & e) {
        return std::string("WRONG EXCEPTION TYPE: ") + e.what();
    }
    return "NO ERROR";
}

}  // namespace

TEST(Tokenizer, ParityQwen3) { check_parity("qwen3"); }
TEST(Tokenizer, ParityLlama3) { check_parity("llama3"); }
TEST(Tokenizer, ParityLlama2) { check_parity("llama2"); }
// Metaspace pre-tokeniser/decoder (Mistral-style files) and added-token lstrip/rstrip/single_word/normalized.
TEST(Tokenizer, ParityLlama2Metaspace) { check_parity("llama2_metaspace"); }
TEST(Tokenizer, ParityAddedTokenFlags) { check_parity("qwen3_flags"); }

TEST(Tokenizer, BosEosAndSpecialTokens) {
    const Tokenizer & qwen = real_tokenizer("qwen3");
    EXPECT_FALSE(qwen.bos_id().has_value());
    EXPECT_EQ(qwen.eos_id(), 151645);                  // <|im_end|>
    EXPECT_FALSE(qwen.add_bos());
    EXPECT_EQ(qwen.vocab_size(), 151669);
    EXPECT_TRUE(qwen.is_special(151643));
    EXPECT_FALSE(qwen.is_special(151667));             // <think> is an added, non-special token
    EXPECT_EQ(qwen.encode("<|endoftext|>"), std::vector<int32_t>{151643});
    EXPECT_EQ(qwen.decode({9707, 151643, 1879}, true), "Hello world");

    const Tokenizer & llama2 = real_tokenizer("llama2");
    EXPECT_EQ(llama2.bos_id(), 1);
    EXPECT_EQ(llama2.eos_id(), 2);
    EXPECT_TRUE(llama2.add_bos());
    EXPECT_EQ(llama2.encode("Hello world", true), (std::vector<int32_t>{1, 22557, 1526}));
    EXPECT_EQ(llama2.encode("", true), std::vector<int32_t>{1});
    EXPECT_EQ(llama2.decode({1, 22557, 1526, 2}, true), "Hello world");
    EXPECT_EQ(llama2.token_id("<0x0A>"), 13);

    // This Llama 3 tokenizer.json has a ByteLevel post-processor only: HF adds no BOS, and neither do we.
    const Tokenizer & llama3 = real_tokenizer("llama3");
    EXPECT_EQ(llama3.bos_id(), 128000);
    EXPECT_EQ(llama3.eos_id(), 128001);
    EXPECT_EQ(llama3.vocab_size(), 128256);
    EXPECT_FALSE(llama3.add_bos());
    EXPECT_EQ(llama3.encode("Hello world", true), (std::vector<int32_t>{9906, 1917}));
}

TEST(Tokenizer, Llama3TemplateProcessingAddsBos) {
    // Meta's own Llama 3 tokenizer.json: Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)].
    std::string text = xz_decompress(data_dir + "/tokenizers/llama3/tokenizer.json.xz");
    const size_t at = text.find("\"post_processor\": {");
    ASSERT_NE(at, std::string::npos);
    const size_t end = text.find('}', at);   // the ByteLevel object has no nested braces
    ASSERT_NE(end, std::string::npos);
    const std::string bos = R"({"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}})";
    const std::string seq = R"({"Sequence": {"id": "A", "type_id": 0}})";
    const std::string replacement =
        R"("post_processor": {"type": "Sequence", "processors": [)" + text.substr(at + 18, end + 1 - at - 18) +
        R"(, {"type": "TemplateProcessing", "single": [)" + bos + ", " + seq + R"(], "pair": [)" + bos + ", " + seq +
        R"(], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]})";
    text.replace(at, end + 1 - at, replacement);
    Tokenizer tok = Tokenizer::from_json(text, read_file(data_dir + "/tokenizers/llama3/tokenizer_config.json"),
                                         "llama3-template");
    EXPECT_TRUE(tok.add_bos());
    EXPECT_EQ(tok.encode("Hello world", true), (std::vector<int32_t>{128000, 9906, 1917}));
    EXPECT_EQ(tok.encode("Hello world", false), (std::vector<int32_t>{9906, 1917}));
}

TEST(Tokenizer, LongInputsStayFast) {
    // No pre-tokeniser in Llama 2: a long text is one BPE word and must not go quadratic.
    std::string text;
    const auto & texts = corpus();
    for (size_t i = 0; text.size() < 300'000; ++i) text += texts[i % texts.size()] + " ";
    for (const char * name : {"llama2", "qwen3"}) {
        const Tokenizer & tok = real_tokenizer(name);
        auto t0 = std::chrono::steady_clock::now();
        std::vector<int32_t> ids = tok.encode(text);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        EXPECT_LT(s, 3.0) << name << " took " << s << " s for " << text.size() << " bytes";
        std::printf("[ %s ] %zu bytes -> %zu ids in %.3f s\n", name, text.size(), ids.size(), s);
        EXPECT_FALSE(ids.empty());
    }
    const Tokenizer & llama2 = real_tokenizer("llama2");
    std::string same(200'000, 'a');
    auto ids = llama2.encode(same);
    EXPECT_EQ(llama2.decode(ids), same);
    std::string spaces = "x" + std::string(100'000, ' ') + "y";
    EXPECT_EQ(real_tokenizer("qwen3").decode(real_tokenizer("qwen3").encode(spaces)), spaces);
}

TEST(Tokenizer, ConcurrentEncodeIsSafe) {
    const Tokenizer & tok = real_tokenizer("qwen3");
    const auto & texts = corpus();
    std::vector<std::vector<int32_t>> want;
    for (size_t i = 0; i < 60; ++i) want.push_back(tok.encode(texts[i] + " thread"));
    std::vector<int> bad(2, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
        threads.emplace_back([&, t] {
            for (int rep = 0; rep < 3; ++rep)
                for (size_t i = 0; i < want.size(); ++i) bad[size_t(t)] += tok.encode(texts[i] + " thread") != want[i];
        });
    for (auto & th : threads) th.join();
    EXPECT_EQ(bad[0] + bad[1], 0);
}

TEST(Tokenizer, RejectsInvalidUtf8Text) {
    const Tokenizer & tok = real_tokenizer("qwen3");
    EXPECT_THROW(tok.encode(std::string("ab\xff", 3)), Error);
    EXPECT_THROW(tok.encode(std::string("\xed\xa0\x80", 3)), Error);   // surrogate
    // Decoding a partial UTF-8 sequence keeps the bytes.
    auto ids = tok.encode("é");
    ASSERT_EQ(ids.size(), 1u);
    std::string tail = tok.decode(tok.encode("😀"));
    EXPECT_EQ(tail, "😀");
}

TEST(Tokenizer, TinyTokenizerWorks) {
    Tokenizer tok = Tokenizer::from_json(tiny_tokenizer().dump(), R"({"eos_token": {"content": "<|end|>"}})", "tiny");
    EXPECT_EQ(tok.encode("abc a<|end|>"), (std::vector<int32_t>{4, 6, 7}));
    EXPECT_EQ(tok.eos_id(), 7);
    EXPECT_EQ(tok.decode({4, 6, 7}), "abc a<|end|>");
    EXPECT_EQ(tok.decode({4, 6, 7, -5, 99}, true), "abc a");   // unknown ids are skipped, as HF does
}

TEST(Tokenizer, RejectsHostileFiles) {
    struct Case { std::string name; std::string text; std::string config; std::string expect; };
    std::vector<Case> cases;
    auto mutate = [&](const std::string & name, auto fn, const std::string & expect) {
        json doc = tiny_tokenizer();
        fn(doc);
        cases.push_back({name, doc.dump(), "", expect});
    };
    cases.push_back({"empty", "", "", "not valid JSON"});
    cases.push_back({"not json", "hello", "", "not valid JSON"});
    cases.push_back({"truncated", tiny_tokenizer().dump().substr(0, 100), "", "not valid JSON"});
    cases.push_back({"array", "[1,2,3]", "", "no \"model\""});
    cases.push_back({"deep nesting", std::string(200000, '[') + std::string(200000, ']'), "", "nests deeper"});
    cases.push_back({"invalid utf8 bytes", "{\"model\": {\"vocab\": {\"\xff\xfe\": 0}}}", "", "not valid JSON"});
    mutate("unknown model", [](json & d) { d["model"]["type"] = "Unigram"; }, "model type \"Unigram\"");
    mutate("wordpiece", [](json & d) { d["model"]["type"] = "WordPiece"; }, "not supported");
    mutate("model not object", [](json & d) { d["model"] = 5; }, "must be an object");
    mutate("vocab missing", [](json & d) { d["model"].erase("vocab"); }, "\"vocab\" must be an object");
    mutate("merge unknown token", [](json & d) { d["model"]["merges"].push_back("a zz"); }, "not in model.vocab");
    mutate("merge result unknown", [](json & d) { d["model"]["merges"].push_back("b c"); }, "produces \"bc\"");
    mutate("merge three parts", [](json & d) { d["model"]["merges"].push_back("a b c"); }, "two tokens");
    mutate("merge bad shape", [](json & d) { d["model"]["merges"].push_back(json::array({"a"})); }, "merge #3");
    mutate("merges not array", [](json & d) { d["model"]["merges"] = "a b"; }, "must be an array");
    mutate("negative id", [](json & d) { d["model"]["vocab"]["c"] = -1; }, "outside [0");
    mutate("huge id", [](json & d) { d["model"]["vocab"]["c"] = 2'000'000'000; }, "outside [0");
    mutate("id 10M+1", [](json & d) { d["model"]["vocab"]["c"] = 10'000'001; }, "outside [0");
    mutate("float id", [](json & d) { d["model"]["vocab"]["c"] = 1.5; }, "not an integer");
    mutate("string id", [](json & d) { d["model"]["vocab"]["c"] = "2"; }, "not an integer");
    mutate("duplicate id", [](json & d) { d["model"]["vocab"]["c"] = 0; }, "given to two tokens");
    mutate("added id clash", [](json & d) { d["added_tokens"][0]["id"] = 3; }, "ids must be unique");
    mutate("added vocab mismatch", [](json & d) { d["added_tokens"][0]["content"] = "ab"; }, "model vocab gives it id");
    mutate("added negative", [](json & d) { d["added_tokens"][0]["id"] = -3; }, "outside [0");
    mutate("added huge", [](json & d) { d["added_tokens"][0]["id"] = 99'999'999; }, "outside [0");
    mutate("added empty", [](json & d) { d["added_tokens"][0]["content"] = ""; }, "content is empty");
    mutate("added no content", [](json & d) { d["added_tokens"][0].erase("content"); }, "\"content\" must be a string");
    mutate("added flag type", [](json & d) { d["added_tokens"][0]["lstrip"] = "yes"; }, "true or false");
    mutate("added twice", [](json & d) {
        json t = d["added_tokens"][0];
        t["id"] = 8;
        d["added_tokens"].push_back(t);
    }, "listed twice");
    mutate("unknown normalizer", [](json & d) { d["normalizer"] = {{"type", "Precompiled"}}; },
           "normaliser type \"Precompiled\"");
    mutate("unknown normalizer in sequence",
           [](json & d) { d["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "BertNormalizer"}}}}}; },
           "\"BertNormalizer\" is not supported");
    mutate("replace regex normalizer",
           [](json & d) { d["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", " "}}; },
           "String");
    mutate("unknown pre-tokenizer", [](json & d) { d["pre_tokenizer"] = {{"type", "Whitespace"}}; },
           "pre-tokeniser type \"Whitespace\"");
    mutate("unknown decoder", [](json & d) { d["decoder"] = {{"type", "WordPiece"}}; }, "decoder type \"WordPiece\"");
    mutate("unknown post-processor", [](json & d) { d["post_processor"] = {{"type", "Foo"}}; }, "\"Foo\"");
    mutate("bad regex",
           [](json & d) {
               d["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
           },
           "cannot compile");
    mutate("bad split behavior",
           [](json & d) { d["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Odd"}}; },
           "behavior \"Odd\"");
    mutate("unk not in vocab", [](json & d) { d["model"]["unk_token"] = "<unk>"; }, "unk_token \"<unk>\"");
    mutate("dropout", [](json & d) { d["model"]["dropout"] = 0.1; }, "dropout");
    mutate("template unknown token",
           [](json & d) {
               d["post_processor"] = {{"type", "TemplateProcessing"},
                                      {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                                      {"special_tokens", json::object()}};
           },
           "missing from \"special_tokens\"");
    mutate("template id out of range",
           [](json & d) {
               d["post_processor"] = {{"type", "TemplateProcessing"},
                                      {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                                      {"special_tokens", {{"<s>", {{"ids", {123456}}}}}}};
           },
           "outside the vocab");
    // invalid UTF-8 written as JSON escapes (lone surrogate) and inside a token's bytes
    cases.push_back({"lone surrogate", R"({"model":{"type":"BPE","vocab":{"\ud800":0},"merges":[]}})", "",
                     "not valid JSON"});
    cases.push_back({"config not json", tiny_tokenizer().dump(), "{oops", "tokenizer_config.json is not a JSON"});
    cases.push_back({"config unknown bos", tiny_tokenizer().dump(), R"({"bos_token": "<nope>"})", "\"<nope>\""});
    cases.push_back({"config bos type", tiny_tokenizer().dump(), R"({"bos_token": 5})", "must be a string"});
    cases.push_back({"config deep nesting", tiny_tokenizer().dump(),
                     R"({"bos_token": )" + std::string(200000, '[') + std::string(200000, ']') + "}",
                     "tokenizer_config.json nests deeper"});
    for (const auto & c : cases) {
        std::string err = load_error(c.text, c.config);
        EXPECT_NE(err.find(c.expect), std::string::npos) << c.name << ": got \"" << err.substr(0, 400) << "\"";
        if (err != "NO ERROR" && err.rfind("WRONG", 0) != 0) {
            EXPECT_NE(err.find("bad/tokenizer.json"), std::string::npos) << c.name << ": the error must name the file";
        }
    }
}

TEST(Tokenizer, RejectsHugeVocab) {
    // The entry-count rule, exercised with a low limit (a real 10M-entry file takes seconds to parse).
    EXPECT_EQ(Tokenizer::max_vocab_entries, 10'000'000);
    json doc = tiny_tokenizer();
    for (int i = 0; i < 20; ++i) doc["model"]["vocab"]["x" + std::to_string(i)] = 100 + i;
    EXPECT_EQ(load_error(doc.dump(), "", 1000), "NO ERROR");
    EXPECT_NE(load_error(doc.dump(), "", 20).find("the vocab has 27 entries, more than the 20 allowed"),
              std::string::npos);
    for (int i = 0; i < 30; ++i) doc["model"]["merges"].push_back("a b");
    EXPECT_NE(load_error(doc.dump(), "", 30).find("33 merges is more than the 30 allowed"), std::string::npos);
}

TEST(Tokenizer, RejectsBadFilesOnDisk) {
    EXPECT_THROW(Tokenizer::load("/nonexistent/dir"), Error);
    // Every file under tests/data/bad_tokenizers must be rejected with a zt::Error.
    std::string list = command_output("ls " + data_dir + "/bad_tokenizers/*.json 2>/dev/null");
    std::istringstream in(list);
    std::string path;
    int n = 0;
    while (std::getline(in, path)) {
        ++n;
        EXPECT_THROW(Tokenizer::load(path), Error) << path;
    }
    EXPECT_GE(n, 5);
}
