// Python bindings of the gated-attention pooling kernels (CPU always, CUDA when built).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "core/pooling.hpp"
#ifdef HSAFAST_WITH_CUDA
#include "cuda/pooling_cuda.hpp"
#endif

namespace py = pybind11;

namespace {

// Checks that `a` is a float32/float64 array of the given rank with unit inner stride and
// returns its row stride in elements (0 for 1-D), raising ValueError otherwise.
int64_t check_array(const py::array& a, const char* name, int ndim, char kind_size,
                    bool writable = false) {
  const bool dtype_ok = kind_size == 'f' ? a.dtype().is(py::dtype::of<float>())
                                         : a.dtype().is(py::dtype::of<double>());
  if (!dtype_ok)
    throw py::value_error(std::string(name) + " must be " +
                          (kind_size == 'f' ? "float32" : "float64") + ", got " +
                          py::str(a.dtype()).cast<std::string>());
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                          " dimensions, got " + std::to_string(a.ndim()));
  const auto item = static_cast<py::ssize_t>(a.itemsize());
  if (a.shape(ndim - 1) > 1 && a.strides(ndim - 1) != item)
    throw py::value_error(std::string(name) + " must be contiguous along its last axis");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
  if (ndim == 1) return 0;
  if (a.strides(0) % item != 0 || a.strides(0) < 0)
    throw py::value_error(std::string(name) + " has an unsupported row stride");
  return a.shape(0) > 1 ? a.strides(0) / item : a.shape(1);
}

hsafast::GateParams gate_params(const py::array& bias_v, const py::array& bias_u,
                                const py::array& w, float bias_w) {
  check_array(bias_v, "bias_v", 1, 'f');
  check_array(bias_u, "bias_u", 1, 'f');
  check_array(w, "w", 1, 'f');
  const int64_t H = w.shape(0);
  if (bias_v.shape(0) != H || bias_u.shape(0) != H)
    throw py::value_error("bias_v, bias_u and w must have the same length H");
  return {static_cast<const float*>(bias_v.data()), static_cast<const float*>(bias_u.data()),
          static_cast<const float*>(w.data()), bias_w, H};
}

hsafast::PoolChunk make_chunk(const py::array& z, const py::array& h, int64_t H) {
  hsafast::PoolChunk c{};
  c.ldz = check_array(z, "z", 2, 'f');
  c.ldh = check_array(h, "h", 2, 'f');
  if (z.shape(1) != 2 * H)
    throw py::value_error("z must have 2H = " + std::to_string(2 * H) + " columns, got " +
                          std::to_string(z.shape(1)));
  if (z.shape(0) != h.shape(0))
    throw py::value_error("z and h must have the same number of rows");
  c.z = static_cast<const float*>(z.data());
  c.h = static_cast<const float*>(h.data());
  c.rows = h.shape(0);
  c.dim = h.shape(1);
  return c;
}

}  // namespace

