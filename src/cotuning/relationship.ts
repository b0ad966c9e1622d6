/**
 * Category relationship p(y_s | y_t) between target classes and source (e.g. ImageNet) classes:
 * the "direct" estimate (TLlib, spec §1.2) and the calibrated "reverse" estimate (the authors'
 * original code, spec §1.3). Matrices at the API surface are plain row-major typed arrays;
 * TF.js is used only for the large products inside the reverse fit.
 */
import * as tf from '@tensorflow/tfjs';
import { minimizeLbfgs, type LbfgsResult } from './lbfgs.js';

/** Row-major dense matrix: Float32Array or Float64Array. */
export type Matrix = Float32Array | Float64Array;

/** scikit-learn C grid of the reference reverse fit, largest first (spec §1.3 step 2). */
export const DEFAULT_C_GRID: readonly number[] = [
  1e4, 3e3, 1e3, 3e2, 1e2, 3e1, 1e1, 3, 1, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4,
];

function checkSize(name: string, data: ArrayLike<number>, rows: number, cols: number, where: string): void {
  if (!Number.isInteger(rows) || rows < 1)
    throw new Error(`${where}: ${name} row count must be a positive integer, got ${rows}`);
  if (!Number.isInteger(cols) || cols < 1)
    throw new Error(`${where}: ${name} column count must be a positive integer, got ${cols}`);
  if (data.length !== rows * cols) {
    throw new Error(
      `${where}: ${name} has ${data.length} values, expected ${rows} × ${cols} = ${rows * cols}`,
    );
  }
}

function checkLabels(where: string, name: string, labels: Int32Array, n: number, numClasses: number): void {
  if (labels.length !== n) throw new Error(`${where}: ${name} has ${labels.length} labels for ${n} samples`);
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (y < 0 || y >= numClasses)
      throw new Error(`${where}: ${name}[${i}] = ${y} is outside [0, ${numClasses})`);
  }
}

function className(c: number, classNames?: readonly string[]): string {
  const name = classNames?.[c];
  return name === undefined ? `target class ${c}` : `target class ${c} ("${name}")`;
}

/** Throws naming the first class with no sample: its relationship row would otherwise be NaN (spec §6.6). */
function requireEveryClass(
  where: string,
  labels: Int32Array,
  numClasses: number,
  classNames?: readonly string[],
): Int32Array {
  const counts = new Int32Array(numClasses);
  for (const y of labels) counts[y]++;
  const empty = counts.findIndex((k) => k === 0);
  if (empty >= 0) {
    const missing = [...counts.keys()].filter((c) => counts[c] === 0);
    throw new Error(
      `${where}: ${className(empty, classNames)} has no sample` +
        (missing.length > 1
          ? ` (${missing.length} classes are empty: ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''})`
          : '') +
        '; every target class needs at least one sample to estimate its relationship row',
    );
  }
  return counts;
}

/**
 * Row-wise softmax(z / T), stable (the row maximum is subtracted first). CT's calibration
 * scale 0.8840456604957581 corresponds to temperature 1 / 0.8840456604957581.
 *
 * Shape: logits [n × s] row-major → probabilities [n × s].
 */
export function softmaxRows(logits: Matrix, n: number, s: number, temperature = 1): Float32Array {
  checkSize('logits', logits, n, s, 'softmaxRows');
  if (!(temperature > 0) || !Number.isFinite(temperature))
    throw new Error(`softmaxRows: temperature must be a positive finite number, got ${temperature}`);
  const out = new Float32Array(n * s);
  const row = new Float64Array(s);
  for (let i = 0; i < n; i++) {
    const base = i * s;
    let max = -Infinity;
    for (let j = 0; j < s; j++) {
      const v = logits[base + j] / temperature;
      if (Number.isNaN(v)) throw new Error(`softmaxRows: logits[${i}, ${j}] is NaN`);
      row[j] = v;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let j = 0; j < s; j++) {
      const e = Math.exp(row[j] - max);
      row[j] = e;
      sum += e;
    }
    for (let j = 0; j < s; j++) out[base + j] = row[j] / sum;
  }
  return out;
}

/**
 * Direct relationship (spec §1.2): row c is the mean source-probability vector of the samples
 * labelled c, renormalised to sum 1. A class with no sample throws an Error naming it, rather
 * than producing the NaN row of the reference code (spec §2.3, §6.6).
 *
 * Shape: probs [n × numSource], labels [n] → R [numClasses × numSource].
 */
