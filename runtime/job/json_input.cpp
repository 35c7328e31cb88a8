// Bounded parsing and quoting of users' JSON (see json_input.h).
#include "runtime/job/json_input.h"

#include <fmt/format.h>

namespace zt {

size_t json_nesting_depth(std::string_view t, bool comments) {
    size_t depth = 0, deepest = 0;
    for (size_t i = 0; i < t.size(); ++i) {
        const char c = t[i];
        if (c == '"') {   // skip the string, escapes included
            for (++i; i < t.size() && t[i] != '"'; ++i)
                if (t[i] == '\\') ++i;
        } else if (comments && c == '/' && i + 1 < t.size() && t[i + 1] == '/') {
            while (i < t.size() && t[i] != '\n') ++i;
        } else if (comments && c == '/' && i + 1 < t.size() && t[i + 1] == '*') {
            const size_t end = t.find("*/", i + 2);
            i = end == std::string_view::npos ? t.size() : end + 1;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

nlohmann::json parse_json_input(std::string_view text, bool comments) {
    const size_t depth = json_nesting_depth(text, comments);
    if (depth > kMaxJsonDepth)
        throw JsonTooDeep(fmt::format("arrays/objects are nested {} levels deep, more than the {} allowed", depth,
                                      kMaxJsonDepth));
    return nlohmann::json::parse(text, nullptr, true, comments);
}

std::string quote_json(const nlohmann::json & value) {
    std::string s = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() <= kMaxQuotedJsonChars) return s;
    const size_t n = s.size();
    s.resize(kMaxQuotedJsonChars);
    while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();   // whole UTF-8
    if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
    return s + fmt::format("... ({} characters)", n);
}

}  // namespace zt
