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
#include <cstdint>
#include <string>
#include <vector>

namespace delayopt::sim {

template <class T, class ExecSpace>
class DelayedGradients {
 public:
  /// `taus[b]` is the staleness of block b of `like` (shapes only are used).
  DelayedGradients(const ParamSet<T, ExecSpace>& like, std::vector<int> taus)
      : taus_(std::move(taus)), delayed_(ParamSet<T, ExecSpace>::zeros_like(like, "delayopt::sim::delayed")) {
    if (taus_.size() != like.num_blocks())
      throw shape_mismatch("delayopt::sim::DelayedGradients: " + std::to_string(taus_.size()) + " delays for " +
                           std::to_string(like.num_blocks()) + " blocks");
    for (std::size_t b = 0; b < taus_.size(); ++b) {
      if (taus_[b] < 0)
        throw invalid_input("delayopt::sim::DelayedGradients: negative delay " + std::to_string(taus_[b]) +
                            " for block " + describe(like.shape(b)));
      const auto n = like.shape(b).size();
      rings_.emplace_back("delayopt::sim::ring(" + like.shape(b).name + ")", n * (taus_[b] + 1));
    }
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
      const std::int64_t slots = taus_[b] + 1;
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
  auto slot(std::size_t b, std::int64_t k, std::size_t n) const {
    return Kokkos::subview(rings_[b], std::make_pair(k * n, (k + 1) * n));
  }

  std::vector<int> taus_;
  std::vector<Kokkos::View<T*, typename ExecSpace::memory_space>> rings_;
  ParamSet<T, ExecSpace> delayed_;
  std::int64_t pushes_ = 0;
};

}  // namespace delayopt::sim
