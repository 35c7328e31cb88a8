// TcpCommunicator: ranks over TCP sockets with Boost.Asio, no MPI (communicator.h, make_tcp_communicator).
//
// Connections. Star topology through rank 0. Every rank r > 0 opens 2 + S connections to rank 0 (S = the
// backend's distinct streams): channel 0 is control (watched by a monitor thread), channel 1 the host thread's
// (s == nullptr, gather_strings, broadcast, barrier), channels 2.. one per stream, so collectives of different
// streams and of the host thread never meet on one socket (the MPI communicator's duplicated communicators).
// Set-up (tcp_rendezvous.cpp) checks the hello of each connection. Data channels use blocking Asio calls on the
// calling thread (a stream's collective runs in Backend::host_task on the stream's thread). Device buffers the host
// cannot touch (CUDA: several ranks on one GPU, or no NCCL) go through pinned staging buffers, as with MPI
// (staging_buffers.h); ZT_TCP_FORCE_STAGING=1 (tests only) stages on CPU ranks too.
//
// Collectives (rank 0 is the hub; results are plain byte copies and an integer max, so bit-identical to MPI's):
//   all_gather:      r > 0 sends its slice [bytes]; rank 0 reads them in rank order into full [world * bytes],
//                    then sends full to every rank.
//   all_reduce_max:  r > 0 sends flags [n]; rank 0 takes the element-wise max in rank order and sends it back.
//   broadcast:       the root's bytes go to rank 0 (root > 0), then from rank 0 to every other rank.
//   gather_strings:  r > 0 sends {u64 size, bytes}; rank 0 reads them in rank order.
//   barrier:         r > 0 sends one byte; rank 0 answers each with one byte once it has all of them.
//
// Failure. A read or write that fails on a data channel means the peer is gone: rank 0 names that rank, tells the
// others (an ABORT message on control) and exits 1; a rank r > 0 waits up to 2 s for rank 0's ABORT (which names
// the rank that really died), else names rank 0. The monitor thread reads every control socket all the time, so a
// rank killed between collectives is noticed at once too. abort() sends ABORT (r > 0 to rank 0, which forwards
// it); the watchdog (collective_timeout_s) does the same for a collective that hangs. A clean shutdown sends BYE
// first, so the closed socket after it is not an error.
#include "comm/communicator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include "comm/staging_buffers.h"
#include "comm/tcp_rendezvous.h"
#include "comm/watchdog.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"

namespace zt {

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

std::string human_bytes(size_t b) {
    if (b >= (size_t(1) << 30)) return fmt::format("{:.2f} GiB", double(b) / double(size_t(1) << 30));
    if (b >= (size_t(1) << 20)) return fmt::format("{:.2f} MiB", double(b) / double(size_t(1) << 20));
    if (b >= (size_t(1) << 10)) return fmt::format("{:.2f} KiB", double(b) / 1024.0);
    return fmt::format("{} B", b);
}

[[noreturn]] void exit_now(int code) {
    spdlog::default_logger()->flush();
    std::fflush(nullptr);
    std::_Exit(code);
}

class TcpCommunicator final : public Communicator {
public:
    TcpCommunicator(Backend & be, const TcpOptions & opt) : be_(be), opt_(opt), rank_(opt.rank), size_(opt.world) {
        ZT_CHECK(opt.collective_timeout_s > 0, "collective timeout {} s must be positive", opt.collective_timeout_s);
        for (StreamRole role : {StreamRole::compute, StreamRole::copy, StreamRole::comm}) {
            Stream * s = be_.stream(role);
            if (s && std::find(streams_.begin(), streams_.end(), s) == streams_.end()) streams_.push_back(s);
        }
        stage_ = StagingBuffers::needed(be_, "ZT_TCP_FORCE_STAGING");   // test knob: the staged path on CPU ranks
        const int channels = 2 + int(streams_.size());
        links_ = tcp_rendezvous(io_, acceptor_, opt, channels);   // [rank][channel]; rank 0's row and r>0's others empty
        bye_.assign(size_t(size_), 0);
        int rank = rank_;
        wd_ = std::make_unique<Watchdog>(opt.collective_timeout_s, [this, rank](const std::string & what, double s) {
            fail_all(rank, fmt::format("collective '{}' has not completed on rank {} after {} s: a peer rank probably "
                                       "hangs (check the other ranks' logs)", what, rank, s), 1);
        });
        if (size_ > 1) {
            for (int r = 0; r < size_; ++r)
                if (r != rank_ && (rank_ == 0 || r == 0)) watch_control(r);
            if (rank_ == 0) refuse_latecomers();
            monitor_ = std::thread([this] { io_.run(); });
            if (rank_ == 0)
                spdlog::info("communicator: TCP, {} ranks through rank 0 on MASTER_ADDR={} MASTER_PORT={} (star)",
                             size_, opt.master_addr, opt.master_port);
        }
    }

