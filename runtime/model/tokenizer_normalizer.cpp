// The normaliser stage of the tokenizer (tokenizer.h): loads tokenizer.json's "normalizer" (NFC, NFD, NFKC, NFKD,
// Prepend, Replace with a string pattern, Sequence) into steps and applies them to text, as HF's normalizers do.
#include "runtime/base/error.h"
#include "runtime/model/tokenizer_impl.h"
#include "runtime/model/unicode_text.h"

namespace zt {

using namespace tokenizer_detail;

namespace tokenizer_detail {

std::string replace_all(std::string_view s, const std::string & from, const std::string & to) {
    if (from.empty()) return std::string(s);
    std::string out;
    size_t pos = 0;
    for (;;) {
        size_t hit = s.find(from, pos);
        if (hit == std::string_view::npos) break;
        out.append(s.data() + pos, hit - pos);
        out += to;
        pos = hit + from.size();
    }
    out.append(s.data() + pos, s.size() - pos);
    return out;
}

}  // namespace tokenizer_detail

void Tokenizer::Impl::load_normalizer(const json & n, const std::string & where) {
    if (n.is_null()) return;
    const std::string type = json_type(n, where);
    if (type == "Sequence") {
        auto it = n.find("normalizers");
        ZT_CHECK(it != n.end() && it->is_array(), "{}: Sequence needs a \"normalizers\" array", where);
        for (size_t k = 0; k < it->size(); ++k) load_normalizer((*it)[k], fmt::format("{}.normalizers[{}]", where, k));
    } else if (type == "NFC") {
        normalizer.push_back({NormalizerStep::nfc, {}, {}});
    } else if (type == "NFD") {
        normalizer.push_back({NormalizerStep::nfd, {}, {}});
    } else if (type == "NFKC") {
        normalizer.push_back({NormalizerStep::nfkc, {}, {}});
    } else if (type == "NFKD") {
        normalizer.push_back({NormalizerStep::nfkd, {}, {}});
    } else if (type == "Prepend") {
        normalizer.push_back({NormalizerStep::prepend, json_string(n, "prepend", where), {}});
    } else if (type == "Replace") {
        auto it = n.find("pattern");
        ZT_CHECK(it != n.end() && it->is_object() && it->contains("String"),
                 "{}: only Replace normalisers with a {{\"String\": ...}} pattern are supported", where);
        normalizer.push_back({NormalizerStep::replace, json_string(*it, "String", where), json_string(n, "content", where)});
    } else {
        ZT_FAIL("{}: normaliser type \"{}\" is not supported (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, "
                "Sequence)",
                where, type);
    }
}

std::string Tokenizer::Impl::normalize(std::string_view s) const {
    std::string cur(s);
    for (const auto & step : normalizer) {
        switch (step.kind) {
            case NormalizerStep::nfc: cur = unicode_normalize(cur, UnicodeForm::nfc); break;
            case NormalizerStep::nfd: cur = unicode_normalize(cur, UnicodeForm::nfd); break;
            case NormalizerStep::nfkc: cur = unicode_normalize(cur, UnicodeForm::nfkc); break;
            case NormalizerStep::nfkd: cur = unicode_normalize(cur, UnicodeForm::nfkd); break;
            case NormalizerStep::prepend:
                if (!cur.empty()) cur = step.a + cur;
                break;
            case NormalizerStep::replace: cur = replace_all(cur, step.a, step.b); break;
        }
    }
    return cur;
}

}  // namespace zt
