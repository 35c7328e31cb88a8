// Parsing and validation of one input JSONL line (see request.h). Every rejection names the field and the
// value, so the user can fix the line.
#include "runtime/job/request.h"

#include "runtime/base/json_input.h"
#include "runtime/model/unicode_text.h"


#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace zt {

namespace {

using json = nlohmann::json;

struct Invalid { std::string message; };

template <typename... Args>
[[noreturn]] void invalid(fmt::format_string<Args...> f, Args &&... args) {
    throw Invalid{fmt::format(f, std::forward<Args>(args)...)};
}

int64_t get_int(const json & j, const char * key) {
    const auto & v = j[key];
    if (!v.is_number_integer()) invalid("\"{}\" must be an integer, got {}", key, quote_json(v));
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
        invalid("\"{}\" = {} is too large", key, quote_json(v));
    return v.get<int64_t>();
}
double get_number(const json & j, const char * key) {
    const auto & v = j[key];
    if (!v.is_number()) invalid("\"{}\" must be a number, got {}", key, quote_json(v));
    return v.get<double>();
}

// `"custom_id": "<plain string>"` found by a scan (no regex: lines can be megabytes), for broken lines.
std::optional<std::string> sniff_custom_id(const std::string & t) {
    const size_t k = t.find("\"custom_id\"");
    if (k == std::string::npos) return std::nullopt;
    size_t i = k + 11;
    while (i < t.size() && (t[i] == ' ' || t[i] == '\t')) ++i;
    if (i >= t.size() || t[i] != ':') return std::nullopt;
    ++i;
    while (i < t.size() && (t[i] == ' ' || t[i] == '\t')) ++i;
    if (i >= t.size() || t[i] != '"') return std::nullopt;
    const size_t b = ++i;
    while (i < t.size() && t[i] != '"' && t[i] != '\\' && i - b < 256) ++i;
    if (i >= t.size() || t[i] != '"' || i == b) return std::nullopt;
    return t.substr(b, i - b);
}

// OpenAI batch envelope of a line: "method" (if present) must be "POST", "url" (if present) must be `url`
// ("/v1/completions" for generate jobs, "/v1/embeddings" for embed jobs), "body" (if present) an object.
void check_batch_envelope(const nlohmann::json & j, const char * url) {
    if (j.contains("method") && !(j["method"].is_string() && j["method"].get<std::string>() == "POST"))
        invalid("\"method\" is {}: OpenAI batch lines use \"POST\"", quote_json(j["method"]));
    if (j.contains("url")) {
        const auto & u = j["url"];
        if (!u.is_string()) invalid("\"url\" must be a string such as \"{}\"", url);
        const std::string s = u.get<std::string>();
        if (s == "/v1/chat/completions")
            invalid("\"url\" is \"/v1/chat/completions\": chat requests are not supported; this job takes \"{}\" "
                    "lines (apply the chat template yourself and send the text as \"prompt\")", url);
        if (s != url)
            invalid("\"url\" is \"{}\" but this job (\"ztinfer.task\") takes \"{}\" lines: run those lines in "
                    "a job of the matching task", s, url);
    }
    if (j.contains("body") && !j["body"].is_object()) invalid("\"body\" must be a JSON object");
}

// The error record of a line whose values are rejected (err.line and err.custom_id are set).
RequestError rejected(RequestError err, const Invalid & e) {
    err.code = "invalid_request";
    err.message = fmt::format("line {}: {}", err.line, e.message);
    return err;
}

// A line that passed parse_line_head: the object, where its request fields are (the OpenAI form's "body", else
// the line itself), and the error record to fill should a field be rejected (line and custom_id set).
struct LineHead {
    json line;
    RequestError err;
    const json & body() const { return line.contains("body") ? line["body"] : line; }
};

// The part every task shares: UTF-8, JSON, an object with a custom_id, the batch envelope (which also checks that
// "body" is an object). Returns the parsed line, or its error record.
std::variant<LineHead, RequestError> parse_line_head(const std::string & text, int64_t line_no, const char * url,
                                                 const char * what) {
    RequestError err;
    err.line = line_no;
    // best effort custom_id for records of lines that cannot be parsed
    if (auto id = sniff_custom_id(text); id && utf8_is_valid(*id)) err.custom_id = id;

    if (!utf8_is_valid(text)) {
        err.code = "invalid_utf8";
        err.message = fmt::format("line {} is not valid UTF-8: re-encode the input file as UTF-8", line_no);
        return err;
    }
    json j;
    try {
        j = parse_json_input(text);
    } catch (const JsonTooDeep & e) {
        err.code = "invalid_json";
        err.message = fmt::format("line {} is nested too deeply: {}; flatten the request", line_no, e.what());
        return err;
    } catch (const json::exception & e) {
        err.code = "invalid_json";
        err.message = fmt::format("line {} is not valid JSON: {}", line_no, e.what());
        return err;
    }
    try {
        if (!j.is_object()) invalid("line {} must be a JSON object with \"custom_id\" and {}", line_no, what);
        if (!j.contains("custom_id")) invalid("line {} has no \"custom_id\"", line_no);
        const auto & cid = j["custom_id"];
        if (cid.is_string()) err.custom_id = cid.get<std::string>();
        else if (cid.is_number_integer()) err.custom_id = quote_json(cid);
        else invalid("\"custom_id\" must be a string, got {}", quote_json(cid));
        if (err.custom_id->empty()) invalid("\"custom_id\" is empty");
        check_batch_envelope(j, url);
    } catch (const Invalid & e) {
        return rejected(std::move(err), e);
    }
    j["custom_id"] = *err.custom_id;   // numbers become their text
    return LineHead{std::move(j), std::move(err)};
}

}  // namespace

