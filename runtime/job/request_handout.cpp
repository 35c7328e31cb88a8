// Request hand-out among ranks and the queue order (see request_handout.h).
#include "runtime/job/request_handout.h"

#include <algorithm>

#include "runtime/job/request.h"

namespace zt {

bool runs_before(size_t prompt_a, int64_t new_a, size_t prompt_b, int64_t new_b, int64_t prefill_chunk) {
    const auto chunks = [&](size_t p) { return (int64_t(p) + prefill_chunk - 1) / std::max<int64_t>(prefill_chunk, 1); };
    const int64_t wa = chunks(prompt_a) + new_a, wb = chunks(prompt_b) + new_b;
    if (wa != wb) return wa > wb;
    return prompt_length_bucket(prompt_a) > prompt_length_bucket(prompt_b);
}

std::vector<int> hand_out(size_t queued, std::vector<int64_t> free_slots) {
    std::vector<int> ranks;
    while (ranks.size() < queued) {
        // the rank with the most free slots; the first of equals (lowest rank)
        const auto most = std::max_element(free_slots.begin(), free_slots.end());
        if (most == free_slots.end() || *most <= 0) break;
        --*most;
        ranks.push_back(int(most - free_slots.begin()));
    }
    return ranks;
}

int64_t balanced_slots(int64_t wanted, int64_t requests, int ranks) {
    const int64_t share = (std::max<int64_t>(requests, 1) + ranks - 1) / std::max(ranks, 1);
    return std::max<int64_t>(1, std::min(wanted, share));
}

}  // namespace zt
