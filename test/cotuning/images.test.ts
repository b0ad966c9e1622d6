import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { decodeImages, evalBatch, randomCropBoxes, trainBatch, type ImageSet, type Normalization } from '../../src/cotuning/images.js';
import { createRng } from '../../src/cotuning/rng.js';
import { CUB_DIR } from '../helpers/shared-data.js';

const SIZE = 48;
let set: ImageSet;

before(async () => {
  await selectBackend();
  const dir = join(CUB_DIR, 'images', 'Blue_Jay');
  const files = (await readdir(dir)).sort().slice(0, 5);
  set = await decodeImages(files.map((f) => ({ path: join(dir, f), label: 0 })), SIZE, 'train');
});

/** Images `indices` of `s` stacked as a uint8-valued int32 tensor. Shape: [B, side, side, 3]. */
function gather(s: ImageSet, indices: number[]): tf.Tensor4D {
  const per = s.side * s.side * 3;
  const out = new Int32Array(indices.length * per);
  indices.forEach((index, b) => out.set(s.pixels.subarray(index * per, (index + 1) * per), b * per));
  return tf.tensor4d(out, [indices.length, s.side, s.side, 3], 'int32');
}

/** Bytes mapped to the model's input range in tf ops, as the library did before it built batches in one pass. */
function normalize(x: tf.Tensor4D, kind: Normalization): tf.Tensor4D {
  return tf.tidy(() => {
    const f = x.toFloat();
    if (kind === 'minus1to1') return f.div(127.5).sub(1);
    if (kind === 'zero1') return f.div(255);
    const mean = tf.tensor1d([0.485 * 255, 0.456 * 255, 0.406 * 255]);
    const std = tf.tensor1d([0.229 * 255, 0.224 * 255, 0.225 * 255]);
    return f.sub(mean).div(std);
  }) as tf.Tensor4D;
}

/** The batch as TF ops build it: cropAndResize (bilinear) of the gathered bytes, then normalize. */
function composedBatch(indices: number[], boxes: Float32Array | null, kind: Normalization): tf.Tensor4D {
  return tf.tidy(() => {
    const raw = gather(set, indices).toFloat() as tf.Tensor4D;
    if (!boxes) {
      const start = Math.floor((set.side - SIZE) / 2);
      return normalize(raw.slice([0, start, start, 0], [-1, SIZE, SIZE, 3]), kind);
    }
    const cropped = tf.image.cropAndResize(raw, tf.tensor2d(boxes, [indices.length, 4]), tf.range(0, indices.length, 1, 'int32') as tf.Tensor1D, [SIZE, SIZE], 'bilinear');
    return normalize(cropped, kind);
  });
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  const x = a.dataSync();
  const y = b.dataSync();
  assert.equal(x.length, y.length);
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  return worst;
}

for (const kind of ['minus1to1', 'zero1', 'imagenet'] as const) {
  test(`a training batch of real images (${kind}): random crops and flips as cropAndResize + normalize give them`, () => {
    const indices = [4, 0, 2, 2, 1, 3];
    const seed = 11;
    const boxes = randomCropBoxes(indices.length, 0.08, createRng(seed));
    // The boxes mirror some crops and cut others small, so both paths of the sampling are used.
    assert.ok(Array.from({ length: indices.length }, (_, i) => boxes[4 * i + 1] > boxes[4 * i + 3]).some(Boolean));
    const ours = trainBatch(set, indices, SIZE, kind, { rng: createRng(seed), scaleMin: 0.08 });
    const theirs = composedBatch(indices, boxes, kind);
    try {
      assert.deepEqual(ours.shape, [indices.length, SIZE, SIZE, 3]);
      assert.ok(maxAbsDiff(ours, theirs) <= 1e-4, `max difference ${maxAbsDiff(ours, theirs)}`);
      // Not a constant image: the crops carry the photos' detail.
      assert.ok(tf.tidy(() => tf.moments(ours).variance.dataSync()[0]) > 1e-3);
    } finally {
      tf.dispose([ours, theirs]);
    }
  });
}

test('a training batch without augmentation is the exact centre crop, normalised', () => {
  const indices = [1, 3, 0];
  const ours = trainBatch(set, indices, SIZE, 'minus1to1', null);
  const theirs = composedBatch(indices, null, 'minus1to1');
  try {
    assert.ok(maxAbsDiff(ours, theirs) <= 1e-6, `max difference ${maxAbsDiff(ours, theirs)}`);
  } finally {
    tf.dispose([ours, theirs]);
  }
});

test('an eval batch of real images is normalize(gather(…)) for each normalisation', async () => {
  const dir = join(CUB_DIR, 'images', 'Blue_Jay');
  const files = (await readdir(dir)).sort().slice(0, 3);
  const evalSet = await decodeImages(files.map((f) => ({ path: join(dir, f), label: 0 })), SIZE, 'eval');
  for (const kind of ['minus1to1', 'zero1', 'imagenet'] as const) {
    const ours = evalBatch(evalSet, [2, 0, 1], kind);
    const theirs = tf.tidy(() => normalize(gather(evalSet, [2, 0, 1]), kind));
    try {
      assert.deepEqual(ours.shape, [3, SIZE, SIZE, 3]);
      assert.ok(maxAbsDiff(ours, theirs) <= 1e-6, `${kind}: max difference ${maxAbsDiff(ours, theirs)}`);
    } finally {
      tf.dispose([ours, theirs]);
    }
  }
});

test('a centre crop larger than the stored images is refused, naming imageSize', () => {
  assert.throws(() => trainBatch(set, [0], set.side + 1, 'minus1to1', null), new RegExp(`imageSize ${set.side + 1} is larger than the stored images \\(${set.side} px\\)`));
});
