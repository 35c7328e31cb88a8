// TCP rendezvous (tcp_rendezvous.h): rank 0 accepts and checks every other rank's connections; the other ranks
// connect (retrying) and wait for rank 0's answer. Also tcp_options_from_env (communicator.h).
//
// Wire format (little-endian u64s, every rank is the same build on the same kind of machine):
//   hello  [7]: kMagic, kVersion, job key, rank, world, channel, channels
//   answer [2]: status (0 OK, 1 refused), text length; then the text (why it was refused)
#include "comm/tcp_rendezvous.h"

#include <spdlog/spdlog.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <set>
#include <thread>
#include <utility>

#include "runtime/base/error.h"

namespace zt {

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Hello = std::array<uint64_t, 7>;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMagic = 0x7a74696e66657221ull;   // "ztinfer!"
constexpr uint64_t kVersion = 1;

// FNV-1a of MASTER_PORT and ZT_JOB_ID: ranks of two jobs that share a port (with different ZT_JOB_IDs) never mix.
uint64_t job_key(const TcpOptions & opt) {
    const std::string s = fmt::format("{}|{}", opt.master_port, opt.job_id);
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) { h ^= c; h *= 1099511628211ull; }
    return h;
}

std::string where(const TcpOptions & opt) {
    return fmt::format("MASTER_ADDR={} MASTER_PORT={}", opt.master_addr, opt.master_port);
}

// Blocking answer on a set-up connection; errors are ignored (that rank is gone and rank 0 notices elsewhere).
void answer(tcp::socket & s, const std::string & refusal) {
    const std::array<uint64_t, 2> h{refusal.empty() ? 0u : 1u, refusal.size()};
    boost::system::error_code ec;
    asio::write(s, std::vector<asio::const_buffer>{asio::buffer(h), asio::buffer(refusal)}, ec);
}

// Rank 0's view of the set-up, shared with the Asio handlers (which may outlive a failed set-up).
struct Setup {
    Setup(asio::io_context & io, tcp::acceptor & acc, const TcpOptions & o, int ch) : acceptor(acc), opt(o), channels(ch) {
        links.resize(size_t(o.world));
        for (int r = 1; r < o.world; ++r)
            for (int c = 0; c < ch; ++c) links[size_t(r)].emplace_back(io);
        have.assign(size_t(o.world), std::vector<char>(size_t(ch), 0));
        answered.assign(size_t(o.world), 0);
        missing = (o.world - 1) * ch;
    }
    tcp::acceptor & acceptor;
    TcpOptions opt;
    int channels;
    std::vector<std::vector<tcp::socket>> links;
    std::vector<std::vector<char>> have;
    std::vector<char> answered;      // ranks told about `fatal`
    int missing;
    std::string fatal;               // why the job cannot start (every rank is told)
    std::set<std::shared_ptr<tcp::socket>> reading;   // accepted, hello not read yet

    bool all_answered() const {
        for (int r = 1; r < opt.world; ++r)
            if (!answered[size_t(r)]) return false;
        return true;
    }

    void stop_job(const std::string & why) {
        fatal = why;
        for (int r = 1; r < opt.world; ++r)
            for (int c = 0; c < channels; ++c)
                if (have[size_t(r)][size_t(c)]) {
                    answer(links[size_t(r)][size_t(c)], fatal);
                    answered[size_t(r)] = 1;
                }
    }

    void on_hello(tcp::socket & s, const Hello & h) {
        if (h[0] != kMagic)
            return answer(s, fmt::format("something that is not a ztinfer rank connected to {}", where(opt)));
        if (h[1] != kVersion)
            return answer(s, fmt::format("this rank speaks TCP protocol version {} but rank 0 speaks {}: run the same "
                                         "ztinfer build on every rank", h[1], kVersion));
        if (h[2] != job_key(opt))
            return answer(s, fmt::format("rank 0 on {} belongs to another job (MASTER_PORT or ZT_JOB_ID differ): "
                                         "another job uses this port; give each job its own MASTER_PORT", where(opt)));
        const uint64_t r = h[3], w = h[4], c = h[5], n = h[6];
        if (!fatal.empty()) {
            answer(s, fatal);
            if (r < uint64_t(opt.world)) answered[size_t(r)] = 1;
            return;
        }
        std::string why;
        if (w != uint64_t(opt.world))
            why = fmt::format("rank {} was started with WORLD_SIZE={} but rank 0 with WORLD_SIZE={}: start every rank "
                              "with the same WORLD_SIZE", r, w, opt.world);
        else if (r == 0 || r >= uint64_t(opt.world))
            why = fmt::format("a second process says RANK={} (WORLD_SIZE={}): give each process its own RANK, 0 .. {}",
                              r, opt.world, opt.world - 1);
        else if (n != uint64_t(channels) || c >= n)
            why = fmt::format("rank {} opens {} connections but rank 0 expects {}: every rank must use the same "
                              "device kind (backend) and ztinfer build", r, n, channels);
        else if (have[size_t(r)][size_t(c)])
            why = fmt::format("two processes say RANK={}: give each process its own RANK (or another job uses "
                              "MASTER_PORT={}: give each job its own)", r, opt.master_port);
        if (!why.empty()) {
            answer(s, why);
            if (r < uint64_t(opt.world)) answered[size_t(r)] = 1;
            stop_job(why);
            return;
        }
        links[size_t(r)][size_t(c)] = std::move(s);
        have[size_t(r)][size_t(c)] = 1;
        --missing;
    }
};

