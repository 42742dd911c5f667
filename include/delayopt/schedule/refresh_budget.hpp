/// \file delayopt/schedule/refresh_budget.hpp
/// \brief Stage-aware basis refresh: a fixed total refresh budget split across pipeline stages
/// (basis-rotation paper, arXiv 2602.03515: splitting in proportion to the stage delay beats a
/// uniform split by 29%; the inverse split is worse than uniform).
///
/// Stage i of P has delay tau_i = P - 1 - i. With weights w_i = tau_i + 1 (proportional), 1
/// (uniform) or i + 1 (inverse), stage i gets n_i = total * w_i / sum(w) refreshes per window,
/// rounded by largest remainder so the n_i add up to `total` exactly. Give n_i to the stage's basis
/// as KroneckerEigen::Hyper{.refresh_window = W, .refreshes_per_window = n_i}: it then refreshes
/// n_i times, evenly spaced, in every W steps.
#pragma once

#include "delayopt/core/error.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace delayopt::schedule {

/// How split_refresh_budget() weighs stage i of P: uniform (1), proportional to its delay + 1 (P - i,
/// the paper's choice) or inverse (i + 1) (docs/policies.md, "Stage-aware refresh budget").
enum class RefreshSplit { uniform, proportional, inverse };

/// Refreshes per window for each of `stages` stages; the counts add up to `total`.
inline std::vector<std::int64_t> split_refresh_budget(int stages, std::int64_t total, RefreshSplit split) {
  if (stages < 1 || total < 0)
    throw invalid_input("schedule::split_refresh_budget: need stages >= 1 and total >= 0 (got " +
                        std::to_string(stages) + ", " + std::to_string(total) + ")");
  std::vector<double> w(stages);
  for (int i = 0; i < stages; ++i)
    w[i] = split == RefreshSplit::uniform ? 1.0 : split == RefreshSplit::proportional ? stages - i : i + 1.0;
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<std::int64_t> n(stages);
  std::vector<std::pair<double, int>> remainder;
  std::int64_t given = 0;
  for (int i = 0; i < stages; ++i) {
    const double exact = static_cast<double>(total) * w[i] / sum;
    n[i] = static_cast<std::int64_t>(exact);
    given += n[i];
    remainder.emplace_back(exact - static_cast<double>(n[i]), i);
  }
  // Largest remainders first; ties to the earlier (staler) stage.
  std::stable_sort(remainder.begin(), remainder.end(), [](auto a, auto b) { return a.first > b.first; });
  for (std::int64_t k = 0; given < total; ++k, ++given) ++n[remainder[k % stages].second];
  return n;
}

}  // namespace delayopt::schedule
