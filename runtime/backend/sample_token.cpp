// sample_token (see sample_token.h): every step is written out so results do not depend on library internals;
// sorting breaks ties by token id. The fast overload only swaps the two scans over all V logits (the argmax of greedy,
// the max that the softmax subtracts) for the vector kernels of cpu_rowwise.h, which return the same element, and sorts
// candidates as one integer key each (fill_keys: the same order), so it picks the same token.
#include "runtime/backend/sample_token.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/backend/cpu_rowwise.h"

namespace zt {
namespace {

// The fast path's candidates: keys[i] = (k(logits[i]) << 32) | i, where k falls as the logit rises (-0 and +0 alike),
// so ascending keys are by_logit's order (logit descending, id ascending) and sort as plain integers, without
// reaching back into the logits. False (keys unusable) when a logit is NaN: by_logit is no strict weak order then,
// and the reference's own sort decides.
bool fill_keys(std::vector<uint64_t> & keys, const float * logits, int64_t vocab) {
    keys.resize(size_t(vocab));
    bool nan = false;
    for (int64_t i = 0; i < vocab; ++i) {   // branch-free (the sign is a coin flip: a branch mispredicts)
        const float x = logits[i];
        nan |= x != x;
        uint32_t b;
        std::memcpy(&b, &x, sizeof b);
        b = x == 0.0f ? 0u : b;                                               // -0 == +0
        const uint32_t up = b ^ (uint32_t(int32_t(b) >> 31) | 0x80000000u);   // negative: ~b; else b | sign: rises with x
        keys[size_t(i)] = (uint64_t(~up) << 32) | uint32_t(i);
    }
    return !nan;
}

// keys (as fill_keys left them, ids ascending) sorted ascending: a stable LSD radix sort on the upper 32 bits (4 passes
// of 8), so equal logits keep their ids ascending. tmp: scratch of the same size.
void radix_sort_keys(std::vector<uint64_t> & keys, std::vector<uint64_t> & tmp) {
    tmp.resize(keys.size());
    for (int shift = 32; shift < 64; shift += 8) {
        size_t count[257] = {};
        for (uint64_t k : keys) ++count[((k >> shift) & 0xff) + 1];
        for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
        for (uint64_t k : keys) tmp[count[(k >> shift) & 0xff]++] = k;
        keys.swap(tmp);
    }
}

// rows: nullptr = the reference's own loops
int32_t sample_with(const CpuRowKernels * rows, const float * logits, int64_t vocab, double temperature,
                    int64_t top_k, double top_p, double u01, SampleScratch & scratch) {
    std::vector<int32_t> & order_ = scratch.order;
    std::vector<double> & probs_ = scratch.probs;
    if (temperature <= 0.0) {
        if (rows) return int32_t(rows->argmax(logits, vocab));
        int32_t best = 0;
        for (int64_t i = 1; i < vocab; ++i)
            if (logits[i] > logits[best]) best = int32_t(i);
        return best;
    }
    // the largest logit in double (logits[0] when that is NaN), as the loop below
    auto max_logit = [&] {
        if (rows) return double(rows->max(logits, vocab));
        double top = logits[0];
        for (int64_t i = 1; i < vocab; ++i) top = std::max(top, double(logits[i]));
        return top;
    };
    const double inv_t = 1.0 / temperature;
    if ((top_k <= 0 || top_k >= vocab) && top_p >= 1.0) {
        // plain temperature sampling: no candidate order is needed, walk the softmax in id order
        const double top = max_logit();
        probs_.resize(size_t(vocab));
        double sum = 0;
        for (int64_t i = 0; i < vocab; ++i) sum += probs_[size_t(i)] = std::exp((double(logits[i]) - top) * inv_t);
        const double u = u01 * sum;   // uniform in [0, sum)
        double acc = 0;
        for (int64_t i = 0; i < vocab; ++i) {
            acc += probs_[size_t(i)];
            if (u < acc) return int32_t(i);
        }
        return int32_t(vocab - 1);
    }
    // candidates in order of logit descending, ties by id ascending; only as many are sorted as needed
    order_.resize(size_t(vocab));
    for (int64_t i = 0; i < vocab; ++i) order_[size_t(i)] = int32_t(i);
    // fast path: from the first sort of 1024 or more on, the candidates are integer keys (fill_keys: the same order,
    // so the prefix sorted so far comes out the same); small selections stay on order_, where filling keys would cost
    // more than it saves
    std::vector<uint64_t> & keys = scratch.keys;
    bool keyed = false, keys_ok = rows != nullptr;
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    const int64_t keep = top_k > 0 && top_k < vocab ? top_k : vocab;
    int64_t sorted = 0;
    auto sort_prefix = [&](int64_t n) {   // order_[0, n) sorted, the rest below them
        if (n <= sorted) return;
        if (!keyed && keys_ok && n >= 1024) {
            keyed = keys_ok = fill_keys(keys, logits, vocab);   // false: a NaN logit, order_ goes on
            if (keyed) sorted = 0;
        }
        if (n * 8 >= vocab) {                // a large share: one sort of the rest beats heap selection
            if (keyed) {   // all of them, from id order (the radix sort is stable): the sorted prefix comes out the same
                if (sorted > 0) fill_keys(keys, logits, vocab);
                radix_sort_keys(keys, scratch.keys_tmp);
            } else {
                std::sort(order_.begin() + sorted, order_.end(), by_logit);
            }
            sorted = vocab;
        } else {
            if (keyed) {   // keys are distinct: select, then sort the selection (a heap is slower at this size)
                std::nth_element(keys.begin() + sorted, keys.begin() + n, keys.end());
                std::sort(keys.begin() + sorted, keys.begin() + n);
            }
            else std::partial_sort(order_.begin() + sorted, order_.begin() + n, order_.end(), by_logit);
            sorted = n;
        }
    };
    auto id_at = [&](int64_t i) { return keyed ? int32_t(uint32_t(keys[size_t(i)])) : order_[size_t(i)]; };
    auto weight = [&](int32_t id, double top) { return std::exp((double(logits[id]) - top) * inv_t); };
    // softmax normaliser over the kept candidates at temperature T
    double sum = 0, top;
    if (keep < vocab) {
        sort_prefix(keep);
        top = logits[id_at(0)];
        for (int64_t i = 0; i < keep; ++i) sum += weight(id_at(i), top);
    } else {
        top = max_logit();
        for (int64_t i = 0; i < vocab; ++i) sum += weight(int32_t(i), top);
    }
    // nucleus: the smallest prefix whose mass >= top_p (sorted in growing chunks: it is usually short)
    int64_t n = keep;
    probs_.clear();
    double mass = 0;
    if (top_p < 1.0) {
        n = 0;
        for (int64_t want = std::min<int64_t>(keep, 64);; want = std::min(keep, want * 4)) {
            sort_prefix(want);
            while (n < want && mass < top_p * sum) {
                probs_.push_back(weight(id_at(n++), top));
                mass += probs_.back();
            }
            // (want == keep: every candidate was offered; with NaN weights, e.g. all logits -inf, the comparisons
            // above fail and nothing more can be added)
            if (mass >= top_p * sum || n >= keep || want >= keep) break;
        }
        if (n == 0) return id_at(0);   // NaN weights: the first candidate, rather than reading before the start
    } else {
        for (int64_t i = 0; i < n; ++i) mass += probs_.emplace_back(weight(id_at(i), top));
    }
    const double u = u01 * mass;   // uniform in [0, mass)
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) {
        acc += probs_[size_t(i)];
        if (u < acc) return id_at(i);
    }
    return id_at(n - 1);
}

}  // namespace

int32_t sample_token(const float * logits, int64_t vocab, double temperature, int64_t top_k, double top_p, double u01,
                     SampleScratch & scratch) {
    return sample_with(nullptr, logits, vocab, temperature, top_k, top_p, u01, scratch);
}

int32_t sample_token(CpuMatmulPath path, const float * logits, int64_t vocab, double temperature, int64_t top_k,
                     double top_p, double u01, SampleScratch & scratch) {
    const CpuRowKernels * rows = path == CpuMatmulPath::reference ? nullptr : &cpu_row_kernels(path);
    return sample_with(rows, logits, vocab, temperature, top_k, top_p, u01, scratch);
}

}  // namespace zt