void accept_next(const std::shared_ptr<Setup> & st, asio::io_context & io) {
    st->acceptor.async_accept(io, [st, &io](boost::system::error_code ec, tcp::socket sock) {
        if (ec) return;   // cancelled: set-up is over
        auto s = std::make_shared<tcp::socket>(std::move(sock));
        auto h = std::make_shared<Hello>();
        st->reading.insert(s);
        asio::async_read(*s, asio::buffer(*h), [st, s, h](boost::system::error_code ec2, size_t) {
            st->reading.erase(s);
            if (!ec2) st->on_hello(*s, *h);
        });
        accept_next(st, io);
    });
}

std::vector<std::vector<tcp::socket>> rendezvous_rank0(asio::io_context & io, tcp::acceptor & acc,
                                                       const TcpOptions & opt, int channels) {
    boost::system::error_code ec;
    const tcp::endpoint ep(tcp::v4(), uint16_t(opt.master_port));
    acc.open(ep.protocol());
    acc.set_option(tcp::acceptor::reuse_address(true));   // rebind past TIME_WAIT; a listener still refuses us
    acc.bind(ep, ec);
    ZT_CHECK(ec != asio::error::address_in_use, "rank 0 cannot listen on MASTER_PORT={}: the port is in use, probably "
             "by another job (or another ztinfer); give each job its own free MASTER_PORT", opt.master_port);
    ZT_CHECK(!ec, "rank 0 cannot listen on MASTER_PORT={}: {}; pick another MASTER_PORT (1024 .. 65535)",
             opt.master_port, ec.message());
    acc.listen(asio::socket_base::max_listen_connections, ec);
    ZT_CHECK(!ec, "rank 0 cannot listen on MASTER_PORT={}: {}", opt.master_port, ec.message());

    auto st = std::make_shared<Setup>(io, acc, opt, channels);
    accept_next(st, io);
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(opt.connect_timeout_s));
    for (;;) {
        io.run_for(std::chrono::milliseconds(20));
        if (io.stopped()) io.restart();
        if (st->fatal.empty() ? st->missing == 0 : st->all_answered()) break;
        if (Clock::now() > deadline) break;
    }
    // end the set-up handlers (they return on operation_aborted) before anything else runs on `io`
    acc.cancel(ec);
    for (const auto & s : std::set<std::shared_ptr<tcp::socket>>(st->reading)) s->close(ec);
    io.restart();
    while (io.poll() > 0) {}
    io.restart();
    if (!st->fatal.empty()) ZT_FAIL("{}", st->fatal);
    if (st->missing > 0) {
        std::string who;
        for (int r = 1; r < opt.world; ++r)
            if (!st->have[size_t(r)][0]) who += fmt::format("{}{}", who.empty() ? "" : ", ", r);
        const std::string why = fmt::format(
            "rank(s) {} did not connect to rank 0 on {} within {} s (connect_timeout_s): start every rank 0 .. {} "
            "with the same MASTER_ADDR/MASTER_PORT/WORLD_SIZE, check that rank 0's host is reachable on that port "
            "(firewall), or raise ZT_CONNECT_TIMEOUT_S", who.empty() ? "(some connections)" : who, where(opt),
            opt.connect_timeout_s, opt.world - 1);
        st->stop_job(why);
        ZT_FAIL("{}", why);
    }
    for (int r = 1; r < opt.world; ++r)
        for (auto & s : st->links[size_t(r)]) {
            s.set_option(tcp::no_delay(true), ec);
            answer(s, "");
        }
    return std::move(st->links);
}

