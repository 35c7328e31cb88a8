// LocalCommunicator: the single-process world (rank 0 of 1).
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"

namespace zt {

namespace {
class LocalCommunicator final : public Communicator {
public:
    explicit LocalCommunicator(Backend * be) : be_(be) {}
    int rank() const override { return 0; }
    int world_size() const override { return 1; }
    std::string name() const override { return "local"; }
    void all_gather(const void * slice, void * full, size_t bytes, Stream * s) override {
        if (full == slice) return;
        if (be_ && s) be_->host_task(s, [=] { std::memmove(full, slice, bytes); });
        else std::memmove(full, slice, bytes);
    }
    void all_reduce_max(int *, size_t, Stream *) override {}
    std::vector<std::string> gather_strings(const std::string & mine) override { return {mine}; }
    // the root already holds the data; any other root names a rank that does not exist
    void broadcast(void *, size_t bytes, int root) override {
        ZT_CHECK(root == 0, "broadcast of {} bytes from rank {} in a world of one rank (only rank 0 exists)", bytes,
                 root);
    }
    void barrier() override {}
    [[noreturn]] void abort(int code) override { std::fflush(nullptr); std::_Exit(code); }
private:
    Backend * be_;
};
}  // namespace

std::unique_ptr<Communicator> make_local_communicator(Backend * be) { return std::make_unique<LocalCommunicator>(be); }

}  // namespace zt
