/* spine_nav.tracking._frames: the tracker bridge's per-frame arithmetic in one C call each.
 *
 * Why C (issue 17, docs/performance.md "The bridge in C"): at 1 kHz the bridge's per-frame work runs cold
 * (1 ms idle between frames) and every microsecond of warm CPython work costs ~2-4 us of latency there; the
 * pure-Python path (struct unpack + scalar rigid check + composition, ~250 float operations) was ~17 us warm
 * against the bare relay's ~3 us. No maintained library does "decode an OpenIGTLink TRANSFORM, check it is
 * rigid and compose three transforms" in one call (numpy's per-call overhead exceeds the work at this size;
 * pyigtl decodes in Python).
 *
 * Every function here has a pure-Python twin that defines its result and that the tests compare it with,
 * bit for bit (tests/test_native_frames.py):
 *   decode_transforms  <-> BridgeCore._decode_chunk_py   (spine_nav/tracking/bridge.py)
 *   compose_inv_a_b_c  <-> compose_rows_inv_a_b_c         (spine_nav/tracking/tools.py)
 *   reference_step     <-> reference_step_py                 (spine_nav/tracking/reference_jump.py)
 *   steady_tip         <-> steady_tip_py                     (spine_nav/tracking/bridge.py)
 * The same floating-point expressions in the same order (built with -ffp-contract=off: no fused
 * multiply-add), so the same doubles. Anything unusual is declined (None), never guessed: the caller then
 * takes the general Python path, which counts, logs and rejects as before.
 *
 * Frames and units: as the Python twins (rows of a 4x4 homogeneous transform, mm; T_a_b maps b to a).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_rows.h"

#define HEADER_SIZE 58
#define BODY_SIZE 48
#define MESSAGE_SIZE (HEADER_SIZE + BODY_SIZE)

/* OpenIGTLink's CRC-64 (ECMA-182 polynomial, not reflected, init 0, no final xor): crcmod's
 * mkCrcFun(0x142F0E1EBA9EA3693, rev=False) as pyigtl builds it. Table filled at import. */
static uint64_t crc_table[256];
/* igtl_frac_to_nanosec adds a fixed amount per set bit of the 32-bit fraction (codec.frac_to_nanosec) */
static uint64_t frac_bit_ns[32];

static void init_tables(void) {
    const uint64_t poly = 0x42F0E1EBA9EA3693ULL;
    for (int i = 0; i < 256; i++) {
        uint64_t c = (uint64_t)i << 56;
        for (int k = 0; k < 8; k++)
            c = (c & 0x8000000000000000ULL) ? (c << 1) ^ poly : (c << 1);
        crc_table[i] = c;
    }
    /* the reference loop for a single set bit i: base halves (rounding up) once per bit from bit 31 down */
    for (int i = 0; i < 32; i++) {
        uint64_t base = 1000000000ULL;
        for (int b = 31; b >= i; b--)
            base = (base + 1) >> 1;
        frac_bit_ns[i] = base;
    }
}

static uint64_t crc64(const unsigned char *p, Py_ssize_t n) {
    uint64_t crc = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        crc = crc_table[((crc >> 56) ^ p[i]) & 0xff] ^ (crc << 8);
    return crc;
}

static uint64_t be_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t be_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static double be_f32(const unsigned char *p) {
    uint32_t u = be_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return (double)f; /* exact, as struct's '>f' */
}

static PyObject *rows_list(const double m[3][4]) {
    PyObject *rows = PyList_New(3);
    if (rows == NULL)
        return NULL;
    for (int r = 0; r < 3; r++) {
        PyObject *row = PyList_New(4);
        if (row == NULL) {
            Py_DECREF(rows);
            return NULL;
        }
        for (int c = 0; c < 4; c++) {
            PyObject *v = PyFloat_FromDouble(m[r][c]);
            if (v == NULL) {
                Py_DECREF(row);
                Py_DECREF(rows);
                return NULL;
            }
            PyList_SET_ITEM(row, c, v);
        }
        PyList_SET_ITEM(rows, r, row);
    }
    return rows;
}

