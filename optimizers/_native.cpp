// The fused CPU kernels of optimizers/, written by hand: one pass over all tensors of a group.
//
// Compiled once per machine by _native.py (g++ -O3 -march=native -ffp-contract=off -fopenmp).
// Every kernel has the same C signature:
//
//   int NAME_f32 / NAME_f64(int64_t count, const int64_t* numel, T* const* tensors,
//                           const double* hyper, const double* factors, int64_t flags,
//                           int threads)
//
// `tensors` holds `count` pointers per tensor list, list after list (params, grads, then the
// state lists in the order of the Python kernel's arguments; a null pointer for an absent
// entry). `hyper` is the group's float64 hyperparameter vector, `factors` the optional
// per-tensor factors (null when every tensor shares the ones in `hyper`), `flags` the Python
// kernel's boolean options as bits in argument order. Returns 0, or 1 (nothing written) when
// an option needs a state tensor that is absent.
//
// The loops assume the tensors of a step do not overlap in memory (torch.optim deduplicates
// params by object, not by storage: two params viewing the same memory would race here, where
// the for-loop path updates them one after the other).
//
// Each line of arithmetic mirrors the Python kernel next to it in the optimizer's module, in
// the same order and with the same roundings: scalars are combined in double, then rounded to
// the tensor's type (as torch does for Python scalars), and -ffp-contract=off forbids fused
// multiply-adds, so every operation rounds like torch's elementwise ops on every machine.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// Below this many elements the whole step runs on the calling thread: waking a thread
// costs more than it saves.
constexpr int64_t kSerialBelow = 1 << 15;

// Each thread takes one contiguous slice of the group's elements, as if all its tensors were
// laid end to end, cut at multiples of 16 elements (whole cache lines). One parallel region
// per step and no barrier per tensor, where torch's fused kernels and inductor's loops
// synchronise after every tensor.
template <class F>
void for_each_slice(int64_t count, const int64_t* numel, int threads, F&& update) {
  int64_t total = 0;
  for (int64_t j = 0; j < count; ++j) total += numel[j];
  if (total < kSerialBelow) threads = 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int64_t lo = 0, hi = total;
#ifdef _OPENMP
    const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
    lo = (total * me / parts) & ~int64_t{15};
    hi = me + 1 == parts ? total : (total * (me + 1) / parts) & ~int64_t{15};
#endif
    int64_t start = 0;
    for (int64_t j = 0; j < count && start < hi; start += numel[j], ++j) {
      const int64_t a = std::max<int64_t>(lo - start, 0), b = std::min(hi - start, numel[j]);
      if (a < b) update(j, a, b);
    }
  }
}

// Calls f(std::true_type{}) or f(std::false_type{}): a runtime option becomes a compile-time
// one, so each combination of options gets its own branch-free, vectorised loop.
template <class F>
void with_option(bool on, F&& f) {
  if (on) f(std::true_type{});
  else f(std::false_type{});
}

// Whether an optional state list is there for every tensor with elements (an empty tensor's
// data pointer may be null).
bool all_present(void* const* list, const int64_t* numel, int64_t count) {
  for (int64_t j = 0; j < count; ++j)
    if (list[j] == nullptr && numel[j] > 0) return false;
  return true;
}

template <class T>
T maximum(T a, T b) {  // torch.maximum: NaN if either is NaN
  return a != a ? a : (a > b ? a : b);
}

// g = ±∇f (maximize flips the sign), + λθ with coupled weight decay: every kernel's first line.
template <class WD, class T>
T gradient(WD, T g, T p, T sgn, T wd) {
  T grad = g * sgn;
  if constexpr (WD::value) grad = grad + wd * p;
  return grad;
}

template <class T>
T sign(T x) {  // torch.sign (0 for NaN)
  return T(x > T(0)) - T(x < T(0));
}

