// TCP rendezvous for the TCP communicator (communicator_tcp.cpp): rank 0 listens on MASTER_PORT, every other rank
// connects `channels` times and says hello {magic, protocol version, job key, rank, world, channel, channels};
// rank 0 answers every connection once all are there (OK) or with the error that stops the job (wrong world size,
// a rank twice, ...), which each rank then reports. Connections are retried until connect_timeout_s.
#pragma once
#include <boost/asio.hpp>

#include <string>
#include <vector>

#include "comm/communicator.h"

namespace zt {

// Connects this rank to the others. Returns links[peer][channel] (world x channels sockets of `io`): on rank 0 every
// row r > 0 is filled, on rank r > 0 only row 0. Rank 0's `acceptor` (of `io`) stays open, listening. Throws
// zt::Error saying what to fix (port in use, wrong WORLD_SIZE, a rank that never connected, rank 0 unreachable).
std::vector<std::vector<boost::asio::ip::tcp::socket>> tcp_rendezvous(boost::asio::io_context & io,
                                                                       boost::asio::ip::tcp::acceptor & acceptor,
                                                                       const TcpOptions & opt, int channels);

// Rank 0, after set-up: reads the hello of a connection that came too late (asynchronously, on its io_context),
// answers `why` and closes it.
void refuse_connection(boost::asio::ip::tcp::socket s, const std::string & why);

}  // namespace zt
