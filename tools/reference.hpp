/// \file tools/reference.hpp
/// \brief Loader for optref-v1 reference trajectories (tests/data, ../shared/reference) and the
/// closed-form gradients of their problems. Shared by delayopt_replay and the tests.
#pragma once

#include <delayopt/core/error.hpp>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include <cstddef>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace delayopt::reference {

using Vec = std::vector<double>;
using Named = std::map<std::string, Vec>;
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Shape {
  std::size_t rows = 0, cols = 1;
  int rank = 1;
  std::size_t size() const { return rows * cols; }
};

/// One problem of problems.json: `quad` (A per parameter) or `lstsq` (X, Y per parameter).
struct Problem {
  std::string kind;
  std::map<std::string, RowMatrix> A, X, Y;
  double N = 1;

  /// Closed-form gradient of parameter `name` at x (row-major, `shape`).
  Vec gradient(const std::string& name, const Shape& shape, const Vec& x) const {
    Vec g(x.size());
    if (kind == "quad") {
      const auto& a = A.at(name);
      Eigen::Map<Eigen::VectorXd>(g.data(), g.size()) = a * Eigen::Map<const Eigen::VectorXd>(x.data(), x.size());
    } else {  // lstsq: X^T (X W - Y) / N
      const auto& xm = X.at(name);
      const auto& ym = Y.at(name);
      Eigen::Map<const RowMatrix> w(x.data(), shape.rows, shape.cols);
      Eigen::Map<RowMatrix>(g.data(), shape.rows, shape.cols) = xm.transpose() * (xm * w - ym) / N;
    }
    return g;
  }

  double loss(const std::string& name, const Shape& shape, const Vec& x) const {
    if (kind == "quad") {
      Eigen::Map<const Eigen::VectorXd> v(x.data(), x.size());
      return 0.5 * v.dot(A.at(name) * v);
    }
    Eigen::Map<const RowMatrix> w(x.data(), shape.rows, shape.cols);
    return 0.5 / N * (X.at(name) * w - Y.at(name)).squaredNorm();
  }
};

/// A run file: optimizer description, initial parameters and the reference trajectory.
struct Run {
  std::string name, problem, impl;
  nlohmann::json hyperparams, json;
  std::vector<std::string> param_names;
  std::map<std::string, Shape> shapes;
  int steps = 0;
  Named initial;
  std::vector<Named> trajectory;  // params after call c at index c - 1
  std::vector<double> loss_before;
};

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw invalid_input("cannot open '" + path + "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw invalid_input("'" + path + "' is not valid JSON: " + e.what());
  }
}

inline RowMatrix matrix_from(const nlohmann::json& j, const std::string& what) {
  const auto shape = j.at("shape").get<std::vector<std::size_t>>();
  const auto data = j.at("data").get<Vec>();
  const std::size_t rows = shape.at(0), cols = shape.size() > 1 ? shape[1] : 1;
  if (data.size() != rows * cols) throw invalid_input(what + ": data does not match its shape");
  return Eigen::Map<const RowMatrix>(data.data(), rows, cols);
}

inline Problem load_problem(const std::string& problems_file, const std::string& name) {
  const auto j = read_json(problems_file);
  if (j.value("format", "") != "optref-v1") throw invalid_input("'" + problems_file + "' is not optref-v1");
  if (!j.at("problems").contains(name))
    throw invalid_input("'" + problems_file + "' has no problem named '" + name + "'");
  const auto& pj = j.at("problems").at(name);
  Problem p;
  p.kind = pj.contains("A") ? "quad" : "lstsq";
  if (p.kind == "quad") {
    for (auto& [k, v] : pj.at("A").items()) p.A[k] = matrix_from(v, "A." + k);
  } else {
    if (!pj.contains("X") || !pj.contains("Y")) throw invalid_input("problem '" + name + "' has neither A nor X/Y");
    p.N = pj.at("N").get<double>();
    for (auto& [k, v] : pj.at("X").items()) p.X[k] = matrix_from(v, "X." + k);
    for (auto& [k, v] : pj.at("Y").items()) p.Y[k] = matrix_from(v, "Y." + k);
  }
  return p;
}

