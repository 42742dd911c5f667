/// \file transport_mpi.hpp
/// \brief The MPI transport: one rank per stage, nonblocking point-to-point messages, and an orderly
/// shutdown when a rank fails.
///
/// Each channel is a ring of `depth` buffers. Sends copy into the next buffer and MPI_Isend it
/// (waiting first for that buffer's previous send: the channel is bounded like the threaded
/// queues). Receives are pre-posted MPI_Irecvs, up to `depth` ahead, so a message arriving while
/// the stage computes lands without the stage's help. MPI's non-overtaking rule keeps each channel
/// FIFO. Waits poll MPI_Test and back off to short sleeps, so ranks oversubscribing cores (8 stages
/// on 2 cores) leave the CPU to the ranks that have work instead of spinning.
///
/// Shutdown (MpiControl): a rank whose stage throws sends a failure notice to every other rank;
/// every rank keeps a receive for notices posted, and every wait of the transport polls it, so a
/// rank blocked on a neighbour that will never send again throws pipeline_aborted instead of
/// hanging. Then all ranks, failed or not, meet in one nonblocking allgather of their status and of
/// how many messages they sent on each channel. With those counts each rank receives (and drops)
/// exactly the messages still addressed to it and cancels its spare receives, which lets every
/// pending send complete: Open MPI cannot cancel a send, but a send whose message is received
/// completes. Nothing is left in flight, and every rank can call MPI_Finalize.
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

namespace mpi_detail {

/// MPI_Test until done, calling `between()` after each unsuccessful test (it may throw) and sleeping
/// between polls once the wait is not short.
template <class F>
void poll(MPI_Request& r, MPI_Status* status, F&& between) {
  for (int polls = 0;; ++polls) {
    int done = 0;
    MPI_Test(&r, &done, status);
    if (done) return;
    between();
    if (polls >= 64) std::this_thread::sleep_for(std::chrono::microseconds(polls < 4096 ? 10 : 100));
  }
}
inline void poll(MPI_Request& r, MPI_Status* status = MPI_STATUS_IGNORE) {
  poll(r, status, [] {});
}

}  // namespace mpi_detail

/// How one rank's part of the run ended.
enum class RankStatus : std::int64_t {
  ok = 0,       ///< its schedule completed
  aborted = 1,  ///< stopped because another rank failed (or never started: a set-up failed)
  failed = 2,   ///< its own stage threw
};

/// What every rank knows after MpiControl::agree().
struct MpiOutcome {
  std::vector<RankStatus> status;           ///< per rank
  std::vector<bool> notified;               ///< per rank: sent failure notices to all others
  std::vector<std::int64_t> sent_forward;   ///< per rank: messages sent to rank + 1
  std::vector<std::int64_t> sent_backward;  ///< per rank: messages sent to rank - 1

  bool ok() const {
    for (auto s : status)
      if (s != RankStatus::ok) return false;
    return true;
  }
  /// The ranks that failed, as "2" or "0, 3".
  std::string failed_ranks() const {
    std::string out;
    for (std::size_t r = 0; r < status.size(); ++r)
      if (status[r] == RankStatus::failed) out += (out.empty() ? "" : ", ") + std::to_string(r);
    return out;
  }
};

/// Failure notices between the ranks of `comm`, and the agreement that ends every run.
class MpiControl {
 public:
  /// Posts the receive for failure notices: construct right after MPI_Init, on every rank.
  explicit MpiControl(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Irecv(&notice_in_, 1, MPI_INT, MPI_ANY_SOURCE, tag_notice, comm_, &notice_req_);
  }
  MpiControl(const MpiControl&) = delete;
  MpiControl& operator=(const MpiControl&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  /// True once another rank's failure notice has arrived (tests without blocking).
  bool notified() {
    if (!notice_seen_) {
      int done = 0;
      MPI_Test(&notice_req_, &done, MPI_STATUS_IGNORE);
      notice_seen_ = done != 0;
    }
    return notice_seen_;
  }

  /// Waits for `r`; throws pipeline_aborted as soon as another rank reports a failure.
  void wait(MPI_Request& r, MPI_Status* status) {
    if (notified()) throw pipeline_aborted();
    mpi_detail::poll(r, status, [&] {
      if (notified()) throw pipeline_aborted();
    });
  }

  /// Tells every other rank that this one failed (small messages, sent without waiting).
  void notify_failure() {
    if (!notices_out_.empty()) return;
    notice_out_ = rank_;  // a member: the sends read it until they complete
    notices_out_.assign(static_cast<std::size_t>(size_), MPI_REQUEST_NULL);
    for (int r = 0; r < size_; ++r)
      if (r != rank_)
        MPI_Isend(&notice_out_, 1, MPI_INT, r, tag_notice, comm_, &notices_out_[static_cast<std::size_t>(r)]);
  }

  /// True on every rank if `ready` is true on every rank (a collective: call it on all ranks).
  bool all_ready(bool ready) {
    int mine = ready ? 1 : 0, all = 0;
    MPI_Request r;
    MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm_, &r);
    mpi_detail::poll(r);
    return all == 1;
  }

