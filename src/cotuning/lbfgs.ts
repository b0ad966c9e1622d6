/**
 * Compact limited-memory BFGS for smooth unconstrained minimisation, with a strong-Wolfe
 * line search (Nocedal & Wright, Algorithms 7.4, 3.5 and 3.6). Used by the reverse
 * relationship fit; stopping rules follow scipy's L-BFGS-B as scikit-learn calls it
 * (projected-gradient max-norm ≤ gtol, relative decrease ≤ ftol, maxIter iterations).
 */

/** Objective: returns f(x) and writes ∇f(x) into `grad` (same length as x). */
export type ObjectiveWithGradient = (x: Float64Array, grad: Float64Array) => number;

export interface LbfgsOptions {
  /** Iterations (not evaluations); scikit-learn's `max_iter`. Default 100. */
  maxIter?: number;
  /** Stop once max |∇f| ≤ gtol; scikit-learn's `tol`. Default 1e-4. */
  gtol?: number;
  /** Stop once (f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) ≤ ftol. Default 64·ε as in scikit-learn. */
  ftol?: number;
  /** Correction pairs kept. Default 10 (scipy's default). */
  memory?: number;
  /** Function evaluations allowed per line search. Default 20. */
  maxLineSearch?: number;
}

export interface LbfgsResult {
  x: Float64Array;
  f: number;
  /** max |∇f(x)| at the returned x. */
  gradMax: number;
  iterations: number;
  evaluations: number;
  /** True when the gradient or decrease test stopped the run (not maxIter or a failed line search). */
  converged: boolean;
  reason: 'gtol' | 'ftol' | 'maxIter' | 'lineSearch';
}

const C1 = 1e-4;
const C2 = 0.9;

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]);
    if (v > m || Number.isNaN(v)) m = v;
  }
  return m;
}

interface Point {
  alpha: number;
  x: Float64Array;
  f: number;
  g: Float64Array;
  /** Directional derivative ∇f(x)·d. */
  dg: number;
}

/**
 * Minimise `fg` from `x0` (not modified).
 *
 * Shape: x0 [d] → x [d]; `fg` receives x [d] and fills grad [d].
 */
export function minimizeLbfgs(
  fg: ObjectiveWithGradient,
  x0: Float64Array,
  options: LbfgsOptions = {},
): LbfgsResult {
  const maxIter = options.maxIter ?? 100;
  const gtol = options.gtol ?? 1e-4;
  const ftol = options.ftol ?? 64 * Number.EPSILON;
  const m = options.memory ?? 10;
  const maxLs = options.maxLineSearch ?? 20;
  const d = x0.length;
  let evaluations = 0;

  const evaluate = (x: Float64Array, alpha: number, dir: Float64Array): Point => {
    const g = new Float64Array(d);
    const f = fg(x, g);
    evaluations++;
    return { alpha, x, f, g, dg: dot(g, dir) };
  };
  const step = (x: Float64Array, dir: Float64Array, alpha: number): Float64Array => {
    const out = new Float64Array(d);
    for (let i = 0; i < d; i++) out[i] = x[i] + alpha * dir[i];
    return out;
  };

  let x: Float64Array = Float64Array.from(x0);
  let g: Float64Array = new Float64Array(d);
  let f = fg(x, g);
  evaluations++;
  if (!Number.isFinite(f)) throw new Error('minimizeLbfgs: objective is not finite at the starting point');

  const sList: Float64Array[] = [];
  const yList: Float64Array[] = [];
  const rhoList: number[] = [];
  const alphaTmp = new Float64Array(m);

  for (let iter = 0; iter < maxIter; iter++) {
    if (maxAbs(g) <= gtol)
      return { x, f, gradMax: maxAbs(g), iterations: iter, evaluations, converged: true, reason: 'gtol' };

    // Two-loop recursion: dir = −H·g.
    const dir = Float64Array.from(g);
    for (let k = sList.length - 1; k >= 0; k--) {
      const a = rhoList[k] * dot(sList[k], dir);
      alphaTmp[k] = a;
      const yk = yList[k];
      for (let i = 0; i < d; i++) dir[i] -= a * yk[i];
    }
    if (sList.length > 0) {
      const last = sList.length - 1;
      const gamma = dot(sList[last], yList[last]) / dot(yList[last], yList[last]);
      for (let i = 0; i < d; i++) dir[i] *= gamma;
    }
    for (let k = 0; k < sList.length; k++) {
      const b = rhoList[k] * dot(yList[k], dir);
      const sk = sList[k];
      const coef = alphaTmp[k] - b;
      for (let i = 0; i < d; i++) dir[i] += coef * sk[i];
    }
    for (let i = 0; i < d; i++) dir[i] = -dir[i];
    let dg0 = dot(g, dir);
    if (!(dg0 < 0)) {
      // Lost descent (numerical noise): restart from steepest descent.
      sList.length = yList.length = rhoList.length = 0;
      for (let i = 0; i < d; i++) dir[i] = -g[i];
      dg0 = dot(g, dir);
    }
    // First step: unit length along −g, as scipy does, so the scale of f does not matter.
    const alpha0 = sList.length === 0 ? Math.min(1, 1 / Math.sqrt(-dg0)) : 1;

    const next = strongWolfe(x, f, dg0, alpha0, maxLs, (alpha) => evaluate(step(x, dir, alpha), alpha, dir));
    if (!next)
      return {
        x,
        f,
        gradMax: maxAbs(g),
        iterations: iter,
        evaluations,
        converged: false,
        reason: 'lineSearch',
      };

    const s = new Float64Array(d);
    const y = new Float64Array(d);
    for (let i = 0; i < d; i++) {
      s[i] = next.x[i] - x[i];
      y[i] = next.g[i] - g[i];
    }
    const sy = dot(s, y);
    if (sy > 1e-10 * dot(y, y)) {
      if (sList.length === m) {
        sList.shift();
        yList.shift();
        rhoList.shift();
      }
      sList.push(s);
      yList.push(y);
      rhoList.push(1 / sy);
    }
    const fPrev = f;
    x = next.x;
    g = next.g;
    f = next.f;
    if ((fPrev - f) / Math.max(Math.abs(fPrev), Math.abs(f), 1) <= ftol) {
      return { x, f, gradMax: maxAbs(g), iterations: iter + 1, evaluations, converged: true, reason: 'ftol' };
    }
  }
  const gm = maxAbs(g);
  return {
    x,
    f,
    gradMax: gm,
    iterations: maxIter,
    evaluations,
    converged: gm <= gtol,
    reason: gm <= gtol ? 'gtol' : 'maxIter',
  };
}