export function directRelationship(
  probs: Matrix,
  labels: Int32Array,
  numClasses: number,
  numSource: number,
  classNames?: readonly string[],
): Float32Array {
  const where = 'directRelationship';
  const n = labels.length;
  checkSize('probs', probs, n, numSource, where);
  if (!Number.isInteger(numClasses) || numClasses < 1)
    throw new Error(`${where}: numClasses must be a positive integer, got ${numClasses}`);
  checkLabels(where, 'labels', labels, n, numClasses);
  requireEveryClass(where, labels, numClasses, classNames);
  const sums = new Float64Array(numClasses * numSource);
  for (let i = 0; i < n; i++) {
    const src = i * numSource;
    const dst = labels[i] * numSource;
    for (let j = 0; j < numSource; j++) {
      const p = probs[src + j];
      if (!(p >= 0) || !Number.isFinite(p))
        throw new Error(`${where}: probs[${i}, ${j}] = ${p} is not a probability`);
      sums[dst + j] += p;
    }
  }
  // Renormalising the sum equals dividing the mean by its total; it also absorbs float32 drift.
  return normaliseRows(where, sums, numClasses, numSource, classNames);
}

function normaliseRows(
  where: string,
  m: Float64Array,
  rows: number,
  cols: number,
  classNames?: readonly string[],
): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let total = 0;
    for (let j = 0; j < cols; j++) total += m[r * cols + j];
    if (!(total > 0) || !Number.isFinite(total))
      throw new Error(`${where}: row for ${className(r, classNames)} sums to ${total}; cannot normalise`);
    for (let j = 0; j < cols; j++) out[r * cols + j] = m[r * cols + j] / total;
  }
  return out;
}

/**
 * Mean negative log-likelihood of softmax(a·V) against the labels: the quantity calibrateScale minimises.
 *
 * Shape: logits [n × c] row-major, labels [n] → scalar.
 */
export function meanNllAtScale(logits: Matrix, n: number, c: number, labels: Int32Array, a: number): number {
  checkSize('logits', logits, n, c, 'meanNllAtScale');
  checkLabels('meanNllAtScale', 'labels', labels, n, c);
  return scaledNll(logits, n, c, labels, a).f;
}

/** Mean NLL of softmax(a·V) against labels, with its first and second derivative in a. */
function scaledNll(
  logits: Matrix,
  n: number,
  c: number,
  labels: Int32Array,
  a: number,
): { f: number; d1: number; d2: number } {
  let f = 0;
  let d1 = 0;
  let d2 = 0;
  for (let i = 0; i < n; i++) {
    const base = i * c;
    let max = -Infinity;
    for (let k = 0; k < c; k++) max = Math.max(max, a * logits[base + k]);
    let z = 0;
    let ev = 0;
    let ev2 = 0;
    for (let k = 0; k < c; k++) {
      const v = logits[base + k];
      const e = Math.exp(a * v - max);
      z += e;
      ev += e * v;
      ev2 += e * v * v;
    }
    const mean = ev / z;
    const vy = logits[base + labels[i]];
    f += max + Math.log(z) - a * vy;
    d1 += mean - vy;
    d2 += Math.max(0, ev2 / z - mean * mean);
  }
  return { f: f / n, d1: d1 / n, d2: d2 / n };
}

/** |a| is capped here: on separable validation data the NLL keeps falling as a grows. */
const MAX_SCALE = 1e4;

/**
 * Temperature calibration (spec §1.3 step 3): the scalar a minimising the mean cross-entropy
 * of softmax(a·V) against the labels. Safeguarded Newton from a = 1; the NLL is convex in a,
 * so this reaches the optimum to ~1e-12 (spec §6.5 asks for 1e-6). Returns 1 when the logits
 * carry no information (every row constant); |a| is capped at 1e4 on separable data.
 *
 * Shape: logits [n × c] row-major, labels [n] → scalar.
 */
export function calibrateScale(logits: Matrix, n: number, c: number, labels: Int32Array): number {
  checkSize('logits', logits, n, c, 'calibrateScale');
  checkLabels('calibrateScale', 'labels', labels, n, c);
  let a = 1;
  let cur = scaledNll(logits, n, c, labels, a);
  for (let iter = 0; iter < 200; iter++) {
    if (Math.abs(cur.d1) <= 1e-13) break;
    // Newton where curvature is usable; otherwise a unit gradient step, then backtrack.
    let stepLen = cur.d2 > 1e-300 ? -cur.d1 / cur.d2 : -Math.sign(cur.d1);
    let next = a;
    let trial = cur;
    let accepted = false;
    for (let k = 0; k < 60; k++) {
      next = Math.max(-MAX_SCALE, Math.min(MAX_SCALE, a + stepLen));
      trial = scaledNll(logits, n, c, labels, next);
      if (trial.f <= cur.f) {
        accepted = true;
        break;
      }
      stepLen /= 2;
    }
    if (!accepted || next === a) break;
    a = next;
    cur = trial;
  }
  return a;
}

