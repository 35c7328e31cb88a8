// Unicode text helpers for the tokenizer: UTF-8 validation and decoding, NFC/NFD/NFKC/NFKD normalisation
// (utf8proc), the GPT-2 byte-level alphabet (byte <-> printable code point), and character classes that
// match Hugging Face `tokenizers` (White_Space, word characters).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zt {

// Byte offset of the first invalid UTF-8 sequence in `s`, or npos when `s` is valid (overlongs, surrogates
// and code points above U+10FFFF are invalid).
size_t utf8_find_invalid(std::string_view s);
inline bool utf8_is_valid(std::string_view s) { return utf8_find_invalid(s) == std::string_view::npos; }

// Decodes the code point at s[pos] of a VALID UTF-8 string; sets `len` to its byte length.
int32_t utf8_decode_at(std::string_view s, size_t pos, size_t & len);
// Byte length of the UTF-8 sequence starting with lead byte `b` (1 for stray bytes).
inline size_t utf8_seq_len(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }
void utf8_append(std::string & out, int32_t cp);
size_t utf8_count_chars(std::string_view s);

enum class UnicodeForm { nfc, nfd, nfkc, nfkd };
// Normalises valid UTF-8 text (throws zt::Error on invalid input or allocation failure).
std::string unicode_normalize(std::string_view s, UnicodeForm form);

// Unicode White_Space (what Rust char::is_whitespace and Oniguruma \s use).
bool unicode_is_whitespace(int32_t cp);
// Regex \w in Rust's regex crate: alphabetic, marks, decimal digits, connector punctuation, join controls.
bool unicode_is_word_char(int32_t cp);
// The White_Space set written as the inside of a PCRE2 character class ("\t-\r\x{20}...").
const char * unicode_whitespace_class();

// GPT-2 byte-level alphabet: every byte maps to one printable code point, stored as UTF-8.
const std::array<std::string, 256> & byte_level_alphabet();
// Inverse: code point -> byte, or -1 when the code point is not part of the alphabet.
int byte_level_byte(int32_t cp);

}  // namespace zt
