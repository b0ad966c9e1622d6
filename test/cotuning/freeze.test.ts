/**
 * Partial fine-tuning (freezeBelow): the backbone is cut at one tensor, the layers below it run
 * in inference mode outside the gradient tape and keep every weight, batch-norm statistics included.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { BN_TRAIN_KERNEL } from '../../src/cotuning/backend/batchnorm.js';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { InvalidInputError } from '../../src/cotuning/errors.js';
import { buildNet, disposeNet, features, splitBackbone, trainableGroups } from '../../src/cotuning/network.js';
import { NesterovSgd } from '../../src/cotuning/optimizer.js';
import { trainStep } from '../../src/cotuning/train.js';
import { MOBILENET_DIR } from '../helpers/shared-data.js';

const SIZE = 48;
const FREEZE = 'conv_dw_7';
const LRS = { backbone: 1e-2, sourceHead: 1e-2, targetHead: 1e-1 };

before(async () => {
  await selectBackend();
});

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};

test('frozen + trainable parts in inference mode give the backbone features exactly', async () => {
  const net = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: SIZE, seed: 1 });
  try {
    const split = splitBackbone(net.backbone, FREEZE);
    assert.equal(split.trainable.layers[1].name, FREEZE, 'the trainable part starts at the named layer');
    const x = tf.randomUniform([2, SIZE, SIZE, 3], -1, 1, 'float32', 3) as tf.Tensor4D;
    const whole = tf.tidy(() => features(net, x, false).dataSync());
    const parts = tf.tidy(() => (split.trainable.apply(split.frozen.apply(x), { training: false }) as tf.Tensor).dataSync());
    assert.equal(parts.length, whole.length);
    assert.equal(maxDiff(parts, whole), 0);
    x.dispose();
  } finally {
    disposeNet(net);
  }
});

test('a step with freezeBelow changes no frozen weight or statistic and differentiates nothing below the cut', async () => {
  const net = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: SIZE, seed: 2 });
  const optimizer = new NesterovSgd(0.9, 5e-4);
  try {
    const groups = trainableGroups(net, true, FREEZE);
    const at = net.backbone.layers.findIndex((l) => l.name === FREEZE);
    const below = net.backbone.layers.slice(0, at).flatMap((l) => l.weights.map((w) => w.read()));
    const above = net.backbone.layers.slice(at).flatMap((l) => l.weights.map((w) => w.read()));
    assert.ok(below.length > 20 && above.length > 20, `weights below/above the cut: ${below.length}/${above.length}`);
    // Every trainable backbone variable is above the cut.
    const aboveIds = new Set(above.map((t) => t.id));
    assert.ok(groups.backbone.every((v) => aboveIds.has(v.id)));
    const before = [...below, ...above].map((t) => t.dataSync().slice());

    const x = tf.randomUniform([4, SIZE, SIZE, 3], -1, 1, 'float32', 4) as tf.Tensor4D;
    const labels = tf.tensor1d([0, 1, 2, 0], 'int32');
    const softTargets = tf.softmax(tf.randomNormal([4, 1000], 0, 1, 'float32', 5)) as tf.Tensor2D;
    const profile = await tf.profile(() => {
      trainStep(net, optimizer, groups, { x, labels, softTargets }, 2.3, LRS);
    });
    const after = [...below, ...above].map((t) => t.dataSync());
    below.forEach((_, i) => assert.equal(maxDiff(after[i], before[i]), 0, `frozen weight ${i} changed`));
    const changed = above.filter((_, i) => maxDiff(after[below.length + i], before[below.length + i]) > 0).length;
    // Trainable weights move, and so do the moving statistics of the batch norms above the cut.
    assert.equal(changed, above.length, `${above.length - changed} weights above the cut did not change`);

    // One depthwise filter gradient per trainable depthwise layer, none for the frozen ones.
    const depthwiseAbove = net.backbone.layers.slice(at).filter((l) => l.getClassName() === 'DepthwiseConv2D').length;
    const filterGrads = profile.kernels.filter((k) => k.name === 'DepthwiseConv2dNativeBackpropFilter').length;
    assert.equal(filterGrads, depthwiseAbove);
    // Batch norm runs in training mode (batch statistics) only above the cut.
    const bnAbove = net.backbone.layers.slice(at).filter((l) => l.getClassName() === 'BatchNormalization').length;
    assert.equal(profile.kernels.filter((k) => k.name === BN_TRAIN_KERNEL).length, bnAbove);
    tf.dispose([x, labels, softTargets]);
  } finally {
    optimizer.dispose();
    disposeNet(net);
  }
});

test('a cut that more than one tensor crosses is refused, naming the field', () => {
  // input → a → b → add(a, b) → c: cutting before "b" crosses at a (one tensor); before "add", at a and b.
  const input = tf.input({ shape: [4, 4, 2] });
  const a = tf.layers.conv2d({ filters: 2, kernelSize: 1, name: 'a' }).apply(input) as tf.SymbolicTensor;
  const b = tf.layers.conv2d({ filters: 2, kernelSize: 3, padding: 'same', name: 'b' }).apply(a) as tf.SymbolicTensor;
  const sum = tf.layers.add({ name: 'add' }).apply([a, b]) as tf.SymbolicTensor;
  const c = tf.layers.conv2d({ filters: 3, kernelSize: 1, name: 'c' }).apply(sum) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: c });

  const split = splitBackbone(model, 'b');
  const x = tf.randomNormal([2, 4, 4, 2], 0, 1, 'float32', 6);
  const whole = (model.predict(x) as tf.Tensor).dataSync();
  const parts = (split.trainable.apply(split.frozen.apply(x)) as tf.Tensor).dataSync();
  assert.equal(maxDiff(parts, whole), 0, 'the residual branch is rebuilt with the shared layers');

  for (const name of ['add', 'nope', 'input_1']) {
    assert.throws(
      () => splitBackbone(model, name === 'input_1' ? model.layers[0].name : name),
      (err: unknown) => err instanceof InvalidInputError && err.field === 'hyperparameters.freezeBelow' && err.message.startsWith('hyperparameters.freezeBelow: '),
      name,
    );
  }
  x.dispose();
  model.dispose();
});
