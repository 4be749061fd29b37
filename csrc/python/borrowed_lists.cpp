// totalnorm._borrowed: the Python entry of the list operators (total_norm,
// clip_grad_norm_, and the partials and scale_ steps the across-ranks path
// calls) for plain lists of plain tensors. It calls the same dispatcher
// operators as torch.ops.totalnorm, with the list's tensors borrowed instead of
// copied where that is safe. Each returns NotImplemented where the caller must
// use torch.ops.
//
// Why: torch.ops turns a Python list into an owning Tensor[] and releases it
// with the GIL dropped. In torch 2.14 a tensor that also has a Python object
// moves that object's reference (under the GIL) when its C++ count goes
// 1 -> 2 and back (c10 intrusive_ptr's incref_pyobject/decref_pyobject), so
// the list costs about 90 ns per tensor, more than the op's own work on
// thousands of small gradients.
//
// How, safely:
// - Short calls keep the GIL and borrow: the tensors are aliased without a
//   count change, and the items' Python objects are referenced first (no
//   Python allocation, so no garbage collection, comes between). With the GIL
//   held no other thread can drop, replace or swap (torch.utils.swap_tensors)
//   an item. Short: all tensors are on one kind of accelerator, whose kernels
//   run asynchronously, and the call does not wait for them
//   (error_if_nonfinite does); or all are on the CPU and the estimated work
//   (Work below) is within a few ms. About 25 ns a tensor.
// - Other calls take owning references with the GIL held, release it for the
//   call and drop them after taking it back: the protection torch.ops gives
//   (swap_tensors refuses a tensor whose count is above 1), at about 50 ns a
//   tensor instead of 90.
//
// Only the plain case is taken: a non-empty list of exact Tensors (or
// Parameters), no active torch function or dispatch mode, and every other
// argument of its exact type (a Python float for a float, a bool, a dtype or
// None, an exact Tensor). Anything else returns NotImplemented and the caller goes through
// torch.ops, so errors and overrides behave exactly as they do there. Other
// dispatch keys (autograd, functorch, the tracer) are the dispatcher's, as for
// any other call.
//
// This is the one part of totalnorm that links libtorch_python and Python; the
// operators themselves live in the Python-free libtotalnorm.so, which the
// package loads first (this module finds the operators by name).

#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "../norm_math.h"

namespace totalnorm::python {
namespace {

// The work of a CPU call, in bytes of float32 streaming read (about 20 ps a byte
// here): each tensor counts kPerTensor on top of its bytes (the op's own work per
// tensor, more where clipping leaves a 0-dim or complex tensor to torch's mul_),
// times the passes over the bytes, times kPowCost for orders whose contribution
// needs pow(). Calls up to kHoldGilWork keep the GIL: a few ms, about what
// Python's 5 ms switch interval lets any thread hold it.
struct Work {
  int passes = 1;  // 1: a reduction; 2: scale_ (read and write); 3: clip (both)
  bool general_order = false;
};
constexpr double kPerTensor = 1024.0;
constexpr double kPowCost = 128.0;
constexpr double kHoldGilWork = 128.0 * (1 << 20);

bool general_order(double p) { return classify_order(p) == Order::General; }

// The tensors of a plain list, held for one call: borrowed aliases (the items'
// Python objects referenced) until own() turns them into owning references.
// Destroyed with the GIL held.
class Items {
 public:
  Items() = default;
  Items(const Items&) = delete;
  Items& operator=(const Items&) = delete;
  ~Items() {
    if (borrowed_) {
      for (auto& t : tensors_) c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(t);
    }
    for (PyObject* item : referenced_) Py_DECREF(item);
  }

  // Borrows the list's tensors; false where the call must go through torch.ops:
  // anything but a non-empty list of exact Tensors and Parameters (a subclass may
  // override __torch_function__), or an active torch function or dispatch mode
  // (Python code that runs inside the call, and may let other threads run).
  bool take(PyObject* list) {
#if defined(Py_GIL_DISABLED)
    return false;  // borrowing relies on the GIL: a free-threaded build takes torch.ops
#endif
    if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) == 0 || at::impl::torch_function_mode_enabled() ||
        c10::impl::dispatch_mode_enabled()) {
      return false;
    }
    const Py_ssize_t n = PyList_GET_SIZE(list);
    tensors_.reserve(static_cast<size_t>(n));
    referenced_.reserve(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(list, i);
      if (!THPVariable_CheckExact(item)) return false;
      Py_INCREF(item);
      referenced_.push_back(item);
      tensors_.push_back(c10::MaybeOwnedTraits<at::Tensor>::createBorrow(THPVariable_Unpack(item)));
    }
    return true;
  }

