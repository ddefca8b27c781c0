/* Shared by the C extensions (spine_nav/tracking/_frames.c, spine_nav/nodes/_pose_cdr.c): the first three rows
 * of a 4x4 homogeneous transform, given from Python as a sequence of 3 sequences of >= 4 numbers (the lists the
 * decoder builds, or ndarray.tolist()), read into doubles. -1 with a Python exception naming ``name`` otherwise. */
#ifndef SPINE_NAV_ROWS_H
#define SPINE_NAV_ROWS_H
#include <Python.h>

static int read_rows(PyObject *obj, double m[3][4], const char *name) {
    PyObject *seq = PySequence_Fast(obj, name);
    if (seq == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) < 3) {
        PyErr_Format(PyExc_ValueError, "%s: 3 rows of 4 floats expected", name);
        Py_DECREF(seq);
        return -1;
    }
    for (int r = 0; r < 3; r++) {
        PyObject *row = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, r), name);
        if (row == NULL) {
            Py_DECREF(seq);
            return -1;
        }
        if (PySequence_Fast_GET_SIZE(row) < 4) {
            PyErr_Format(PyExc_ValueError, "%s: 3 rows of 4 floats expected", name);
            Py_DECREF(row);
            Py_DECREF(seq);
            return -1;
        }
        for (int c = 0; c < 4; c++) {
            m[r][c] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(row, c));
            if (m[r][c] == -1.0 && PyErr_Occurred()) {
                Py_DECREF(row);
                Py_DECREF(seq);
                return -1;
            }
        }
        Py_DECREF(row);
    }
    Py_DECREF(seq);
    return 0;
}

#endif
