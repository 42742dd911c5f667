/// \file executor.hpp
/// \brief StageRunner<Model, Opt>: one pipeline stage's schedule (PipeDream 1F1B or GPipe), with
/// weight stashing and version counters; run_threads() runs P of them in one process.
///
/// Asynchronous 1F1B (PipeDream): stage i admits at most K = P - i microbatches in flight. It runs
/// K forwards, then alternates one backward and one forward, and applies its optimizer right after
/// each backward: no flush, no bubble after warm-up. The forward of microbatch m then sees version
/// m - (P-1-i) of the stage's weights while its update is applied to version m, so the gradient is
/// P-1-i updates stale. That number is not assumed anywhere: every forward records the stage's
/// version counter and every update reports  tau = version now - version at forward.
///
/// Weight stashing (on by default) keeps, per microbatch in flight, a copy of the weights its forward
/// used, so the backward pass differentiates the same function (up to K copies at stage i). Without
/// it the backward uses the current weights with activations computed from older ones.
///
/// Delay compensation that needs the executor's help:
///  - DC-ASGD (optimizer.needs_stale_weights()): the update gets the weights the gradient was taken
///    at as `stale`: the stash with stashing, without it a copy of the forward's weights kept anyway.
///  - Weight prediction (optimizer.predicts()): the forward of a microbatch that will be applied tau
///    updates later runs on predict(weights, tau); with stashing the backward uses the same
///    predicted weights (they are what is stashed), without it the current ones.
///
/// Synchronous GPipe: per update, M microbatches go forward, then all go backward with gradient
/// accumulation, then every stage updates once. Stage i cannot start the next step's forwards
/// before its own update, which needs every backward from downstream: that is the flush, and the
/// (P-1)/(M+P-1) bubble it costs. tau is 0.
#pragma once

#include "transport.hpp"

#include <delayopt/delayopt.hpp>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace pipeline {

enum class Schedule {
  async_1f1b,  ///< PipeDream: 1F1B, update after every backward, never flush
  sync_gpipe,  ///< GPipe: M microbatches forward, M backward, one update, flush
};

struct PipelineConfig {
  int stages = 1;
  std::int64_t steps = 100;  ///< optimizer updates per stage
  Schedule schedule = Schedule::async_1f1b;
  bool stashing = true;            ///< async only: backward with the weights its forward used
  int microbatches = 1;            ///< sync only: microbatches accumulated per update
  std::size_t queue_capacity = 2;  ///< threads transport: messages buffered per channel
  /// Fault injection for tests: stage `fail_stage` throws in the forward pass of `fail_microbatch`.
  int fail_stage = -1;
  std::int64_t fail_microbatch = -1;

  bool async() const { return schedule == Schedule::async_1f1b; }
  /// Microbatches each stage processes in the run (= messages per channel).
  std::int64_t total_microbatches() const { return async() ? steps : steps * microbatches; }
  void validate() const {
    if (stages < 1) throw std::invalid_argument("PipelineConfig: stages must be at least 1");
    if (steps < 1) throw std::invalid_argument("PipelineConfig: steps must be at least 1");
    if (!async() && microbatches < 1) throw std::invalid_argument("PipelineConfig: microbatches must be at least 1");
    if (queue_capacity < 1) throw std::invalid_argument("PipelineConfig: queue_capacity must be at least 1");
  }
};

/// FNV-1a over the bytes of every block: a cheap fingerprint to compare runs bit for bit.
template <class T, class Space>
std::uint64_t param_hash(const delayopt::ParamSet<T, Space>& p) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t b = 0; b < p.num_blocks(); ++b) {
    const auto v = p.flat(b);
    const auto* bytes = reinterpret_cast<const unsigned char*>(v.data());
    for (std::size_t i = 0; i < v.size() * sizeof(T); ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
  }
  return h;
}

/// What one stage measured.
struct StageReport {
  int stage = 0;
  std::vector<int> staleness;        ///< per update: stage version at update - version at the forward
  std::vector<double> loss;          ///< last stage: per update, the mean loss of its microbatches
  std::int64_t updates = 0;          ///< the stage's version counter at the end
  std::size_t stashed_versions = 0;  ///< weight copies the stage keeps for stashing
  double seconds = 0;                ///< wall time of run()
  std::uint64_t param_hash = 0;      ///< fingerprint of the final weights
};

