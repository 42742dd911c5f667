// Adam / AdamW against torch 1.13 trajectories (tests/data, copied from shared/reference).
#include "support/catch.hpp"
#include "support/spaces.hpp"

#include <replay.hpp>

#include <limits>

using namespace delayopt;
using namespace delayopt::reference;

namespace {

std::string data(const std::string& f) { return std::string(DELAYOPT_TEST_DATA) + "/" + f; }

// Float32 bound: each step rounds p (|p| <= max_abs) by at most ~2 ulp, and the errors can add up
// over the run: steps * 2 * eps * max|p|. Measured: 7e-7 (Adam) and 3.2e-6 (AdamW); bound ~3e-5.
double float_tolerance(const Run& run) {
  double max_abs = 0;
  for (const auto& e : run.trajectory)
    for (const auto& [k, v] : e)
      for (double x : v) max_abs = std::max(max_abs, std::abs(x));
  return run.steps * 2.0 * std::numeric_limits<float>::epsilon() * max_abs;
}

}  // namespace

TEST_CASE("reference problems: closed-form gradients match the stored ones", "[reference]") {
  for (const auto* file : {"quad__adam.json", "quad__adamw.json"}) {
    const Run run = load_run(data(file));
    const Problem problem = load_problem(data("problems.json"), run.problem);
    const auto& g1 = run.json.at("grads_first_calls").at(0).at("grad");
    for (const auto& name : run.param_names) {
      const auto g = problem.gradient(name, run.shapes.at(name), run.initial.at(name));
      const auto ref = g1.at(name).get<Vec>();
      REQUIRE(g.size() == ref.size());
      for (std::size_t i = 0; i < g.size(); ++i) REQUIRE(std::abs(g[i] - ref[i]) <= 1e-15);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("Adam and AdamW reproduce torch 1.13 for all 50 steps", "[reference][adam]",
                        delayopt::test::all_cases) {
  using T = typename TestType::value;
  typename TestType::space space;
  for (const auto* file : {"quad__adam.json", "quad__adamw.json"}) {
    CAPTURE(file);
    const Run run = load_run(data(file));
    const Problem problem = load_problem(data("problems.json"), run.problem);
    Named m, v;
    const Deviation dev = replay_adam<T>(space, problem, run, &m, &v);
    const double tol = std::is_same_v<T, double> ? 1e-12 : float_tolerance(run);
    for (const auto& [name, d] : dev.max_abs) {
      CAPTURE(name, d, tol);
      CHECK(d <= tol);
    }
    if constexpr (std::is_same_v<T, double>) {  // final moments too
      const auto& fs = run.json.at("final_state");
      for (const auto& name : run.param_names) {
        CHECK(fs.at(name).at("step").get<int>() == run.steps);
        const auto mref = fs.at(name).at("exp_avg").get<Vec>();
        const auto vref = fs.at(name).at("exp_avg_sq").get<Vec>();
        for (std::size_t i = 0; i < mref.size(); ++i) {
          REQUIRE(std::abs(m.at(name)[i] - mref[i]) <= 1e-12);
          REQUIRE(std::abs(v.at(name)[i] - vref[i]) <= 1e-12);
        }
      }
    }
  }
}