// One connection to rank 0, retried (refused, unreachable, name not resolved yet) until the deadline.
tcp::socket connect_to_rank0(asio::io_context & io, const TcpOptions & opt, Clock::time_point deadline) {
    tcp::resolver resolver(io);
    boost::system::error_code ec;
    for (;;) {
        auto eps = resolver.resolve(opt.master_addr, std::to_string(opt.master_port), ec);
        if (!ec) {
            tcp::socket s(io);
            asio::connect(s, eps, ec);
            if (!ec) return s;
        }
        ZT_CHECK(Clock::now() < deadline, "rank {} could not connect to rank 0 on {} within {} s (connect_timeout_s): "
                 "{}; start rank 0 (RANK=0) with the same MASTER_PORT, check MASTER_ADDR names rank 0's host and that "
                 "the port is reachable (firewall), or raise ZT_CONNECT_TIMEOUT_S", opt.rank, where(opt),
                 opt.connect_timeout_s, ec.message());
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

std::vector<std::vector<tcp::socket>> rendezvous_rank(asio::io_context & io, const TcpOptions & opt, int channels) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(opt.connect_timeout_s));
    std::vector<std::vector<tcp::socket>> links(size_t(opt.world));
    boost::system::error_code ec;
    for (int c = 0; c < channels; ++c) {
        links[0].push_back(connect_to_rank0(io, opt, deadline));
        tcp::socket & s = links[0].back();
        s.set_option(tcp::no_delay(true), ec);
        const Hello h{kMagic, kVersion, job_key(opt), uint64_t(opt.rank), uint64_t(opt.world), uint64_t(c),
                      uint64_t(channels)};
        asio::write(s, asio::buffer(h), ec);
        ZT_CHECK(!ec, "rank {} lost its connection to rank 0 on {} during set-up: {}; rank 0 probably failed (see its "
                 "log)", opt.rank, where(opt), ec.message());
    }
    for (auto & s : links[0]) {
        std::array<uint64_t, 2> h{};
        asio::read(s, asio::buffer(h), ec);
        ZT_CHECK(!ec, "rank 0 on {} closed the connection during set-up ({}): it probably failed or was stopped (see "
                 "its log)", where(opt), ec.message());
        std::string text(size_t(std::min<uint64_t>(h[1], 1 << 20)), '\0');
        asio::read(s, asio::buffer(text), ec);
        ZT_CHECK(h[0] == 0, "rank 0 on {} refused rank {}: {}", where(opt), opt.rank, text);
    }
    return links;
}

}  // namespace

std::vector<std::vector<tcp::socket>> tcp_rendezvous(asio::io_context & io, tcp::acceptor & acceptor,
                                                     const TcpOptions & opt, int channels) {
    ZT_CHECK(opt.world >= 1 && opt.rank >= 0 && opt.rank < opt.world, "rank {} of {} ranks is out of range", opt.rank,
             opt.world);
    ZT_CHECK(opt.master_port > 0 && opt.master_port < 65536, "MASTER_PORT={} is not a port: use 1024 .. 65535",
             opt.master_port);
    ZT_CHECK(opt.connect_timeout_s > 0, "connect timeout {} s must be positive", opt.connect_timeout_s);
    if (opt.world == 1) return std::vector<std::vector<tcp::socket>>(1);
    return opt.rank == 0 ? rendezvous_rank0(io, acceptor, opt, channels) : rendezvous_rank(io, opt, channels);
}

void refuse_connection(tcp::socket sock, const std::string & why) {
    auto s = std::make_shared<tcp::socket>(std::move(sock));
    auto h = std::make_shared<Hello>();
    asio::async_read(*s, asio::buffer(*h), [s, h, why](boost::system::error_code ec, size_t) {
        if (!ec) answer(*s, why);
        s->close(ec);
    });
}

TcpOptions tcp_options_from_env(int rank, int world, double collective_timeout_s) {
    TcpOptions o;
    o.rank = rank;
    o.world = world;
    o.collective_timeout_s = collective_timeout_s;
    const char * addr = std::getenv("MASTER_ADDR");
    ZT_CHECK(addr && *addr, "MASTER_ADDR is not set: set MASTER_ADDR to rank 0's host name or address and MASTER_PORT "
             "to a free port on it (the same on every rank), or launch with mpirun/srun");
    o.master_addr = addr;
    if (const char * p = std::getenv("MASTER_PORT")) {
        char * end = nullptr;
        errno = 0;
        long v = std::strtol(p, &end, 10);
        ZT_CHECK(*p && end && *end == '\0' && errno == 0 && v > 0 && v < 65536,
                 "MASTER_PORT='{}' is not a port number: use a free port 1024 .. 65535, the same on every rank", p);
        o.master_port = int(v);
    }
    if (const char * j = std::getenv("ZT_JOB_ID")) o.job_id = j;
    if (const char * t = std::getenv("ZT_CONNECT_TIMEOUT_S")) {
        char * end = nullptr;
        double v = std::strtod(t, &end);
        ZT_CHECK(*t && end && *end == '\0' && v > 0, "ZT_CONNECT_TIMEOUT_S='{}' must be a positive number of seconds "
                 "(how long ranks wait for each other at start-up; default 60)", t);
        o.connect_timeout_s = v;
    }
    return o;
}

}  // namespace zt
