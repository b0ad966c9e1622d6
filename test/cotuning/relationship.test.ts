import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { minimizeLbfgs } from '../../src/cotuning/lbfgs.js';
import {
  bayesInvert,
  calibrateScale,
  directRelationship,
  fitReverseRelationship,
  meanNllAtScale,
  relationshipStats,
  softmaxRows,
} from '../../src/cotuning/relationship.js';

const TOL = 1e-6;

function assertClose(
  actual: ArrayLike<number>,
  expected: number[][] | number[],
  tol = TOL,
  what = 'value',
): void {
  const flat = (expected as (number | number[])[]).flat();
  assert.equal(actual.length, flat.length, `${what}: length`);
  for (let i = 0; i < flat.length; i++) {
    assert.ok(
      Math.abs(actual[i] - flat[i]) <= tol,
      `${what}[${i}] = ${actual[i]}, expected ${flat[i]} (±${tol})`,
    );
  }
}

function rowSums(m: ArrayLike<number>, rows: number, cols: number): number[] {
  return Array.from({ length: rows }, (_, r) => {
    let s = 0;
    for (let j = 0; j < cols; j++) s += m[r * cols + j];
    return s;
  });
}

// Spec §6.1 inputs.
const P = new Float32Array([
  0.7, 0.1, 0.1, 0.1, 0.1, 0.6, 0.2, 0.1, 0.5, 0.3, 0.1, 0.1, 0.0, 0.1, 0.1, 0.8, 0.1, 0.1, 0.2, 0.6, 0.3,
  0.2, 0.4, 0.1,
]);
const Y = new Int32Array([0, 1, 0, 2, 2, 0]);

/** Deterministic uniform [0, 1) generator so the synthetic problems are fixed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Samples of class c have source logits peaked on source classes peaks(c), plus noise. */
function synthetic(
  perClass: number,
  numClasses: number,
  numSource: number,
  peaks: (c: number) => number[],
  seed: number,
  peak = 4,
) {
  const rand = rng(seed);
  const n = perClass * numClasses;
  const logits = new Float32Array(n * numSource);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % numClasses;
    labels[i] = c;
    for (let j = 0; j < numSource; j++) logits[i * numSource + j] = 2 * rand() - 1;
    for (const j of peaks(c)) logits[i * numSource + j] += peak * (0.5 + rand());
  }
  return { probs: softmaxRows(logits, n, numSource), labels };
}

before(async () => {
  await selectBackend();
});

describe('softmaxRows', () => {
  test('is stable for large logits and honours the temperature', () => {
    const p = softmaxRows(new Float32Array([1000, 1001, -1000, 0]), 2, 2);
    assertClose(p, [1 / (1 + Math.E), Math.E / (1 + Math.E), 0, 1], 1e-7, 'softmax');
    const t = softmaxRows(new Float32Array([0, Math.log(4)]), 1, 2, 2);
    assertClose(t, [1 / 3, 2 / 3], 1e-7, 'softmax T=2');
  });

  test('rejects a bad temperature and a size mismatch', () => {
    assert.throws(() => softmaxRows(new Float32Array(4), 2, 2, 0), /temperature/);
    assert.throws(() => softmaxRows(new Float32Array(5), 2, 2), /logits has 5 values, expected 2 × 2/);
  });
});

describe('directRelationship (spec §1.2)', () => {
  test('§6.1: mean of probabilities per class', () => {
    const R = directRelationship(P, Y, 3, 4);
    assertClose(R, [
      [0.5, 0.2, 0.2, 0.1],
      [0.1, 0.6, 0.2, 0.1],
      [0.05, 0.1, 0.15, 0.7],
    ]);
    assertClose(rowSums(R, 3, 4), [1, 1, 1], 1e-6, 'row sums');
  });

  const Z = new Float32Array([
    2.0, 1.0, 0.1, -1.0, 0.0, 2.5, 0.5, 0.0, 1.5, 0.5, 0.0, -0.5, 0.0, 0.0, 0.0, 3.0, 0.5, -0.5, 1.5, 2.0,
    -1.0, 1.0, 1.0, 0.0,
  ]);

  test('§6.2: from logits, T = 1 (TLlib)', () => {
    const R = directRelationship(softmaxRows(Z, 6, 4), Y, 3, 4);
    assertClose(R, [
      [0.4237964911, 0.2824383672, 0.2080570188, 0.0857081229],
      [0.0631663448, 0.7695236141, 0.1041436963, 0.0631663448],
      [0.0800162776, 0.0431271786, 0.1802912451, 0.6965652987],
    ]);
  });

  test('§6.2: from logits, CT scale 0.8840456604957581 = temperature 1/0.884…', () => {
    const R = directRelationship(softmaxRows(Z, 6, 4, 1 / 0.8840456604957581), Y, 3, 4);
    assertClose(R, [
      [0.4018624182, 0.285927992, 0.2140815123, 0.0981280775],
      [0.0789103535, 0.7194065199, 0.122772773, 0.0789103535],
      [0.0948858671, 0.0562745093, 0.1883513441, 0.6604882794],
    ]);
  });

  test('§6.6: a class with no sample is an error naming it, never a NaN row', () => {
    const labels = new Int32Array([0, 2, 0, 2, 2, 0]);
    assert.throws(
      () => directRelationship(P, labels, 3, 4, ['cat', 'dog', 'emu']),
      (err: Error) => {
        assert.match(err.message, /target class 1 \("dog"\) has no sample/);
        return true;
      },
    );
    assert.throws(() => directRelationship(P, labels, 3, 4), /target class 1 has no sample/);
  });

  test('rejects labels outside [0, numClasses)', () => {
    assert.throws(
      () => directRelationship(P, new Int32Array([0, 1, 0, 3, 2, 0]), 3, 4),
      /labels\[3\] = 3 is outside \[0, 3\)/,
    );
  });
});

