// Bounded parsing and quoting of JSON read from outside (see json_input.h).
#include "runtime/base/json_input.h"

#include <fmt/format.h>

#include "runtime/base/error.h"

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

nlohmann::json parse_json_file(std::string_view text, const std::string & what, bool comments) {
    try {
        return parse_json_input(text, comments);
    } catch (const JsonTooDeep & e) {
        ZT_FAIL("{}: {}; the file is corrupt or not what its name says (real ones nest a few levels): replace it "
                "with a good copy", what, e.what());
    } catch (const nlohmann::json::exception & e) {
        ZT_FAIL("{}: not valid JSON: {}", what, cut_for_message(e.what()));
    }
}

std::string cut_for_message(std::string s) {
    if (s.size() <= kMaxQuotedJsonChars) return s;
    const size_t n = s.size();
    s.resize(kMaxQuotedJsonChars);
    while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();   // whole UTF-8
    if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
    return s + fmt::format("... ({} characters)", n);
}

std::string quote_json(const nlohmann::json & value) {
    return cut_for_message(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace zt
