// Arrays reach the compiled kernels through the buffer protocol (PyArg "y*" read-only, "w*"
// writable: C-contiguous, no numpy headers at build time). The Python wrappers pass the dtypes
// each kernel documents; a Buffer only frees its view.
#pragma once
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>

struct Buffer {
    Py_buffer view{};
    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() {
        if (view.obj) PyBuffer_Release(&view);
    }
    template <class T>
    T* as() const {
        return static_cast<T*>(view.buf);
    }
    template <class T>
    int64_t size() const {
        return view.len / static_cast<Py_ssize_t>(sizeof(T));
    }
};