/** Safeguarded minimiser of the quadratic through (lo, f_lo, f'_lo) and (hi, f_hi), kept inside the bracket. */
function interpolate(lo: Point, hi: Point): number {
  const span = hi.alpha - lo.alpha;
  const denom = 2 * (hi.f - lo.f - lo.dg * span);
  let a = denom > 0 ? lo.alpha - (lo.dg * span * span) / denom : lo.alpha + 0.5 * span;
  const left = Math.min(lo.alpha, hi.alpha);
  const right = Math.max(lo.alpha, hi.alpha);
  const margin = 0.1 * (right - left);
  if (!Number.isFinite(a) || a < left + margin || a > right - margin) a = lo.alpha + 0.5 * span;
  return a;
}

/**
 * Strong-Wolfe line search from (x, f0) along dir. Returns the accepted point, or the best
 * sufficient-decrease point if the search runs out of evaluations, or undefined if none was found.
 */
function strongWolfe(
  x: Float64Array,
  f0: number,
  dg0: number,
  alpha0: number,
  maxLs: number,
  at: (alpha: number) => Point,
): Point | undefined {
  const origin: Point = { alpha: 0, x, f: f0, g: new Float64Array(0), dg: dg0 };
  const armijo = (p: Point): boolean => Number.isFinite(p.f) && p.f <= f0 + C1 * p.alpha * dg0;
  const curvature = (p: Point): boolean => Math.abs(p.dg) <= -C2 * dg0;
  let prev = origin;
  let alpha = alpha0;
  let evals = 0;
  let best: Point | undefined;

  const zoom = (loIn: Point, hiIn: Point): Point | undefined => {
    let lo = loIn;
    let hi = hiIn;
    while (evals < maxLs) {
      const p = at(interpolate(lo, hi));
      evals++;
      if (!armijo(p) || p.f >= lo.f) {
        hi = p;
      } else {
        if (!best || p.f < best.f) best = p;
        if (curvature(p)) return p;
        if (p.dg * (hi.alpha - lo.alpha) >= 0) hi = lo;
        lo = p;
      }
    }
    return best;
  };

  while (evals < maxLs) {
    const p = at(alpha);
    evals++;
    if (!armijo(p) || (prev.alpha > 0 && p.f >= prev.f)) return zoom(prev, p);
    best = p;
    if (curvature(p)) return p;
    if (p.dg >= 0) return zoom(p, prev);
    prev = p;
    alpha *= 2;
  }
  return best;
}