/**
 * Bayes inversion of a calibrated classifier (spec §1.3 steps 4–6): Q = softmax_rows(a·Wᵀ)
 * gives p(y_t | y_s = j); J[t, j] = Q[j, t]·π_j; R = J with rows normalised. Computed in
 * float64, returned as float32.
 *
 * Shape: W [numClasses × numSource], prior [numSource] → R [numClasses × numSource].
 */
export function bayesInvert(
  W: Matrix,
  numClasses: number,
  numSource: number,
  a: number,
  prior: Matrix,
): Float32Array {
  const where = 'bayesInvert';
  checkSize('W', W, numClasses, numSource, where);
  if (prior.length !== numSource)
    throw new Error(`${where}: prior has ${prior.length} values, expected numSource = ${numSource}`);
  if (!Number.isFinite(a)) throw new Error(`${where}: scale a must be finite, got ${a}`);
  const joint = new Float64Array(numClasses * numSource);
  for (let j = 0; j < numSource; j++) {
    let max = -Infinity;
    for (let t = 0; t < numClasses; t++) max = Math.max(max, a * W[t * numSource + j]);
    let z = 0;
    for (let t = 0; t < numClasses; t++) z += Math.exp(a * W[t * numSource + j] - max);
    const pj = prior[j];
    if (!(pj >= 0)) throw new Error(`${where}: prior[${j}] = ${pj} is not a probability`);
    for (let t = 0; t < numClasses; t++)
      joint[t * numSource + j] = (Math.exp(a * W[t * numSource + j] - max) / z) * pj;
  }
  return normaliseRows(where, joint, numClasses, numSource);
}

export interface ReverseRelationshipInput {
  /** Calibrated source probabilities of the training samples, [nTrain × numSource]. */
  trainProbs: Matrix;
  trainLabels: Int32Array;
  /** Calibrated source probabilities of the validation samples, [nVal × numSource]. */
  valProbs: Matrix;
  valLabels: Int32Array;
  numClasses: number;
  numSource: number;
  /** Inverse-regularisation grid; default DEFAULT_C_GRID. Ties in val accuracy go to the earlier entry. */
  cGrid?: readonly number[];
  classNames?: readonly string[];
  /** L-BFGS iterations per grid value (scikit-learn `max_iter`). Default 100. */
  maxIter?: number;
  /** L-BFGS gradient tolerance (scikit-learn `tol`). Default 1e-4. */
  tol?: number;
}

export interface GridScore {
  C: number;
  valAccuracy: number;
  iterations: number;
  converged: boolean;
  /** Why L-BFGS stopped (see LbfgsResult.reason). */
  stop: LbfgsResult['reason'];
  /** max |∇| of the training objective at the returned weights. */
  gradMax: number;
}

export interface ReverseRelationship {
  /** R [numClasses × numSource], rows sum to 1. */
  matrix: Float32Array;
  /** Chosen inverse regularisation strength. */
  C: number;
  /** Calibrated logit scale a. */
  scale: number;
  /** Validation top-1 (fraction) of the chosen classifier. */
  valAccuracy: number;
  /** Every grid value tried, in grid order. */
  grid: GridScore[];
}

/**
 * Multinomial logistic regression without intercept, fitted with L-BFGS. The objective is
 * Σ CE + ‖W‖² / (2·C), the form scikit-learn 0.23 (used by the reference code) hands to
 * L-BFGS; it has the minimiser of ½‖W‖² + C·Σ CE, and `tol` applies to its gradient. (Newer
 * scikit-learn divides by n, which makes `tol` n times looser.) The products W·Pᵀ and Gᵀ·P run on the current TF.js backend with the
 * fixed data matrix as the right operand and no transpose flags: on WASM that is the XNNPACK
 * path with cached packed weights, ~20× faster than a transposed or fresh right operand.
 */
class SoftmaxRegression {
  private readonly p: tf.Tensor2D;
  private readonly pt: tf.Tensor2D;
  private readonly n: number;