describe('bayesInvert (spec §6.4)', () => {
  test('reverse conditional times prior, rows renormalised', () => {
    const W = new Float64Array([2.0, -1.0, 0.0, -0.5, -1.0, 2.0, 0.5, -0.5, -0.5, -0.5, 0.0, 2.0]);
    const prior = new Float64Array(4);
    for (let k = 0; k < P.length; k++) prior[k % 4] += P[k] / 6;
    assertClose(prior, [0.2833333333, 0.2333333333, 0.1833333333, 0.3], 1e-7, 'prior');
    const R = bayesInvert(W, 3, 4, 1.5, prior);
    assertClose(R, [
      [0.8358657478, 0.0076469892, 0.1359199242, 0.0205673388],
      [0.0092306567, 0.6842847847, 0.2860389829, 0.0204455756],
      [0.0187875915, 0.0154721341, 0.1299038462, 0.8358364282],
    ]);
  });
});

describe('calibrateScale (spec §6.5)', () => {
  const V = new Float64Array([3.0, 0.0, -1.0, 0.5, 1.0, 0.0, -1.0, 2.0, 0.5, 0.0, 0.0, 2.5, 2.0, 1.8, 0.0]);
  const yv = new Int32Array([0, 0, 1, 2, 1]);

  test('NLL values at a = 1 and at a*', () => {
    assert.ok(Math.abs(meanNllAtScale(V, 5, 3, yv, 1) - 0.5018771207899405) <= 1e-12);
    assert.ok(Math.abs(meanNllAtScale(V, 5, 3, yv, 1.5405639674267413) - 0.46589604791258366) <= 1e-12);
  });

  test('from a = 1 reaches a* within 1e-6', () => {
    const a = calibrateScale(V, 5, 3, yv);
    assert.ok(Math.abs(a - 1.5405639674267413) <= 1e-6, `a = ${a}`);
    assert.ok(meanNllAtScale(V, 5, 3, yv, a) <= 0.46589604791258366 + 1e-12);
  });

  test('works from float32 logits and stays finite on separable data', () => {
    const a32 = calibrateScale(Float32Array.from(V), 5, 3, yv);
    assert.ok(Math.abs(a32 - 1.5405639674267413) <= 1e-6, `a = ${a32}`);
    const sep = calibrateScale(new Float64Array([1, 0, 0, 1]), 2, 2, new Int32Array([0, 1]));
    // The NLL keeps falling as a grows; the solver must stop at a large but finite a.
    assert.ok(Number.isFinite(sep) && sep > 10, `separable a = ${sep}`);
    assert.ok(meanNllAtScale(new Float64Array([1, 0, 0, 1]), 2, 2, new Int32Array([0, 1]), sep) < 1e-4);
  });
});

describe('minimizeLbfgs', () => {
  test('minimises the Rosenbrock function from (−1.2, 1)', () => {
    const fg = (x: Float64Array, g: Float64Array): number => {
      const [a, b] = [x[0], x[1]];
      g[0] = -2 * (1 - a) - 400 * a * (b - a * a);
      g[1] = 200 * (b - a * a);
      return (1 - a) ** 2 + 100 * (b - a * a) ** 2;
    };
    const r = minimizeLbfgs(fg, new Float64Array([-1.2, 1]), { maxIter: 200, gtol: 1e-8 });
    assert.ok(r.converged, `stopped: ${r.reason}`);
    assertClose(r.x, [1, 1], 1e-5, 'x');
  });
});

