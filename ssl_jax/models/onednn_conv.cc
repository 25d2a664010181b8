// oneDNN convolutions for XLA:CPU, as XLA FFI handlers (built and loaded by onednn.py).
//
// Three float32 handlers, all on NHWC activations and HWIO kernels (conv.py's layout):
//   ssl_jax_onednn_conv_forward           (x, kernel)  -> y
//   ssl_jax_onednn_conv_backward_data     (dy, kernel) -> dx   (its result's shape is x's)
//   ssl_jax_onednn_conv_backward_weights  (x, dy)      -> dkernel
// each with attributes `strides` [sh, sw] and `padding` [top, bottom, left, right].
//
// Why: XLA:CPU runs convolutions in Eigen, and its kernel gradients through transposes;
// oneDNN's direct kernels are faster on x86 (docs/performance.md has the numbers). The
// activations stay in NHWC (no reorder of the large tensors); the kernel, small, is
// reordered to the blocked layout oneDNN's direct kernels want ("any"), and back for
// its gradient.
//
// oneDNN primitives are created once per geometry and thread count and reused; their
// scratchpad is per call (scratchpad_mode::user), so concurrent calls never share one.

#include <omp.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;
using Dt = dnnl::memory::data_type;

enum class Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// x [n, h, w, c], kernel [kh, kw, c, o], y [n, oh, ow, o].
struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, sh, sw, pad_top, pad_bottom, pad_left, pad_right;

  std::vector<int64_t> Key() const {
    return {n, h, w, c, kh, kw, o, oh, ow, sh, sw, pad_top, pad_bottom, pad_left, pad_right};
  }
  memory::desc Activations(Tag tag = Tag::nhwc) const { return {{n, c, h, w}, Dt::f32, tag}; }
  memory::desc Outputs() const { return {{n, o, oh, ow}, Dt::f32, Tag::nhwc}; }
  memory::desc Kernel(Tag tag) const { return {{o, c, kh, kw}, Dt::f32, tag}; }
  memory::dims Strides() const { return {sh, sw}; }
  memory::dims PadLow() const { return {pad_top, pad_left}; }
  memory::dims PadHigh() const { return {pad_bottom, pad_right}; }
};

struct Plan {
  std::unique_ptr<dnnl::primitive> primitive;
  memory::desc kernel;       // the layout the primitive wants its kernel (or gradient) in
  memory::desc user_kernel;  // HWIO, as XLA holds it
  size_t scratchpad_bytes = 0;
};

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g,
                                                      const dnnl::primitive_attr& attr) {
  dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      g.Activations(), g.Kernel(Tag::any), g.Outputs(), g.Strides(), g.PadLow(), g.PadHigh());
  return {desc, attr, Engine()};
}

std::shared_ptr<Plan> MakePlan(Kind kind, const Geometry& g) {
  auto plan = std::make_shared<Plan>();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto forward = ForwardDesc(g, attr);
  plan->user_kernel = g.Kernel(Tag::hwio);
  if (kind == Kind::kForward) {
    plan->primitive = std::make_unique<dnnl::convolution_forward>(forward);
    plan->kernel = forward.weights_desc();
    plan->scratchpad_bytes = forward.scratchpad_desc().get_size();
  } else if (kind == Kind::kBackwardData) {
    dnnl::convolution_backward_data::desc desc(
        dnnl::algorithm::convolution_direct, g.Activations(), g.Kernel(Tag::any), g.Outputs(),
        g.Strides(), g.PadLow(), g.PadHigh());
    dnnl::convolution_backward_data::primitive_desc pd(desc, attr, Engine(), forward);
    plan->primitive = std::make_unique<dnnl::convolution_backward_data>(pd);
    plan->kernel = pd.weights_desc();
    plan->scratchpad_bytes = pd.scratchpad_desc().get_size();
  } else {
    dnnl::convolution_backward_weights::desc desc(
        dnnl::algorithm::convolution_direct, g.Activations(), g.Kernel(Tag::any), g.Outputs(),
        g.Strides(), g.PadLow(), g.PadHigh());
    dnnl::convolution_backward_weights::primitive_desc pd(desc, attr, Engine(), forward);
    plan->primitive = std::make_unique<dnnl::convolution_backward_weights>(pd);
    plan->kernel = pd.diff_weights_desc();
    plan->scratchpad_bytes = pd.scratchpad_desc().get_size();
  }
  return plan;
}

std::shared_ptr<Plan> GetPlan(Kind kind, const Geometry& g) {
  static std::mutex* mutex = new std::mutex;
  static auto* plans = new std::map<std::vector<int64_t>, std::shared_ptr<Plan>>;
  std::vector<int64_t> key = g.Key();
  key.push_back(static_cast<int64_t>(kind));
  key.push_back(omp_get_max_threads());  // oneDNN sizes its work split by the thread count
  std::lock_guard<std::mutex> lock(*mutex);
  auto found = plans->find(key);
  if (found != plans->end()) return found->second;
  auto plan = MakePlan(kind, g);
  (*plans)[key] = plan;
  return plan;
}