  /// Every rank's status and send counts, on every rank (a collective: each rank calls it once,
  /// whatever happened to it). Nonblocking and polled, so ranks that wait here sleep.
  MpiOutcome agree(RankStatus status, std::int64_t sent_forward, std::int64_t sent_backward) {
    const std::int64_t mine[4] = {static_cast<std::int64_t>(status), notices_out_.empty() ? 0 : 1, sent_forward,
                                  sent_backward};
    std::vector<std::int64_t> all(4 * static_cast<std::size_t>(size_));
    MPI_Request r;
    MPI_Iallgather(mine, 4, MPI_INT64_T, all.data(), 4, MPI_INT64_T, comm_, &r);
    mpi_detail::poll(r);
    MpiOutcome o;
    for (std::size_t k = 0; k < static_cast<std::size_t>(size_); ++k) {
      o.status.push_back(static_cast<RankStatus>(all[4 * k]));
      o.notified.push_back(all[4 * k + 1] != 0);
      o.sent_forward.push_back(all[4 * k + 2]);
      o.sent_backward.push_back(all[4 * k + 3]);
    }
    return o;
  }

  /// Completes the notice traffic after agree(): receives every notice addressed to this rank,
  /// cancels the spare receive, waits for this rank's own notices to be received.
  void finish(const MpiOutcome& o) {
    int expected = 0;
    for (int r = 0; r < size_; ++r) expected += r != rank_ && o.notified[static_cast<std::size_t>(r)];
    if (expected > 0) {
      mpi_detail::poll(notice_req_);  // the first notice: sent before its sender reached agree()
      for (int k = 1; k < expected; ++k) {
        MPI_Request r;
        MPI_Irecv(&notice_in_, 1, MPI_INT, MPI_ANY_SOURCE, tag_notice, comm_, &r);
        mpi_detail::poll(r);
      }
    } else if (notice_req_ != MPI_REQUEST_NULL) {
      MPI_Cancel(&notice_req_);
      mpi_detail::poll(notice_req_);
    }
    for (auto& r : notices_out_) mpi_detail::poll(r);
  }

 private:
  static constexpr int tag_notice = 3;
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  int notice_in_ = -1, notice_out_ = -1;
  MPI_Request notice_req_ = MPI_REQUEST_NULL;
  bool notice_seen_ = false;
  std::vector<MPI_Request> notices_out_;
};

template <class T>
class MpiEndpoint final : public Endpoint<T> {
 public:
  /// Stage `stage` of `stages` (= rank in `comm`). `in_elems` / `out_elems`: values per message from
  /// the previous / to the next stage; `messages`: messages per channel over the whole run. Waits
  /// throw pipeline_aborted once `control` has a failure notice.
  MpiEndpoint(MpiControl& control, MPI_Comm comm, int stage, int stages, std::size_t in_elems, std::size_t out_elems,
              std::int64_t messages, int depth = 2)
      : control_(control), comm_(comm) {
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

  std::int64_t sent_forward() const { return fwd_out_.done; }
  std::int64_t sent_backward() const { return bwd_out_.done; }

  /// After MpiControl::agree(), on every rank: receives and drops every message its neighbours sent
  /// that this stage did not consume, cancels the receives no message will match, and waits for
  /// every send (each has now been received). Leaves nothing in flight, after a complete run too.
  void drain(const MpiOutcome& o) {
    if (fwd_in_.peer >= 0) drain_receives(fwd_in_, o.sent_forward.at(static_cast<std::size_t>(fwd_in_.peer)));
    if (bwd_in_.peer >= 0) drain_receives(bwd_in_, o.sent_backward.at(static_cast<std::size_t>(bwd_in_.peer)));
    for (Ring* r : {&fwd_out_, &bwd_out_})
      for (auto& req : r->req) mpi_detail::poll(req);
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
    std::int64_t done = 0;     ///< send: messages sent; receive: messages received
  };

  void wait(MPI_Request& r, MPI_Status* status) { control_.wait(r, status); }

  /// Consumes the `sent - r.done` messages still on their way to this stage, in channel order.
  void drain_receives(Ring& r, std::int64_t sent) {
    std::int64_t left = sent - r.done;
    for (; r.posted > 0; --r.posted, r.next = (r.next + 1) % r.buf.size()) {
      MPI_Request& q = r.req[r.next];
      if (left > 0) {
        --left;  // the posted receives match the oldest messages first (non-overtaking)
      } else {
        MPI_Cancel(&q);  // no message will come for it
      }
      mpi_detail::poll(q);
    }
    std::vector<std::byte> sink(header + r.elems * sizeof(T));
    for (; left > 0; --left) {
      MPI_Request q;
      MPI_Irecv(sink.data(), static_cast<int>(sink.size()), MPI_BYTE, r.peer, r.tag, comm_, &q);
      mpi_detail::poll(q);
    }
    r.done = sent;
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
    ++r.done;
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
    Message<T> m;
    std::memcpy(&m.microbatch, b.data(), header);
    m.data.resize(r.elems);
    std::memcpy(m.data.data(), b.data() + header, r.elems * sizeof(T));
    // Book the message as received before validating it, so that drain() counts it.
    r.next = (r.next + 1) % r.buf.size();
    --r.posted;
    ++r.done;
    post(r);  // re-arm the buffer we just emptied
    if (static_cast<std::size_t>(bytes) != b.size())
      throw std::logic_error("MpiEndpoint: received " + std::to_string(bytes) + " bytes from rank " +
                             std::to_string(r.peer) + ", expected " + std::to_string(b.size()));
    return m;
  }

  MpiControl& control_;
  MPI_Comm comm_;
  Ring fwd_out_, fwd_in_, bwd_out_, bwd_in_;
};

}  // namespace pipeline