  // Whether the call may take long enough to release the GIL for (see the top).
  bool long_call(bool waits_for_device, Work work) const {
    bool any_cpu = false;
    bool any_other = false;
    double bytes = 0.0;  // double: no overflow on huge expanded views
    for (const auto& t : tensors_) {
      if (t.is_cpu()) {
        any_cpu = true;
        bytes += static_cast<double>(t.numel()) * static_cast<double>(t.element_size()) + kPerTensor;
      } else {
        any_other = true;
      }
    }
    if (any_cpu && any_other) return true;  // copies between devices may wait
    if (any_other) return waits_for_device;
    return bytes * work.passes * (work.general_order ? kPowCost : 1.0) > kHoldGilWork;
  }

  // Owning references instead of the aliases (taken with the GIL held).
  void own() {
    for (auto& t : tensors_) {
      at::Tensor owned = t;
      c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(t);
      t = std::move(owned);
    }
    borrowed_ = false;
  }

  at::TensorList list() const { return tensors_; }

 private:
  std::vector<at::Tensor> tensors_;
  std::vector<PyObject*> referenced_;
  bool borrowed_ = true;
};

// The GIL released for the scope; taken back on the way out, exceptions included.
class WithoutGil {
 public:
  WithoutGil() : state_(PyEval_SaveThread()) {}
  WithoutGil(const WithoutGil&) = delete;
  WithoutGil& operator=(const WithoutGil&) = delete;
  ~WithoutGil() { PyEval_RestoreThread(state_); }

 private:
  PyThreadState* state_;
};

PyObject* not_implemented() { Py_RETURN_NOTIMPLEMENTED; }

// (first, second) as a Python tuple of two tensors, as torch.ops returns it.
PyObject* wrap_pair(at::Tensor first, at::Tensor second) {
  PyObject* a = THPVariable_Wrap(std::move(first));
  if (a == nullptr) return nullptr;
  PyObject* b = THPVariable_Wrap(std::move(second));
  if (b == nullptr) {
    Py_DECREF(a);
    return nullptr;
  }
  PyObject* out = PyTuple_Pack(2, a, b);  // references both; ours go either way
  Py_DECREF(a);
  Py_DECREF(b);
  return out;
}

// call(tensors) on the list's tensors (held as Items describes): its tensor (a
// tuple of two for the per-tensor ops), or None for an in-place call;
// NotImplemented for a list Items does not take.
template <class Call>
PyObject* on_list(PyObject* list, bool waits_for_device, Work work, Call&& call) {
  Items items;
  if (!items.take(list)) return not_implemented();
  const bool release = items.long_call(waits_for_device, work);
  if (release) items.own();
  auto run = [&] {
    if (!release) return call(items.list());
    WithoutGil released;
    return call(items.list());
  };
  using Result = decltype(call(items.list()));
  if constexpr (std::is_void_v<Result>) {
    run();
    Py_RETURN_NONE;
  } else if constexpr (std::is_same_v<Result, std::tuple<at::Tensor, at::Tensor>>) {
    auto [first, second] = run();
    return wrap_pair(std::move(first), std::move(second));
  } else {
    return THPVariable_Wrap(run());
  }
}

// The norm entries: (tensors: list, norm_type: float, error_if_nonfinite: bool,
// dtype: torch.dtype | None), for total_norm (Fn = TotalNormFn, a tensor) and
// total_norm_per_tensor (a pair of tensors).
template <class Fn, const char* Name>
PyObject* norm_entry(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4 || !PyFloat_CheckExact(args[1]) || !PyBool_Check(args[2]) ||
      (args[3] != Py_None && !THPDtype_Check(args[3]))) {
    return not_implemented();
  }
  const double p = PyFloat_AS_DOUBLE(args[1]);
  const bool error_if_nonfinite = args[2] == Py_True;
  std::optional<at::ScalarType> dtype;
  if (args[3] != Py_None) dtype = reinterpret_cast<THPDtype*>(args[3])->scalar_type;
  static const auto op = ops::handle<Fn>(Name);
  return on_list(args[0], error_if_nonfinite, Work{1, general_order(p)},
                 [&](at::TensorList tensors) { return op.call(tensors, p, error_if_nonfinite, dtype); });
}

// The clip entries: (grads: list, max_norm: float, norm_type: float, error_if_nonfinite: bool),
// for clip_grad_norm_ and clip_grad_norm_per_tensor_.
template <class Fn, const char* Name>
PyObject* clip_entry(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4 || !PyFloat_CheckExact(args[1]) || !PyFloat_CheckExact(args[2]) || !PyBool_Check(args[3])) {
    return not_implemented();
  }
  const double max_norm = PyFloat_AS_DOUBLE(args[1]);
  const double p = PyFloat_AS_DOUBLE(args[2]);
  const bool error_if_nonfinite = args[3] == Py_True;
  static const auto op = ops::handle<Fn>(Name);
  return on_list(args[0], error_if_nonfinite, Work{3, general_order(p)},
                 [&](at::TensorList grads) { return op.call(grads, max_norm, p, error_if_nonfinite); });
}