PyDoc_STRVAR(decode_transforms_doc,
"decode_transforms(data, devices, tol, max_messages) -> list | None\n\n"
"A recv() chunk that is exactly 1..max_messages whole header-v1 OpenIGTLink TRANSFORM messages with\n"
"48-byte bodies, each from a device in ``devices`` (raw 20-byte NUL-padded name field -> value), with a\n"
"good CRC-64 and a finite rigid pose (orthonormal within ``tol``, det > 0; geometry.rigid_rows'\n"
"expressions) -> [(devices[name], timestamp_s, rows), ...] in arrival order, rows = the first three rows\n"
"of the 4x4 (lists of 4 floats, mm). None when anything differs: nothing is decoded half-way.");

static PyObject *decode_transforms(PyObject *self, PyObject *args) {
    Py_buffer buf;
    PyObject *devices;
    double tol;
    Py_ssize_t max_messages;
    if (!PyArg_ParseTuple(args, "y*O!dn", &buf, &PyDict_Type, &devices, &tol, &max_messages))
        return NULL;
    const unsigned char *data = (const unsigned char *)buf.buf;
    Py_ssize_t size = buf.len;
    if (size == 0 || size % MESSAGE_SIZE != 0 || size > max_messages * MESSAGE_SIZE) {
        PyBuffer_Release(&buf);
        Py_RETURN_NONE;
    }
    Py_ssize_t n = size / MESSAGE_SIZE;
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const unsigned char *m = data + k * MESSAGE_SIZE;
        unsigned version = ((unsigned)m[0] << 8) | m[1];
        if (version != 1 || memcmp(m + 2, "TRANSFORM\0\0\0", 12) != 0 || be_u64(m + 42) != BODY_SIZE
            || crc64(m + HEADER_SIZE, BODY_SIZE) != be_u64(m + 50))
            goto decline;
        PyObject *key = PyBytes_FromStringAndSize((const char *)m + 14, 20);
        if (key == NULL)
            goto fail;
        PyObject *known = PyDict_GetItemWithError(devices, key); /* borrowed */
        Py_DECREF(key);
        if (known == NULL) {
            if (PyErr_Occurred())
                goto fail;
            goto decline;
        }
        double v[12];
        for (int i = 0; i < 12; i++) {
            v[i] = be_f32(m + HEADER_SIZE + 4 * i);
            if (!isfinite(v[i]))
                goto decline;
        }
        /* OpenIGTLink order: R11 R21 R31 R12 R22 R32 R13 R23 R33 TX TY TZ (column-major rotation) */
        double a00 = v[0], a10 = v[1], a20 = v[2], a01 = v[3], a11 = v[4], a21 = v[5];
        double a02 = v[6], a12 = v[7], a22 = v[8];
        double e[6] = {
            fabs(a00 * a00 + a10 * a10 + a20 * a20 - 1.0), fabs(a01 * a01 + a11 * a11 + a21 * a21 - 1.0),
            fabs(a02 * a02 + a12 * a12 + a22 * a22 - 1.0), fabs(a00 * a01 + a10 * a11 + a20 * a21),
            fabs(a00 * a02 + a10 * a12 + a20 * a22), fabs(a01 * a02 + a11 * a12 + a21 * a22)};
        for (int i = 0; i < 6; i++)
            if (e[i] > tol)
                goto decline;
        if (a00 * (a11 * a22 - a21 * a12) - a10 * (a01 * a22 - a21 * a02) + a20 * (a01 * a12 - a11 * a02) <= 0.0)
            goto decline;
        uint32_t sec = be_u32(m + 34), frac = be_u32(m + 38);
        uint64_t ns = 0;
        for (int b = 0; b < 32; b++)
            if (frac >> b & 1u)
                ns += frac_bit_ns[b];
        double t_s = (double)sec + (double)ns * 1e-9; /* codec.timestamp_from_parts: sec + ns * 1e-9 */
        const double rows[3][4] = {{a00, a01, a02, v[9]}, {a10, a11, a12, v[10]}, {a20, a21, a22, v[11]}};
        PyObject *r = rows_list(rows);
        if (r == NULL)
            goto fail;
        PyObject *item = Py_BuildValue("(OdN)", known, t_s, r);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(out, k, item);
    }
    PyBuffer_Release(&buf);
    return out;
