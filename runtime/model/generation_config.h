// generation_config.json: the end-of-sequence ids a model folder's generation_config.json names (generation stops
// on these as well as on config.json's and the tokenizer's, as in transformers). The file is optional; when it is
// there it must be valid JSON (nesting-limited) with a sane eos_token_id, else a clear error names it: ignoring it
// would let generation run past the model's end of text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace zt {

// eos_token_id of <model_dir>/generation_config.json (an integer or a list of them); empty when the file or the
// key is absent (or null).
std::vector<int32_t> generation_config_eos_ids(const std::string & model_dir);

}  // namespace zt
