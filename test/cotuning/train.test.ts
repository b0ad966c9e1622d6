import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { resolveHyperparameters } from '../../src/cotuning/hyperparameters.js';
import { decodeImages, type ImageSet } from '../../src/cotuning/images.js';
import { buildNet, disposeNet, stateVariables, trainableGroups } from '../../src/cotuning/network.js';
import { NesterovSgd } from '../../src/cotuning/optimizer.js';
import { batchIndices, lrMultiplier, stepPlan, train, trainStep } from '../../src/cotuning/train.js';
import { FLOWERS_DIR, MOBILENET_DIR } from '../helpers/shared-data.js';

const CLASSES = ['daisy', 'sunflower', 'tigerlily'];
let tmp: string;
let trainSet: ImageSet;
let valSet: ImageSet;

async function items(split: string, perClass: number) {
  const out: { path: string; label: number }[] = [];
  for (const [label, name] of CLASSES.entries()) {
    const dir = join(FLOWERS_DIR, split, name);
    for (const f of (await readdir(dir)).sort().slice(0, perClass)) out.push({ path: join(dir, f), label });
  }
  return out;
}

before(async () => {
  await selectBackend();
  tmp = await mkdtemp(join(tmpdir(), 'cotune-train-'));
  trainSet = await decodeImages(await items('train', 4), 64, 'train');
  valSet = await decodeImages(await items('test', 2), 64, 'eval');
});
after(() => rm(tmp, { recursive: true, force: true }));

/** A relationship that points each target class at a few source classes, rows summing to 1. */
function relationship(C: number, S: number): Float32Array {
  const r = new Float32Array(C * S).fill(0.5 / S);
  for (let c = 0; c < C; c++) r[c * S + 985 - c] += 0.5;
  return r;
}

function setup(net: Awaited<ReturnType<typeof buildNet>>, method: 'co-tuning' | 'fine-tune', extra: Record<string, unknown> = {}) {
  return {
    net,
    method,
    hp: resolveHyperparameters({ batchSize: 12, iterations: 6, augment: false, evalEvery: 3, ...extra }),
    seed: 5,
    train: trainSet,
    val: valSet,
    relationship: method === 'co-tuning' ? relationship(3, 1000) : null,
    normalization: 'minus1to1' as const,
    fingerprint: 'test',
    hooks: {},
    progressRange: [0, 1] as [number, number],
  };
}

test('a few Co-Tuning steps on real images lower the loss', async () => {
  const net = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: 64, seed: 1 });
  const losses: number[] = [];
  try {
    await train({
      ...setup(net, 'co-tuning', { iterations: 8 }),
      hooks: { onProgress: (p) => p.loss !== undefined && losses.push(p.loss) },
    });
  } finally {
    disposeNet(net);
  }
  assert.equal(losses.length, 8);
  // The whole 12-image set is one batch without augmentation, so every step sees the same data.
  assert.ok(losses[7] < losses[0] * 0.9, `loss went ${losses[0]} → ${losses[7]}`);
});

test('tensor count stays flat over 50 training steps', async () => {
  const net = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: 32, seed: 2 });
  const groups = trainableGroups(net, true);
  const optimizer = new NesterovSgd(0.9, 5e-4);
  const counts: number[] = [];
  const soft = tf.tensor2d(relationship(3, 1000), [3, 1000]);
  try {
    for (let step = 0; step < 50; step++) {
      const x = tf.randomUniform([4, 32, 32, 3], -1, 1, 'float32', step) as tf.Tensor4D;
      const labels = tf.tensor1d([0, 1, 2, 0], 'int32');
      const softTargets = tf.gather(soft, labels) as tf.Tensor2D;
      trainStep(net, optimizer, groups, { x, labels, softTargets }, 2.3, { backbone: 1e-3, sourceHead: 1e-3, targetHead: 1e-2 });
      tf.dispose([x, labels, softTargets]);
      counts.push(tf.memory().numTensors);
    }
  } finally {
    optimizer.dispose();
    soft.dispose();
    disposeNet(net);
  }
  // Step 1 creates the optimiser's velocity buffers; after that nothing may accumulate.
  assert.equal(counts[49], counts[1], `numTensors ${counts[1]} → ${counts[49]}`);
});

test('a run stopped mid-epoch checkpoints and resumes to the same weights as an uninterrupted run', async () => {
  const read = (net: Awaited<ReturnType<typeof buildNet>>) => stateVariables(net).map((v) => Array.from(v.dataSync()));
  const straight = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: 64, seed: 4 });
  const ckptDir = join(tmp, 'ckpt');
  let expected: number[][];
  try {
    await train(setup(straight, 'co-tuning', { batchSize: 6 }));
    expected = read(straight);
  } finally {
    disposeNet(straight);
  }
  const first = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: 64, seed: 4 });
  const controller = new AbortController();
  try {
    await assert.rejects(
      train({
        // Two steps per epoch: stopping after step 3 is mid-epoch, so the stop itself must checkpoint.
        ...setup(first, 'co-tuning', { batchSize: 6 }),
        checkpointDir: ckptDir,
        hooks: { signal: controller.signal, onProgress: (p) => void (p.step === 3 && controller.abort('shutdown')) },
      }),
      { name: 'AbortError' },
    );
  } finally {
    disposeNet(first);
  }
  const second = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: 64, seed: 4 });
  try {
    const logs: string[] = [];
    const result = await train({ ...setup(second, 'co-tuning', { batchSize: 6 }), checkpointDir: ckptDir, hooks: { log: (m) => logs.push(m) } });
    assert.equal(result.resumedFromStep, 3);
    assert.match(logs.join('\n'), /resumed from checkpoint at step 3\/6/);
    const actual = read(second);
    let worst = 0;
    actual.forEach((values, i) => values.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - expected[i][j])))));
    assert.ok(worst < 1e-5, `max |Δw| = ${worst}`);
  } finally {
    disposeNet(second);
  }
});

test('learning rates: groups keep their ratio and decay ×0.1 after 60% of the steps', () => {
  const hp = resolveHyperparameters({});
  assert.deepEqual([hp.lrBackbone, hp.lrSourceHead, hp.lrTargetHead], [1e-3, 1e-3, 1e-2]);
  assert.equal(lrMultiplier(hp, 359, 600), 1);
  assert.ok(Math.abs(lrMultiplier(hp, 360, 600) - 0.1) < 1e-12);
  assert.ok(Math.abs(hp.lrBackbone * lrMultiplier(hp, 599, 600) - 1e-4) < 1e-12);
});

test('the batch never exceeds the training set and batches cover every image each epoch', () => {
  const plan = stepPlan(resolveHyperparameters({ batchSize: 48 }), 10);
  assert.equal(plan.batch, 10);
  const seen = new Set([...batchIndices(3, 10, 4, 0), ...batchIndices(3, 10, 4, 1), ...batchIndices(3, 10, 4, 2).slice(0, 2)]);
  assert.equal(seen.size, 10);
  assert.deepEqual(batchIndices(3, 10, 4, 7), batchIndices(3, 10, 4, 7));
});

test('a diverging run stops with a train: error instead of finishing at chance level', async () => {
  const net = await buildNet(MOBILENET_DIR, { numClasses: 3, imageSize: 64, seed: 6 });
  try {
    await assert.rejects(
      train(setup(net, 'co-tuning', { iterations: 30, lrBackbone: 10, lrSourceHead: 10, lrTargetHead: 10, momentum: 0.999, lambda: 100 })),
      /^Error: train: loss (diverged|became)/,
    );
  } finally {
    disposeNet(net);
  }
});