decline:
    Py_DECREF(out);
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
fail:
    Py_DECREF(out);
    PyBuffer_Release(&buf);
    return NULL;
}

PyDoc_STRVAR(compose_doc,
"compose_inv_a_b_c(A, B, C) -> rows\n\n"
"inv(A) @ B @ C for validated rigid transforms given as their first three rows (4 floats each); returns\n"
"3 lists of 4 floats. tools.compose_rows_inv_a_b_c in C: the same expressions in the same order.");

/* out = inv(A) @ B @ C (first three rows of rigid transforms): compose_rows_inv_a_b_c's expressions */
static void compose_rows(const double A[3][4], const double B[3][4], const double C[3][4], double out[3][4]) {
    /* inv(A) = [R^T, -R^T t] */
    double inv[3][4];
    for (int r = 0; r < 3; r++) {
        inv[r][0] = A[0][r];
        inv[r][1] = A[1][r];
        inv[r][2] = A[2][r];
        inv[r][3] = -(A[0][r] * A[0][3] + A[1][r] * A[1][3] + A[2][r] * A[2][3]);
    }
    for (int r = 0; r < 3; r++) {
        double r0 = inv[r][0], r1 = inv[r][1], r2 = inv[r][2], r3 = inv[r][3];
        double m0 = r0 * B[0][0] + r1 * B[1][0] + r2 * B[2][0];
        double m1 = r0 * B[0][1] + r1 * B[1][1] + r2 * B[2][1];
        double m2 = r0 * B[0][2] + r1 * B[1][2] + r2 * B[2][2];
        double m3 = r0 * B[0][3] + r1 * B[1][3] + r2 * B[2][3] + r3;
        out[r][0] = m0 * C[0][0] + m1 * C[1][0] + m2 * C[2][0];
        out[r][1] = m0 * C[0][1] + m1 * C[1][1] + m2 * C[2][1];
        out[r][2] = m0 * C[0][2] + m1 * C[1][2] + m2 * C[2][2];
        out[r][3] = m0 * C[0][3] + m1 * C[1][3] + m2 * C[2][3] + m3;
    }
}

static PyObject *compose_inv_a_b_c(PyObject *self, PyObject *args) {
    PyObject *oa, *ob, *oc;
    double A[3][4], B[3][4], C[3][4], out[3][4];
    if (!PyArg_ParseTuple(args, "OOO", &oa, &ob, &oc))
        return NULL;
    if (read_rows(oa, A, "A") < 0 || read_rows(ob, B, "B") < 0 || read_rows(oc, C, "C") < 0)
        return NULL;
    compose_rows(A, B, C, out);
    return rows_list(out);
}

PyDoc_STRVAR(reference_step_doc,
"reference_step(prev_rows, rows, dt_s, max_speed_mm_s, max_drift_mm, min_jump_mm, noise_allowance_mm, cos_limit)\n"
"-> (squared translation step mm^2, cosine of the rotation step clipped to [-1, 1], is_jump)\n\n"
"The step between two reference samples (first three rows of T_tracker_reference, mm) and the jump verdict of\n"
"ReferenceJumpDetector: limit_mm = max(min_jump_mm, min(max_speed_mm_s * max(dt_s, 0), max_drift_mm) +\n"
"noise_allowance_mm); a jump when not (sq <= limit_mm^2) or cos < cos_limit. Python's min/max semantics.");

/* ReferenceJumpDetector's step between two reference samples P -> R, dt_s apart: *sq = squared translation step
 * (mm^2), *c = cosine of the rotation step clipped to [-1, 1]; returns whether it is a jump (reference_step) */
