/**
 * Dense symmetric positive-definite solve by Cholesky factorisation — all the
 * regularised least-squares models need. Matrices are row-major Float64Arrays.
 */

/** Solves A x = b for SPD A (n x n). Returns undefined when A is not positive definite. */
export function choleskySolve(a: Float64Array, b: Float64Array, n: number): Float64Array | undefined {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j];
      for (let k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
      if (i === j) {
        if (!(s > 0)) return undefined;
        l[i * n + i] = Math.sqrt(s);
      } else {
        l[i * n + j] = s / l[j * n + j];
      }
    }
  }
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = b[i];
    for (let k = 0; k < i; k++) s -= l[i * n + k] * y[k];
    y[i] = s / l[i * n + i];
  }
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i];
    for (let k = i + 1; k < n; k++) s -= l[k * n + i] * x[k];
    x[i] = s / l[i * n + i];
  }
  return x;
}

/**
 * Ridge regression: minimises |y - X beta|^2 + sum_j penalty[j] * beta_j^2.
 * X is rows x cols, row-major. Returns undefined if the system is singular.
 */
export function ridgeSolve(
  x: Float64Array,
  y: ArrayLike<number>,
  rows: number,
  cols: number,
  penalty: ArrayLike<number>,
): Float64Array | undefined {
  const xtx = new Float64Array(cols * cols);
  const xty = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    const yr = y[r];
    for (let i = 0; i < cols; i++) {
      const xi = x[off + i];
      if (xi === 0) continue;
      xty[i] += xi * yr;
      const rowI = i * cols;
      for (let j = 0; j <= i; j++) xtx[rowI + j] += xi * x[off + j];
    }
  }
  for (let i = 0; i < cols; i++) {
    for (let j = 0; j < i; j++) xtx[j * cols + i] = xtx[i * cols + j];
    xtx[i * cols + i] += penalty[i] + 1e-9;
  }
  return choleskySolve(xtx, xty, cols);
}
