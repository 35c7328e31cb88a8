// Request: one line of a generate job's input JSONL, parsed and validated. A bad line becomes a RequestError
// (an error record in the output) and the rest of the job runs.
//
// Line: {"custom_id": "a", "prompt": "text" | "prompt_token_ids": [1, 2], "max_tokens": 16, "temperature": 0.7,
//        "top_k": 40, "top_p": 0.9, "seed": 1, "stop": "\n" | ["x", "y"], "logprobs": true}
// OpenAI batch lines ({"custom_id": .., "body": {"prompt": .., ...}}) are read from "body".
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "runtime/job/job_config.h"
#include "runtime/job/sampler.h"

namespace zt {

struct Request {
    int64_t line = 0;                     // 1-based line number in the input
    std::string custom_id;
    std::optional<std::string> prompt;    // text, tokenized with the model's special tokens (BOS)
    std::vector<int32_t> prompt_ids;      // given ids, or the tokenized prompt once the job tokenizes it
    int64_t max_tokens = 0;
    SamplingParams sampling;
    std::vector<std::string> stop;
    bool logprobs = false;
    bool ignore_eos = false;              // vLLM's flag: keep generating past EOS until max_tokens (benchmarks)
    int64_t row = -1;                     // embed jobs: index of the line among the input's non-blank lines (.npy row)
};

struct RequestError {
    int64_t line = 0;
    std::optional<std::string> custom_id;  // absent when the line could not be read far enough
    std::string code;                      // invalid_json | invalid_utf8 | invalid_request | duplicate_custom_id |
                                           // context_length_exceeded | kv_cache_exceeded |
                                           // nan_logits | internal_error
    std::string message;
};

// Parses line `line_no` (1-based) of a generate job; defaults come from the job config.
std::variant<Request, RequestError> parse_request(const std::string & text, int64_t line_no,
                                                  const SamplingDefaults & defaults);


// Parses line `line_no` of an embed job: {"custom_id", "input": "text" | [ids], "instruction": "..."} or the OpenAI
// batch form {"custom_id", "method": "POST", "url": "/v1/embeddings", "body": {"input": .., "model": ..}}.
// The instruction (the line's own, else default_instruction) is prepended to a text input; the result is a
// Request whose prompt / prompt_ids is what gets embedded (max_tokens 0).
std::variant<Request, RequestError> parse_embed_request(const std::string & text, int64_t line_no,
                                                        const std::string & default_instruction);

// Prompt-length bucket (ceil(log2 n)): among requests of equal work the longer bucket runs first, so that a
// micro-batch's prompts are about as long as each other (the run order, request_handout.h).
int prompt_length_bucket(size_t n);

}  // namespace zt
