// JSON the program reads from outside (ds.json, each input line, a model folder's config.json,
// generation_config.json, tokenizer files, safetensors headers): parsed with a nesting limit, and cut short when
// a value is quoted in a message. nlohmann's parser and destructor are iterative, but copying and dumping a value
// recurse once per level: 200,000 nested brackets in an unknown key, a custom_id or a shape would overflow the
// stack. A text nested deeper than kMaxJsonDepth is rejected before it is parsed, so no deep value ever exists.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace zt {

constexpr size_t kMaxJsonDepth = 64;        // nested arrays/objects; real configs, tokenizers, requests use < 10
constexpr size_t kMaxQuotedJsonChars = 200; // a value quoted in a message is cut to this many characters

// Thrown by parse_json_input for a text nested deeper than kMaxJsonDepth (a nlohmann::json::exception is thrown
// for text that is not JSON).
struct JsonTooDeep : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// How deeply `text`'s arrays and objects nest (brackets inside strings and, with comments, in // and /* */
// comments do not count). One pass, no recursion.
size_t json_nesting_depth(std::string_view text, bool comments = false);

// json::parse(text) after checking the nesting depth; comments: allow // and /* */ (ds.json).
nlohmann::json parse_json_input(std::string_view text, bool comments = false);

// parse_json_input for a whole file read from outside; either failure raises zt::Error "<what>: not valid JSON:
// ..." or "<what>: arrays/objects are nested N levels deep ...", where `what` names the file (e.g.
// "/m/config.json", or "/m/model.safetensors: safetensors header").
nlohmann::json parse_json_file(std::string_view text, const std::string & what, bool comments = false);

// A value for a message: its JSON text, cut to kMaxQuotedJsonChars with "... (N characters)" appended.
std::string quote_json(const nlohmann::json & value);

// Any text for a message (a parser's complaint that quotes a token, a key), cut the same way.
std::string cut_for_message(std::string text);

}  // namespace zt
