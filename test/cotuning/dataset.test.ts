import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { selectBackend } from '../../src/cotuning/backend/select.js';
import { indexDataset, planSplits, scanDataset } from '../../src/cotuning/dataset.js';
import { InvalidInputError } from '../../src/cotuning/errors.js';
import { resolveHyperparameters } from '../../src/cotuning/hyperparameters.js';
import { runRelationship } from '../../src/cotuning/run.js';
import { CUB_DIR, FLOWERS_DIR, MOBILENET_DIR } from '../helpers/shared-data.js';

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'cotune-data-'));
});
after(() => rm(tmp, { recursive: true, force: true }));

/** Copy `perClass` flower images of each class into root/<split>/<class>/. */
async function flowerSlice(root: string, classes: string[], perClass: Record<string, number>) {
  for (const [split, n] of Object.entries(perClass)) {
    for (const c of classes) {
      const from = join(FLOWERS_DIR, split === 'val' ? 'train' : split, c);
      const files = (await readdir(from)).sort();
      const picked = split === 'val' ? files.slice(-n) : files.slice(0, n);
      await mkdir(join(root, split, c), { recursive: true });
      for (const f of picked) await copyFile(join(from, f), join(root, split, c, f));
    }
  }
}

test('the CUB manifest: 100 classes; 15% sampling keeps round(0.15·n) ≥ 1 per class; val and test are disjoint', async () => {
  const index = await indexDataset(join(CUB_DIR, 'manifest.csv'));
  assert.equal(index.layout, 'csv-manifest');
  assert.equal(index.classes.length, 100);
  const plan = planSplits(index, { seed: 0, samplingRate: 0.15, valFraction: 0.2 });
  const perClass = new Map<number, number>();
  for (const item of plan.train) perClass.set(item.label, (perClass.get(item.label) ?? 0) + 1);
  assert.equal(perClass.size, 100);
  assert.ok([...perClass.values()].every((n) => n >= 1 && n <= 6));
  const testPaths = new Set(plan.test.map((i) => i.path));
  assert.ok(plan.val.every((i) => !testPaths.has(i.path)) && plan.train.every((i) => !testPaths.has(i.path)));
  assert.equal(plan.test.length, 2999);
});

test('same seed → same subset; another seed → another subset', async () => {
  const index = await indexDataset(join(CUB_DIR, 'manifest.csv'));
  const a = planSplits(index, { seed: 7, samplingRate: 0.15, valFraction: 0.2 });
  const b = planSplits(index, { seed: 7, samplingRate: 0.15, valFraction: 0.2 });
  const c = planSplits(index, { seed: 8, samplingRate: 0.15, valFraction: 0.2 });
  assert.deepEqual(a.train.map((i) => i.path), b.train.map((i) => i.path));
  assert.equal(a.hash, b.hash);
  assert.notEqual(a.hash, c.hash);
});

test('split folders whose class lists differ are refused, naming the classes', async () => {
  const root = join(tmp, 'mismatch');
  await flowerSlice(root, ['daisy', 'iris'], { train: 1 });
  await flowerSlice(root, ['daisy', 'pansy'], { test: 1 });
  await assert.rejects(indexDataset(root), (err: Error) => {
    assert.ok(err instanceof InvalidInputError);
    assert.match(err.message, /only in train: iris; only in test: pansy/);
    return true;
  });
});

test('an extra directory level is reported instead of becoming one class', async () => {
  const root = join(tmp, 'nested');
  await flowerSlice(join(root, 'photos'), ['daisy', 'iris'], { all: 0 }).catch(() => undefined);
  await mkdir(join(root, 'photos', 'flowers', 'daisy'), { recursive: true });
  await copyFile(join(FLOWERS_DIR, 'train', 'daisy', (await readdir(join(FLOWERS_DIR, 'train', 'daisy')))[0]), join(root, 'photos', 'flowers', 'daisy', 'a.jpg'));
  await mkdir(join(root, 'other'), { recursive: true });
  await writeFile(join(root, 'other', 'x.jpg'), 'x');
  await assert.rejects(indexDataset(root), /holds no JPEG or PNG images \(is there an extra directory level\?\)/);
});

