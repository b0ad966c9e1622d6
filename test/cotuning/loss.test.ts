import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { coTuningLoss, crossEntropy, softCrossEntropy } from '../../src/cotuning/loss.js';

// Spec §6.3: R from §6.1, λ = 2.3.
const R = [
  [0.5, 0.2, 0.2, 0.1],
  [0.1, 0.6, 0.2, 0.1],
  [0.05, 0.1, 0.15, 0.7],
];
const zs = [
  [1.0, 0.0, -1.0, 0.5],
  [0.0, 0.2, 0.3, 2.0],
];
const zt = [
  [2.0, 0.5, -0.5],
  [0.1, 0.2, 1.5],
];
const y = [0, 2];

function close(actual: ArrayLike<number>, expected: number[], tol: number) {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `index ${i}: ${actual[i]} vs ${expected[i]}`);
}

before(async () => {
  await selectBackend();
});

test('spec §6.3: soft CE, target CE and total loss', () => {
  const terms = tf.tidy(() => {
    const soft = tf.tensor2d(y.map((c) => R[c]));
    const t = coTuningLoss(tf.tensor2d(zt), tf.tensor1d(y, 'int32'), tf.tensor2d(zs), soft, 2.3);
    return [t.source, t.target, t.total].map((s) => s.dataSync()[0]);
  });
  close(terms, [1.16292426713804, 0.3422524420655295, 3.0169782564830214], 1e-6);
});

test('spec §6.3: gradient of the soft CE w.r.t. source logits is (softmax − R[y]) / B', () => {
  const grad = tf.tidy(() => {
    const soft = tf.tensor2d(y.map((c) => R[c]));
    return tf.grad((z: tf.Tensor) => softCrossEntropy(z as tf.Tensor2D, soft))(tf.tensor2d(zs)).dataSync();
  });
  close(grad, [-0.0130045769, -0.0128142562, -0.0679261573, 0.0937449903, 0.0206191157, 0.0057193138, -0.0134206348, -0.0129177947], 1e-6);
});

test('soft CE stays finite when targets hold exact zeros and softmax underflows', () => {
  const value = tf.tidy(() => {
    const logits = tf.tensor2d([[1000, -1000, 0, 5]]);
    const soft = tf.tensor2d([[1, 0, 0, 0]]);
    return softCrossEntropy(logits, soft).dataSync()[0];
  });
  assert.ok(Number.isFinite(value));
  assert.ok(Math.abs(value) < 1e-3);
});

test('fine-tuning (λ = 0) is the plain cross-entropy and ignores the source head', () => {
  const [total, ce] = tf.tidy(() => {
    const t = coTuningLoss(tf.tensor2d(zt), tf.tensor1d(y, 'int32'), null, null, 0);
    return [t.total.dataSync()[0], crossEntropy(tf.tensor2d(zt), tf.tensor1d(y, 'int32')).dataSync()[0]];
  });
  assert.ok(Math.abs(total - 0.3422524420655295) < 1e-6);
  assert.equal(total, ce);
});
