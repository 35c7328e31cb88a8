// The decoder stage of the tokenizer (tokenizer.h): loads tokenizer.json's "decoder" (ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace, Sequence) and turns the tokens of decoded ids back into text pieces, as
// HF's decoders do.
#include "runtime/base/error.h"
#include "runtime/model/tokenizer_impl.h"
#include "runtime/model/unicode_text.h"

#include <string>
#include <utility>
#include <vector>

namespace zt {

using namespace tokenizer_detail;

namespace {
// Strips up to `start` leading and `stop` trailing copies of `content` (one character) from `token`.
void strip_token(std::string & token, const std::string & content, size_t start, size_t stop) {
    size_t front = 0;
    for (size_t i = 0; i < start && token.compare(front, content.size(), content) == 0 && front < token.size(); ++i)
        front += content.size();
    size_t back = token.size();
    for (size_t i = 0; i < stop && back >= front + content.size() &&
                       token.compare(back - content.size(), content.size(), content) == 0; ++i)
        back -= content.size();
    token = token.substr(front, back - front);
}
}  // namespace

void Tokenizer::Impl::load_decoder(const json & d, const std::string & where) {
    if (d.is_null()) return;
    has_decoder = true;
    const std::string type = json_type(d, where);
    if (type == "Sequence") {
        auto it = d.find("decoders");
        ZT_CHECK(it != d.end() && it->is_array(), "{}: Sequence needs a \"decoders\" array", where);
        for (size_t k = 0; k < it->size(); ++k) load_decoder((*it)[k], fmt::format("{}.decoders[{}]", where, k));
    } else if (type == "ByteLevel") {
        decoder.push_back({DecoderStep::byte_level, {}, {}, 0, 0, true});
    } else if (type == "Replace") {
        auto it = d.find("pattern");
        ZT_CHECK(it != d.end() && it->is_object() && it->contains("String"),
                 "{}: only Replace decoders with a {{\"String\": ...}} pattern are supported", where);
        decoder.push_back({DecoderStep::replace, json_string(*it, "String", where), json_string(d, "content", where), 0, 0, true});
    } else if (type == "ByteFallback") {
        decoder.push_back({DecoderStep::byte_fallback, {}, {}, 0, 0, true});
    } else if (type == "Fuse") {
        decoder.push_back({DecoderStep::fuse, {}, {}, 0, 0, true});
    } else if (type == "Strip") {
        DecoderStep s{DecoderStep::strip, json_string(d, "content", where), {}, 0, 0, true};
        ZT_CHECK(utf8_count_chars(s.a) == 1, "{}: Strip content must be one character", where);
        for (const char * key : {"start", "stop"}) {
            ZT_CHECK(d.contains(key) && d[key].is_number_unsigned() && d[key].get<uint64_t>() <= 1'000'000,
                     "{}: Strip \"{}\" must be a small non-negative integer", where, key);
        }
        s.start = d["start"].get<size_t>();
        s.stop = d["stop"].get<size_t>();
        decoder.push_back(std::move(s));
    } else if (type == "Metaspace") {
        DecoderStep s{DecoderStep::metaspace, json_string(d, "replacement", where), {}, 0, 0, true};
        if (d.contains("prepend_scheme") && !d["prepend_scheme"].is_null())
            s.prepend = json_string(d, "prepend_scheme", where) != "never";
        else
            s.prepend = json_bool(d, "add_prefix_space", true, where);
        decoder.push_back(std::move(s));
    } else {
        ZT_FAIL("{}: decoder type \"{}\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, "
                "Metaspace, Sequence)",
                where, type);
    }
}

void Tokenizer::Impl::decode_tokens(std::vector<std::string> & tokens) const {
    for (const auto & step : decoder) {
        switch (step.kind) {
            case DecoderStep::byte_level:
                for (auto & t : tokens) {
                    std::string bytes;
                    bool all = true;
                    for (size_t i = 0; i < t.size() && all;) {
                        size_t len;
                        int b = byte_level_byte(utf8_decode_at(t, i, len));
                        if (b < 0) all = false;
                        else bytes += char(b);
                        i += len;
                    }
                    if (all) t = std::move(bytes);   // else keep the token as written (HF does the same)
                }
                break;
            case DecoderStep::replace:
                for (auto & t : tokens) t = replace_all(t, step.a, step.b);
                break;
            case DecoderStep::byte_fallback: {
                // Runs of <0xXX> tokens become their bytes (kept as bytes even when not valid UTF-8).
                std::vector<std::string> merged;
                std::string run;
                bool in_run = false;
                auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
                for (auto & t : tokens) {
                    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) && hex(t[4])) {
                        run += char(std::stoi(t.substr(3, 2), nullptr, 16));
                        in_run = true;
                        continue;
                    }
                    if (in_run) { merged.push_back(std::move(run)); run.clear(); in_run = false; }
                    merged.push_back(std::move(t));
                }
                if (in_run) merged.push_back(std::move(run));
                tokens.swap(merged);
                break;
            }
            case DecoderStep::fuse: {
                std::string all;
                for (auto & t : tokens) all += t;
                tokens.assign(1, std::move(all));
                break;
            }
            case DecoderStep::strip:
                for (auto & t : tokens) strip_token(t, step.a, step.start, step.stop);
                break;
            case DecoderStep::metaspace:
                // HF drops every replacement character of the first token (not only a leading one).
                for (size_t i = 0; i < tokens.size(); ++i)
                    tokens[i] = replace_all(tokens[i], step.a, i == 0 && step.prepend ? "" : " ");
                break;
        }
    }
}

}  // namespace zt
