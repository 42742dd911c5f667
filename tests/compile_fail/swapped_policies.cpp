// Must not compile: moment and basis policies swapped. The error must say which argument is wrong.
#include <delayopt/delayopt.hpp>

int main() {
  delayopt::Optimizer<delayopt::moment::Adam, delayopt::basis::Identity, delayopt::delay::None> opt;
  (void)opt;
}
