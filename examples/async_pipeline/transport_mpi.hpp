/// \file transport_mpi.hpp
/// \brief The MPI transport: one rank per stage, nonblocking point-to-point messages.
///
/// Each channel is a ring of `depth` buffers. Sends copy into the next buffer and MPI_Isend it
/// (waiting first for that buffer's previous send: the channel is bounded like the threaded
/// queues). Receives are pre-posted MPI_Irecvs, up to `depth` ahead, so a message arriving while
/// the stage computes lands without the stage's help. MPI's non-overtaking rule keeps each channel
/// FIFO. Waits poll MPI_Test and back off to short sleeps, so ranks oversubscribing cores (8 stages
/// on 2 cores) leave the CPU to the ranks that have work instead of spinning.
#pragma once

#include "transport.hpp"

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pipeline {

template <class T>
class MpiEndpoint final : public Endpoint<T> {
 public:
  /// Stage `stage` of `stages` (= rank in `comm`). `in_elems` / `out_elems`: values per message from
  /// the previous / to the next stage; `messages`: messages per channel over the whole run.
  MpiEndpoint(MPI_Comm comm, int stage, int stages, std::size_t in_elems, std::size_t out_elems, std::int64_t messages,
              int depth = 2)
      : comm_(comm) {
    if (depth < 1) throw std::invalid_argument("MpiEndpoint: depth must be at least 1");
    const bool first = stage == 0, last = stage == stages - 1;
    if (!last) {
      fwd_out_ = Ring(stage + 1, tag_forward, out_elems, depth, 0);
      bwd_in_ = Ring(stage + 1, tag_backward, out_elems, depth, messages);
      post(bwd_in_);
    }
    if (!first) {
      fwd_in_ = Ring(stage - 1, tag_forward, in_elems, depth, messages);
      bwd_out_ = Ring(stage - 1, tag_backward, in_elems, depth, 0);
      post(fwd_in_);
    }
  }

  MpiEndpoint(const MpiEndpoint&) = delete;
  MpiEndpoint& operator=(const MpiEndpoint&) = delete;

  void send_forward(Message<T>&& m) override { send(fwd_out_, m); }
  Message<T> recv_forward() override { return recv(fwd_in_); }
  void send_backward(Message<T>&& m) override { send(bwd_out_, m); }
  Message<T> recv_backward() override { return recv(bwd_in_); }

  /// Waits until every send has completed (call before MPI_Finalize).
  void finish() {
    for (Ring* r : {&fwd_out_, &bwd_out_})
      for (auto& req : r->req) wait(req, MPI_STATUS_IGNORE);
  }

 private:
  static constexpr int tag_forward = 1, tag_backward = 2;
  static constexpr std::size_t header = sizeof(std::int64_t);  // the microbatch index

  struct Ring {
    Ring() = default;
    Ring(int peer_, int tag_, std::size_t elems_, int depth, std::int64_t expected)
        : peer(peer_),
          tag(tag_),
          elems(elems_),
          buf(static_cast<std::size_t>(depth), std::vector<std::byte>(header + elems_ * sizeof(T))),
          req(static_cast<std::size_t>(depth), MPI_REQUEST_NULL),
          to_post(expected) {}
    int peer = -1, tag = 0;
    std::size_t elems = 0;
    std::vector<std::vector<std::byte>> buf;
    std::vector<MPI_Request> req;
    std::size_t next = 0;      ///< send: next buffer; receive: oldest posted receive
    std::size_t posted = 0;    ///< receive: receives in flight
    std::int64_t to_post = 0;  ///< receive: messages still to post a receive for
  };

  /// MPI_Test until done, sleeping between polls once the wait is not short.
  static void wait(MPI_Request& r, MPI_Status* status) {
    for (int polls = 0;; ++polls) {
      int done = 0;
      MPI_Test(&r, &done, status);
      if (done) return;
      if (polls >= 64) std::this_thread::sleep_for(std::chrono::microseconds(polls < 4096 ? 10 : 100));
    }
  }

  void send(Ring& r, const Message<T>& m) {
    if (r.peer < 0) throw std::logic_error("MpiEndpoint: this stage has no neighbour in that direction");
    if (m.data.size() != r.elems)
      throw std::logic_error("MpiEndpoint: message of " + std::to_string(m.data.size()) + " values, channel carries " +
                             std::to_string(r.elems));
    MPI_Request& req = r.req[r.next];
    wait(req, MPI_STATUS_IGNORE);  // this buffer's previous send must be done before we overwrite it
    auto& b = r.buf[r.next];
    std::memcpy(b.data(), &m.microbatch, header);
    std::memcpy(b.data() + header, m.data.data(), m.data.size() * sizeof(T));
    MPI_Isend(b.data(), static_cast<int>(b.size()), MPI_BYTE, r.peer, r.tag, comm_, &req);
    r.next = (r.next + 1) % r.buf.size();
  }

  void post(Ring& r) {
    while (r.posted < r.buf.size() && r.to_post > 0) {
      const std::size_t k = (r.next + r.posted) % r.buf.size();
      MPI_Irecv(r.buf[k].data(), static_cast<int>(r.buf[k].size()), MPI_BYTE, r.peer, r.tag, comm_, &r.req[k]);
      ++r.posted;
      --r.to_post;
    }
  }

  Message<T> recv(Ring& r) {
    if (r.posted == 0) throw std::logic_error("MpiEndpoint: no further message expected on this channel");
    MPI_Status status;
    wait(r.req[r.next], &status);
    int bytes = 0;
    MPI_Get_count(&status, MPI_BYTE, &bytes);
    const auto& b = r.buf[r.next];
    if (static_cast<std::size_t>(bytes) != b.size())
      throw std::logic_error("MpiEndpoint: received " + std::to_string(bytes) + " bytes from rank " +
                             std::to_string(r.peer) + ", expected " + std::to_string(b.size()));
    Message<T> m;
    std::memcpy(&m.microbatch, b.data(), header);
    m.data.resize(r.elems);
    std::memcpy(m.data.data(), b.data() + header, r.elems * sizeof(T));
    r.next = (r.next + 1) % r.buf.size();
    --r.posted;
    post(r);  // re-arm the buffer we just emptied
    return m;
  }

  MPI_Comm comm_;
  Ring fwd_out_, fwd_in_, bwd_out_, bwd_in_;
};

}  // namespace pipeline
