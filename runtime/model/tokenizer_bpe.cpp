// BPE model (see tokenizer_bpe.h): HF `tokenizers` models/bpe/{model,word}.rs re-expressed in C++.
#include "runtime/model/tokenizer_bpe.h"

#include "runtime/base/error.h"
#include "runtime/model/unicode_text.h"

#include <queue>

namespace zt {

void BpeModel::build(std::unordered_map<std::string, int32_t> vocab,
                     const std::vector<std::pair<std::string, std::string>> & merges, BpeOptions options,
                     const std::string & path_for_errors) {
    vocab_ = std::move(vocab);
    options_ = std::move(options);
    byte_ids_.fill(-1);
    if (options_.byte_fallback) {
        for (int b = 0; b < 256; ++b) {
            auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
            if (it != vocab_.end()) byte_ids_[size_t(b)] = it->second;
        }
    }
    const size_t prefix_len = options_.continuing_subword_prefix.size();
    merges_.clear();
    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto & [a, b] = merges[rank];
        auto ia = vocab_.find(a);
        auto ib = vocab_.find(b);
        ZT_CHECK(ia != vocab_.end() && ib != vocab_.end(),
                 "{}: merge #{} (\"{}\" \"{}\") names a token that is not in model.vocab; the file is corrupt or "
                 "was edited by hand: re-export it from the original tokenizer",
                 path_for_errors, rank, a, b);
        std::string merged = a;
        if (b.size() >= prefix_len && b.compare(0, prefix_len, options_.continuing_subword_prefix) == 0)
            merged.append(b, prefix_len, std::string::npos);
        else
            merged += b;
        auto im = vocab_.find(merged);
        ZT_CHECK(im != vocab_.end(),
                 "{}: merge #{} (\"{}\" \"{}\") produces \"{}\", which is not in model.vocab; re-export the "
                 "tokenizer",
                 path_for_errors, rank, a, b, merged);
        // HF collects the merges into a map: a repeated pair keeps its last rank.
        merges_[pair_key(ia->second, ib->second)] = MergeTarget{uint32_t(rank), im->second};
    }
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t> & out) const {
    if (word.empty()) return;
    if (options_.ignore_merges) {
        auto it = vocab_.find(std::string(word));
        if (it != vocab_.end()) {
            out.push_back(it->second);
            return;
        }
    }
    const bool cacheable = word.size() < cache_max_word;
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        auto it = cache_.find(std::string(word));
        if (it != cache_.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    const size_t start = out.size();
    merge_word(word, out);
    if (cacheable) {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (cache_.size() < cache_capacity)
            cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + long(start), out.end()));
    }
}

namespace {
struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len;   // bytes; 0 = merged away
};
struct Merge {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    // std::priority_queue pops the largest: make the lowest rank, then the lowest position, the largest.
    bool operator<(const Merge & o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};
}  // namespace

void BpeModel::merge_word(std::string_view w, std::vector<int32_t> & out) const {
    std::vector<Symbol> symbols;
    symbols.reserve(w.size());
    auto add = [&](int32_t id, size_t byte_len) {
        int32_t n = int32_t(symbols.size());
        symbols.push_back(Symbol{id, n - 1, n + 1, uint32_t(byte_len)});
    };
    bool have_unk = false;
    int32_t unk_id = -1;
    size_t unk_len = 0;
    std::string s;
    for (size_t i = 0; i < w.size();) {
        const size_t len = std::min(utf8_seq_len(static_cast<unsigned char>(w[i])), w.size() - i);
        const bool is_first = i == 0;
        const bool is_last = i + len >= w.size();
        s.clear();
        if (!is_first) s += options_.continuing_subword_prefix;
        s.append(w.data() + i, len);
        if (is_last) s += options_.end_of_word_suffix;
        auto it = vocab_.find(s);
        if (it != vocab_.end()) {
            if (have_unk) {
                add(unk_id, unk_len);
                have_unk = false;
            }
            add(it->second, len);
        } else {
            bool done = false;
            if (options_.byte_fallback) {
                bool all = true;
                for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
                if (all) {
                    for (unsigned char c : s) add(byte_ids_[c], 1);
                    done = true;
                }
            }
            if (!done && options_.unk_id >= 0) {
                if (have_unk && options_.fuse_unk) {
                    unk_len += len;
                } else {
                    if (have_unk) add(unk_id, unk_len);
                    have_unk = true;
                    unk_id = options_.unk_id;
                    unk_len = len;
                }
            }
        }
        i += len;
    }
    if (have_unk) add(unk_id, unk_len);
    if (symbols.empty()) return;
    symbols.back().next = -1;
    const int32_t n = int32_t(symbols.size());

    std::vector<Merge> initial;
    initial.reserve(symbols.size());
    for (int32_t i = 0; i + 1 < n; ++i) {
        auto it = merges_.find(pair_key(symbols[size_t(i)].id, symbols[size_t(i + 1)].id));
        if (it != merges_.end()) initial.push_back(Merge{it->second.rank, i, it->second.new_id});
    }
    std::priority_queue<Merge> queue(std::less<Merge>(), std::move(initial));
    while (!queue.empty()) {
        const Merge top = queue.top();
        queue.pop();
        Symbol & cur = symbols[size_t(top.pos)];
        if (cur.len == 0 || cur.next == -1) continue;
        const int32_t next_pos = cur.next;
        const Symbol right = symbols[size_t(next_pos)];
        auto it = merges_.find(pair_key(cur.id, right.id));
        if (it == merges_.end() || it->second.new_id != top.new_id) continue;   // stale entry
        cur.id = top.new_id;
        cur.len += right.len;
        cur.next = right.next;
        symbols[size_t(next_pos)].len = 0;
        if (right.next >= 0 && right.next < n) symbols[size_t(right.next)].prev = top.pos;
        if (cur.prev >= 0) {
            auto ip = merges_.find(pair_key(symbols[size_t(cur.prev)].id, cur.id));
            if (ip != merges_.end()) queue.push(Merge{ip->second.rank, cur.prev, ip->second.new_id});
        }
        if (cur.next >= 0 && cur.next < n) {
            auto in = merges_.find(pair_key(cur.id, symbols[size_t(cur.next)].id));
            if (in != merges_.end()) queue.push(Merge{in->second.rank, top.pos, in->second.new_id});
        }
    }
    for (const Symbol & sym : symbols)
        if (sym.len != 0) out.push_back(sym.id);
}

}  // namespace zt
