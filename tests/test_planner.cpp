// The planner (runtime/job/planner.h): the loop replay step by step, the memory model's terms on shapes whose
// arithmetic is written out here, the search's rules (a model that fits is never streamed, resident layers fill
// what is left, a refusal names the smallest budget), and the seeds' examples (70B on 16 GiB + 32 GiB streams from
// NVMe, a 32k-token 7B embedding fits 24 GiB).
#include <gtest/gtest.h>

#include "runtime/base/error.h"
#include "runtime/job/planner.h"

namespace {

using zt::PlanBudget;
using zt::PlanSettings;
using zt::Workload;

constexpr size_t kGiB = size_t(1) << 30;

std::set<std::string> all_keys() { return {zt::kPlanAutoKeys.begin(), zt::kPlanAutoKeys.end()}; }

TEST(PlanWorkload, ReplaysAdmissionAndDecodeStepByStep) {
    // 5 requests of 3 prompt + 4 new tokens over 2 ranks (3 and 2 requests), 2 slots per rank: rank 0 runs two
    // requests for 4 steps (prefill + 3 decodes), then the third for 4 more; rank 1 is done after 4 and idles.
    PlanSettings s;
    s.batch_size = 2;
    s.micro_batches = 1;
    const zt::StepTrace t = zt::simulate_steps(zt::workload_uniform("generate", 5, 3, 4), s, 2);
    ASSERT_EQ(t.steps, 8);
    ASSERT_EQ(t.ranks.size(), 2u);
    const auto & r0 = t.ranks[0];
    EXPECT_EQ(r0.n_slots, 2);
    EXPECT_EQ(r0.max_len, 7);
    EXPECT_EQ(r0.tokens_out, 12);
    ASSERT_EQ(r0.steps[0].size(), 1u);
    EXPECT_EQ(r0.steps[0][0].tokens, 6);     // two prompts of 3
    EXPECT_EQ(r0.steps[0][0].rows, 2);
    EXPECT_DOUBLE_EQ(r0.steps[0][0].attention_pairs, 12.0);   // each prompt token sees 1, 2, 3 positions
    EXPECT_DOUBLE_EQ(r0.steps[0][0].prefill_pairs, 12.0);
    EXPECT_EQ(r0.steps[1][0].tokens, 2);     // two decodes at past 3: 4 positions each
    EXPECT_DOUBLE_EQ(r0.steps[1][0].attention_pairs, 8.0);
    EXPECT_DOUBLE_EQ(r0.steps[1][0].past_positions, 6.0);
    EXPECT_EQ(r0.steps[4][0].tokens, 3);     // the third request's prefill
    EXPECT_EQ(t.ranks[1].tokens_out, 8);
    EXPECT_TRUE(t.ranks[1].steps[4].empty());   // idles with the others
    EXPECT_EQ(r0.max_micro_tokens, 6);
}

TEST(PlanWorkload, ChunksPromptsWithinEachMicroBatchsBudget) {
    PlanSettings s;
    s.batch_size = 1;
    s.micro_batches = 2;
    s.prefill_chunk = 4;
    const zt::StepTrace t = zt::simulate_steps(zt::workload_uniform("generate", 2, 10, 1), s, 1);
    // each micro-batch: chunks of 4, 4, 2 (emits on the third); one new token ends each request
    ASSERT_EQ(t.steps, 3);
    for (int step = 0; step < 3; ++step) ASSERT_EQ(t.ranks[0].steps[size_t(step)].size(), 2u);
    EXPECT_EQ(t.ranks[0].steps[0][1].tokens, 4);
    EXPECT_EQ(t.ranks[0].steps[2][0].tokens, 2);
    EXPECT_EQ(t.ranks[0].steps[1][0].rows, 0);
    EXPECT_EQ(t.ranks[0].steps[2][0].rows, 1);
    EXPECT_EQ(t.ranks[0].tokens_out, 2);
}

TEST(PlanWorkload, SamplesLargeWorkloadsAndScales) {
    PlanSettings s;
    s.batch_size = 4;
    const zt::StepTrace t = zt::simulate_steps(zt::workload_uniform("generate", 4000, 8, 8), s, 2, 100);
    EXPECT_EQ(t.ranks[0].tokens_out, 100 * 8);
    EXPECT_DOUBLE_EQ(t.scale, 20.0);
}

TEST(PlanMemory, TermsFollowTheAllocatingCode) {
    // llama2-7b bf16 over 2 ranks, tier cpu, everything streamed, 4 slots of 600 positions, depth 2
    const zt::PlanModel m = zt::plan_model_from_shape("llama2-7b", "bf16");
    PlanSettings s;
    s.tier = "cpu";
    s.batch_size = 4;
    s.prefetch_depth = 2;
    const zt::PartitionPlan plan = zt::make_plan_partition(m, s, 2);
    const zt::StepTrace t = zt::simulate_steps(zt::workload_uniform("generate", 8, 500, 100), s, 2);
    const zt::MemoryEstimate e = zt::estimate_memory(m, plan, s, t, PlanBudget{});
    auto item = [&](const std::string & name) {
        for (const auto & i : e.items) if (i.name == name) return i.bytes;
        return size_t(0);
    };
    // layer: 4 x 4096^2 + 3 x 4096 x 11008 weights of 2 bytes = 404,750,336 B, a multiple of 2 x 4096
    EXPECT_EQ(plan.max_flat_bytes(), 404750336u);
    EXPECT_EQ(item("weight ring"), 3u * 404750336u);
    EXPECT_EQ(item("KV cache"), size_t(32) * 2 * 4 * 600 * 32 * 128 * 4);
    // own slices: half of every layer (202,375,168 B, 4 KiB aligned); embed and head stay whole (resident)
    EXPECT_EQ(item("weight slices"), size_t(32) * 202375168);
    EXPECT_EQ(item("resident weights"), size_t(2) * 32000 * 4096 * 2 + size_t(65 * 4096) * 4);   // + F32 norms
    // activations: prompt chunks take at most 512 tokens per micro-batch and step, decode tokens come on top
    EXPECT_GE(t.ranks[0].max_micro_tokens, 512);
    EXPECT_LE(t.ranks[0].max_micro_tokens, 512 + 4);
    EXPECT_EQ(item("logits"), size_t(4) * 32000 * 4);
    EXPECT_EQ(e.pinned, item("weight slices"));
}

TEST(PlanSearch, AModelThatFitsIsNeverStreamed) {
    const zt::PlanModel m = zt::plan_model_from_shape("llama2-7b", "bf16");
    PlanBudget b;
    b.device = "cuda";
    b.device_memory = 80 * kGiB;
    b.host_memory = 64 * kGiB;
    const auto r = zt::plan_job(m, zt::workload_uniform("generate", 256, 512, 128), PlanSettings{}, all_keys(), b,
                                zt::default_profile("cuda"));
    ASSERT_TRUE(r.best) << r.refusal;
    EXPECT_EQ(r.best->settings.tier, "none");
    EXPECT_TRUE(r.best->fits);
    EXPECT_LE(r.best->memory.device, b.device_memory);
    EXPECT_GT(r.best->speed.tokens_per_s, 0);
}

TEST(PlanSearch, SeventyBOnSixteenGiBAndThirtyTwoGiBStreamsFromNvme) {
    // the seed's arithmetic: 70B fp16 (~138 GB) on a 16 GB GPU and 32 GB of host memory streams layer by layer
    const zt::PlanModel m = zt::plan_model_from_shape("llama2-70b", "f16");
    PlanBudget b;
    b.device = "cuda";
    b.device_memory = 16 * kGiB;
    b.host_memory = 32 * kGiB;
    b.nvme_available = true;
    b.nvme_bytes = 2048 * kGiB;
    const auto r = zt::plan_job(m, zt::workload_uniform("generate", 64, 256, 64), PlanSettings{}, all_keys(), b,
                                zt::default_profile("cuda"));
    ASSERT_TRUE(r.best) << r.refusal;
    EXPECT_EQ(r.best->settings.tier, "nvme");
    EXPECT_LE(r.best->memory.device, b.device_memory);
    EXPECT_LE(r.best->memory.pinned + r.best->memory.host, b.host_memory);
    // resident layers fill what is left: one more would not fit
    PlanSettings more = r.best->settings;
    more.resident_layers += 1;
    const zt::PartitionPlan plan = zt::make_plan_partition(m, more, 1);
    const zt::StepTrace t = zt::simulate_steps(zt::workload_uniform("generate", 64, 256, 64), more, 1);
    EXPECT_GT(zt::estimate_memory(m, plan, more, t, b).device, b.device_memory);
}

TEST(PlanSearch, ThirtyTwoThousandTokenEmbeddingOfASevenBFitsTwentyFourGiB) {
    const zt::PlanModel m = zt::plan_model_from_shape("qwen2-7b", "bf16");
    PlanBudget b;
    b.device = "cuda";
    b.device_memory = 24 * kGiB;
    b.host_memory = 64 * kGiB;
    const auto r = zt::plan_job(m, zt::workload_uniform("embed", 1, 32768, 0), PlanSettings{}, all_keys(), b,
                                zt::default_profile("cuda"));
    ASSERT_TRUE(r.best) << r.refusal;
    EXPECT_LE(r.best->memory.device, b.device_memory);
}

TEST(PlanSearch, NothingFitsIsARefusalThatNamesTheSmallestBudget) {
    const zt::PlanModel m = zt::plan_model_from_shape("llama2-70b", "bf16");
    PlanBudget b;
    b.device = "cuda";
    b.device_memory = 1 * kGiB;   // less than one 70B layer's ring
    b.host_memory = 8 * kGiB;
    const auto r = zt::plan_job(m, zt::workload_uniform("generate", 8, 128, 16), PlanSettings{}, all_keys(), b,
                                zt::default_profile("cuda"));
    EXPECT_FALSE(r.best);
    EXPECT_NE(r.refusal.find("nothing fits"), std::string::npos) << r.refusal;
    EXPECT_NE(r.refusal.find("GPU memory >="), std::string::npos) << r.refusal;
    EXPECT_NE(r.refusal.find("over: GPU memory"), std::string::npos) << r.refusal;
    EXPECT_NE(r.refusal.find("(largest: weight ring"), std::string::npos) << r.refusal;
    const nlohmann::json j = zt::plan_report_json(r);
    EXPECT_TRUE(j["best"].is_null());
    EXPECT_TRUE(j["refusal"].is_string());
}

TEST(PlanSearch, OnlyFreeKeysChange) {
    const zt::PlanModel m = zt::plan_model_from_shape("llama2-7b", "bf16", 4);
    PlanSettings s;
    s.tier = "cpu";
    s.batch_size = 3;
    s.micro_batches = 2;
    PlanBudget b;
    b.device = "cuda";
    b.device_memory = 6 * kGiB;
    b.host_memory = 64 * kGiB;
    const auto r = zt::plan_job(m, zt::workload_uniform("generate", 32, 64, 16), s, {"resident_layers"}, b,
                                zt::default_profile("cuda"));
    ASSERT_TRUE(r.best) << r.refusal;
    EXPECT_EQ(r.best->settings.tier, "cpu");
    EXPECT_EQ(r.best->settings.batch_size, 3);
    EXPECT_EQ(r.best->settings.micro_batches, 2);
    EXPECT_GE(r.best->settings.resident_layers, 1);
    EXPECT_LE(r.best->settings.resident_layers, 3);
    EXPECT_THROW(zt::plan_job(m, zt::workload_uniform("generate", 1, 1, 1), s, {"threads"}, b,
                              zt::default_profile("cuda")), zt::Error);
}

TEST(PlanSearch, AnInputWithoutValidRequestsPlansForOneTinyRequest) {
    const zt::PlanModel m = zt::plan_model_from_shape("llama2-7b", "bf16", 2);
    Workload empty;
    empty.source = "in.jsonl: 0 requests";
    const auto r = zt::plan_job(m, empty, PlanSettings{}, all_keys(), PlanBudget{}, zt::default_profile("cpu"));
    ASSERT_TRUE(r.best);
    EXPECT_NE(r.workload.find("no valid request"), std::string::npos) << r.workload;
}

TEST(PlanSpeed, SlowerLinkIsSlowerAndBoundByIt) {
    const zt::PlanModel m = zt::plan_model_from_shape("llama2-7b", "bf16", 4);
    PlanSettings s;
    s.tier = "cpu";
    s.batch_size = 1;
    const Workload w = zt::workload_uniform("generate", 1, 16, 32);
    const zt::PartitionPlan plan = zt::make_plan_partition(m, s, 1);
    const zt::StepTrace t = zt::simulate_steps(w, s, 1);
    zt::MachineProfile p = zt::default_profile("cuda");
    PlanBudget b;
    b.device = "cuda";
    const auto fast = zt::estimate_speed(m, plan, s, t, b, p);
    p.h2d_gbps /= 4;
    const auto slow = zt::estimate_speed(m, plan, s, t, b, p);
    EXPECT_LT(slow.tokens_per_s, fast.tokens_per_s / 3);
    EXPECT_EQ(slow.bound, "link (H2D)");
    // decode of 4 streamed 7B layers: each step moves 4 x 404.75 MB over the link
    const double per_step = 4 * 404750336.0 / (p.h2d_gbps * 1e9);
    EXPECT_NEAR(slow.fetch_seconds, per_step, 0.01 * per_step);
    EXPECT_EQ(slow.steps, 32);   // the prefill step samples the first token, 31 decode steps the rest
}

}  // namespace
