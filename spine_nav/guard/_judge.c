/* spine_nav.guard._judge: the trajectory guard's per-sample geometry in one C call each.
 *
 * Why C (issue 17, docs/performance.md "The guard's geometry in C"): the guard node's tool-sample callback took
 * ~10.6 us warm against the bare relay's ~3.0 us (spine_nav/bench/guard_profile.py, 2026-12-06), ~5.2 us of it
 * in the judging step, and at 1 kHz it runs cold (~24 us paced against the relay's ~12 us). The quaternion check,
 * tool axis and the seven guard quantities were ~90 float operations through ~10 interpreted lines and three
 * Python calls (tip_and_axis_from_quat, unit_quat_xyzw, compute_metrics); numpy's per-call overhead exceeds the
 * work at this size (spine_nav/guard/metrics.py "Implementation choice").
 *
 * Every function here has a pure-Python twin that defines its result and that the tests compare it with,
 * bit for bit (tests/test_native_guard.py):
 *   tip_axis_quat  <-> metrics.tip_and_axis_from_quat_py (with geometry.unit_quat_xyzw)
 *   metrics        <-> metrics.compute_metrics_py
 * The same floating-point expressions in the same order (built with -ffp-contract=off: no fused multiply-add),
 * libm's sqrt and atan2 as Python's math module calls them (atan2 through CPython's m_atan2 special cases,
 * math.degrees as x * (180.0 / pi)), so the same doubles. Anything unusual (not exact floats in a tuple or list
 * of the right length, a failed check) is declined with None, never guessed: the caller then runs the Python
 * twin, which raises its PoseError with the exact message as before.
 *
 * Units and frames: as the twins (Reference frame, mm, deg; quaternion order xyzw).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* set once by configure() from the Python constants (one source of truth: geometry.QUAT_NORM_TOL,
 * metrics.PARALLEL_EPS, metrics.GuardMetrics); the functions decline until then */
static double quat_norm_tol = -1.0;
static double parallel_eps = 0.0;
static PyTypeObject *metrics_type = NULL;
/* CPython's mathmodule.c: static const double radToDeg = 180.0 / Py_MATH_PI; math.degrees(x) = x * radToDeg */
static const double RAD_TO_DEG = 180.0 / 3.14159265358979323846;
static const double PI = 3.14159265358979323846;

/* CPython's m_atan2 (Modules/mathmodule.c), what math.atan2 calls: C99 Annex F special cases, then libm */
static double py_atan2(double y, double x) {
    if (isnan(x) || isnan(y))
        return NAN;
    if (isinf(y)) {
        if (isinf(x)) {
            if (copysign(1., x) == 1.)
                return copysign(0.25 * PI, y);
            return copysign(0.75 * PI, y);
        }
        return copysign(0.5 * PI, y);
    }
    if (isinf(x) || y == 0.) {
        if (copysign(1., x) == 1.)
            return copysign(0., y);
        return copysign(PI, y);
    }
    return atan2(y, x);
}

/* ``seq`` is an exact tuple or list of exactly ``n`` exact floats -> their items (borrowed) and values; else 0
 * (the Python twin then unpacks it: other sequences, ints, numpy scalars keep their Python semantics) */
static int exact_floats(PyObject *seq, Py_ssize_t n, PyObject **items, double *out) {
    PyObject **src;
    if (PyTuple_CheckExact(seq) && PyTuple_GET_SIZE(seq) == n)
        src = &PyTuple_GET_ITEM(seq, 0);
    else if (PyList_CheckExact(seq) && PyList_GET_SIZE(seq) == n)
        src = &PyList_GET_ITEM(seq, 0);
    else
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyFloat_CheckExact(src[i]))
            return 0;
        out[i] = PyFloat_AS_DOUBLE(src[i]);
        if (items != NULL)
            items[i] = src[i];
    }
    return 1;
}

static PyObject *float_tuple(const double *v, Py_ssize_t n) {
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyFloat_FromDouble(v[i]);
        if (f == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, f);
    }
    return t;
}

PyDoc_STRVAR(configure_doc,
"configure(quat_norm_tol, parallel_eps, metrics_type) -> None\n\n"
"The constants the functions use, from their Python definitions (spine_nav/guard/native.py calls it once):\n"
"geometry.QUAT_NORM_TOL, metrics.PARALLEL_EPS and the NamedTuple class metrics() builds (GuardMetrics).");

static PyObject *configure(PyObject *self, PyObject *args) {
    double tol, eps;
    PyObject *type;
    if (!PyArg_ParseTuple(args, "ddO!", &tol, &eps, &PyType_Type, &type))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure: metrics_type must be a tuple subclass (a NamedTuple)");
        return NULL;
    }
    if (!(tol >= 0.0) || !(eps >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "configure: quat_norm_tol and parallel_eps must be >= 0");
        return NULL;
    }
    Py_INCREF(type);
    Py_XSETREF(metrics_type, (PyTypeObject *)type);
    quat_norm_tol = tol;
    parallel_eps = eps;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tip_axis_quat_doc,
"tip_axis_quat(q_xyzw, t_mm) -> ((px, py, pz), (ax, ay, az)) | None\n\n"
"metrics.tip_and_axis_from_quat_py in C: the tip (the translation's own float objects, mm) and the unit tool\n"
"axis (third column of the rotation of the renormalised quaternion). None when any check fails or an input\n"
"is not a tuple/list of exact floats of length 4 (q) / 3 (t): the twin then raises its PoseError.");

