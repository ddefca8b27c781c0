/* spine_nav.nodes._pose_cdr: a validated pose (rows, mm) -> serialized geometry_msgs/PoseStamped, one C call; and
 * back: serialized PoseStamped -> the guard's stamp, frame, quaternion and mm, one C call.
 *
 * Why C: the tracker bridge converts every 1 kHz tool tip (issue 17, docs/performance.md "The bridge in C");
 * the Python twin (quaternion by Shepperd's method + struct pack) is ~1.1 us warm and several times that cold.
 * The guard node decodes every 1 kHz tool sample (docs/performance.md "The guard's geometry in C"): the Python
 * twin (two struct unpacks, an lru_cache look-up, the frame's decode, mm) is ~1.4 us warm, ~5.6 us paced at 1 kHz.
 *
 * The pure-Python twin defines the result and the tests compare them byte for byte (tests/test_native_frames.py):
 *   pose_cdr  <->  conversions.validated_rows_mm_to_pose_cdr
 *                  (geometry.rotation_rows_to_quat_xyzw, mm -> m, cdr.PoseStampedPacker.pack_values)
 *   pose_fields_mm  <-> conversions.pose_cdr_fields_mm_py (cdr.unpack_pose_stamped's fast path, m -> mm);
 *                  anything but exactly that layout in an exact bytes object is declined (None): the twin then
 *                  decodes it through rclpy or raises its ValueError, as before
 * Same expressions in the same order, built with -ffp-contract=off. A stamp the packer would refuse (sec outside
 * int32, non-finite) is declined with None: the caller then packs in Python, which raises as before.
 *
 * Layout: cdr.PoseStampedPacker's ("<4siII{n}s{pad}x7d": encapsulation 00 01 00 00, stamp sec / nanosec,
 * string length with NUL, frame_id, NUL, pad to 8, position x y z in m, orientation x y z w).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_rows.h" /* spine_nav/tracking/_rows.h */

static void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_f64(unsigned char *p, double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(u >> (8 * i));
}

PyDoc_STRVAR(pose_cdr_doc,
"pose_cdr(rows_mm, stamp_s, frame_id_utf8) -> bytes | None\n\n"
"First three rows (mm) of a transform ALREADY validated as rigid -> serialized PoseStamped (metres,\n"
"quaternion xyzw with w >= 0, header.stamp = round(stamp_s * 1e9) ns, frame_id). The bytes of\n"
"conversions.validated_rows_mm_to_pose_cdr with a PoseStampedPacker(frame_id). None when the stamp does not\n"
"fit (the Python packer then raises).");

static PyObject *pose_cdr(PyObject *self, PyObject *args) {
    PyObject *rows_obj;
    double stamp_s;
    const char *name;
    Py_ssize_t name_len;
    double m[3][4];
    if (!PyArg_ParseTuple(args, "Ody#", &rows_obj, &stamp_s, &name, &name_len))
        return NULL;
    if (read_rows(rows_obj, m, "rows") < 0)
        return NULL;
    /* PoseStampedPacker.pack_values: ns = int(round(stamp_s * NS_PER_S)) (half to even), sec = ns // 1e9 */
    double x_ns = stamp_s * 1000000000.0;
    if (!isfinite(x_ns) || fabs(x_ns) > 4.0e18)
        Py_RETURN_NONE;
    double r_ns = nearbyint(x_ns); /* default rounding mode: to nearest, ties to even = Python's round() */
    int64_t ns = (int64_t)r_ns;
    int64_t sec = ns / 1000000000LL, nsec = ns % 1000000000LL;
    if (nsec < 0) { /* floor division, as Python's // and % */
        nsec += 1000000000LL;
        sec -= 1;
    }
    if (sec < INT32_MIN || sec > INT32_MAX)
        Py_RETURN_NONE;
    /* geometry.rotation_rows_to_quat_xyzw (Shepperd's method) */
    double r00 = m[0][0], r01 = m[0][1], r02 = m[0][2], r10 = m[1][0], r11 = m[1][1], r12 = m[1][2];
    double r20 = m[2][0], r21 = m[2][1], r22 = m[2][2];
    double tr = r00 + r11 + r22, s, x, y, z, w;
    if (tr > 0.0) {
        s = 2.0 * sqrt(tr + 1.0);
        x = (r21 - r12) / s; y = (r02 - r20) / s; z = (r10 - r01) / s; w = 0.25 * s;
    } else if (r00 > r11 && r00 > r22) {
        s = 2.0 * sqrt(1.0 + r00 - r11 - r22);
        x = 0.25 * s; y = (r01 + r10) / s; z = (r02 + r20) / s; w = (r21 - r12) / s;
    } else if (r11 > r22) {
        s = 2.0 * sqrt(1.0 + r11 - r00 - r22);
        x = (r01 + r10) / s; y = 0.25 * s; z = (r12 + r21) / s; w = (r02 - r20) / s;
    } else {
        s = 2.0 * sqrt(1.0 + r22 - r00 - r11);
        x = (r02 + r20) / s; y = (r12 + r21) / s; z = 0.25 * s; w = (r10 - r01) / s;
    }
    double n = sqrt(w * w + x * x + y * y + z * z);
    if (w < 0.0)
        n = -n;
    const double k = 1.0 / 1000.0; /* 1.0 / MM_PER_M */
    double vals[7] = {m[0][3] * k, m[1][3] * k, m[2][3] * k, x / n, y / n, z / n, w / n};
    Py_ssize_t str_len = name_len + 1; /* with its NUL */
    Py_ssize_t pad = (8 - (12 + str_len) % 8) % 8;
    Py_ssize_t total = 16 + str_len + pad + 56;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    memset(p, 0, (size_t)total);
    p[1] = 1; /* XCDR1 little-endian encapsulation 00 01 00 00 */
    put_le32(p + 4, (uint32_t)(int32_t)sec);
    put_le32(p + 8, (uint32_t)nsec);
    put_le32(p + 12, (uint32_t)str_len);
    memcpy(p + 16, name, (size_t)name_len);
    unsigned char *f = p + 16 + str_len + pad;
    for (int i = 0; i < 7; i++)
        put_f64(f + 8 * i, vals[i]);
    return out;
}

