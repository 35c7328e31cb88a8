// How a job's requests are shared among its ranks (ztinfer.request_assignment), and the order they run in.
//
//   "balanced" (default): one queue for the whole job, the same on every rank. At each step boundary every rank
//       says how many KV-cache slots it has free (one all-reduce, the one that already asks "any work left?"),
//       and every rank runs hand_out() on the same figures, so they all agree which rank takes which request
//       without a message from rank 0 (rank 0's hand-out, replicated). A rank whose requests finish early is
//       given more; the ranks finish together.
//   "static": request k of the input goes to rank k % N up front (each rank then runs its own queue).
// A request's tokens do not depend on the rank, batch or step it runs in (batch-invariant ops, a random stream
// per request), so both give the same records; only their order in the output and the step count differ.
//
//   queue order: the most work first (the steps a request holds a slot: its prompt chunks + max_tokens), so the
//   long requests do not start last and run alone at the end (longest-processing-time first); among equals the
//   longer prompt bucket first (a micro-batch's prompts about as long as each other), then input order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace zt {

// True when a request of (prompt_a tokens, max_tokens new_a) runs before one of (prompt_b, new_b) when prompts
// are prefilled in chunks of prefill_chunk tokens (a strict weak order; a stable sort keeps input order among
// equals). The job and the planner's replay both sort with it.
bool runs_before(size_t prompt_a, int64_t new_a, size_t prompt_b, int64_t new_b, int64_t prefill_chunk);

// Balanced hand-out of the next `queued` requests (queue order) to ranks with free KV-cache slots: each request
// goes to the rank with the most free slots left (ties: the lowest rank) until no rank has a free slot or no
// request is left. free_slots[r] = rank r's free slots (>= 0). Returns the rank of each request handed out, in
// queue order (size <= queued). Deterministic: every rank computes the same answer from the same figures.
std::vector<int> hand_out(size_t queued, std::vector<int64_t> free_slots);

// KV-cache slots per rank for a balanced job of `requests` requests on `ranks` ranks that wants `wanted` slots
// (batch_size x micro_batches): no rank is ever handed more than ceil(requests / ranks) at once when that is
// fewer, so a short job reserves less. At least 1.
int64_t balanced_slots(int64_t wanted, int64_t requests, int ranks);

}  // namespace zt