    ~TcpCommunicator() override {
        for (Stream * s : streams_) {   // collectives still queued on streams use this object
            try {
                be_.synchronize(s);
            } catch (const std::exception & e) {
                spdlog::warn("rank {}: an error on a stream that ran TCP collectives, seen while shutting down: {}",
                             rank_, e.what());
            }
        }
        staging_.release();
        closing_ = true;
        for (int r = 0; r < size_; ++r)
            if (r != rank_ && (rank_ == 0 || r == 0)) send_control(r, Msg::bye, rank_, "");
        io_.stop();
        if (monitor_.joinable()) monitor_.join();
    }

    int rank() const override { return rank_; }
    int world_size() const override { return size_; }
    std::string name() const override { return "tcp"; }

    void all_gather(const void * slice, void * full, size_t bytes, Stream * s) override {
        if (bytes == 0) return;
        ZT_CHECK(slice && full, "all_gather of {} per rank got a null buffer", human_bytes(bytes));
        ZT_CHECK(bytes <= SIZE_MAX / size_t(size_), "all_gather of {} bytes per rank over {} ranks overflows", bytes,
                 size_);
        if (s && stage_ && size_ > 1) {   // device buffers through this stream's pinned buffer (staging_buffers.h)
            staging_.all_gather(slice, full, bytes, rank_, size_, s, [&](char * mine, char * pin) {
                run_on(s, [this, mine, pin, bytes](int ch) { do_all_gather(mine, pin, bytes, ch); });
            });
            return;
        }
        run_on(s, [this, slice, full, bytes](int ch) { do_all_gather(slice, full, bytes, ch); });
    }

    void all_reduce_max(int * flags, size_t n, Stream * s) override {
        if (n == 0) return;
        ZT_CHECK(flags, "all_reduce_max of {} ints got a null buffer", n);
        ZT_CHECK(n <= SIZE_MAX / sizeof(int), "all_reduce_max of {} ints overflows", n);
        if (s && stage_ && size_ > 1) {
            staging_.all_reduce_max(flags, n, s, [&](int * pin) {
                run_on(s, [this, pin, n](int ch) { do_all_reduce_max(pin, n, ch); });
            });
            return;
        }
        run_on(s, [this, flags, n](int ch) { do_all_reduce_max(flags, n, ch); });
    }

    void broadcast(void * data, size_t bytes, int root) override {
        ZT_CHECK(root >= 0 && root < size_, "broadcast of {} from rank {}, but the ranks are 0 .. {}",
                 human_bytes(bytes), root, size_ - 1);
        if (bytes == 0 || size_ == 1) return;
        ZT_CHECK(data, "broadcast of {} from rank {} got a null buffer", human_bytes(bytes), root);
        auto guard = wd_->arm(fmt::format("broadcast of {} from rank {} over {} ranks", human_bytes(bytes), root,
                                          size_));
        const int ch = kHost;
        if (rank_ == 0) {
            if (root != 0) recv(root, ch, data, bytes, "broadcast");
            for (int r = 1; r < size_; ++r)
                if (r != root) send(r, ch, data, bytes, "broadcast");
        } else if (rank_ == root) {
            send(0, ch, data, bytes, "broadcast");
        } else {
            recv(0, ch, data, bytes, "broadcast");
        }
    }

    std::vector<std::string> gather_strings(const std::string & mine) override {
        if (size_ == 1) return {mine};
        auto guard = wd_->arm(fmt::format("gather_strings of {} from rank {} to rank 0 over {} ranks",
                                          human_bytes(mine.size()), rank_, size_));
        const int ch = kHost;
        if (rank_ != 0) {
            const uint64_t n = mine.size();
            send(0, ch, &n, sizeof n, "gather_strings");
            send(0, ch, mine.data(), mine.size(), "gather_strings");
            return {};
        }
        std::vector<std::string> out(static_cast<size_t>(size_));
        out[0] = mine;
        for (int r = 1; r < size_; ++r) {
            uint64_t n = 0;
            recv(r, ch, &n, sizeof n, "gather_strings");
            out[size_t(r)].resize(size_t(n));
            recv(r, ch, out[size_t(r)].data(), size_t(n), "gather_strings");
        }
        return out;
    }

    void barrier() override {
        if (size_ == 1) return;
        auto guard = wd_->arm(fmt::format("barrier over {} ranks", size_));
        char b = 1;
        if (rank_ != 0) {
            send(0, kHost, &b, 1, "barrier");
            recv(0, kHost, &b, 1, "barrier");
            return;
        }
        for (int r = 1; r < size_; ++r) recv(r, kHost, &b, 1, "barrier");
        for (int r = 1; r < size_; ++r) send(r, kHost, &b, 1, "barrier");
    }