static int step_rows(const double P[3][4], const double R[3][4], double dt, const double lim[5], double *sq_out,
                     double *c_out) {
    double speed = lim[0], drift_cap = lim[1], min_jump = lim[2], noise_allow = lim[3], cos_limit = lim[4];
    double d0 = R[0][3] - P[0][3], d1 = R[1][3] - P[1][3], d2 = R[2][3] - P[2][3];
    double sq = d0 * d0 + d1 * d1 + d2 * d2;
    double c = (P[0][0] * R[0][0] + P[0][1] * R[0][1] + P[0][2] * R[0][2] + P[1][0] * R[1][0] + P[1][1] * R[1][1]
                + P[1][2] * R[1][2] + P[2][0] * R[2][0] + P[2][1] * R[2][1] + P[2][2] * R[2][2] - 1.0) / 2.0;
    /* min(1.0, max(-1.0, c)): Python's max(a, b) is b only if b > a; min(a, b) is b only if b < a */
    c = (c > -1.0) ? c : -1.0;
    c = (c < 1.0) ? c : 1.0;
    /* ReferenceJumpConfig.limit_mm(dt) */
    double t = (0.0 > dt) ? 0.0 : dt;
    double drift = speed * t;
    drift = (drift_cap < drift) ? drift_cap : drift;
    double allowed = drift + noise_allow;
    double limit = (allowed > min_jump) ? allowed : min_jump;
    *sq_out = sq;
    *c_out = c;
    return !(sq <= limit * limit) || c < cos_limit;
}

static PyObject *reference_step(PyObject *self, PyObject *args) {
    PyObject *op, *orows;
    double dt, lim[5], sq, c;
    double P[3][4], R[3][4];
    if (!PyArg_ParseTuple(args, "OOdddddd", &op, &orows, &dt, &lim[0], &lim[1], &lim[2], &lim[3], &lim[4]))
        return NULL;
    if (read_rows(op, P, "prev_rows") < 0 || read_rows(orows, R, "rows") < 0)
        return NULL;
    int jump = step_rows(P, R, dt, lim, &sq, &c);
    return Py_BuildValue("(ddO)", sq, c, jump ? Py_True : Py_False);
}

PyDoc_STRVAR(steady_tip_doc,
"steady_tip(taken, reference_device, tips, pending, prev, latched, limits) -> (tip, sq_mm, cos, rows) | None\n\n"
"The bridge's steady 1 kHz frame in one call (BridgeCore._take_steady_frame; twin: steady_tip_py in\n"
"spine_nav/tracking/bridge.py, which defines it). ``taken``: decode_transforms' list; ``tips``: device -> (tool,\n"
"T_tool_tooltip rows) of the composer's steady tools; ``pending``: tool -> waiting samples; ``prev``: the jump\n"
"detector's last reference (rows, stamp s) or None; ``latched``: its latch or None; ``limits``: (max_speed_mm_s,\n"
"max_drift_mm, min_jump_mm, noise_allowance_mm, cos_limit). When ``taken`` is a reference sample of\n"
"``reference_device`` then a tool of ``tips`` at the same tracker time, nothing pending, a previous reference, no\n"
"latch and the step within the limits: (tips[device][0], squared step mm^2, cosine of the rotation step,\n"
"T_reference_tooltip rows = inv(reference) @ tool @ T_tool_tooltip). None otherwise (nothing is changed).");