test('an image-folder tree gets a seeded test split; non-images and corrupt images are reported by path', async () => {
  const root = join(tmp, 'folders');
  for (const c of ['daisy', 'iris']) {
    const files = (await readdir(join(FLOWERS_DIR, 'train', c))).sort().slice(0, 5);
    await mkdir(join(root, c), { recursive: true });
    for (const f of files) await copyFile(join(FLOWERS_DIR, 'train', c, f), join(root, c, f));
  }
  await writeFile(join(root, 'iris', 'notes.txt'), 'not an image');
  await writeFile(join(root, 'iris', 'broken.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 1, 2, 3]));
  const scan = await scanDataset(root);
  assert.equal(scan.layout, 'image-folder');
  assert.deepEqual(scan.classes, ['daisy', 'iris']);
  assert.equal(scan.counts.train.daisy + (scan.counts.test?.daisy ?? 0), 5);
  assert.ok((scan.counts.test?.daisy ?? 0) >= 1);
  const reasons = Object.fromEntries(scan.rejected.map((r) => [r.path, r.reason]));
  assert.match(reasons['iris/notes.txt'], /not a JPEG or PNG/);
  assert.match(reasons['iris/broken.jpg'], /cannot decode/);
});

test('a CSV manifest path that leaves its folder is refused', async () => {
  const csv = join(tmp, 'escape.csv');
  await writeFile(csv, 'path,label,split\n../etc/passwd.jpg,a,train\nx.jpg,b,test\n');
  await assert.rejects(indexDataset(csv), /leaves the manifest's folder/);
});

test('hyperparameters are validated with the field named', () => {
  assert.throws(() => resolveHyperparameters({ lambda: -1 }), /hyperparameters\.lambda must be ≥ 0/);
  assert.throws(() => resolveHyperparameters({ batchSize: 2.5 }), /hyperparameters\.batchSize must be an integer/);
  assert.throws(() => resolveHyperparameters({ bogus: 1 } as never), /hyperparameters\.bogus is not a known hyperparameter/);
  assert.equal(resolveHyperparameters({}).lambda, 2.3);
});

test('same seed → same relationship (and the cache is reused only for identical inputs)', async () => {
  await selectBackend();
  const root = join(tmp, 'rel');
  await flowerSlice(root, ['daisy', 'sunflower', 'tigerlily'], { train: 3, test: 1 });
  const options = { modelDir: MOBILENET_DIR, dataPath: root, seed: 3, hyperparameters: { imageSize: 64 }, cacheDir: join(tmp, 'cache') };
  const a = await runRelationship({ ...options, outDir: join(tmp, 'rel-a') });
  const b = await runRelationship({ ...options, outDir: join(tmp, 'rel-b') });
  const c = await runRelationship({ ...options, hyperparameters: { imageSize: 72 }, outDir: join(tmp, 'rel-c') });
  assert.equal(a.fromCache, false);
  assert.equal(b.fromCache, true);
  assert.equal(c.fromCache, false);
  const read = async (dir: string) => JSON.parse(await (await import('node:fs/promises')).readFile(join(dir, 'relationship.json'), 'utf8'));
  const [ra, rb, fresh] = [await read(join(tmp, 'rel-a')), await read(join(tmp, 'rel-b')), await runRelationship({ ...options, cacheDir: join(tmp, 'cache2'), outDir: join(tmp, 'rel-d') }).then(() => read(join(tmp, 'rel-d')))];
  assert.deepEqual(rb.matrix, ra.matrix);
  assert.deepEqual(fresh.matrix, ra.matrix);
  assert.deepEqual(ra.shape, [3, 1000]);
  for (const row of ra.matrix as number[][]) assert.ok(Math.abs(row.reduce((s, v) => s + v, 0) - 1) < 1e-5);
});