/// Throws unless every parameter of `run` has its data in `problem`, with matching sizes.
inline void check_compatible(const Problem& problem, const Run& run) {
  for (const auto& n : run.param_names) {
    const Shape& s = run.shapes.at(n);
    const auto fail = [&](const std::string& why) {
      return invalid_input("run '" + run.name + "', parameter '" + n + "': " + why);
    };
    if (problem.kind == "quad") {
      const auto a = problem.A.find(n);
      if (a == problem.A.end()) throw fail("the problem has no A for it");
      if (static_cast<std::size_t>(a->second.rows()) != s.size() || a->second.cols() != a->second.rows())
        throw fail("its A is not " + std::to_string(s.size()) + " x " + std::to_string(s.size()));
    } else {
      const auto x = problem.X.find(n), y = problem.Y.find(n);
      if (x == problem.X.end() || y == problem.Y.end()) throw fail("the problem has no X and Y for it");
      if (static_cast<std::size_t>(x->second.cols()) != s.rows || y->second.rows() != x->second.rows() ||
          static_cast<std::size_t>(y->second.cols()) != s.cols)
        throw fail("X and Y do not match its shape");
    }
  }
}

inline Named named_from(const nlohmann::json& j) {
  Named out;
  for (auto& [k, v] : j.items()) out[k] = v.get<Vec>();
  return out;
}

inline Run load_run(const std::string& run_file) {
  Run r;
  r.json = read_json(run_file);
  const auto& j = r.json;
  try {
    if (j.value("format", "") != "optref-v1") throw invalid_input("not an optref-v1 file");
    r.name = j.at("name");
    r.problem = j.at("problem");
    r.impl = j.at("optimizer").at("impl");
    r.hyperparams = j.at("optimizer").at("hyperparams");
    r.param_names = j.at("param_names").get<std::vector<std::string>>();
    for (const auto& n : r.param_names) {
      const auto s = j.at("param_shapes").at(n).get<std::vector<std::size_t>>();
      if (s.empty() || s.size() > 2) throw invalid_input("parameter '" + n + "' is not rank 1 or 2");
      r.shapes[n] = Shape{s[0], s.size() > 1 ? s[1] : 1, static_cast<int>(s.size())};
    }
    r.steps = j.at("steps");
    if (r.steps < 1) throw invalid_input("steps = " + std::to_string(r.steps) + ": nothing to replay");
    r.initial = named_from(j.at("initial"));
    for (const auto& e : j.at("trajectory")) {
      r.trajectory.push_back(named_from(e.at("params")));
      r.loss_before.push_back(e.at("loss_before"));
    }
    // Every value the replay compares against, so a truncated file is an error, not a read past its end.
    const auto check = [&](const Named& values, const std::string& where) {
      for (const auto& n : r.param_names)
        if (!values.count(n) || values.at(n).size() != r.shapes[n].size())
          throw invalid_input(where + " value of '" + n + "' is missing or does not match its shape (" +
                              std::to_string(r.shapes[n].size()) + " values)");
    };
    check(r.initial, "initial");
    for (std::size_t c = 0; c < r.trajectory.size(); ++c)
      check(r.trajectory[c], "trajectory[" + std::to_string(c) + "]");
    if (static_cast<int>(r.trajectory.size()) != r.steps) throw invalid_input("trajectory length != steps");
  } catch (const nlohmann::json::exception& e) {
    throw invalid_input("'" + run_file + "': " + e.what());
  } catch (const invalid_input& e) {
    throw invalid_input("'" + run_file + "': " + e.what());
  }
  return r;
}

}  // namespace delayopt::reference