/// Called by the last stage after each update with (step, mean loss of the step's microbatches).
using LossCallback = std::function<void(std::int64_t, double)>;

/// What the executor needs from a stage model (pipeline::MlpStage is one).
template <class M>
concept StageModel = requires(M m, const M cm, const typename M::execution_space& s, typename M::Tape& tape,
                              std::span<const typename M::value_type> in, std::span<typename M::value_type> out) {
  typename M::value_type;
  typename M::execution_space;
  typename M::Tape;
  { m.params() } -> std::same_as<delayopt::ParamSet<typename M::value_type, typename M::execution_space>&>;
  { cm.stage() } -> std::convertible_to<int>;
  { cm.stages() } -> std::convertible_to<int>;
  { cm.is_first() } -> std::convertible_to<bool>;
  { cm.is_last() } -> std::convertible_to<bool>;
  { cm.input_size() } -> std::convertible_to<std::size_t>;
  { cm.output_size() } -> std::convertible_to<std::size_t>;
  { cm.make_tape() } -> std::same_as<typename M::Tape>;
  { m.forward(s, m.params(), std::int64_t{}, in, tape, out) } -> std::convertible_to<double>;
  m.backward(s, m.params(), tape, in, m.params(), out, typename M::value_type{}, bool{});
};

/// What the executor needs from a stage optimizer (StageMethod is one): step(space, params, grads,
/// StepContext{.step = updates so far, .tau = measured staleness}, stale weights or nullptr).
template <class O, class T, class Space>
concept StageOptimizerFor = requires(O o, const Space& s, delayopt::ParamSet<T, Space>& p,
                                     const delayopt::StepContext& ctx) {
  o.step(s, p, p, ctx, &p);
};

/// Optional: the optimizer wants the weights each gradient was taken at (DC-ASGD).
template <class O>
concept WantsStaleWeights = requires(const O o) {
  { o.needs_stale_weights() } -> std::convertible_to<bool>;
};

/// Optional: the optimizer predicts the weights a gradient should be taken at (weight prediction).
template <class O, class T, class Space>
concept PredictsWeights = requires(const O o, const Space& s, const delayopt::ParamSet<T, Space>& p,
                                   delayopt::ParamSet<T, Space>& out) {
  { o.predicts() } -> std::convertible_to<bool>;
  o.predict(s, p, int{}, out);
};

template <class Model, class Opt>
requires StageModel<Model> && StageOptimizerFor<Opt, typename Model::value_type, typename Model::execution_space>
class StageRunner {
 public:
  using T = typename Model::value_type;
  using Space = typename Model::execution_space;
  using Params = delayopt::ParamSet<T, Space>;

  /// Allocates tapes and stashes for every microbatch the stage can have in flight. Allocation
  /// initialises memory with Kokkos' default host space, so construct runners on the thread that
  /// initialised Kokkos, before starting stage threads.
  StageRunner(const PipelineConfig& cfg, Model model, Opt opt)
      : cfg_(cfg), model_(std::move(model)), opt_(std::move(opt)) {
    cfg_.validate();
    if (model_.stages() != cfg_.stages) throw std::invalid_argument("StageRunner: model and config disagree on P");
    grads_ = Params::zeros_like(model_.params(), "pipeline::grads");
    if constexpr (WantsStaleWeights<Opt>) needs_stale_ = opt_.needs_stale_weights();
    // Prediction only in the asynchronous schedule: GPipe's gradients are fresh (tau = 0).
    if constexpr (PredictsWeights<Opt, T, Space>) predicts_ = cfg_.async() && opt_.predicts();
    if (predicts_ && !stashing()) predicted_ = Params::zeros_like(model_.params(), "pipeline::predicted");
    const int slots = cfg_.async() ? in_flight_limit() : cfg_.microbatches;
    for (int k = 0; k < slots; ++k) {
      Slot s{model_.make_tape(), {}, -1, -1, 0.0};
      if (keeps_weights()) s.stash = Params::zeros_like(model_.params(), "pipeline::stash");
      slots_.push_back(std::move(s));
    }
  }

  Model& model() { return model_; }
  const PipelineConfig& config() const { return cfg_; }
  int stage() const { return model_.stage(); }
  bool is_last() const { return model_.is_last(); }
  /// 1F1B admits P - i microbatches in flight at stage i (the last stage: one).
  int in_flight_limit() const { return cfg_.stages - model_.stage(); }
  bool stashing() const { return cfg_.async() && cfg_.stashing; }
  /// Each slot keeps the weights its forward used: for the backward (stashing) or for DC-ASGD.
  bool keeps_weights() const { return stashing() || needs_stale_; }