static PyObject *steady_tip(PyObject *self, PyObject *args) {
    PyObject *taken, *ref_device, *tips, *pending, *prev, *latched, *limits;
    double lim[5], P[3][4], R[3][4], T[3][4], C[3][4], out[3][4], sq, c;
    if (!PyArg_ParseTuple(args, "O!UO!O!OO(ddddd)", &PyList_Type, &taken, &ref_device, &PyDict_Type, &tips,
                          &PyDict_Type, &pending, &prev, &latched, &lim[0], &lim[1], &lim[2], &lim[3], &lim[4]))
        return NULL;
    if (PyList_GET_SIZE(taken) != 2 || prev == Py_None || latched != Py_None)
        Py_RETURN_NONE;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(pending, &pos, &key, &value)) { /* any(pending.values()) */
        int busy = PyObject_IsTrue(value);
        if (busy < 0)
            return NULL;
        if (busy)
            Py_RETURN_NONE;
    }
    /* taken[i] = ((device, name), timestamp_s, rows), as decode_transforms builds it */
    PyObject *ref = PyList_GET_ITEM(taken, 0), *tool = PyList_GET_ITEM(taken, 1);
    if (!PyTuple_Check(ref) || PyTuple_GET_SIZE(ref) != 3 || !PyTuple_Check(tool) || PyTuple_GET_SIZE(tool) != 3
            || !PyTuple_Check(PyTuple_GET_ITEM(ref, 0)) || PyTuple_GET_SIZE(PyTuple_GET_ITEM(ref, 0)) != 2
            || !PyTuple_Check(PyTuple_GET_ITEM(tool, 0)) || PyTuple_GET_SIZE(PyTuple_GET_ITEM(tool, 0)) != 2) {
        PyErr_SetString(PyExc_TypeError, "steady_tip: taken must be decode_transforms' ((device, name), t, rows) list");
        return NULL;
    }
    int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(PyTuple_GET_ITEM(ref, 0), 0), ref_device, Py_EQ);
    if (same < 0)
        return NULL;
    if (!same)
        Py_RETURN_NONE;
    double t_ref = PyFloat_AsDouble(PyTuple_GET_ITEM(ref, 1));
    double t_tool = PyFloat_AsDouble(PyTuple_GET_ITEM(tool, 1));
    if (PyErr_Occurred())
        return NULL;
    if (t_ref != t_tool)
        Py_RETURN_NONE;
    PyObject *tip = PyDict_GetItemWithError(tips, PyTuple_GET_ITEM(PyTuple_GET_ITEM(tool, 0), 0)); /* borrowed */
    if (tip == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (!PyTuple_Check(tip) || PyTuple_GET_SIZE(tip) != 2 || !PyTuple_Check(prev) || PyTuple_GET_SIZE(prev) != 2) {
        PyErr_SetString(PyExc_TypeError, "steady_tip: tips values and prev must be 2-tuples");
        return NULL;
    }
    double t_prev = PyFloat_AsDouble(PyTuple_GET_ITEM(prev, 1));
    if (t_prev == -1.0 && PyErr_Occurred())
        return NULL;
    if (read_rows(PyTuple_GET_ITEM(prev, 0), P, "prev rows") < 0 || read_rows(PyTuple_GET_ITEM(ref, 2), R, "reference rows") < 0)
        return NULL;
    if (step_rows(P, R, t_ref - t_prev, lim, &sq, &c))
        Py_RETURN_NONE;
    if (read_rows(PyTuple_GET_ITEM(tool, 2), T, "tool rows") < 0
            || read_rows(PyTuple_GET_ITEM(tip, 1), C, "T_tool_tooltip rows") < 0)
        return NULL;
    compose_rows(R, T, C, out);
    PyObject *rows = rows_list(out);
    if (rows == NULL)
        return NULL;
    return Py_BuildValue("(OddN)", PyTuple_GET_ITEM(tip, 0), sq, c, rows);
}

static PyMethodDef methods[] = {
    {"decode_transforms", decode_transforms, METH_VARARGS, decode_transforms_doc},
    {"compose_inv_a_b_c", compose_inv_a_b_c, METH_VARARGS, compose_doc},
    {"reference_step", reference_step, METH_VARARGS, reference_step_doc},
    {"steady_tip", steady_tip, METH_VARARGS, steady_tip_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_frames",
    "The tracker bridge's per-frame arithmetic in C; see the source's header and tests/test_native_frames.py.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__frames(void) {
    init_tables();
    return PyModule_Create(&module);
}