static uint32_t le_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static double le_f64(const unsigned char *p) {
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--)
        u = (u << 8) | p[i];
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

PyDoc_STRVAR(pose_fields_mm_doc,
"pose_fields_mm(data, mm_per_m) -> (sec, nanosec, frame_id, (qx, qy, qz, qw), (px, py, pz) mm) | None\n\n"
"Serialized PoseStamped bytes in the layout cdr.PoseStampedPacker writes (XCDR1 little-endian, frame_id of\n"
"1..4096 bytes with its NUL) -> the fields conversions.pose_cdr_fields_mm_py returns (position times mm_per_m;\n"
"the frame's last byte dropped and the rest decoded as UTF-8 with 'replace'). Values as sent (not validated).\n"
"None for anything else, including a bytes subclass, bytearray or memoryview.");

static PyObject *pose_fields_mm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "pose_fields_mm(data, mm_per_m) takes 2 arguments");
        return NULL;
    }
    double k = PyFloat_AsDouble(args[1]);
    if (k == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *data = args[0];
    if (!PyBytes_CheckExact(data))
        Py_RETURN_NONE;
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    if (len < 16 || memcmp(p, "\x00\x01\x00\x00", 4) != 0)
        Py_RETURN_NONE;
    int32_t sec = (int32_t)le_u32(p + 4);
    uint32_t nanosec = le_u32(p + 8), n = le_u32(p + 12);
    if (n == 0 || n > 4096)
        Py_RETURN_NONE;
    Py_ssize_t pad = (8 - (12 + (Py_ssize_t)n) % 8) % 8; /* cdr._tail_struct: (-(12 + n)) % 8 */
    if (len != 16 + (Py_ssize_t)n + pad + 56)
        Py_RETURN_NONE;
    PyObject *frame = PyUnicode_DecodeUTF8((const char *)p + 16, (Py_ssize_t)n - 1, "replace"); /* name[:-1] */
    if (frame == NULL)
        return NULL;
    const unsigned char *f = p + 16 + n + pad;
    double v[7];
    for (int i = 0; i < 7; i++)
        v[i] = le_f64(f + 8 * i);
    return Py_BuildValue("(iIN(dddd)(ddd))", (int)sec, (unsigned int)nanosec, frame, v[3], v[4], v[5], v[6],
                         v[0] * k, v[1] * k, v[2] * k);
}

static PyMethodDef methods[] = {
    {"pose_cdr", pose_cdr, METH_VARARGS, pose_cdr_doc},
    {"pose_fields_mm", (PyCFunction)(void (*)(void))pose_fields_mm, METH_FASTCALL, pose_fields_mm_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pose_cdr",
    "Validated pose rows <-> serialized PoseStamped in C; see the source's header, tests/test_native_frames.py and "
    "tests/test_native_guard.py.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pose_cdr(void) { return PyModule_Create(&module); }