  /// Runs the stage's whole schedule over `ep`. Throws what the model, optimizer or transport throws
  /// (pipeline_aborted if another stage failed first).
  StageReport run(Endpoint<T>& ep, const LossCallback& on_loss = {}) {
    const auto t0 = std::chrono::steady_clock::now();
    StageReport r;
    r.stage = model_.stage();
    r.stashed_versions = keeps_weights() ? slots_.size() : 0;
    const std::int64_t N = cfg_.steps;
    auto finish_update = [&](int tau, double loss, const Params& forward_weights) {
      r.staleness.push_back(tau);
      opt_.step(space_, model_.params(), grads_, {.step = version_, .tau = tau},
                needs_stale_ ? &forward_weights : nullptr);
      if (model_.is_last()) {
        r.loss.push_back(loss);
        if (on_loss) on_loss(version_, loss);
      }
      ++version_;
    };
    if (cfg_.async()) {
      const std::int64_t K = in_flight_limit();
      std::int64_t f = 0, b = 0;  // next microbatch to run forward / backward
      while (b < N) {
        if (f < N && f - b < K) {
          forward(ep, f, slot(f));
          ++f;
        } else {
          Slot& s = slot(b);
          backward(ep, s, T(1), false);
          finish_update(static_cast<int>(version_ - s.version), s.loss, s.stash);
          ++b;
        }
      }
    } else {
      const int M = cfg_.microbatches;
      for (std::int64_t step = 0; step < N; ++step) {
        for (int k = 0; k < M; ++k) forward(ep, step * M + k, slots_[static_cast<std::size_t>(k)]);
        int tau = 0;
        double loss = 0;
        for (int k = 0; k < M; ++k) {
          Slot& s = slots_[static_cast<std::size_t>(k)];
          backward(ep, s, T(1) / static_cast<T>(M), k > 0);
          tau = std::max(tau, static_cast<int>(version_ - s.version));
          loss += s.loss;
        }
        finish_update(tau, loss / M, slots_.front().stash);  // every forward of the step saw this version
      }
    }
    delayopt::compat::fence(space_, "pipeline::StageRunner::run");
    r.updates = version_;
    r.param_hash = pipeline::param_hash(model_.params());
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

 private:
  struct Slot {
    typename Model::Tape tape;
    Params stash;  ///< the weights the forward used (stashing or DC-ASGD only)
    std::int64_t microbatch = -1;
    std::int64_t version = -1;  ///< stage version at the forward
    double loss = 0;            ///< last stage: the microbatch's loss
  };

  Slot& slot(std::int64_t m) { return slots_[static_cast<std::size_t>(m % static_cast<std::int64_t>(slots_.size()))]; }

  void expect(const Message<T>& msg, std::int64_t m, std::size_t size, const char* what) const {
    if (msg.microbatch != m || msg.data.size() != size)
      throw std::logic_error("stage " + std::to_string(model_.stage()) + " received " + what +
                             " message for microbatch " + std::to_string(msg.microbatch) + " with " +
                             std::to_string(msg.data.size()) + " values, expected microbatch " + std::to_string(m) +
                             " with " + std::to_string(size));
  }

  void forward(Endpoint<T>& ep, std::int64_t m, Slot& s) {
    if (model_.stage() == cfg_.fail_stage && m == cfg_.fail_microbatch)
      throw std::runtime_error("injected failure in the forward pass of microbatch " + std::to_string(m));
    Message<T> in;
    if (!model_.is_first()) {
      in = ep.recv_forward();
      expect(in, m, model_.input_size(), "a forward");
    }
    const Params* weights = &model_.params();
    if (predicts_) {
      // The async schedule applies microbatch m's update at version m: it will be m - version_ stale.
      Params& dst = stashing() ? s.stash : predicted_;
      if constexpr (PredictsWeights<Opt, T, Space>)
        opt_.predict(space_, model_.params(), static_cast<int>(m - version_), dst);
      delayopt::compat::fence(space_, "pipeline::predict");
      weights = &dst;
    } else if (keeps_weights()) {
      copy_params(s.stash, model_.params());
      if (stashing()) weights = &s.stash;
    }
    s.microbatch = m;
    s.version = version_;
    Message<T> out{m, std::vector<T>(model_.output_size())};
    s.loss = model_.forward(space_, *weights, m, in.data, s.tape, out.data);
    if (!model_.is_last()) ep.send_forward(std::move(out));
  }

  void backward(Endpoint<T>& ep, Slot& s, T loss_scale, bool accumulate) {
    Message<T> grad_out;
    if (!model_.is_last()) {
      grad_out = ep.recv_backward();
      expect(grad_out, s.microbatch, model_.output_size(), "a backward");
    }
    Message<T> grad_in{s.microbatch, std::vector<T>(model_.input_size())};
    model_.backward(space_, stashing() ? s.stash : model_.params(), s.tape, grad_out.data, grads_, grad_in.data,
                    loss_scale, accumulate);
    // Send before updating: upstream waits for this, not for our optimizer step.
    if (!model_.is_first()) ep.send_backward(std::move(grad_in));
  }

  /// Host copy of every block (no Kokkos::deep_copy: on host spaces it may launch an OpenMP kernel,
  /// which Kokkos 3.4 does not allow from several threads at once).
  void copy_params(Params& dst, const Params& src) {
    delayopt::compat::fence(space_, "pipeline::stash");
    for (std::size_t b = 0; b < src.num_blocks(); ++b)
      std::memcpy(dst.flat(b).data(), src.flat(b).data(), src.flat(b).size() * sizeof(T));
  }

  PipelineConfig cfg_;
  Model model_;
  Opt opt_;
  Space space_{};
  Params grads_;
  Params predicted_;  ///< weight prediction without stashing: the forward's weights
  bool needs_stale_ = false, predicts_ = false;
  std::vector<Slot> slots_;
  std::int64_t version_ = 0;  ///< updates applied by this stage
};

/// Makes later concurrent use of `Space` from several threads safe. Kokkos 3.4's Serial backend
/// sizes a global reduction buffer on the first parallel_reduce (the optimizer's gradient-norm
/// check is one); doing that first one here, on one thread, leaves only reads for the stages.
template <class Space>
void prepare_space_for_threads() {
  double sum = 0;
  Kokkos::parallel_reduce(
      "pipeline::warm_up", Kokkos::RangePolicy<Space>(Space(), 0, 1), KOKKOS_LAMBDA(const int, double& s) { s += 1; },
      sum);
}

/// Runs every stage in its own thread over bounded in-process queues. If a stage throws, the
/// transport is closed (every blocked stage wakes and stops) and, after all threads have joined, a
/// pipeline_error naming the first failing stage is thrown. `on_loss` runs on the last stage's thread.
template <class Model, class Opt>
std::vector<StageReport> run_threads(std::vector<StageRunner<Model, Opt>>& runners, const LossCallback& on_loss = {}) {
  using T = typename Model::value_type;
  if (runners.empty()) throw std::invalid_argument("run_threads: no stages");
  const int P = static_cast<int>(runners.size());
  for (int i = 0; i < P; ++i)
    if (runners[static_cast<std::size_t>(i)].stage() != i || runners[static_cast<std::size_t>(i)].config().stages != P)
      throw std::invalid_argument("run_threads: runner " + std::to_string(i) + " is not stage " + std::to_string(i) +
                                  " of " + std::to_string(P));
  prepare_space_for_threads<typename Model::execution_space>();
  ThreadTransport<T> transport(P, runners.front().config().queue_capacity);
  std::vector<StageReport> reports(static_cast<std::size_t>(P));
  std::mutex mutex;
  std::optional<pipeline_error> failure;
  auto fail = [&](int stage, const std::string& what) {
    {
      std::lock_guard lock(mutex);
      if (!failure) failure.emplace(stage, what);
    }
    transport.close();
  };
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < P; ++i)
      threads.emplace_back([&, i] {
        auto& runner = runners[static_cast<std::size_t>(i)];
        try {
          reports[static_cast<std::size_t>(i)] =
              runner.run(transport.endpoint(i), runner.is_last() ? on_loss : nullptr);
        } catch (const pipeline_aborted&) {
          // another stage failed first and closed the transport
        } catch (const std::exception& e) {
          fail(i, e.what());
        } catch (...) {
          fail(i, "unknown exception");
        }
      });
  }  // jthreads join here
  if (failure) throw *failure;
  return reports;
}

}  // namespace pipeline