std::variant<Request, RequestError> parse_request(const std::string & text, int64_t line_no,
                                                  const SamplingDefaults & defaults) {
    auto head = parse_line_head(text, line_no, "/v1/completions", "\"prompt\"");
    if (auto * e = std::get_if<RequestError>(&head)) return *e;
    const LineHead & h = std::get<LineHead>(head);
    RequestError err = h.err;
    try {
        const json & body = h.body();
        Request r;
        r.line = line_no;
        r.custom_id = *err.custom_id;
        const bool has_text = body.contains("prompt"), has_ids = body.contains("prompt_token_ids");
        if (has_text == has_ids) invalid("give exactly one of \"prompt\" (text) or \"prompt_token_ids\" (list of ints)");
        if (has_text) {
            if (!body["prompt"].is_string()) invalid("\"prompt\" must be a string");
            r.prompt = body["prompt"].get<std::string>();
            if (r.prompt->empty()) invalid("\"prompt\" is empty: give at least one character");
        } else {
            const auto & ids = body["prompt_token_ids"];
            if (!ids.is_array()) invalid("\"prompt_token_ids\" must be a list of integers");
            if (ids.empty()) invalid("\"prompt_token_ids\" is empty: give at least one token");
            r.prompt_ids.reserve(ids.size());
            for (const auto & v : ids) {
                if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
                    invalid("\"prompt_token_ids\" holds {}: every entry must be a non-negative integer", quote_json(v));
                r.prompt_ids.push_back(int32_t(v.get<int64_t>()));
            }
        }
        r.max_tokens = defaults.max_new_tokens;
        if (body.contains("max_tokens") && !body["max_tokens"].is_null()) r.max_tokens = get_int(body, "max_tokens");
        if (r.max_tokens <= 0) invalid("\"max_tokens\" = {} must be >= 1", r.max_tokens);

        r.sampling.temperature = defaults.temperature;
        r.sampling.top_k = defaults.top_k;
        r.sampling.top_p = defaults.top_p;
        r.sampling.seed = derive_seed(defaults.seed, r.custom_id);
        if (body.contains("temperature") && !body["temperature"].is_null()) r.sampling.temperature = get_number(body, "temperature");
        if (body.contains("top_k") && !body["top_k"].is_null()) r.sampling.top_k = get_int(body, "top_k");
        if (body.contains("top_p") && !body["top_p"].is_null()) r.sampling.top_p = get_number(body, "top_p");
        if (body.contains("seed") && !body["seed"].is_null()) {
            if (!body["seed"].is_number_integer()) invalid("\"seed\" must be an integer");
            r.sampling.seed = body["seed"].is_number_unsigned() ? body["seed"].get<uint64_t>() : uint64_t(body["seed"].get<int64_t>());
        }
        if (!(r.sampling.temperature >= 0)) invalid("\"temperature\" = {} must be >= 0 (0 = greedy)", r.sampling.temperature);
        if (r.sampling.temperature < kGreedyBelowTemperature) r.sampling.temperature = 0;   // greedy (sampler.h)
        if (r.sampling.top_k < 0) invalid("\"top_k\" = {} must be >= 0 (0 = off)", r.sampling.top_k);
        if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1)) invalid("\"top_p\" = {} must be in (0, 1]", r.sampling.top_p);

        if (body.contains("stop") && !body["stop"].is_null()) {
            const auto & s = body["stop"];
            if (s.is_string()) r.stop.push_back(s.get<std::string>());
            else if (s.is_array()) {
                for (const auto & x : s) {
                    if (!x.is_string()) invalid("\"stop\" entries must be strings, got {}", quote_json(x));
                    r.stop.push_back(x.get<std::string>());
                }
            } else invalid("\"stop\" must be a string or a list of strings");
            for (const auto & x : r.stop) if (x.empty()) invalid("\"stop\" holds an empty string");
        }
        if (body.contains("logprobs") && !body["logprobs"].is_null()) {
            const auto & l = body["logprobs"];
            if (l.is_boolean()) r.logprobs = l.get<bool>();
            else if (l.is_number_integer() && l.get<int64_t>() >= 0) r.logprobs = l.get<int64_t>() > 0;
            else invalid("\"logprobs\" must be true or false");
        }
        if (body.contains("ignore_eos") && !body["ignore_eos"].is_null()) {
            if (!body["ignore_eos"].is_boolean()) invalid("\"ignore_eos\" must be true or false");
            r.ignore_eos = body["ignore_eos"].get<bool>();
        }
        return r;
    } catch (const Invalid & e) {
        return rejected(std::move(err), e);
    }
}