  constructor(
    probs: Matrix,
    private readonly labels: Int32Array,
    private readonly numClasses: number,
    private readonly numSource: number,
  ) {
    this.n = labels.length;
    this.p = tf.tensor2d(probs instanceof Float32Array ? probs : Float32Array.from(probs), [
      this.n,
      numSource,
    ]);
    this.pt = tf.transpose(this.p);
  }

  fit(C: number, w0: Float64Array, maxIter: number, tol: number): LbfgsResult {
    const { n, numClasses: c, numSource: s, labels } = this;
    const ridge = 1 / C;
    // Gᵀ = (softmax − onehot)ᵀ, laid out [c × n] so it can be the left operand as is.
    const gT = new Float32Array(c * n);
    const objective = (w: Float64Array, grad: Float64Array): number => {
      // logitsᵀ [c × n] = W·Pᵀ.
      const logitsT = readAndDispose(
        tf.tidy(() => tf.matMul(tf.tensor2d(Float32Array.from(w), [c, s]), this.pt)),
      );
      let loss = 0;
      for (let i = 0; i < n; i++) {
        let max = -Infinity;
        for (let k = 0; k < c; k++) max = Math.max(max, logitsT[k * n + i]);
        let z = 0;
        for (let k = 0; k < c; k++) z += Math.exp(logitsT[k * n + i] - max);
        loss += max + Math.log(z) - logitsT[labels[i] * n + i];
        for (let k = 0; k < c; k++) gT[k * n + i] = Math.exp(logitsT[k * n + i] - max) / z;
        gT[labels[i] * n + i] -= 1;
      }
      const dw = readAndDispose(tf.tidy(() => tf.matMul(tf.tensor2d(gT, [c, n]), this.p)));
      let sq = 0;
      for (let k = 0; k < w.length; k++) {
        sq += w[k] * w[k];
        grad[k] = dw[k] + ridge * w[k];
      }
      return loss + 0.5 * ridge * sq;
    };
    return minimizeLbfgs(objective, w0, { maxIter, gtol: tol });
  }

  dispose(): void {
    this.p.dispose();
    this.pt.dispose();
  }
}

/** Reads a tensor's values and frees it. (Returning a typed array from tf.tidy is slow: tidy walks every element.) */
function readAndDispose(t: tf.Tensor): Float32Array {
  try {
    return t.dataSync() as Float32Array;
  } finally {
    t.dispose();
  }
}

/** logits = P·Wᵀ on the current backend, returned as float64. */
function linearLogits(
  probs: Matrix,
  n: number,
  numSource: number,
  w: Float64Array,
  numClasses: number,
): Float64Array {
  const wT = new Float32Array(numSource * numClasses);
  for (let k = 0; k < numClasses; k++)
    for (let j = 0; j < numSource; j++) wT[j * numClasses + k] = w[k * numSource + j];
  const x = probs instanceof Float32Array ? probs : Float32Array.from(probs);
  return Float64Array.from(
    readAndDispose(
      tf.tidy(() => tf.matMul(tf.tensor2d(x, [n, numSource]), tf.tensor2d(wT, [numSource, numClasses]))),
    ),
  );
}

function top1(logits: Float64Array, n: number, c: number, labels: Int32Array): number {
  let hits = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    // Strict > keeps the first maximum, like numpy argmax.
    for (let k = 1; k < c; k++) if (logits[i * c + k] > logits[i * c + best]) best = k;
    if (best === labels[i]) hits++;
  }
  return hits / n;
}

/**
 * Reverse relationship (spec §1.3): fit p(y_t | source probs) by multinomial logistic
 * regression on train for each C of the grid, keep the C with the best val top-1 (first
 * argmax, so ties go to the larger C of the default grid), calibrate its logit scale on val,
 * and invert with the source prior π (mean of train + val probabilities).
 *
 * Differences from scikit-learn, on purpose: grid values are fitted from the smallest C up,
 * each warm-started from the previous solution (much faster, same optimum when converged);
 * and every class must appear in train (the reference silently shifts rows, spec §4 #11).
 *
 * Runs its matrix products on the current TF.js backend (call selectBackend() first).
 *
 * Shape: trainProbs [nTrain × numSource], valProbs [nVal × numSource] → matrix [numClasses × numSource].
 */