// activations: x (forward, backward weights) or dx (backward data); outputs: y or dy.
void Execute(Kind kind, const Geometry& g, void* activations, void* kernel, void* outputs) {
  std::shared_ptr<Plan> plan = GetPlan(kind, g);
  dnnl::engine& engine = Engine();
  dnnl::stream stream(engine);
  std::unique_ptr<char[]> scratch(new char[plan->scratchpad_bytes + 1]);
  memory scratchpad({{static_cast<int64_t>(plan->scratchpad_bytes)}, Dt::u8, Tag::x}, engine,
                    scratch.get());
  memory act(g.Activations(), engine, activations);
  memory out(g.Outputs(), engine, outputs);
  memory user_kernel(plan->user_kernel, engine, kernel);
  const bool reorder = plan->kernel != plan->user_kernel;
  memory k = reorder ? memory(plan->kernel, engine) : user_kernel;
  if (reorder && kind != Kind::kBackwardWeights) {
    dnnl::reorder(user_kernel, k).execute(stream, user_kernel, k);
  }
  // Which oneDNN argument each buffer is, by kind: activations, kernel, outputs.
  static constexpr int kArgs[3][3] = {
      {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
      {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST},
      {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST}};
  const int* args = kArgs[static_cast<int>(kind)];
  plan->primitive->execute(stream, {{args[0], act}, {args[1], k}, {args[2], out},
                                    {DNNL_ARG_SCRATCHPAD, scratchpad}});
  if (reorder && kind == Kind::kBackwardWeights) {
    dnnl::reorder(k, user_kernel).execute(stream, k, user_kernel);
  }
  stream.wait();
}

ffi::Error Check(bool ok, const std::string& what) {
  return ok ? ffi::Error::Success() : ffi::Error(ffi::ErrorCode::kInvalidArgument, what);
}

// Shapes: activations [n, h, w, c], kernel [kh, kw, c, o], outputs [n, oh, ow, o].
ffi::Error Run(Kind kind, ffi::Span<const int64_t> act, ffi::Span<const int64_t> kernel,
               ffi::Span<const int64_t> out, ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> padding, void* act_data, void* kernel_data,
               void* out_data) {
  if (act.size() != 4 || kernel.size() != 4 || out.size() != 4 || strides.size() != 2 ||
      padding.size() != 4) {
    return Check(false, "ssl_jax oneDNN conv: needs rank-4 NHWC/HWIO operands, 2 strides "
                        "and 4 paddings");
  }
  Geometry g{act[0], act[1], act[2], act[3], kernel[0], kernel[1], kernel[3], out[1], out[2],
             strides[0], strides[1], padding[0], padding[1], padding[2], padding[3]};
  if (kernel[2] != g.c || out[0] != g.n || out[3] != g.o) {
    return Check(false, "ssl_jax oneDNN conv: operand shapes do not match");
  }
  if (g.n == 0 || g.oh == 0 || g.ow == 0 || g.o == 0 || g.c == 0) {
    // Nothing to convolve; the result is all zeros (or empty).
    void* result = kind == Kind::kForward ? out_data
                   : kind == Kind::kBackwardData ? act_data : kernel_data;
    int64_t count = kind == Kind::kForward ? g.n * g.oh * g.ow * g.o
                    : kind == Kind::kBackwardData ? g.n * g.h * g.w * g.c
                                                  : g.kh * g.kw * g.c * g.o;
    if (count > 0) std::memset(result, 0, count * sizeof(float));
    return ffi::Error::Success();
  }
  try {
    Execute(kind, g, act_data, kernel_data, out_data);
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("ssl_jax oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using Ints = ffi::Span<const int64_t>;

ffi::Error Forward(F32 x, F32 kernel, ffi::ResultBuffer<ffi::F32> y, Ints strides,
                   Ints padding) {
  return Run(Kind::kForward, x.dimensions(), kernel.dimensions(), y->dimensions(), strides,
             padding, x.untyped_data(), kernel.untyped_data(), y->untyped_data());
}

ffi::Error BackwardData(F32 dy, F32 kernel, ffi::ResultBuffer<ffi::F32> dx, Ints strides,
                        Ints padding) {
  return Run(Kind::kBackwardData, dx->dimensions(), kernel.dimensions(), dy.dimensions(),
             strides, padding, dx->untyped_data(), kernel.untyped_data(), dy.untyped_data());
}

ffi::Error BackwardWeights(F32 x, F32 dy, ffi::ResultBuffer<ffi::F32> dkernel, Ints strides,
                           Ints padding) {
  return Run(Kind::kBackwardWeights, x.dimensions(), dkernel->dimensions(), dy.dimensions(),
             strides, padding, x.untyped_data(), dkernel->untyped_data(), dy.untyped_data());
}

}  // namespace

#define SSL_JAX_CONV_BINDING                                                           \
  ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<Ints>("strides").Attr<Ints>( \
      "padding")

XLA_FFI_DEFINE_HANDLER_SYMBOL(SslJaxOneDnnConvForward, Forward, SSL_JAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(SslJaxOneDnnConvBackwardData, BackwardData,
                              SSL_JAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(SslJaxOneDnnConvBackwardWeights, BackwardWeights,
                              SSL_JAX_CONV_BINDING);