void init_pooling(py::module_& m) {
  m.def(
      "pool_chunk",
      [](const py::array& z, const py::array& h, const py::array& bias_v, const py::array& bias_u,
         const py::array& w, float bias_w, py::array& state, py::object logits) {
        const auto p = gate_params(bias_v, bias_u, w, bias_w);
        const auto c = make_chunk(z, h, p.hidden);
        check_array(state, "state", 1, 'd', true);
        if (state.shape(0) != c.dim + 2)
          throw py::value_error("state must have D + 2 = " + std::to_string(c.dim + 2) +
                                " elements");
        float* out = nullptr;
        if (!logits.is_none()) {
          auto arr = logits.cast<py::array>();
          check_array(arr, "logits", 1, 'f', true);
          if (arr.shape(0) != c.rows) throw py::value_error("logits must have one entry per row");
          out = static_cast<float*>(arr.mutable_data());
        }
        auto* st = static_cast<double*>(state.mutable_data());
        py::gil_scoped_release release;
        return hsafast::pool_chunk(c, p, st, out);
      },
      py::arg("z"), py::arg("h"), py::arg("bias_v"), py::arg("bias_u"), py::arg("w"),
      py::arg("bias_w"), py::arg("state"), py::arg("logits") = py::none(),
      "Absorbs one chunk (z = h @ [V; U]^T, without biases) into the float64 state "
      "[m, s, acc(D)]; writes the rows' logits when given an array. Returns False, leaving "
      "the state untouched, when a logit or the weighted sum is not finite.");
  m.def(
      "gated_logits",
      [](const py::array& z, const py::array& bias_v, const py::array& bias_u, const py::array& w,
         float bias_w) {
        const auto p = gate_params(bias_v, bias_u, w, bias_w);
        hsafast::PoolChunk c{};
        c.ldz = check_array(z, "z", 2, 'f');
        if (z.shape(1) != 2 * p.hidden) throw py::value_error("z must have 2H columns");
        c.z = static_cast<const float*>(z.data());
        c.rows = z.shape(0);
        py::array_t<float> out(c.rows);
        float* o = out.mutable_data();
        py::gil_scoped_release release;
        hsafast::gated_logits(c, p, o);
        return out;
      },
      py::arg("z"), py::arg("bias_v"), py::arg("bias_u"), py::arg("w"), py::arg("bias_w"),
      "Logits w . (tanh(zv + bv) * sigmoid(zu + bu)) + b of each row of z = [zv | zu].");
  m.def(
      "merge_pool_states",
      [](py::array& a, const py::array& b) {
        check_array(a, "a", 1, 'd', true);
        check_array(b, "b", 1, 'd');
        if (a.shape(0) != b.shape(0) || a.shape(0) < 2)
          throw py::value_error("pool states must have the same length D + 2");
        hsafast::merge_pool_states(static_cast<double*>(a.mutable_data()),
                                   static_cast<const double*>(b.data()), a.shape(0) - 2);
      },
      py::arg("a"), py::arg("b"), "Merges pool state b into a (online-softmax rescaling).");

#ifdef HSAFAST_WITH_CUDA
  m.def("pool_cuda_workspace_bytes", &hsafast::cuda::pool_workspace_bytes, py::arg("n"),
        py::arg("dim"), py::arg("hidden"),
        "Bytes of device scratch the CUDA pooling kernel needs for these sizes.");
  m.def(
      "pool_cuda",
      [](uintptr_t h, int64_t ldh, int dtype, int64_t n, int64_t dim, uintptr_t weights,
         uintptr_t bias_v, uintptr_t bias_u, uintptr_t w, float bias_w, int64_t hidden,
         uintptr_t workspace, int64_t workspace_bytes, uintptr_t logits, uintptr_t state,
         uintptr_t stream, uintptr_t z, int64_t ldz, int epilogue, uintptr_t pooled,
         uintptr_t weights_out, uintptr_t status) {
        hsafast::cuda::PoolArgs a{};
        a.h = reinterpret_cast<const void*>(h);
        a.ldh = ldh;
        a.dtype = dtype;
        a.n = n;
        a.dim = dim;
        a.weights = reinterpret_cast<const void*>(weights);
        a.bias_v = reinterpret_cast<const float*>(bias_v);
        a.bias_u = reinterpret_cast<const float*>(bias_u);
        a.w = reinterpret_cast<const float*>(w);
        a.bias_w = bias_w;
        a.hidden = hidden;
        a.workspace = reinterpret_cast<void*>(workspace);
        a.workspace_bytes = workspace_bytes;
        a.logits = reinterpret_cast<float*>(logits);
        a.state = reinterpret_cast<double*>(state);
        a.z = reinterpret_cast<const void*>(z);
        a.ldz = ldz;
        a.epilogue = epilogue;
        a.pooled = reinterpret_cast<float*>(pooled);
        a.weights_out = reinterpret_cast<float*>(weights_out);
        a.status = reinterpret_cast<int*>(status);
        std::string err;
        {
          py::gil_scoped_release release;
          err = hsafast::cuda::pool_forward(a, reinterpret_cast<void*>(stream));
        }
        if (!err.empty()) throw std::runtime_error(err);
      },
      py::arg("h"), py::arg("ldh"), py::arg("dtype"), py::arg("n"), py::arg("dim"),
      py::arg("weights"), py::arg("bias_v"), py::arg("bias_u"), py::arg("w"), py::arg("bias_w"),
      py::arg("hidden"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("logits"),
      py::arg("state"), py::arg("stream"), py::arg("z") = 0, py::arg("ldz") = 0,
      py::arg("epilogue") = 1, py::arg("pooled") = 0, py::arg("weights_out") = 0,
      py::arg("status") = 0,
      "Gated-attention pooling on the GPU from raw device pointers: h (n x dim, row stride "
      "ldh, dtype 0 bf16 / 1 fp16), weights [V; U] (2H x dim, same dtype), fp32 biases and w; "
      "writes the float64 state [m, s, acc(dim)] and, when logits != 0, the fp32 logits. "
      "With z != 0 (Z = h @ [V; U]^T, n x 2H, row stride ldz, same dtype) the tensor-core "
      "projection is skipped. epilogue 1 is the one-pass epilogue, 0 the three-kernel one. "
      "Optional outputs: pooled (dim fp32, acc / s), weights_out (n fp32 softmax weights, "
      "needs logits, may be the same buffer) and status (int32, 1 when the state is not "
      "finite).");
#endif
}