export function fitReverseRelationship(input: ReverseRelationshipInput): ReverseRelationship {
  const where = 'fitReverseRelationship';
  const { trainProbs, trainLabels, valProbs, valLabels, numClasses, numSource, classNames } = input;
  const cGrid = input.cGrid ?? DEFAULT_C_GRID;
  const maxIter = input.maxIter ?? 100;
  const tol = input.tol ?? 1e-4;
  const nTr = trainLabels.length;
  const nVa = valLabels.length;
  if (!Number.isInteger(numClasses) || numClasses < 2)
    throw new Error(`${where}: numClasses must be an integer ≥ 2, got ${numClasses}`);
  checkSize('trainProbs', trainProbs, nTr, numSource, where);
  if (nVa === 0)
    throw new Error(
      `${where}: valProbs/valLabels are empty; the C grid and the calibration need validation samples`,
    );
  checkSize('valProbs', valProbs, nVa, numSource, where);
  checkLabels(where, 'trainLabels', trainLabels, nTr, numClasses);
  checkLabels(where, 'valLabels', valLabels, nVa, numClasses);
  if (cGrid.length === 0 || cGrid.some((c) => !(c > 0) || !Number.isFinite(c)))
    throw new Error(`${where}: cGrid must be a non-empty list of positive numbers`);
  requireEveryClass(`${where} (train split)`, trainLabels, numClasses, classNames);

  const model = new SoftmaxRegression(trainProbs, trainLabels, numClasses, numSource);
  const grid: GridScore[] = new Array<GridScore>(cGrid.length);
  const weights: Float64Array[] = new Array<Float64Array>(cGrid.length);
  try {
    // Solutions grow with C, so the previous (smaller-C) optimum is a close starting point.
    const order = [...cGrid.keys()].sort((i, j) => cGrid[i] - cGrid[j]);
    let w: Float64Array = new Float64Array(numClasses * numSource);
    for (const idx of order) {
      const fit = model.fit(cGrid[idx], w, maxIter, tol);
      w = fit.x;
      weights[idx] = w;
      const acc = top1(linearLogits(valProbs, nVa, numSource, w, numClasses), nVa, numClasses, valLabels);
      grid[idx] = {
        C: cGrid[idx],
        valAccuracy: acc,
        iterations: fit.iterations,
        converged: fit.converged,
        stop: fit.reason,
        gradMax: fit.gradMax,
      };
    }
  } finally {
    model.dispose();
  }
  let best = 0;
  for (let i = 1; i < grid.length; i++) if (grid[i].valAccuracy > grid[best].valAccuracy) best = i;
  const W = weights[best];

  const scale = calibrateScale(
    linearLogits(valProbs, nVa, numSource, W, numClasses),
    nVa,
    numClasses,
    valLabels,
  );
  const prior = new Float64Array(numSource);
  for (const probs of [trainProbs, valProbs]) {
    for (let k = 0; k < probs.length; k++) prior[k % numSource] += probs[k];
  }
  for (let j = 0; j < numSource; j++) prior[j] /= nTr + nVa;

  const matrix = bayesInvert(W, numClasses, numSource, scale, prior);
  return { matrix, C: grid[best].C, scale, valAccuracy: grid[best].valAccuracy, grid };
}

export interface RelationshipStats {
  /** Sum of each target row (≈ 1). */
  rowSums: number[];
  /** Per target class, the k most probable source classes, most probable first. */
  top: { indices: number[]; probs: number[] }[];
}

/**
 * Row sums and the top-k source classes of each target class (for relationship.json and plots).
 *
 * Shape: matrix [C × S] → rowSums [C], top [C] × k.
 */
export function relationshipStats(matrix: Matrix, C: number, S: number, topK = 5): RelationshipStats {
  checkSize('matrix', matrix, C, S, 'relationshipStats');
  const k = Math.max(0, Math.min(Math.floor(topK), S));
  const rowSums: number[] = [];
  const top: RelationshipStats['top'] = [];
  for (let r = 0; r < C; r++) {
    const row = matrix.subarray(r * S, (r + 1) * S);
    let sum = 0;
    for (let j = 0; j < S; j++) sum += row[j];
    rowSums.push(sum);
    // Partial selection keeps this O(S·k) for S = 1000, k ≈ 5.
    const indices: number[] = [];
    for (let j = 0; j < S; j++) {
      if (indices.length < k || row[j] > row[indices[indices.length - 1]]) {
        let pos = indices.length < k ? indices.length : k - 1;
        if (indices.length < k) indices.push(j);
        while (pos > 0 && row[indices[pos - 1]] < row[j]) {
          indices[pos] = indices[pos - 1];
          pos--;
        }
        indices[pos] = j;
      }
    }
    top.push({ indices, probs: indices.map((j) => row[j]) });
  }
  return { rowSums, top };
}
