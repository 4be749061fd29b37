#pragma once
// The CPU inner loops, compiled once per instruction set (loops.cpp);
// ops_cpu.cpp picks the best one the processor supports at load time.

#include <cstdint>

#include "../norm_math.h"

namespace totalnorm::cpu {

struct Loops {
  // Combined contribution of elements [begin, end) of `data`, in a fixed order.
  double (*reduce)(Order order, double p, Elem kind, const void* data, int64_t begin,
                   int64_t end);
};

namespace portable {
Loops loops();
}
namespace avx2 {
Loops loops();
}

}  // namespace totalnorm::cpu
