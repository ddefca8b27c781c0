// Small vector helpers. All points are mm in the plan's frame (Reference), LPS.
// T is a 4x4 row-major array of 16 numbers (T_reference_tooltip).
export const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
export const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
export const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
export const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
export const norm = (a) => Math.sqrt(dot(a, a));
export const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

/** Tool tip position (mm) of a row-major 4x4 T_reference_tooltip. */
export const tipOf = (T) => [T[3], T[7], T[11]];
/** Tool axis (unit, +z of ToolTip: along the shaft toward the tip) in Reference. */
export const axisOf = (T) => [T[2], T[6], T[10]];
