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
// Two more entries serve the across-ranks path (totalnorm/distributed.py) with
// one C pass each instead of Python loops over thousands of DTensors:
// local_parts (which local shards this rank counts) and local_summary (the
// result dtype and the common device of the local tensors). They only read
// Python objects and build new lists; nothing is borrowed across a call into
// Python.
//
// This is the one part of totalnorm that links libtorch_python and Python; the
// operators themselves live in the Python-free libtotalnorm.so, which the
// package loads first (this module finds the operators by name).

#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Device.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
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

// An owned reference, released on scope exit (exceptions included).
class Ref {
 public:
  Ref() = default;
  explicit Ref(PyObject* owned) : p_(owned) {}
  Ref(Ref&& other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
  Ref& operator=(Ref&& other) noexcept {
    std::swap(p_, other.p_);
    return *this;
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  ~Ref() { Py_XDECREF(p_); }
  static Ref of(PyObject* borrowed) {
    Py_XINCREF(borrowed);
    return Ref(borrowed);
  }
  PyObject* get() const { return p_; }
  PyObject* release() { return std::exchange(p_, nullptr); }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  PyObject* p_ = nullptr;
};

// Whether this rank counts a DTensor's local shard, decided once per mesh and
// kinds (types) of placements: what totalnorm.distributed._local_parts keys on.
// Owns the mesh and the types it compares by identity, so neither address can
// be reused by another object while the call runs.
struct Decision {
  Ref mesh;
  std::vector<Ref> kinds;
  bool counts = false;

  // Whether a DTensor on `other_mesh` with these placements (a tuple) has this key.
  bool matches(PyObject* other_mesh, PyObject* placements) const {
    if (mesh.get() != other_mesh || kinds.size() != static_cast<size_t>(PyTuple_GET_SIZE(placements))) return false;
    for (size_t k = 0; k < kinds.size(); ++k) {
      const auto* kind = Py_TYPE(PyTuple_GET_ITEM(placements, static_cast<Py_ssize_t>(k)));
      if (kinds[k].get() != reinterpret_cast<const PyObject*>(kind)) return false;
    }
    return true;
  }
};

PyObject* interned(const char* name) {
  PyObject* s = PyUnicode_InternFromString(name);  // kept for the life of the process
  if (s == nullptr) throw python_error();
  return s;
}

// local_parts(items: list, dtensor: type, counts_here, fn: str, arg: str):
// totalnorm.distributed._local_parts in one pass: (counted, local, meshes), new
// lists. A DTensor (an instance of `dtensor`, subclasses included) gives its
// `_spec`'s mesh and its `_local_tensor`, counted when counts_here(fn, arg, i,
// mesh, placements) says so, called once per new (mesh, placement types) and
// allowed to raise; an exact Tensor or Parameter counts whole. NotImplemented
// for anything else (another object, another Tensor subclass, placements that
// are not a tuple): the caller's Python loop then takes the list and raises its
// errors (counts_here has no side effects, so calling it again is harmless). Nothing is borrowed past a call into Python: the item being read is
// referenced (counts_here may change the list, which is re-read at every index,
// as a Python loop over it would be).
PyObject* local_parts(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
#if defined(Py_GIL_DISABLED)
  return not_implemented();
#endif
  if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyType_Check(args[1])) return not_implemented();
  PyObject* const items = args[0];
  auto* const dtensor = reinterpret_cast<PyTypeObject*>(args[1]);
  static PyObject* const spec_name = interned("_spec");
  static PyObject* const local_name = interned("_local_tensor");
  static PyObject* const mesh_name = interned("mesh");
  static PyObject* const placements_name = interned("placements");
  Ref counted(PyList_New(0));
  Ref local(PyList_New(0));
  Ref meshes(PyList_New(0));
  if (!counted || !local || !meshes) return nullptr;
  std::vector<Decision> decided;
  size_t last = 0;  // the decision the previous DTensor used
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); ++i) {
    const Ref item = Ref::of(PyList_GET_ITEM(items, i));
    if (THPVariable_CheckExact(item.get())) {
      if (PyList_Append(local.get(), item.get()) < 0 || PyList_Append(counted.get(), item.get()) < 0) return nullptr;
      continue;
    }
    if (!PyType_IsSubtype(Py_TYPE(item.get()), dtensor)) return not_implemented();
    const Ref spec(PyObject_GetAttr(item.get(), spec_name));
    if (!spec) return nullptr;
    const Ref part(PyObject_GetAttr(item.get(), local_name));
    if (!part) return nullptr;
    const Ref mesh(PyObject_GetAttr(spec.get(), mesh_name));
    if (!mesh) return nullptr;
    const Ref placements(PyObject_GetAttr(spec.get(), placements_name));
    if (!placements) return nullptr;
    if (!PyTuple_Check(placements.get())) return not_implemented();
    if (last >= decided.size() || !decided[last].matches(mesh.get(), placements.get())) {
      last = 0;
      while (last < decided.size() && !decided[last].matches(mesh.get(), placements.get())) ++last;
      if (last == decided.size()) {
        // The key is taken before the call, as _local_parts takes it.
        Decision d{Ref::of(mesh.get()), {}, false};
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(placements.get()); ++k) {
          d.kinds.push_back(Ref::of(reinterpret_cast<PyObject*>(Py_TYPE(PyTuple_GET_ITEM(placements.get(), k)))));
        }
        const Ref index(PyLong_FromSsize_t(i));
        if (!index) return nullptr;
        PyObject* call_args[] = {args[3], args[4], index.get(), mesh.get(), placements.get()};
        const Ref answer(PyObject_Vectorcall(args[2], call_args, 5, nullptr));
        if (!answer) return nullptr;
        const int counts = PyObject_IsTrue(answer.get());
        if (counts < 0) return nullptr;
        d.counts = counts == 1;
        decided.push_back(std::move(d));
      }
    }
    bool seen = false;
    for (Py_ssize_t m = PyList_GET_SIZE(meshes.get()); m-- > 0 && !seen;) {
      seen = PyList_GET_ITEM(meshes.get(), m) == mesh.get();
    }
    if (!seen && PyList_Append(meshes.get(), mesh.get()) < 0) return nullptr;
    if (PyList_Append(local.get(), part.get()) < 0) return nullptr;
    if (decided[last].counts && PyList_Append(counted.get(), part.get()) < 0) return nullptr;
  }
  return PyTuple_Pack(3, counted.get(), local.get(), meshes.get());
  END_HANDLE_TH_ERRORS
}

