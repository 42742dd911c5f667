/// \file transport.hpp
/// \brief How stages exchange activations and gradients: the Endpoint interface, and the
/// in-process transport (one thread per stage, bounded queues between neighbours).
///
/// Channels are FIFO per direction and neighbour pair, which is all 1F1B and GPipe need: each stage
/// consumes its inputs in the order its neighbour produced them. transport_mpi.hpp implements the
/// same interface with one MPI rank per stage.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pipeline {

/// An error in the pipeline, naming the stage where it started.
class pipeline_error : public std::runtime_error {
 public:
  pipeline_error(int stage, const std::string& what)
      : std::runtime_error("pipeline stage " + std::to_string(stage) + " failed: " + what), stage_(stage) {}
  int stage() const { return stage_; }

 private:
  int stage_;
};

/// Thrown inside a stage whose transport was shut down because another stage failed.
class pipeline_aborted : public std::runtime_error {
 public:
  pipeline_aborted() : std::runtime_error("pipeline shut down after a failure in another stage") {}
};

/// One microbatch's activations (forward) or activation gradients (backward).
template <class T>
struct Message {
  std::int64_t microbatch = -1;
  std::vector<T> data;
};

/// A stage's view of its transport. Sends may block while the channel is full (bounded), receives
/// until a message arrives; both throw pipeline_aborted once the pipeline is shut down.
template <class T>
class Endpoint {
 public:
  virtual ~Endpoint() = default;
  virtual void send_forward(Message<T>&& m) = 0;   ///< to stage + 1
  virtual Message<T> recv_forward() = 0;           ///< from stage - 1
  virtual void send_backward(Message<T>&& m) = 0;  ///< to stage - 1
  virtual Message<T> recv_backward() = 0;          ///< from stage + 1
};

/// A FIFO of bounded capacity. close() wakes every waiter; later pushes and pops throw.
template <class M>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : capacity_(capacity) {
    if (capacity == 0) throw std::invalid_argument("BoundedQueue: capacity must be at least 1");
  }

  void push(M&& m) {
    std::unique_lock lock(mutex_);
    not_full_.wait(lock, [&] { return closed_ || queue_.size() < capacity_; });
    if (closed_) throw pipeline_aborted();
    queue_.push_back(std::move(m));
    not_empty_.notify_one();
  }

  M pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return closed_ || !queue_.empty(); });
    if (closed_) throw pipeline_aborted();
    M m = std::move(queue_.front());
    queue_.pop_front();
    not_full_.notify_one();
    return m;
  }

  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    not_full_.notify_all();
    not_empty_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable not_full_, not_empty_;
  std::deque<M> queue_;
  std::size_t capacity_;
  bool closed_ = false;
};

/// P stages in one process: forward queue i carries stage i -> i+1, backward queue i stage i+1 -> i.
template <class T>
class ThreadTransport {
 public:
  ThreadTransport(int stages, std::size_t capacity) {
    for (int i = 0; i + 1 < stages; ++i) {
      forward_.push_back(std::make_unique<BoundedQueue<Message<T>>>(capacity));
      backward_.push_back(std::make_unique<BoundedQueue<Message<T>>>(capacity));
    }
    for (int i = 0; i < stages; ++i) endpoints_.push_back(std::make_unique<Local>(*this, i));
  }

  Endpoint<T>& endpoint(int stage) { return *endpoints_.at(static_cast<std::size_t>(stage)); }

  /// Shuts every channel: stages blocked in a send or receive throw pipeline_aborted.
  void close() {
    for (auto& q : forward_) q->close();
    for (auto& q : backward_) q->close();
  }

 private:
  class Local final : public Endpoint<T> {
   public:
    Local(ThreadTransport& t, int stage) : t_(t), i_(static_cast<std::size_t>(stage)) {}
    void send_forward(Message<T>&& m) override { t_.forward_.at(i_)->push(std::move(m)); }
    Message<T> recv_forward() override { return t_.forward_.at(i_ - 1)->pop(); }
    void send_backward(Message<T>&& m) override { t_.backward_.at(i_ - 1)->push(std::move(m)); }
    Message<T> recv_backward() override { return t_.backward_.at(i_)->pop(); }

   private:
    ThreadTransport& t_;
    std::size_t i_;
  };

  std::vector<std::unique_ptr<BoundedQueue<Message<T>>>> forward_, backward_;
  std::vector<std::unique_ptr<Local>> endpoints_;
};

}  // namespace pipeline