    [[noreturn]] void abort(int code) override {
        fail_all(rank_, fmt::format("rank {} failed (its log says why)", rank_), code);
    }

private:
    static constexpr int kControl = 0, kHost = 1;
    enum class Msg : uint64_t { bye = 1, abort = 2 };
    struct Header {
        uint64_t type = 0, rank = 0, len = 0;
    };
    // One control socket's reader (the monitor thread's).
    struct Reader {
        Header h;
        std::string text;
    };

    // Runs op(channel) now (s == nullptr: the host channel) or queued on s (s's channel).
    template <class Op>
    void run_on(Stream * s, Op op) {
        if (size_ == 1) {   // a world of one: all_gather is a copy (unless in place), all_reduce_max the identity
            if (!s) { op(kHost); return; }
            be_.host_task(s, [op] { op(kHost); });
            return;
        }
        if (!s) { op(kHost); return; }
        int ch = -1;
        for (size_t i = 0; i < streams_.size(); ++i)
            if (streams_[i] == s) ch = 2 + int(i);
        ZT_CHECK(ch >= 0, "a collective was queued on a stream that is not one of the backend's (compute, copy, comm)");
        be_.host_task(s, [op, ch] { op(ch); });
    }

    void do_all_gather(const void * slice, void * full, size_t bytes, int ch) {
        char * fullc = static_cast<char *>(full);
        char * mine = fullc + size_t(rank_) * bytes;
        if (static_cast<const char *>(slice) != mine) std::memmove(mine, slice, bytes);
        if (size_ == 1) return;
        auto guard = wd_->arm(fmt::format("all_gather of {} per rank over {} ranks", human_bytes(bytes), size_));
        const size_t total = bytes * size_t(size_);
        if (rank_ != 0) {
            send(0, ch, mine, bytes, "all_gather");
            recv(0, ch, fullc, total, "all_gather");
            return;
        }
        for (int r = 1; r < size_; ++r) recv(r, ch, fullc + size_t(r) * bytes, bytes, "all_gather");
        for (int r = 1; r < size_; ++r) send(r, ch, fullc, total, "all_gather");
    }

    void do_all_reduce_max(int * flags, size_t n, int ch) {
        if (size_ == 1) return;
        auto guard = wd_->arm(fmt::format("all_reduce_max of {} int(s) over {} ranks", n, size_));
        if (rank_ != 0) {
            send(0, ch, flags, n * sizeof(int), "all_reduce_max");
            recv(0, ch, flags, n * sizeof(int), "all_reduce_max");
            return;
        }
        std::vector<int> theirs(n);
        for (int r = 1; r < size_; ++r) {
            recv(r, ch, theirs.data(), n * sizeof(int), "all_reduce_max");
            for (size_t i = 0; i < n; ++i) flags[i] = std::max(flags[i], theirs[i]);
        }
        for (int r = 1; r < size_; ++r) send(r, ch, flags, n * sizeof(int), "all_reduce_max");
    }

    void send(int peer, int ch, const void * p, size_t n, const char * what) {
        boost::system::error_code ec;
        asio::write(links_[size_t(peer)][size_t(ch)], asio::buffer(p, n), ec);
        if (ec) lost(peer, fmt::format("sending {} for {}: {}", human_bytes(n), what, ec.message()));
    }

    void recv(int peer, int ch, void * p, size_t n, const char * what) {
        boost::system::error_code ec;
        asio::read(links_[size_t(peer)][size_t(ch)], asio::buffer(p, n), ec);
        if (ec) lost(peer, fmt::format("receiving {} for {}: {}", human_bytes(n), what, ec.message()));
    }