// Adam: hyper = (lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt); factors = per
// tensor (step_size[count], bc2_sqrt[count]). flags: amsgrad, maximize, decoupled, wd_on.
template <class T>
int adam(int64_t k, const int64_t* numel, T* const* t, const double* h, const double* f,
         int64_t flags, int threads) {
  const bool amsgrad = flags & 1, maximize = flags & 2, decoupled = flags & 4, wd_on = flags & 8;
  if (amsgrad && !all_present((void* const*)(t + 4 * k), numel, k)) return 1;
  const T sgn = maximize ? T(-1) : T(1), wd = T(h[4]), keep = T(1.0 - h[0] * h[4]);
  const T one_minus_beta1 = T(1.0 - h[1]), beta2 = T(h[2]), one_minus_beta2 = T(1.0 - h[2]);
  const T eps = T(h[3]);
  with_option(amsgrad, [&](auto AMS) {
    with_option(wd_on && decoupled, [&](auto DECOUPLED) {
      with_option(wd_on && !decoupled, [&](auto COUPLED) {
        for_each_slice(k, numel, threads, [=](int64_t j, int64_t a, int64_t b) {
          const T step_size = T(f ? f[j] : h[5]), bc2_sqrt = T(f ? f[k + j] : h[6]);
          T* __restrict p = t[j];
          const T* __restrict g = t[k + j];
          T* __restrict m = t[2 * k + j];
          T* __restrict v = t[3 * k + j];
          T* __restrict mx = t[4 * k + j];
          #pragma omp simd
          for (int64_t i = a; i < b; ++i) {
            T grad = g[i] * sgn, param = p[i];
            if constexpr (DECOUPLED) param = param * keep;
            if constexpr (COUPLED) grad = grad + wd * param;
            const T mi = m[i] + (grad - m[i]) * one_minus_beta1;
            const T vi = v[i] * beta2 + one_minus_beta2 * grad * grad;
            m[i] = mi;
            v[i] = vi;
            T denom;
            if constexpr (AMS) {
              const T top = maximum(mx[i], vi);
              mx[i] = top;
              denom = std::sqrt(top) / bc2_sqrt + eps;
            } else {
              denom = std::sqrt(vi) / bc2_sqrt + eps;
            }
            p[i] = param + mi / denom * step_size;
          }
        });
      });
    });
  });
  return 0;
}

// SGD (torch's form): hyper = (lr, momentum, weight_decay, 1 - dampening); factors = the
// last per tensor. flags: momentum_on, wd_on, nesterov, maximize.
template <class T>
int sgd(int64_t k, const int64_t* numel, T* const* t, const double* h, const double* f,
        int64_t flags, int threads) {
  const bool momentum_on = flags & 1, wd_on = flags & 2, nesterov = flags & 4;
  if (momentum_on && !all_present((void* const*)(t + 2 * k), numel, k)) return 1;
  const T sgn = flags & 8 ? T(-1) : T(1), minus_lr = T(-h[0]), momentum = T(h[1]);
  const T wd = T(h[2]);
  with_option(momentum_on, [&](auto MOMENTUM) {
    with_option(wd_on, [&](auto WD) {
      with_option(nesterov, [&](auto NESTEROV) {
        for_each_slice(k, numel, threads, [=](int64_t j, int64_t a, int64_t b) {
          const T damped = T(f ? f[j] : h[3]);
          T* __restrict p = t[j];
          const T* __restrict g = t[k + j];
          T* __restrict buf = t[2 * k + j];
          #pragma omp simd
          for (int64_t i = a; i < b; ++i) {
            T grad = gradient(WD, g[i], p[i], sgn, wd);
            if constexpr (MOMENTUM) {
              const T bi = buf[i] * momentum + damped * grad;
              buf[i] = bi;
              grad = NESTEROV ? grad + momentum * bi : bi;
            }
            p[i] = p[i] + minus_lr * grad;
          }
        });
      });
    });
  });
  return 0;
}