std::variant<Request, RequestError> parse_embed_request(const std::string & text, int64_t line_no,
                                                        const std::string & default_instruction) {
    auto head = parse_line_head(text, line_no, "/v1/embeddings", "\"input\"");
    if (auto * e = std::get_if<RequestError>(&head)) return *e;
    const LineHead & h = std::get<LineHead>(head);
    RequestError err = h.err;
    try {
        const json & body = h.body();
        Request r;
        r.line = line_no;
        r.custom_id = *err.custom_id;
        if (!body.contains("input")) invalid("no \"input\": give the text to embed (or a list of token ids)");
        const auto & in = body["input"];
        std::optional<std::string> instruction;
        if (body.contains("instruction") && !body["instruction"].is_null()) {
            if (!body["instruction"].is_string()) invalid("\"instruction\" must be a string");
            instruction = body["instruction"].get<std::string>();
        }
        if (in.is_string()) {
            if (in.get<std::string>().empty()) invalid("\"input\" is empty: give at least one character");
            r.prompt = instruction.value_or(default_instruction) + in.get<std::string>();
        } else if (in.is_array() && !in.empty() && in[0].is_string()) {
            invalid("\"input\" is a list of {} strings: give one input per line (one custom_id each)", in.size());
        } else if (in.is_array()) {
            if (in.empty()) invalid("\"input\" is empty: give at least one token");
            if (instruction) invalid("\"instruction\" needs a text \"input\" (it is prepended to the text)");
            for (const auto & v : in) {
                if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
                    invalid("\"input\" holds {}: token ids must be non-negative integers", quote_json(v));
                r.prompt_ids.push_back(int32_t(v.get<int64_t>()));
            }
        } else {
            invalid("\"input\" must be a string or a list of token ids");
        }
        if (body.contains("encoding_format") && !body["encoding_format"].is_null() &&
            body["encoding_format"] != "float")
            invalid("\"encoding_format\" is {}: only \"float\" is written", quote_json(body["encoding_format"]));
        if (body.contains("dimensions") && !body["dimensions"].is_null())
            invalid("\"dimensions\" is not supported: embeddings have the model's hidden size");
        return r;
    } catch (const Invalid & e) {
        return rejected(std::move(err), e);
    }
}

int prompt_length_bucket(size_t n) {
    int b = 0;
    while ((size_t(1) << b) < n) ++b;
    return b;
}

}  // namespace zt
