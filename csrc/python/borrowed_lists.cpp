// totalnorm._borrowed: the Python entry of the two list operators for plain
// lists of plain tensors, calling the same dispatcher operators as
// torch.ops.totalnorm with the list's tensors borrowed instead of copied.
//
// Why: torch.ops turns a Python list into an owning Tensor[] and releases it
// with the GIL dropped. In torch 2.14 a tensor that also has a Python object
// moves that object's reference (under the GIL) when its C++ count goes
// 1 -> 2 and back (c10 intrusive_ptr's incref_pyobject/decref_pyobject), so
// the list costs about 90 ns per tensor, more than the op's own work on
// thousands of small gradients. Borrowed tensors leave the counts alone; the list's items are
// kept alive by one tuple while the GIL is released.
//
// Only the plain case is taken: a list of exact Tensors (or Parameters), no
// active torch function mode, a float order, a bool flag and a dtype or None. Anything else returns NotImplemented and the
// caller goes through torch.ops, so errors and overrides behave exactly as
// they do there. Dispatch keys (autograd, Python dispatch modes, functorch)
// are the dispatcher's, as for any other call.
//
// This is the one part of totalnorm that links libtorch_python and Python; the
// operators themselves live in the Python-free libtotalnorm.so, which the
// package loads first (this module finds the operators by name).

#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <optional>
#include <vector>

#include "../dispatch.h"

namespace totalnorm::python {
namespace {

// Tensors that alias the list's tensors without owning a reference; the
// destructor gives each alias up without touching the count.
class Borrowed {
 public:
  explicit Borrowed(size_t n) { tensors_.reserve(n); }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  ~Borrowed() {
    for (auto& t : tensors_) c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(t);
  }
  void add(const at::Tensor& t) { tensors_.push_back(c10::MaybeOwnedTraits<at::Tensor>::createBorrow(t)); }
  at::TensorList list() const { return tensors_; }

 private:
  std::vector<at::Tensor> tensors_;
};

// The list's tensors borrowed, or false where the call must go through torch.ops:
// anything but a non-empty list of exact Tensors and Parameters (a subclass may
// override __torch_function__), or an active torch function mode.
bool borrow(PyObject* list, Borrowed& out) {
  if (!PyList_CheckExact(list) || PyList_GET_SIZE(list) == 0 || at::impl::torch_function_mode_enabled()) {
    return false;
  }
  const Py_ssize_t n = PyList_GET_SIZE(list);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyList_GET_ITEM(list, i);
    if (!THPVariable_CheckExact(item)) return false;
    out.add(THPVariable_Unpack(item));
  }
  return true;
}

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

// call(tensors) on the list's tensors borrowed, with the GIL released; NotImplemented
// for a list borrow() does not take.
template <class Call>
PyObject* on_borrowed(PyObject* list, Call&& call) {
  Borrowed tensors(static_cast<size_t>(PyList_Check(list) ? PyList_GET_SIZE(list) : 0));
  if (!borrow(list, tensors)) return not_implemented();
  const THPObjectPtr keep(PyList_AsTuple(list));  // the items outlive the call
  if (!keep) return nullptr;
  at::Tensor result;
  {
    WithoutGil released;
    result = call(tensors.list());
  }
  return THPVariable_Wrap(std::move(result));
}

// total_norm(tensors: list, norm_type: float, error_if_nonfinite: bool, dtype: torch.dtype | None)
PyObject* total_norm(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 4 || !PyFloat_CheckExact(args[1]) || !PyBool_Check(args[2]) ||
      (args[3] != Py_None && !THPDtype_Check(args[3]))) {
    return not_implemented();
  }
  const double p = PyFloat_AS_DOUBLE(args[1]);
  const bool error_if_nonfinite = args[2] == Py_True;
  std::optional<at::ScalarType> dtype;
  if (args[3] != Py_None) dtype = reinterpret_cast<THPDtype*>(args[3])->scalar_type;
  static const auto op = ops::handle<ops::TotalNormFn>("totalnorm::total_norm");
  return on_borrowed(args[0], [&](at::TensorList tensors) { return op.call(tensors, p, error_if_nonfinite, dtype); });
  END_HANDLE_TH_ERRORS
}

// clip_grad_norm_(grads: list, max_norm: float, norm_type: float, error_if_nonfinite: bool)
PyObject* clip_grad_norm_(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 4 || !PyFloat_CheckExact(args[1]) || !PyFloat_CheckExact(args[2]) || !PyBool_Check(args[3])) {
    return not_implemented();
  }
  const double max_norm = PyFloat_AS_DOUBLE(args[1]);
  const double p = PyFloat_AS_DOUBLE(args[2]);
  const bool error_if_nonfinite = args[3] == Py_True;
  static const auto op = ops::handle<ops::ClipGradNormFn>("totalnorm::clip_grad_norm_");
  return on_borrowed(args[0], [&](at::TensorList grads) { return op.call(grads, max_norm, p, error_if_nonfinite); });
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"total_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&total_norm)), METH_FASTCALL,
     "torch.ops.totalnorm.total_norm.default on a borrowed plain list; NotImplemented otherwise."},
    {"clip_grad_norm_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&clip_grad_norm_)),
     METH_FASTCALL, "torch.ops.totalnorm.clip_grad_norm_.default on a borrowed plain list; NotImplemented otherwise."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_borrowed", "Borrowed-list entries of the totalnorm operators.", -1,
                      methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace
}  // namespace totalnorm::python

PyMODINIT_FUNC PyInit__borrowed() { return PyModule_Create(&totalnorm::python::module); }