static PyObject *tip_axis_quat(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "tip_axis_quat(q_xyzw, t_mm) takes 2 arguments");
        return NULL;
    }
    double q[4], t[3];
    PyObject *t_items[3];
    if (quat_norm_tol < 0.0 || !exact_floats(args[1], 3, t_items, t) || !exact_floats(args[0], 4, NULL, q))
        Py_RETURN_NONE;
    /* tip_and_axis_from_quat: float(px + py + pz) finite */
    if (!isfinite(t[0] + t[1] + t[2]))
        Py_RETURN_NONE;
    /* geometry.unit_quat_xyzw: n = sqrt(x*x + y*y + z*z + w*w), finite, |n - 1| <= tol, then q / n */
    double x = q[0], y = q[1], z = q[2], w = q[3];
    double n = sqrt(x * x + y * y + z * z + w * w);
    if (!isfinite(n) || fabs(n - 1.0) > quat_norm_tol)
        Py_RETURN_NONE;
    x = x / n;
    y = y / n;
    z = z / n;
    w = w / n;
    const double axis[3] = {2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y)};
    PyObject *a = float_tuple(axis, 3);
    if (a == NULL)
        return NULL;
    PyObject *tip = PyTuple_Pack(3, t_items[0], t_items[1], t_items[2]);
    if (tip == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    PyObject *out = PyTuple_Pack(2, tip, a);
    Py_DECREF(tip);
    Py_DECREF(a);
    return out;
}

PyDoc_STRVAR(metrics_doc,
"metrics(screw, tip, axis) -> GuardMetrics | None\n\n"
"metrics.compute_metrics_py in C. ``screw``: ScrewGeometry.packed, the 10 floats (entry xyz, unit direction\n"
"xyz, target xyz, depth_mm), mm; ``tip`` (mm) and unit ``axis``: 3 floats each. Returns the configured\n"
"NamedTuple (lateral, entry_offset, angle, depth, remaining, predicted, tip_to_entry), built as\n"
"tuple.__new__(GuardMetrics, values) builds it. None when an input is not a tuple/list of exact floats of the\n"
"right length (the twin then runs).");

static PyObject *metrics(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "metrics(screw, tip, axis) takes 3 arguments");
        return NULL;
    }
    double g[10], p[3], a[3];
    if (metrics_type == NULL || !exact_floats(args[0], 10, NULL, g) || !exact_floats(args[1], 3, NULL, p)
        || !exact_floats(args[2], 3, NULL, a))
        Py_RETURN_NONE;
    const double ex = g[0], ey = g[1], ez = g[2], dx = g[3], dy = g[4], dz = g[5], tx = g[6], ty = g[7], tz = g[8];
    const double depth_mm = g[9];
    const double px = p[0], py = p[1], pz = p[2], ax = a[0], ay = a[1], az = a[2];
    /* compute_metrics_py, line by line */
    double vx = px - ex, vy = py - ey, vz = pz - ez;
    double depth = vx * dx + vy * dy + vz * dz;
    double lx = vx - depth * dx, ly = vy - depth * dy, lz = vz - depth * dz;
    double lateral = sqrt(lx * lx + ly * ly + lz * lz);
    double cos_a = ax * dx + ay * dy + az * dz;
    double cx = ay * dz - az * dy, cy = az * dx - ax * dz, cz = ax * dy - ay * dx;
    double angle = py_atan2(sqrt(cx * cx + cy * cy + cz * cz), cos_a) * RAD_TO_DEG;
    double remaining = depth_mm - depth;
    double entry_offset, predicted;
    if (fabs(cos_a) < parallel_eps) {
        entry_offset = INFINITY;
    } else {
        double s = -depth / cos_a;
        double ox = vx + s * ax, oy = vy + s * ay, oz = vz + s * az;
        entry_offset = sqrt(ox * ox + oy * oy + oz * oz);
    }
    if (cos_a <= parallel_eps) {
        predicted = INFINITY;
    } else {
        double s = remaining / cos_a;
        double qx = px + s * ax - tx, qy = py + s * ay - ty, qz = pz + s * az - tz;
        predicted = sqrt(qx * qx + qy * qy + qz * qz);
    }
    const double v[7] = {lateral, entry_offset, angle, depth, remaining, predicted, sqrt(vx * vx + vy * vy + vz * vz)};
    /* the floats first, then the NamedTuple as CPython's tuple_subtype_new builds it (tp_alloc + SET_ITEM) */
    PyObject *f[7];
    for (int i = 0; i < 7; i++) {
        f[i] = PyFloat_FromDouble(v[i]);
        if (f[i] == NULL) {
            for (int k = 0; k < i; k++)
                Py_DECREF(f[k]);
            return NULL;
        }
    }
    PyObject *out = metrics_type->tp_alloc(metrics_type, 7);
    if (out == NULL) {
        for (int k = 0; k < 7; k++)
            Py_DECREF(f[k]);
        return NULL;
    }
    for (int i = 0; i < 7; i++)
        PyTuple_SET_ITEM(out, i, f[i]);
    return out;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"tip_axis_quat", (PyCFunction)(void (*)(void))tip_axis_quat, METH_FASTCALL, tip_axis_quat_doc},
    {"metrics", (PyCFunction)(void (*)(void))metrics, METH_FASTCALL, metrics_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_judge",
    "The trajectory guard's per-sample geometry in C; see the source's header and tests/test_native_guard.py.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__judge(void) { return PyModule_Create(&module); }
