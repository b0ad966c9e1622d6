import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import * as tar from 'tar';
import { directoryLoader } from '../../src/cotuning/model-io.js';
import { inspectModelJson, readModelJson } from '../../src/cotuning/model-spec.js';
import { type DemoAssets, ensureDemoAssets, writeTargetSplit } from '../../src/demo/assets.js';
import { evaluateOnFreshImages } from '../../src/demo/pretrain.js';
import { SOURCE_CLASSES, TARGET_CLASSES } from '../../src/demo/shapes.js';

/** Smaller than the demo's defaults so the whole file stays well under a minute. */
const SMALL = {
  seed: 7,
  sourcePerClass: 60,
  trainPerClass: 3,
  valPerClass: 2,
  testPerClass: 4,
  pretrainSeconds: 25,
  maxEpochs: 5,
};

async function hashTree(root: string): Promise<string> {
  const files = (await readdir(root, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort();
  const hash = createHash('sha256');
  for (const file of files) hash.update(file.slice(root.length)).update(await readFile(file));
  return hash.digest('hex');
}

describe('demo assets', () => {
  let dir: string;
  let assets: DemoAssets;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cotune-demo-assets-'));
    assets = await ensureDemoAssets(join(dir, 'cache'), SMALL);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('the dataset has train/, val/ and test/ folders with every target class, also in the archive', async () => {
    const expected = TARGET_CLASSES.map((c) => c.name).sort();
    for (const [split, perClass] of [
      ['train', SMALL.trainPerClass],
      ['val', SMALL.valPerClass],
      ['test', SMALL.testPerClass],
    ] as const) {
      assert.deepEqual((await readdir(join(assets.datasetDir, split))).sort(), expected);
      for (const cls of expected) {
        const files = await readdir(join(assets.datasetDir, split, cls));
        assert.equal(files.length, perClass, `${split}/${cls}`);
      }
    }
    const meta = await sharp(join(assets.datasetDir, 'test', expected[0], '000.png')).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 32, 32, 3]);

    const entries: string[] = [];
    await tar.list({ file: assets.datasetArchive, onReadEntry: (e) => entries.push(e.path) });
    assert.equal(
      entries.length,
      TARGET_CLASSES.length * (SMALL.trainPerClass + SMALL.valPerClass + SMALL.testPerClass),
    );
    assert.ok(entries.includes(`train/${expected[0]}/000.png`), entries.slice(0, 3).join(', '));
    assert.deepEqual(
      JSON.parse(await readFile(assets.sourceClassNamesPath, 'utf8')),
      SOURCE_CLASSES.map((c) => c.name),
    );
  });

  test('the same seed draws byte-identical images; another seed does not', async () => {
    const again = join(dir, 'again');
    const other = join(dir, 'other');
    for (const split of ['train', 'val', 'test'] as const) {
      const perClass = { train: SMALL.trainPerClass, val: SMALL.valPerClass, test: SMALL.testPerClass }[
        split
      ];
      await writeTargetSplit(again, split, TARGET_CLASSES, 32, perClass, SMALL.seed);
      await writeTargetSplit(other, split, TARGET_CLASSES, 32, perClass, SMALL.seed + 1);
    }
    const original = await hashTree(assets.datasetDir);
    assert.equal(await hashTree(again), original);
    assert.notEqual(await hashTree(other), original);
  });

  test('the source model loads from disk, has the head the library expects and was really trained', async () => {
    const inspection = inspectModelJson(await readModelJson(assets.modelDir));
    assert.deepEqual(inspection, {
      inputShape: [32, 32, 3],
      headLayer: 'source_head',
      headKind: 'dense',
      featureDim: 64,
      numSourceClasses: SOURCE_CLASSES.length,
      normalization: 'minus1to1',
    });
    const model = await tf.loadLayersModel(directoryLoader(assets.modelDir));
    try {
      // Fresh images under a seed neither pre-training nor the generator's own check used.
      const top1 = evaluateOnFreshImages(model, SOURCE_CLASSES, 32, 8, 12345);
      const chance = 1 / SOURCE_CLASSES.length;
      assert.ok(top1 >= 4 * chance, `top-1 ${top1.toFixed(3)} is not well above chance ${chance.toFixed(3)}`);
      const report = assets.pretrain;
      assert.ok(report.epochs >= 1 && report.heldOutTop1 >= 4 * chance, JSON.stringify(report));
    } finally {
      model.dispose();
    }
  });

  test('a second call reuses the cache; a changed version stamp regenerates the same weights', async () => {
    const started = Date.now();
    const cached = await ensureDemoAssets(join(dir, 'cache'), SMALL);
    assert.equal(cached.generated, false);
    assert.ok(Date.now() - started < 2000);

    const tiny = {
      ...SMALL,
      sourcePerClass: 2,
      trainPerClass: 1,
      valPerClass: 0,
      testPerClass: 1,
      maxEpochs: 1,
    };
    const tinyDir = join(dir, 'tiny');
    const weights = () =>
      readFile(join(tinyDir, 'model', 'weights.bin')).then((b) =>
        createHash('sha256').update(b).digest('hex'),
      );
    assert.equal((await ensureDemoAssets(tinyDir, tiny)).generated, true);
    const first = await weights();
    assert.equal((await ensureDemoAssets(tinyDir, tiny)).generated, false);
    const stampPath = join(tinyDir, 'assets.json');
    const stamp = JSON.parse(await readFile(stampPath, 'utf8')) as { version: number };
    await writeFile(stampPath, JSON.stringify({ ...stamp, version: stamp.version - 1 }));
    assert.equal((await ensureDemoAssets(tinyDir, tiny)).generated, true);
    // Seeded init, no shuffle, stopped by epochs: pre-training is reproducible too.
    assert.equal(await weights(), first);
    assert.equal((await ensureDemoAssets(tinyDir, { ...tiny, seed: 8 })).generated, true);
    assert.notEqual(await weights(), first);
  });
});
