/// \file delayopt/sim/delayed_gradients.hpp
/// \brief Delay-injection harness: replays each block's gradient tau_b steps late.
///
/// Block b keeps a ring of its last tau_b + 1 gradients. After the t-th push (0-based) the delayed
/// set holds g_{max(0, t - tau_b)} for block b: before step 0 the weights were w_0, so a gradient
/// "taken" before training started is the first one (warm-up of a PipeDream stage). With tau_b = 0
/// the delayed gradient is a bit-exact copy of the pushed one.
#pragma once

#include "delayopt/core/error.hpp"
#include "delayopt/core/param_set.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace delayopt::sim {

/// Replays each block's gradient tau_b steps late from a ring of its last tau_b + 1 gradients, to
/// study a delay policy without a pipeline (docs/design.md, "The delay-injection harness").
template <class T, class ExecSpace>
class DelayedGradients {
 public:
  /// `taus[b]` is the staleness of block b of `like` (shapes only are used). Throws shape_mismatch
  /// for a delay count other than the block count, and invalid_input for a negative delay or a ring
  /// whose size in bytes std::ptrdiff_t cannot hold, before allocating anything.
  DelayedGradients(const ParamSet<T, ExecSpace>& like, std::vector<int> taus)
      : taus_(checked(like, std::move(taus))),
        delayed_(ParamSet<T, ExecSpace>::zeros_like(like, "delayopt::sim::delayed")) {
    for (std::size_t b = 0; b < taus_.size(); ++b)
      rings_.emplace_back("delayopt::sim::ring(" + like.shape(b).name + ")", ring_slots(b) * like.shape(b).size());
  }

  /// Same delay for every block.
  DelayedGradients(const ParamSet<T, ExecSpace>& like, int tau)
      : DelayedGradients(like, std::vector<int>(like.num_blocks(), tau)) {}

  /// Records `grads` as the newest gradient and returns the delayed set (enqueued on `space`).
  const ParamSet<T, ExecSpace>& push(const ExecSpace& space, const ParamSet<T, ExecSpace>& grads) {
    ParamSet<T, ExecSpace>::require_same_shapes(delayed_, grads, "delayopt::sim::DelayedGradients::push", "harness",
                                                "grads");
    for (std::size_t b = 0; b < taus_.size(); ++b) {
      const std::size_t n = grads.shape(b).size();
      const auto slots = static_cast<std::int64_t>(ring_slots(b));
      Kokkos::deep_copy(space, slot(b, pushes_ % slots, n), grads.flat(b));
      const std::int64_t src = std::max<std::int64_t>(0, pushes_ - taus_[b]);
      Kokkos::deep_copy(space, delayed_.flat(b), slot(b, src % slots, n));
    }
    ++pushes_;
    return delayed_;
  }

  int tau(std::size_t block) const { return taus_.at(block); }
  std::int64_t pushes() const { return pushes_; }

 private:
  static std::vector<int> checked(const ParamSet<T, ExecSpace>& like, std::vector<int> taus) {
    if (taus.size() != like.num_blocks())
      throw shape_mismatch("delayopt::sim::DelayedGradients: " + std::to_string(taus.size()) + " delays for " +
                           std::to_string(like.num_blocks()) + " blocks");
    constexpr auto max_values = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / sizeof(T);
    for (std::size_t b = 0; b < taus.size(); ++b) {
      if (taus[b] < 0)
        throw invalid_input("delayopt::sim::DelayedGradients: negative delay " + std::to_string(taus[b]) +
                            " for block " + describe(like.shape(b)));
      // (tau + 1) * n in std::size_t: tau + 1 overflows int at INT_MAX, and the product can overflow too.
      const std::size_t slots = static_cast<std::size_t>(taus[b]) + 1, n = like.shape(b).size();
      if (n > max_values / slots)
        throw invalid_input("delayopt::sim::DelayedGradients: delay " + std::to_string(taus[b]) + " for block " +
                            describe(like.shape(b)) + " needs a ring of " + std::to_string(slots) + " x " +
                            std::to_string(n) + " values, more than memory can address");
    }
    return taus;
  }

  /// Gradients block b's ring holds: tau_b + 1.
  std::size_t ring_slots(std::size_t b) const { return static_cast<std::size_t>(taus_[b]) + 1; }

  auto slot(std::size_t b, std::int64_t k, std::size_t n) const {
    return Kokkos::subview(rings_[b], std::make_pair(k * n, (k + 1) * n));
  }

  std::vector<int> taus_;
  std::vector<Kokkos::View<T*, typename ExecSpace::memory_space>> rings_;
  ParamSet<T, ExecSpace> delayed_;
  std::int64_t pushes_ = 0;
};

}  // namespace delayopt::sim