// Classical momentum: hyper = (lr, momentum, weight_decay). flags: wd_on, nesterov, maximize.
template <class T>
int momentum(int64_t k, const int64_t* numel, T* const* t, const double* h, const double*,
             int64_t flags, int threads) {
  const T sgn = flags & 4 ? T(-1) : T(1), minus_lr = T(-h[0]), mu = T(h[1]), wd = T(h[2]);
  with_option(flags & 1, [&](auto WD) {
    with_option(flags & 2, [&](auto NESTEROV) {
      for_each_slice(k, numel, threads, [=](int64_t j, int64_t a, int64_t b) {
        T* __restrict p = t[j];
        const T* __restrict g = t[k + j];
        T* __restrict vel = t[2 * k + j];
        #pragma omp simd
        for (int64_t i = a; i < b; ++i) {
          T grad = gradient(WD, g[i], p[i], sgn, wd);
          const T vi = vel[i] * mu + minus_lr * grad;
          vel[i] = vi;
          p[i] = NESTEROV ? p[i] + mu * vi + minus_lr * grad : p[i] + vi;
        }
      });
    });
  });
  return 0;
}

// Adagrad: hyper = (lr, lr_decay, weight_decay, eps, -clr); factors = -clr per tensor.
// flags: wd_on, maximize.
template <class T>
int adagrad(int64_t k, const int64_t* numel, T* const* t, const double* h, const double* f,
            int64_t flags, int threads) {
  const T sgn = flags & 2 ? T(-1) : T(1), wd = T(h[2]), eps = T(h[3]);
  with_option(flags & 1, [&](auto WD) {
    for_each_slice(k, numel, threads, [=](int64_t j, int64_t a, int64_t b) {
      const T minus_clr = T(f ? f[j] : h[4]);
      T* __restrict p = t[j];
      const T* __restrict g = t[k + j];
      T* __restrict sum = t[2 * k + j];
      #pragma omp simd
      for (int64_t i = a; i < b; ++i) {
        T grad = gradient(WD, g[i], p[i], sgn, wd);
        const T si = sum[i] + grad * grad;
        sum[i] = si;
        p[i] = p[i] + grad / (std::sqrt(si) + eps) * minus_clr;
      }
    });
  });
  return 0;
}

// RMSprop: hyper = (lr, alpha, eps, weight_decay, momentum).
// flags: wd_on, momentum_on, centered, maximize.
template <class T>
int rmsprop(int64_t k, const int64_t* numel, T* const* t, const double* h, const double*,
            int64_t flags, int threads) {
  const bool wd_on = flags & 1, momentum_on = flags & 2, centered = flags & 4;
  if (centered && !all_present((void* const*)(t + 3 * k), numel, k)) return 1;
  if (momentum_on && !all_present((void* const*)(t + 4 * k), numel, k)) return 1;
  const T sgn = flags & 8 ? T(-1) : T(1), minus_lr = T(-h[0]), alpha = T(h[1]);
  const T one_minus_alpha = T(1.0 - h[1]), eps = T(h[2]), wd = T(h[3]), mu = T(h[4]);
  with_option(wd_on, [&](auto WD) {
    with_option(momentum_on, [&](auto MOMENTUM) {
      with_option(centered, [&](auto CENTERED) {
        for_each_slice(k, numel, threads, [=](int64_t j, int64_t a, int64_t b) {
          T* __restrict p = t[j];
          const T* __restrict g = t[k + j];
          T* __restrict sq = t[2 * k + j];
          T* __restrict gavg = t[3 * k + j];
          T* __restrict buf = t[4 * k + j];
          #pragma omp simd
          for (int64_t i = a; i < b; ++i) {
            T grad = gradient(WD, g[i], p[i], sgn, wd);
            const T si = sq[i] * alpha + one_minus_alpha * grad * grad;
            sq[i] = si;
            T avg;
            if constexpr (CENTERED) {
              const T gi = gavg[i] + (grad - gavg[i]) * one_minus_alpha;
              gavg[i] = gi;
              avg = std::sqrt(si - gi * gi) + eps;
            } else {
              avg = std::sqrt(si) + eps;
            }
            if constexpr (MOMENTUM) {
              const T bi = buf[i] * mu + grad / avg;
              buf[i] = bi;
              p[i] = p[i] + minus_lr * bi;
            } else {
              p[i] = p[i] + grad / avg * minus_lr;
            }
          }
        });
      });
    });
  });
  return 0;
}

