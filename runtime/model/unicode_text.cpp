// Unicode text helpers for the tokenizer (see unicode_text.h): UTF-8, utf8proc normalisation, byte-level
// alphabet, White_Space and word-character classes.
#include "runtime/model/unicode_text.h"

#include "runtime/base/error.h"

#include <cstdlib>
#include <utf8proc.h>

namespace zt {

size_t utf8_find_invalid(std::string_view s) {
    const auto * p = reinterpret_cast<const unsigned char *>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) { ++i; continue; }
        size_t len;
        int32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return i;
        if (i + len > n) return i;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return std::string_view::npos;
}

int32_t utf8_decode_at(std::string_view s, size_t pos, size_t & len) {
    const auto * p = reinterpret_cast<const unsigned char *>(s.data()) + pos;
    unsigned char c = p[0];
    len = utf8_seq_len(c);
    if (pos + len > s.size()) { len = 1; return c; }
    switch (len) {
        case 1: return c;
        case 2: return ((c & 0x1F) << 6) | (p[1] & 0x3F);
        case 3: return ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        default: return ((c & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    }
}

void utf8_append(std::string & out, int32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

size_t utf8_count_chars(std::string_view s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

std::string unicode_normalize(std::string_view s, UnicodeForm form) {
    if (s.empty()) return {};
    ZT_CHECK(utf8_is_valid(s), "cannot normalise text: it is not valid UTF-8");
    int options = UTF8PROC_STABLE;
    switch (form) {
        case UnicodeForm::nfc: options |= UTF8PROC_COMPOSE; break;
        case UnicodeForm::nfd: options |= UTF8PROC_DECOMPOSE; break;
        case UnicodeForm::nfkc: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
        case UnicodeForm::nfkd: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    utf8proc_uint8_t * out = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t *>(s.data()),
                                      utf8proc_ssize_t(s.size()), &out, utf8proc_option_t(options));
    ZT_CHECK(n >= 0, "Unicode normalisation failed: {}", utf8proc_errmsg(n));
    std::string result(reinterpret_cast<const char *>(out), size_t(n));
    std::free(out);
    return result;
}

bool unicode_is_whitespace(int32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

const char * unicode_whitespace_class() {
    return "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
           "\\x{205F}\\x{3000}";
}

bool unicode_is_word_char(int32_t cp) {
    if (cp == 0x200C || cp == 0x200D) return true;
    switch (utf8proc_category(cp)) {
        case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
        case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
            return true;
        default:
            return false;
    }
}

namespace {
struct ByteLevelTables {
    std::array<std::string, 256> to_text;
    std::array<int32_t, 256> to_cp{};
    std::array<int16_t, 0x144> to_byte{};
    ByteLevelTables() {
        to_byte.fill(-1);
        // GPT-2: printable Latin-1 bytes map to themselves, the rest to U+0100 + n in byte order.
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            to_cp[size_t(b)] = keep ? b : 0x100 + n++;
            utf8_append(to_text[size_t(b)], to_cp[size_t(b)]);
            to_byte[size_t(to_cp[size_t(b)])] = int16_t(b);
        }
    }
};
const ByteLevelTables & byte_level_tables() {
    static const ByteLevelTables tables;
    return tables;
}
}  // namespace

const std::array<std::string, 256> & byte_level_alphabet() { return byte_level_tables().to_text; }

int byte_level_byte(int32_t cp) {
    if (cp < 0 || cp >= 0x144) return -1;
    return byte_level_tables().to_byte[size_t(cp)];
}

}  // namespace zt