    // A data channel to `peer` failed: the peer died (or rank 0 is taking the job down for another rank).
    [[noreturn]] void lost(int peer, const std::string & how) {
        if (rank_ != 0) {
            // rank 0 closes every connection when any rank dies; its ABORT message names that rank, and the monitor
            // thread exits with it. Give it a moment to arrive.
            for (int i = 0; i < 40 && !aborting_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            while (aborting_) std::this_thread::sleep_for(std::chrono::seconds(1));   // the monitor is exiting
        }
        fail_all(peer, fmt::format("rank {} disconnected (killed?): rank {} lost its connection while {}; stopping "
                                   "all {} ranks (finished requests are kept and skipped when you rerun)",
                                   peer, rank_, how, size_), 1);
    }

    // Logs `why`, tells the others (rank 0: every rank; r > 0: rank 0, which forwards it) and exits with `code`.
    // `culprit` is the rank that died or failed. The first caller wins; later ones wait for it to exit the process.
    [[noreturn]] void fail_all(int culprit, const std::string & why, int code) {
        if (aborting_.exchange(true)) {
            for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
        }
        spdlog::error("[rank {}] {}", rank_, why);
        std::thread([] {   // a peer that stopped reading must not keep this rank alive
            std::this_thread::sleep_for(std::chrono::seconds(5));
            exit_now(1);
        }).detach();
        for (int r = 0; r < size_; ++r)
            if (r != rank_ && r != culprit && (rank_ == 0 || r == 0)) send_control(r, Msg::abort, culprit, why);
        exit_now(code);
    }

    // One message on the control channel to `peer`; errors are ignored (the peer may be gone already).
    void send_control(int peer, Msg type, int about, const std::string & text) {
        std::lock_guard<std::mutex> l(control_mu_);
        Header h{uint64_t(type), uint64_t(about), text.size()};
        boost::system::error_code ec;
        tcp::socket & s = links_[size_t(peer)][kControl];
        asio::write(s, std::vector<asio::const_buffer>{asio::buffer(&h, sizeof h), asio::buffer(text)}, ec);
    }

    // The monitor thread's read loop on the control socket of `peer`.
    void watch_control(int peer) {
        auto rd = std::make_shared<Reader>();
        tcp::socket & s = links_[size_t(peer)][kControl];
        asio::async_read(s, asio::buffer(&rd->h, sizeof rd->h), [this, peer, rd](boost::system::error_code ec, size_t) {
            if (ec) return on_control_closed(peer, ec);
            rd->text.resize(size_t(std::min<uint64_t>(rd->h.len, 1 << 20)));
            tcp::socket & s2 = links_[size_t(peer)][kControl];
            asio::async_read(s2, asio::buffer(rd->text), [this, peer, rd](boost::system::error_code ec2, size_t) {
                if (ec2) return on_control_closed(peer, ec2);
                on_control(peer, rd->h, rd->text);
                watch_control(peer);
            });
        });
    }

    void on_control(int peer, const Header & h, const std::string & text) {
        if (Msg(h.type) == Msg::bye) { bye_[size_t(peer)] = 1; return; }
        if (Msg(h.type) != Msg::abort) return;
        const int culprit = int(h.rank);
        if (rank_ == 0) fail_all(culprit, fmt::format("stopping all {} ranks: {}", size_, text), 1);
        // from rank 0: some rank died or failed
        aborting_ = true;
        spdlog::error("[rank {}] stopping: {}", rank_, text);
        exit_now(1);
    }

    void on_control_closed(int peer, const boost::system::error_code & ec) {
        if (closing_ || bye_[size_t(peer)] || ec == asio::error::operation_aborted) return;
        // rank 0 sends ABORT (read before the close) when another rank died: a bare close means rank 0 itself
        fail_all(peer, fmt::format("rank {} disconnected (killed?): its control connection to rank {} closed ({}); "
                                   "stopping all {} ranks (finished requests are kept and skipped when you rerun)",
                                   peer, rank_, ec.message(), size_), 1);
    }

    // Rank 0 keeps listening after set-up: a rank of another job (or a restarted one) that connects learns why it
    // is refused instead of retrying until its connect timeout.
    void refuse_latecomers() {
        acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
            if (ec) return;
            refuse_connection(std::move(s), fmt::format(
                "the job on MASTER_PORT={} already has all {} ranks connected: another job uses this port (give each "
                "job its own MASTER_PORT), or this rank was started twice", opt_.master_port, size_));
            refuse_latecomers();
        });
    }

    Backend & be_;
    TcpOptions opt_;
    int rank_, size_;
    std::vector<Stream *> streams_;     // channel 2 + i is streams_[i]'s
    bool stage_ = false;                // device buffers go through staging_ (the host cannot touch them: CUDA)
    StagingBuffers staging_{be_, "TCP staging"};   // per stream; only the queueing thread asks for them
    asio::io_context io_;               // the monitor thread's: control sockets, the acceptor (rank 0)
    tcp::acceptor acceptor_{io_};
    std::vector<std::vector<tcp::socket>> links_;   // [peer][channel]
    std::vector<char> bye_;             // peer said BYE (monitor thread only)
    std::mutex control_mu_;             // one control message at a time
    std::atomic<bool> aborting_{false}, closing_{false};
    std::unique_ptr<Watchdog> wd_;
    std::thread monitor_;
};

}  // namespace

std::unique_ptr<Communicator> make_tcp_communicator(Backend & backend, const TcpOptions & options) {
    return std::make_unique<TcpCommunicator>(backend, options);
}

}  // namespace zt