// Rprop (iRprop-): hyper = (etaminus, etaplus, step_size_min, step_size_max, lr_t / lr_0);
// factors = lr_t / lr_0 per tensor. flags: maximize.
template <class T>
int rprop(int64_t k, const int64_t* numel, T* const* t, const double* h, const double* f,
          int64_t flags, int threads) {
  const T sgn = flags & 1 ? T(-1) : T(1), etaminus = T(h[0]), etaplus = T(h[1]);
  const T size_min = T(h[2]), size_max = T(h[3]);
  for_each_slice(k, numel, threads, [=](int64_t j, int64_t a, int64_t b) {
    const T minus_ratio = T(-(f ? f[j] : h[4]));
    T* __restrict p = t[j];
    const T* __restrict g = t[k + j];
    T* __restrict prev = t[2 * k + j];
    T* __restrict size = t[3 * k + j];
    #pragma omp simd
    for (int64_t i = a; i < b; ++i) {
      T grad = g[i] * sgn;
      const T s = sign(grad * prev[i]);
      const T factor = s > T(0) ? etaplus : (s < T(0) ? etaminus : T(1));
      const T scaled = size[i] * factor;
      const T floor = scaled < size_min ? size_min : scaled;  // torch.clamp: max, then min
      const T si = floor > size_max ? size_max : floor;
      size[i] = si;
      grad = s < T(0) ? T(0) : grad;
      p[i] = p[i] + sign(grad) * si * minus_ratio;
      prev[i] = grad;
    }
  });
  return 0;
}

// Adadelta: hyper = (lr, rho, eps, weight_decay). flags: wd_on, maximize.
template <class T>
int adadelta(int64_t k, const int64_t* numel, T* const* t, const double* h, const double*,
             int64_t flags, int threads) {
  const T sgn = flags & 2 ? T(-1) : T(1), minus_lr = T(-h[0]), rho = T(h[1]);
  const T one_minus_rho = T(1.0 - h[1]), eps = T(h[2]), wd = T(h[3]);
  with_option(flags & 1, [&](auto WD) {
    for_each_slice(k, numel, threads, [=](int64_t j, int64_t a, int64_t b) {
      T* __restrict p = t[j];
      const T* __restrict g = t[k + j];
      T* __restrict sq = t[2 * k + j];
      T* __restrict acc = t[3 * k + j];
      #pragma omp simd
      for (int64_t i = a; i < b; ++i) {
        T grad = gradient(WD, g[i], p[i], sgn, wd);
        const T si = sq[i] * rho + one_minus_rho * grad * grad;
        sq[i] = si;
        const T delta = std::sqrt(acc[i] + eps) / std::sqrt(si + eps) * grad;
        acc[i] = acc[i] * rho + one_minus_rho * delta * delta;
        p[i] = p[i] + minus_lr * delta;
      }
    });
  });
  return 0;
}

}  // namespace

#define EXPORT(name)                                                                      \
  extern "C" int name##_f32(int64_t k, const int64_t* n, float* const* t, const double* h, \
                            const double* f, int64_t flags, int threads) {                \
    return name<float>(k, n, t, h, f, flags, threads);                                    \
  }                                                                                       \
  extern "C" int name##_f64(int64_t k, const int64_t* n, double* const* t,                \
                            const double* h, const double* f, int64_t flags,              \
                            int threads) {                                                \
    return name<double>(k, n, t, h, f, flags, threads);                                   \
  }

EXPORT(adam)
EXPORT(sgd)
EXPORT(momentum)
EXPORT(adagrad)
EXPORT(rmsprop)
EXPORT(rprop)
EXPORT(adadelta)

// step += 1 for the float32 step counts of a fused batch (one call instead of one dispatched
// op per tensor).
extern "C" void add_one_f32(int64_t count, float* const* steps) {
  for (int64_t j = 0; j < count; ++j) *steps[j] += 1.0f;
}
