/* Publishing pre-serialized (CDR) messages straight through rcl, without rclpy's Python wrapper.
 *
 * Why: rclpy's Publisher.publish(bytes) runs ~10 Python-level steps (the handle's context manager, two isinstance
 * checks, the pybind11 call copying the bytes into a std::string) before rcl_publish_serialized_message. Cold, at
 * 1 kHz, that is ~3.4 us of a tool tip's ~13 us from recv() to published (docs/performance.md, "The bridge's publish
 * through rcl"). This type calls the same rcl function on the same publisher with the same bytes.
 *
 * No link-time dependency on ROS: rcl_publish_serialized_message and rcutils' error functions are looked up with
 * dlsym in the librcl.so / librcutils.so that rclpy has already loaded (RTLD_NOLOAD); if they are not there the
 * constructor raises OSError and the caller keeps rclpy's publish (spine_nav/nodes/direct_publish.py).
 * The two rcutils structs below are declared here with the layout of rcutils/types/uint8_array.h and
 * rcutils/allocator.h (ROS 2 Jazzy; unchanged since Dashing); tests/test_direct_publish.py sends messages through
 * a real DDS subscription and compares the bytes.
 *
 * Lifetime: the caller (direct_publish.DirectPublisher) keeps rclpy's publisher handle "in use" from before the
 * first publish until close(), so rclpy cannot finalize the rcl publisher while this object holds its address;
 * close() forgets the address first (a later publish raises RuntimeError). Called with the GIL held, like rclpy. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>

typedef struct {  /* rcutils_allocator_t */
    void *allocate, *deallocate, *reallocate, *zero_allocate, *state;
} rcutils_allocator_layout;

typedef struct {  /* rcutils_uint8_array_t == rcl_serialized_message_t */
    uint8_t *buffer;
    size_t buffer_length;
    size_t buffer_capacity;
    rcutils_allocator_layout allocator;
} serialized_message_layout;

typedef struct { char str[1024]; } error_string_layout;  /* rcutils_error_string_t (RCUTILS_ERROR_MESSAGE_MAX_LENGTH) */

typedef int32_t (*publish_serialized_fn)(const void *publisher, const serialized_message_layout *msg, void *allocation);
typedef error_string_layout (*get_error_string_fn)(void);
typedef void (*reset_error_fn)(void);

static publish_serialized_fn rcl_publish_serialized;
static get_error_string_fn rcutils_get_error_string;
static reset_error_fn rcutils_reset_error;

/* Resolve the three functions in the already loaded libraries; 0 on success, else -1 with OSError set. */
static int resolve(void) {
    if (rcl_publish_serialized != NULL)
        return 0;
    void *rcl = dlopen("librcl.so", RTLD_NOW | RTLD_NOLOAD);
    void *rcutils = dlopen("librcutils.so", RTLD_NOW | RTLD_NOLOAD);
    if (rcl == NULL || rcutils == NULL) {
        PyErr_SetString(PyExc_OSError, "librcl.so / librcutils.so not loaded in this process (import rclpy first)");
        return -1;
    }
    get_error_string_fn get_error = (get_error_string_fn)dlsym(rcutils, "rcutils_get_error_string");
    reset_error_fn reset = (reset_error_fn)dlsym(rcutils, "rcutils_reset_error");
    publish_serialized_fn publish = (publish_serialized_fn)dlsym(rcl, "rcl_publish_serialized_message");
    if (get_error == NULL || reset == NULL || publish == NULL) {
        PyErr_SetString(PyExc_OSError, "rcl_publish_serialized_message or rcutils' error functions not found");
        return -1;
    }
    rcutils_get_error_string = get_error;
    rcutils_reset_error = reset;
    rcl_publish_serialized = publish;
    return 0;
}

typedef struct {
    PyObject_HEAD
    const void *publisher;  /* rcl_publisher_t *, NULL once closed */
    PyObject *topic;        /* str, for error messages */
} Publisher;

static int Publisher_init(Publisher *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"address", "topic", NULL};
    PyObject *address_obj, *topic;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!U", kwlist, &PyLong_Type, &address_obj, &topic))
        return -1;
    unsigned long long address = PyLong_AsUnsignedLongLong(address_obj);  /* OverflowError when negative or too big */
    if (address == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (address == 0) {
        PyErr_Format(PyExc_ValueError, "publisher address of %U is 0 (a destroyed rclpy publisher?)", topic);
        return -1;
    }
    if (resolve() < 0)
        return -1;
    Py_INCREF(topic);
    Py_XSETREF(self->topic, topic);
    self->publisher = (const void *)(uintptr_t)address;
    return 0;
}

static void Publisher_dealloc(Publisher *self) {
    Py_XDECREF(self->topic);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Publisher_publish(Publisher *self, PyObject *data) {
    if (self->topic == NULL)  /* made by __new__ without __init__: no topic to name, no address */
        return PyErr_Format(PyExc_RuntimeError, "publish: this Publisher was never initialised (address, topic)");
    if (!PyBytes_CheckExact(data))
        return PyErr_Format(PyExc_TypeError, "publish to %U: expected bytes (a serialized message), got %s",
                            self->topic, Py_TYPE(data)->tp_name);
    if (self->publisher == NULL)
        return PyErr_Format(PyExc_RuntimeError, "publish to %U: the publisher was closed", self->topic);
    serialized_message_layout msg = {0};
    msg.buffer = (uint8_t *)PyBytes_AS_STRING(data);
    msg.buffer_length = msg.buffer_capacity = (size_t)PyBytes_GET_SIZE(data);
    int32_t ret = rcl_publish_serialized(self->publisher, &msg, NULL);
    if (ret != 0) {
        error_string_layout err = rcutils_get_error_string();
        rcutils_reset_error();
        err.str[sizeof(err.str) - 1] = '\0';
        return PyErr_Format(PyExc_RuntimeError, "publish to %U: rcl_publish_serialized_message returned %d: %s",
                            self->topic, (int)ret, err.str);
    }
    Py_RETURN_NONE;
}

static PyObject *Publisher_close(Publisher *self, PyObject *Py_UNUSED(ignored)) {
    self->publisher = NULL;
    Py_RETURN_NONE;
}

static PyObject *Publisher_closed(Publisher *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->publisher == NULL);
}

static PyMethodDef Publisher_methods[] = {
    {"publish", (PyCFunction)Publisher_publish, METH_O,
     "publish(data: bytes) -> None: rcl_publish_serialized_message of the serialized message ``data``."},
    {"close", (PyCFunction)Publisher_close, METH_NOARGS,
     "Forget the publisher's address: later publishes raise RuntimeError."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Publisher_getset[] = {
    {"closed", (getter)Publisher_closed, NULL, "True after close()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PublisherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spine_nav.nodes._rcl_publish.Publisher",
    .tp_doc = "Publisher(address: int, topic: str): publish() serialized messages with rcl on the rcl_publisher_t at "
              "``address`` (rclpy's Publisher.handle.pointer, kept in use by the caller until close()).",
    .tp_basicsize = sizeof(Publisher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Publisher_init,
    .tp_dealloc = (destructor)Publisher_dealloc,
    .tp_methods = Publisher_methods,
    .tp_getset = Publisher_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rcl_publish",
    "Serialized messages published straight through rcl (see spine_nav/nodes/direct_publish.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__rcl_publish(void) {
    if (PyType_Ready(&PublisherType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PublisherType);
    if (PyModule_AddObject(m, "Publisher", (PyObject *)&PublisherType) < 0) {
        Py_DECREF(&PublisherType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
