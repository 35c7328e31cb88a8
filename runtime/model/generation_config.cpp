// generation_config.json's eos_token_id (see generation_config.h).
#include "runtime/model/generation_config.h"

#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/base/error.h"
#include "runtime/base/json_input.h"

namespace zt {

namespace {

int32_t eos_id_of(const nlohmann::json & x, const std::string & path) {
    constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
    const bool ok = x.is_number_unsigned() ? x.get<uint64_t>() <= uint64_t(kMax)
                                           : x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() <= kMax;
    ZT_CHECK(ok,
             "{}: eos_token_id must be a token id (an integer in [0, 2^31)) or a list of them, found {}; fix or "
             "delete the file", path, quote_json(x));
    return int32_t(x.get<int64_t>());
}

}  // namespace

std::vector<int32_t> generation_config_eos_ids(const std::string & model_dir) {
    const std::string path = model_dir + "/generation_config.json";
    std::ifstream f(path, std::ios::binary);
    if (!f.good()) return {};
    std::stringstream ss;
    ss << f.rdbuf();
    ZT_CHECK(!f.bad(), "{}: cannot read; fix its permissions or delete it", path);
    const nlohmann::json g = parse_json_file(ss.str(), path);
    ZT_CHECK(g.is_object(), "{}: must hold a JSON object; fix or delete it", path);
    std::vector<int32_t> ids;
    const auto e = g.find("eos_token_id");
    if (e == g.end() || e->is_null()) return ids;
    if (e->is_array()) {
        for (const auto & x : *e) ids.push_back(eos_id_of(x, path));
    } else {
        ids.push_back(eos_id_of(*e, path));
    }
    return ids;
}

}  // namespace zt