constexpr char kTotalNorm[] = "totalnorm::total_norm";
constexpr char kTotalNormPerTensor[] = "totalnorm::total_norm_per_tensor";
constexpr char kClipGradNorm[] = "totalnorm::clip_grad_norm_";
constexpr char kClipGradNormPerTensor[] = "totalnorm::clip_grad_norm_per_tensor_";

PyObject* total_norm(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  return norm_entry<ops::TotalNormFn, kTotalNorm>(args, nargs);
  END_HANDLE_TH_ERRORS
}

PyObject* total_norm_per_tensor(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  return norm_entry<ops::TotalNormPerTensorFn, kTotalNormPerTensor>(args, nargs);
  END_HANDLE_TH_ERRORS
}

PyObject* clip_grad_norm_(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  return clip_entry<ops::ClipGradNormFn, kClipGradNorm>(args, nargs);
  END_HANDLE_TH_ERRORS
}

PyObject* clip_grad_norm_per_tensor_(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  return clip_entry<ops::ClipGradNormPerTensorFn, kClipGradNormPerTensor>(args, nargs);
  END_HANDLE_TH_ERRORS
}

// partials(tensors: list, norm_type: float): the step the across-ranks path calls.
PyObject* partials(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 2 || !PyFloat_CheckExact(args[1])) return not_implemented();
  const double p = PyFloat_AS_DOUBLE(args[1]);
  static const auto op = ops::handle<ops::PartialsFn>("totalnorm::partials");
  return on_list(args[0], false, Work{1, general_order(p)},
                 [&](at::TensorList tensors) { return op.call(tensors, p); });
  END_HANDLE_TH_ERRORS
}

// scale_(tensors: list, coef: Tensor): the across-ranks clip's scaling step.
PyObject* scale_(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 2 || !THPVariable_CheckExact(args[1])) return not_implemented();
  // Owned, as torch.ops owns it: a call that releases the GIL must keep a swap
  // (torch.utils.swap_tensors) away from it too.
  const at::Tensor coef = THPVariable_Unpack(args[1]);
  static const auto op = ops::handle<ops::ScaleFn>("totalnorm::scale_");
  return on_list(args[0], false, Work{2, false}, [&](at::TensorList tensors) { op.call(tensors, coef); });
  END_HANDLE_TH_ERRORS
}

// _releases_gil(tensors: list, passes: int, norm_type: float, waits_for_device: bool):
// whether a call on this list would release the GIL (for tests of the policy).
PyObject* releases_gil(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 4 || !PyLong_CheckExact(args[1]) || !PyFloat_CheckExact(args[2]) || !PyBool_Check(args[3])) {
    return not_implemented();
  }
  Items items;
  if (!items.take(args[0])) return not_implemented();
  const Work work{static_cast<int>(PyLong_AsLong(args[1])), general_order(PyFloat_AS_DOUBLE(args[2]))};
  return PyBool_FromLong(items.long_call(args[3] == Py_True, work));
  END_HANDLE_TH_ERRORS
}

template <PyObject* (*F)(PyObject*, PyObject* const*, Py_ssize_t)>
PyCFunction fastcall() {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(F));
}

PyMethodDef methods[] = {
    {"total_norm", fastcall<&total_norm>(), METH_FASTCALL, "torch.ops.totalnorm.total_norm.default, borrowed."},
    {"clip_grad_norm_", fastcall<&clip_grad_norm_>(), METH_FASTCALL,
     "torch.ops.totalnorm.clip_grad_norm_.default, borrowed."},
    {"total_norm_per_tensor", fastcall<&total_norm_per_tensor>(), METH_FASTCALL,
     "torch.ops.totalnorm.total_norm_per_tensor.default, borrowed."},
    {"clip_grad_norm_per_tensor_", fastcall<&clip_grad_norm_per_tensor_>(), METH_FASTCALL,
     "torch.ops.totalnorm.clip_grad_norm_per_tensor_.default, borrowed."},
    {"partials", fastcall<&partials>(), METH_FASTCALL, "torch.ops.totalnorm.partials.default, borrowed."},
    {"scale_", fastcall<&scale_>(), METH_FASTCALL, "torch.ops.totalnorm.scale_.default, borrowed."},
    {"_releases_gil", fastcall<&releases_gil>(), METH_FASTCALL, "Whether a call on this list releases the GIL."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_borrowed", "Borrowed-list entries of the totalnorm operators.", -1,
                      methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace
}  // namespace totalnorm::python

PyMODINIT_FUNC PyInit__borrowed() { return PyModule_Create(&totalnorm::python::module); }
