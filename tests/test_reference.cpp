// Adam / AdamW against torch 1.13 trajectories (tests/data, copied from shared/reference); NAdam and
// SGD against trajectories made with the same torch (tests/data/make_*_reference.py).
#include "support/catch.hpp"
#include "support/spaces.hpp"

#include <replay.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <tuple>

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

TEST_CASE("reference files: a damaged run or a mismatched problem is an error, not a read past the end",
          "[reference]") {
  const auto original = read_json(data("quad__adam.json"));
  const auto damaged = [&](auto&& edit) {
    auto j = original;
    edit(j);
    const auto path = std::filesystem::temp_directory_path() / "delayopt_test_damaged_run.json";
    std::ofstream(path) << j.dump();
    return path.string();
  };
  const std::string name = original.at("param_names").at(0);
  CHECK_THROWS_WITH(load_run(damaged([&](auto& j) { j["trajectory"][3]["params"][name].erase(0); })),
                    Catch::Contains("trajectory[3] value of '" + name + "'"));
  CHECK_THROWS_WITH(load_run(damaged([&](auto& j) { j["trajectory"][0]["params"].erase(name); })),
                    Catch::Contains("trajectory[0] value of '" + name + "' is missing"));
  CHECK_THROWS_WITH(load_run(damaged([](auto& j) {
                      j["steps"] = 0;
                      j["trajectory"] = nlohmann::json::array();
                    })),
                    Catch::Contains("nothing to replay"));

  const Run run = load_run(data("quad__adam.json"));
  Problem problem = load_problem(data("problems.json"), run.problem);
  CHECK_NOTHROW(check_compatible(problem, run));
  problem.A.at(name) = RowMatrix::Identity(2, 2);
  CHECK_THROWS_WITH(check_compatible(problem, run), Catch::Contains("'" + name + "': its A is not"));
  problem.A.erase(name);
  CHECK_THROWS_WITH(check_compatible(problem, run), Catch::Contains("the problem has no A for it"));
}

// Replays one torch run file free-running (replay_adam, replay_nadam or replay_sgd) in precision T
// and checks every step's parameters and, in double, the final state the file stores: Adam's and
// NAdam's step, exp_avg (slot 0) and exp_avg_sq (slot 1), SGD's momentum_buffer (slot 0).
template <class T, class Space, class Replay>
void check_free_run(const Space& space, const char* file, Replay replay) {
  CAPTURE(file);
  const Run run = load_run(data(file));
  const Problem problem = load_problem(data("problems.json"), run.problem);
  Named m, v;
  const Deviation dev = replay(space, problem, run, &m, &v);
  const double tol = std::is_same_v<T, double> ? 1e-12 : float_tolerance(run);
  for (const auto& [name, d] : dev.max_abs) {
    CAPTURE(name, d, tol);
    CHECK(d <= tol);
  }
  if constexpr (std::is_same_v<T, double>) {  // final moments too
    const auto& fs = run.json.at("final_state");
    int compared = 0;
    for (const auto& name : run.param_names) {
      const auto& f = fs.at(name);
      if (f.contains("step")) CHECK(f.at("step").get<int>() == run.steps);
      for (const auto& [key, ours] :
           {std::pair<const char*, const Named*>{"exp_avg", &m}, {"exp_avg_sq", &v}, {"momentum_buffer", &m}}) {
        if (!f.contains(key)) continue;
        CAPTURE(name, key);
        const auto ref = f.at(key).template get<Vec>();
        REQUIRE(ours->at(name).size() == ref.size());
        for (std::size_t i = 0; i < ref.size(); ++i) REQUIRE(std::abs(ours->at(name)[i] - ref[i]) <= 1e-12);
        ++compared;
      }
    }
    CHECK(compared > 0);  // the file stores a final state we know
  }
}

TEMPLATE_LIST_TEST_CASE("Adam and AdamW reproduce torch 1.13 for all 50 steps", "[reference][adam]",
                        delayopt::test::all_cases) {
  using T = typename TestType::value;
  typename TestType::space space;
  for (const auto* file : {"quad__adam.json", "quad__adamw.json"})
    check_free_run<T>(space, file, [](auto&&... a) { return replay_adam<T>(a...); });
}

// torch's NAdam with its momentum-decay schedule (tests/data/make_nadam_reference.py). quad__nadam
// runs 150 steps, past the point where moment::NAdam stops multiplying mu_i (product < 2^-54, ~55 steps).
TEMPLATE_LIST_TEST_CASE("NAdam reproduces torch's NAdam (momentum decay, L2)", "[reference][nadam]",
                        delayopt::test::all_cases) {
  using T = typename TestType::value;
  typename TestType::space space;
  for (const auto* file : {"quad__nadam.json", "quad__nadam_l2.json"})
    check_free_run<T>(space, file, [](auto&&... a) { return replay_nadam<T>(a...); });
}