describe('fitReverseRelationship (spec §1.3)', () => {
  test('recovers the planted structure; rows sum to 1; no tensor leak', () => {
    const C = 4;
    const S = 12;
    const peaks = (c: number) => [3 * c, 3 * c + 1];
    const tr = synthetic(10, C, S, peaks, 1);
    const va = synthetic(4, C, S, peaks, 2);
    const before = tf.memory().numTensors;
    const r = fitReverseRelationship({
      trainProbs: tr.probs,
      trainLabels: tr.labels,
      valProbs: va.probs,
      valLabels: va.labels,
      numClasses: C,
      numSource: S,
    });
    assert.equal(tf.memory().numTensors, before, 'tensors leaked');
    assert.equal(r.matrix.length, C * S);
    assert.ok(r.matrix.every(Number.isFinite), 'finite');
    assertClose(rowSums(r.matrix, C, S), [1, 1, 1, 1], 1e-6, 'row sums');
    const stats = relationshipStats(r.matrix, C, S, 2);
    for (let c = 0; c < C; c++) {
      assert.deepEqual(
        [...stats.top[c].indices].sort((a, b) => a - b),
        peaks(c),
        `row ${c} peaks at ${stats.top[c].indices}`,
      );
      // The planted pair carries most of the mass; the third source class of the block (3c+2) does not.
      assert.ok(stats.top[c].probs[0] + stats.top[c].probs[1] > 0.5, `row ${c} mass ${stats.top[c].probs}`);
    }
    assert.ok(r.valAccuracy >= 0.9, `val accuracy ${r.valAccuracy}`);
    assert.ok(r.scale > 0, `scale ${r.scale}`);
    assert.equal(r.grid.length, 17);
    const bestAcc = Math.max(...r.grid.map((g) => g.valAccuracy));
    assert.equal(r.valAccuracy, bestAcc);
    assert.equal(r.C, r.grid.find((g) => g.valAccuracy === bestAcc)?.C, 'first argmax of the grid');
  });

  test('a 2-class target gives 2 distinct rows that sum to 1 (spec §4 #9)', () => {
    const S = 6;
    const peaks = (c: number) => [c === 0 ? 1 : 4];
    const tr = synthetic(8, 2, S, peaks, 3);
    const va = synthetic(4, 2, S, peaks, 4);
    const r = fitReverseRelationship({
      trainProbs: tr.probs,
      trainLabels: tr.labels,
      valProbs: va.probs,
      valLabels: va.labels,
      numClasses: 2,
      numSource: S,
    });
    assert.equal(r.matrix.length, 2 * S);
    assertClose(rowSums(r.matrix, 2, S), [1, 1], 1e-6, 'row sums');
    const stats = relationshipStats(r.matrix, 2, S, 1);
    assert.deepEqual([stats.top[0].indices[0], stats.top[1].indices[0]], [1, 4]);
    let diff = 0;
    for (let j = 0; j < S; j++) diff = Math.max(diff, Math.abs(r.matrix[j] - r.matrix[S + j]));
    assert.ok(diff > 0.1, `rows differ by only ${diff}`);
  });

  test('C-grid ties go to the first (larger) C', () => {
    const S = 6;
    const peaks = (c: number) => [2 * c];
    const tr = synthetic(6, 3, S, peaks, 5, 8);
    const va = synthetic(3, 3, S, peaks, 6, 8);
    const base = {
      trainProbs: tr.probs,
      trainLabels: tr.labels,
      valProbs: va.probs,
      valLabels: va.labels,
      numClasses: 3,
      numSource: S,
    };
    const desc = fitReverseRelationship({ ...base, cGrid: [100, 10, 1] });
    assert.deepEqual(
      desc.grid.map((g) => g.valAccuracy),
      [1, 1, 1],
      'setup: every C must separate this problem',
    );
    assert.equal(desc.C, 100);
    const asc = fitReverseRelationship({ ...base, cGrid: [1, 10, 100] });
    assert.equal(asc.C, 1, 'the tie rule follows grid order');
  });

  test('a class absent from train is a clear error, naming it', () => {
    const tr = synthetic(3, 3, 6, (c) => [c], 7);
    const labels = tr.labels.map((y) => (y === 1 ? 0 : y));
    assert.throws(
      () =>
        fitReverseRelationship({
          trainProbs: tr.probs,
          trainLabels: labels,
          valProbs: tr.probs,
          valLabels: tr.labels,
          numClasses: 3,
          numSource: 6,
          classNames: ['a', 'b', 'c'],
        }),
      /train split\): target class 1 \("b"\) has no sample/,
    );
  });

  test('empty validation split is rejected', () => {
    const tr = synthetic(3, 2, 4, (c) => [c], 8);
    assert.throws(
      () =>
        fitReverseRelationship({
          trainProbs: tr.probs,
          trainLabels: tr.labels,
          valProbs: new Float32Array(0),
          valLabels: new Int32Array(0),
          numClasses: 2,
          numSource: 4,
        }),
      /validation/,
    );
  });
});

describe('relationshipStats', () => {
  test('row sums and top-k in descending order', () => {
    const m = new Float32Array([0.1, 0.5, 0.0, 0.4, 0.25, 0.25, 0.3, 0.2]);
    const s = relationshipStats(m, 2, 4, 3);
    assertClose(s.rowSums, [1, 1], 1e-6, 'sums');
    assert.deepEqual(s.top[0].indices, [1, 3, 0]);
    assert.deepEqual(s.top[1].indices, [2, 0, 1]);
    assertClose(s.top[1].probs, [0.3, 0.25, 0.25], 1e-7, 'probs');
  });
});
