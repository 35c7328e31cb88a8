// BPE model of Hugging Face `tokenizers` (models/bpe): a word -> ids by applying merges in rank order with a
// heap (O(n log n) in the word's length), byte_fallback to <0xXX> tokens, unk / fuse_unk, ignore_merges,
// continuing_subword_prefix / end_of_word_suffix, and a bounded per-word cache. Mirrors HF's merge order
// exactly, including its handling of stale heap entries.
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace zt {

struct BpeOptions {
    int32_t unk_id = -1;                  // -1: no unk token (unknown characters are dropped, as HF does)
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;
    std::string continuing_subword_prefix;
    std::string end_of_word_suffix;
};

class BpeModel {
public:
    BpeModel() = default;
    // `vocab`: token -> id (validated by the caller). `merges`: pairs in rank order; a merge naming a token
    // not in the vocab, or whose concatenation is not in the vocab, throws zt::Error naming it.
    void build(std::unordered_map<std::string, int32_t> vocab,
               const std::vector<std::pair<std::string, std::string>> & merges, BpeOptions options,
               const std::string & path_for_errors);

    // Appends the ids of one pre-token (valid UTF-8) to `out`.
    void tokenize(std::string_view word, std::vector<int32_t> & out) const;

    const std::unordered_map<std::string, int32_t> & vocab() const { return vocab_; }
    const BpeOptions & options() const { return options_; }

private:
    struct MergeTarget { uint32_t rank; int32_t new_id; };
    static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
    void merge_word(std::string_view word, std::vector<int32_t> & out) const;

    std::unordered_map<std::string, int32_t> vocab_;
    std::unordered_map<uint64_t, MergeTarget> merges_;
    std::array<int32_t, 256> byte_ids_{};   // id of <0xXX>, or -1
    BpeOptions options_;

    static constexpr size_t cache_capacity = 10000;
    static constexpr size_t cache_max_word = 256;
    mutable std::mutex cache_mutex_;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace zt