// local_summary(tensors: list): (dtype, device) of a non-empty list of exact
// Tensors and Parameters, in one pass: the promotion of their real dtypes (what
// totalnorm.distributed.result_dtype computes), and the device they all share, or
// None. NotImplemented for anything else, for a dtype the operators do not take
// (result_dtype then computes it, or the operator rejects it), and under an
// active torch function mode (which would see Python's reads of .dtype and .device).
PyObject* local_summary(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 1 || !PyList_CheckExact(args[0]) || PyList_GET_SIZE(args[0]) == 0 ||
      at::impl::torch_function_mode_enabled()) {
    return not_implemented();
  }
  // No Python code runs in the loop: the list and its items stay as they are.
  PyObject* const list = args[0];
  std::optional<at::ScalarType> seen;  // the last dtype seen
  at::ScalarType out = at::kFloat;
  std::optional<c10::Device> device;
  bool one_device = true;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); ++i) {
    PyObject* item = PyList_GET_ITEM(list, i);
    if (!THPVariable_CheckExact(item)) return not_implemented();
    const at::Tensor& t = THPVariable_Unpack(item);
    const at::ScalarType kind = t.scalar_type();
    if (kind != seen) {
      at::ScalarType real = kind;
      switch (kind) {
        case at::kComplexFloat: real = at::kFloat; break;
        case at::kComplexDouble: real = at::kDouble; break;
        case at::kHalf: case at::kBFloat16: case at::kFloat: case at::kDouble: break;
        default: return not_implemented();
      }
      out = seen ? c10::promoteTypes(out, real) : real;
      seen = kind;
    }
    if (!device) {
      device = t.device();
    } else if (one_device && t.device() != *device) {
      one_device = false;
    }
  }
  Ref dtype = Ref::of(reinterpret_cast<PyObject*>(torch::getTHPDtype(out)));
  Ref where = one_device ? Ref(THPDevice_New(*device)) : Ref::of(Py_None);
  if (!where) return nullptr;
  return PyTuple_Pack(2, dtype.get(), where.get());
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
    {"local_parts", fastcall<&local_parts>(), METH_FASTCALL,
     "totalnorm.distributed._local_parts in one pass: (counted, local, meshes)."},
    {"local_summary", fastcall<&local_summary>(), METH_FASTCALL,
     "(result dtype, common device or None) of a list of plain tensors."},
    {"_releases_gil", fastcall<&releases_gil>(), METH_FASTCALL, "Whether a call on this list releases the GIL."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_borrowed", "Borrowed-list entries of the totalnorm operators.", -1,
                      methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace
}  // namespace totalnorm::python

PyMODINIT_FUNC PyInit__borrowed() { return PyModule_Create(&totalnorm::python::module); }
