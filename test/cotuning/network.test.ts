import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { decodeImages, evalBatch } from '../../src/cotuning/images.js';
import { inspectModel } from '../../src/cotuning/inspect.js';
import { loadLayersModel, saveLayersModel } from '../../src/cotuning/model-io.js';
import { buildNet, disposeNet, exportTargetModel, features, sourceLogits } from '../../src/cotuning/network.js';
import { CUB_DIR, IMAGENET_CLASSES, MOBILENET_DIR } from '../helpers/shared-data.js';

let tmp: string;
before(async () => {
  await selectBackend();
  tmp = await mkdtemp(join(tmpdir(), 'cotune-net-'));
});
after(() => rm(tmp, { recursive: true, force: true }));

test('the shared MobileNet splits at conv_preds (1x1 conv) with 256 features and 1000 source classes', async () => {
  const info = await inspectModel(MOBILENET_DIR);
  assert.deepEqual(info, {
    inputShape: [224, 224, 3],
    headLayer: 'conv_preds',
    headKind: 'conv1x1',
    featureDim: 256,
    numSourceClasses: 1000,
    normalization: 'minus1to1',
  });
});

test('a model without a classifier before its softmax is refused with a clear message', async () => {
  const dir = join(tmp, 'headless');
  await mkdir(dir);
  const json = JSON.parse(await readFile(join(MOBILENET_DIR, 'model.json'), 'utf8'));
  const config = json.modelTopology.model_config.config;
  // Cut the network at the global pooling layer: a feature extractor with no source head.
  const cut = config.layers.findIndex((l: { name: string }) => l.name === 'global_average_pooling2d_1');
  config.layers = config.layers.slice(0, cut + 1);
  config.output_layers = [['global_average_pooling2d_1', 0, 0]];
  await writeFile(join(dir, 'model.json'), JSON.stringify(json));
  await assert.rejects(inspectModel(dir), /no usable source head/);
  await assert.rejects(inspectModel(MOBILENET_DIR, 'no_such_layer'), /not found/);
});

test('zero-shot: the pre-trained source head calls most CUB Blue_Jay images "jay"', async () => {
  const classes = JSON.parse(await readFile(IMAGENET_CLASSES, 'utf8')) as string[];
  const dir = join(CUB_DIR, 'images', 'Blue_Jay');
  const files = (await readdir(dir)).sort().slice(0, 12);
  const net = await buildNet(MOBILENET_DIR, { numClasses: 2, seed: 0 });
  try {
    const set = await decodeImages(files.map((f) => ({ path: join(dir, f), label: 0 })), 224, 'eval');
    const top = tf.tidy(() => sourceLogits(net, features(net, evalBatch(set, files.map((_, i) => i), 'minus1to1'), false)).argMax(1).dataSync());
    const jays = Array.from(top).filter((i) => classes[i] === 'jay').length;
    assert.ok(jays >= 9, `only ${jays}/12 predicted "jay"`);
  } finally {
    disposeNet(net);
  }
});

test('save → load of the exported target classifier gives identical predictions', async () => {
  const net = await buildNet(MOBILENET_DIR, { numClasses: 5, imageSize: 96, seed: 3 });
  const modelDir = join(tmp, 'saved');
  try {
    const model = exportTargetModel(net);
    await saveLayersModel(model, modelDir);
    const loaded = await loadLayersModel(modelDir);
    const x = tf.randomUniform([3, 96, 96, 3], -1, 1, 'float32', 7);
    const a = (model.predict(x) as tf.Tensor).dataSync();
    const b = (loaded.predict(x) as tf.Tensor).dataSync();
    assert.deepEqual(Array.from(b), Array.from(a));
    assert.equal((loaded.outputs[0].shape as number[])[1], 5);
    loaded.dispose();
    x.dispose();
  } finally {
    disposeNet(net);
  }
});

test('a model whose weight files are missing fails with the file named', async () => {
  const dir = join(tmp, 'partial');
  await mkdir(dir);
  await copyFile(join(MOBILENET_DIR, 'model.json'), join(dir, 'model.json'));
  await assert.rejects(loadLayersModel(dir), /weight file .*group1-shard1of1 is missing/);
});