// torch.optim.SGD unchanged (tests/data/make_sgd_reference.py): heavy ball with dampening 0.5, and
// Nesterov momentum with coupled L2 weight decay.
TEMPLATE_LIST_TEST_CASE("SGD with momentum reproduces torch's SGD (heavy ball, dampening, Nesterov, L2)",
                        "[reference][momentum]", delayopt::test::all_cases) {
  using T = typename TestType::value;
  typename TestType::space space;
  for (const auto* file : {"quad__sgd_momentum.json", "quad__sgd_nesterov.json"})
    check_free_run<T>(space, file, [](const auto& s, const Problem& p, const Run& r, Named* m, Named*) {
      return replay_sgd<T>(s, p, r, m);
    });
}

TEST_CASE("NAdam's mu product: torch's running product, and the early stop changes nothing", "[nadam]") {
  using NAdam = moment::NAdam;
  NAdam::Hyper h;  // beta1 0.99, torch schedule, psi 0.004
  double running = 1.0;
  for (std::int64_t t = 1; t <= 400; ++t) {
    running *= h.beta1 * (1.0 - 0.5 * std::pow(0.96, static_cast<double>(t) * h.momentum_decay));
    const double p = NAdam::mu_product(h, t);
    const double mu_next = NAdam::mu(h, static_cast<double>(t + 1));
    if (p >= 0x1p-54) {
      REQUIRE(std::abs(p - running) <= 1e-12 * running);  // q^i by repeated products: ~i ulp each
    } else {
      // Stopped: what the update uses, 1 - product and 1 - product mu_{t+1}, is exactly 1 for the
      // truncated product and the full one alike.
      REQUIRE(running < 0x1p-54 * (1 + 1e-9));
      REQUIRE((1.0 - p == 1.0 && 1.0 - p * mu_next == 1.0));
      REQUIRE((1.0 - running == 1.0 && 1.0 - running * mu_next == 1.0));
    }
    if (t == 60) CHECK(p < 0x1p-54);  // the loop is ~55 factors long, not ~100
  }
  const auto late = NAdam::coeffs<double>(h, 1e-3, 100000);
  const double mu_t = NAdam::mu(h, 100000.0), mu_next = NAdam::mu(h, 100001.0);
  CHECK(late.c_g == 1.0 - mu_t);
  CHECK(late.c_m == mu_next);
  CHECK(mu_next > 0.98 * h.beta1);  // the look-ahead weight has ramped up to ~beta1
  h.lookahead = NAdam::Lookahead::constant;
  const auto c = NAdam::coeffs<double>(h, 1e-3, 7);
  CHECK(c.c_g == Approx((1 - 0.99) / (1 - std::pow(0.99, 7))).epsilon(1e-13));
  CHECK(c.c_m == Approx(0.99 / (1 - std::pow(0.99, 8))).epsilon(1e-13));
  CHECK_THROWS_WITH(delayopt::NAdam({.moment = {.momentum_decay = -1}}), Catch::Contains("momentum_decay = -1"));
}

TEST_CASE("NAdam's mu product: the closed-form tail for a large psi or beta1", "[nadam]") {
  using NAdam = moment::NAdam;
  // Where the product stays above 2^-54 past NAdam::kLoopFactors factors: against a long double
  // running product, and against every step's own value (both sides of the switch).
  for (const auto& [beta1, psi, steps] : {std::tuple{0.99, 1.0, 6000}, std::tuple{0.9999, 1.0, 200000},
                                          std::tuple{0.9999, 0.5, 120000}, std::tuple{0.999, 0.5, 20000}}) {
    NAdam::Hyper h{.beta1 = beta1, .momentum_decay = psi};
    long double running = 1.0L;
    std::int64_t tail_steps = 0;
    for (std::int64_t t = 1; t <= steps; ++t) {
      running *= static_cast<long double>(beta1) *
                 (1.0L - 0.5L * std::pow(0.96L, static_cast<long double>(t) * static_cast<long double>(psi)));
      const double p = NAdam::mu_product(h, t);
      if (running < 0x1p-54L) {
        REQUIRE((1.0 - p == 1.0 && 1.0 - p * NAdam::mu(h, static_cast<double>(t + 1)) == 1.0));
        break;
      }
      if (t > NAdam::kLoopFactors) ++tail_steps;
      INFO("beta1 " << beta1 << " psi " << psi << " t " << t);
      REQUIRE(std::abs(p - static_cast<double>(running)) <= 1e-12 * static_cast<double>(running));
    }
    CHECK(tail_steps > 1000);  // the tail, not the loop, produced most of these products
  }
}
