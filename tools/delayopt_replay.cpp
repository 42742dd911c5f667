// delayopt_replay: replays an optref-v1 reference run with delayopt and reports the deviation.
//
//   delayopt_replay --problems tests/data/problems.json --run tests/data/quad__adam.json --tol 1e-12
//   delayopt_replay --problems tests/data/problems.json --run tests/data/quad__soap64_f10.json --tol 1e-6
#include "replay.hpp"

#include <cli_checks.hpp>

#include <cstdio>
#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{
      "Replay an optref-v1 reference trajectory (torch Adam/AdamW/NAdam/SGD, or SOAP from its handoff snapshot) "
      "with delayopt and print the max abs deviation per parameter; exits 1 above --tol"};
  std::string problems_file, run_file, dtype = "double";
  double tol = 1e-12;
  int from_call = -1;
  app.add_option("--problems", problems_file, "problems.json of the run")->required()->check(CLI::ExistingFile);
  app.add_option("--run", run_file, "run file (<problem>__<run>.json)")->required()->check(CLI::ExistingFile);
  app.add_option("--tol", tol, "max abs deviation allowed on any parameter")
      ->capture_default_str()
      ->check(delayopt::cli::non_negative);
  app.add_option("--dtype", dtype, "precision of the replay")
      ->check(CLI::IsMember({"double", "float"}))
      ->capture_default_str();
  app.add_option("--from-call", from_call,
                 "SOAP runs: start from the snapshot after this call (default: the file's handoff_call)")
      ->check(delayopt::cli::non_negative);
  // Kokkos first: it takes its own --kokkos-* flags out of argv, which CLI11 would reject.
  Kokkos::ScopeGuard guard(argc, argv);
  CLI11_PARSE(app, argc, argv);
  try {
    using namespace delayopt::reference;
    const Run run = load_run(run_file);
    const Problem problem = load_problem(problems_file, run.problem);
    check_compatible(problem, run);
    if (from_call >= 0 && !is_soap_run(run))
      throw delayopt::invalid_input("--from-call applies to SOAP runs (snapshots); '" + run.name + "' is " + run.impl);
    if (from_call >= run.steps)
      throw delayopt::invalid_input("--from-call " + std::to_string(from_call) + ": the run has calls 1.." +
                                    std::to_string(run.steps) + ", so nothing would be replayed");
    Kokkos::DefaultHostExecutionSpace space;
    Deviation dev;
    if (is_soap_run(run)) {
      const int start = from_call >= 0 ? from_call : run.json.at("handoff_call").get<int>();
      dev = dtype == "double" ? replay_soap<double>(space, problem, run, start, run.steps)
                              : replay_soap<float>(space, problem, run, start, run.steps);
      std::printf("%s (SOAP, %s, calls %d..%d from the snapshot after call %d)\n", run.name.c_str(), dtype.c_str(),
                  start + 1, run.steps, start);
    } else if (is_adam_run(run)) {
      dev = dtype == "double" ? replay_adam<double>(space, problem, run) : replay_adam<float>(space, problem, run);
      std::printf("%s (%s, %s, %d steps)\n", run.name.c_str(), run.impl.c_str(), dtype.c_str(), run.steps);
    } else if (is_nadam_run(run)) {
      dev = dtype == "double" ? replay_nadam<double>(space, problem, run) : replay_nadam<float>(space, problem, run);
      std::printf("%s (%s, %s, %d steps)\n", run.name.c_str(), run.impl.c_str(), dtype.c_str(), run.steps);
    } else if (is_sgd_run(run)) {
      dev = dtype == "double" ? replay_sgd<double>(space, problem, run) : replay_sgd<float>(space, problem, run);
      std::printf("%s (%s, %s, %d steps)\n", run.name.c_str(), run.impl.c_str(), dtype.c_str(), run.steps);
    } else {
      std::cerr << "delayopt_replay: run '" << run.name << "' uses '" << run.impl
                << "'; delayopt replays torch.optim.Adam / AdamW / NAdam / SGD and SOAP runs\n";
      return 2;
    }
    for (const auto& name : run.param_names)
      std::printf("  %-8s max abs deviation %.3e (worst at call %d)\n", name.c_str(), dev.max_abs.at(name),
                  dev.worst_call.at(name));
    const bool ok = dev.overall() <= tol;
    std::printf("%s: max %.3e %s tol %.1e\n", ok ? "PASS" : "FAIL", dev.overall(), ok ? "<=" : ">", tol);
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "delayopt_replay: " << e.what() << "\n";
    return 2;
  }
}
