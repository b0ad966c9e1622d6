import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildTestApp } from '../helpers/app.js';
import { archivePart, flowerSlice, mobilenetJson, mobilenetParts, multipart, tarGz, tempDir, zipDir, zipOf, zipSlip } from '../helpers/fixtures.js';

// Top-level setup: helpers register their cleanup with the file, not with a hook.
const { app, config: { dataDir } } = await buildTestApp({ COTUNE_MAX_DATASET_BYTES: String(2 * 1024 * 1024) });
const work = await tempDir();
const flowers = await flowerSlice(work, 2, 1);

/** Nothing was stored: no record, no dataset/model directory, no staging leftovers. */
async function assertNothingStored(kind: 'datasets' | 'models') {
  const list = await app.inject({ url: `/v1/${kind}` });
  assert.deepEqual(list.json().items, []);
  const entries = async (d: string) => readdir(join(dataDir, d)).catch(() => [] as string[]);
  assert.deepEqual(await entries(kind), []);
  assert.deepEqual(await entries('staging'), []);
}

function assertProblem(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }, status: number, field?: string) {
  assert.equal(res.statusCode, status, JSON.stringify(res.json()));
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = res.json() as { type: string; title: string; status: number; detail: string; errors?: { field: string; message: string }[] };
  assert.equal(body.status, status);
  assert.ok(body.type && body.title && body.detail);
  if (field) assert.ok(body.errors?.some((e) => e.field.startsWith(field)), `errors name ${field}: ${JSON.stringify(body.errors)}`);
  return body;
}

test('a corrupt image refuses the dataset with 422 naming the file, and nothing is stored', async () => {
  const { cp } = await import('node:fs/promises');
  const bad = join(work, 'bad');
  await cp(flowers, join(bad, 'flowers'), { recursive: true });
  const victim = join(bad, 'flowers', 'train', 'daisy', (await readdir(join(bad, 'flowers', 'train', 'daisy')))[0]);
  const bytes = await readFile(victim);
  await writeFile(victim, bytes.subarray(0, 200)); // a truncated JPEG
  const res = await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(await zipDir(join(bad, 'flowers'))) });
  const body = assertProblem(res, 422, 'file:');
  assert.match(body.errors![0].field, /daisy/);
  await assertNothingStored('datasets');
});

test('a zip entry with ../ is refused with 400 and nothing is written outside or stored', async () => {
  const res = await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(await zipSlip({ 'a/x.jpg': 'x' })) });
  const body = assertProblem(res, 400, 'file');
  assert.match(body.detail, /\.\.\/evil\.txt/);
  await assertNothingStored('datasets');
  assert.deepEqual((await readdir(dataDir)).filter((n) => n === 'evil.txt'), []);
});

test('an archive over COTUNE_MAX_DATASET_BYTES is refused with 413 and nothing is stored', async () => {
  const big = await zipOf({ 'a/noise.bin': Buffer.alloc(3 * 1024 * 1024, 7) });
  const res = await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(big) });
  assertProblem(res, 413);
  await assertNothingStored('datasets');
});

test('a body that is not an archive is refused with 415', async () => {
  const res = await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(Buffer.from('hello, not an archive')) });
  assertProblem(res, 415, 'file');
  await assertNothingStored('datasets');
});

test('a model without a usable head is refused with 422 naming the model, and nothing is stored', async () => {
  const json = await mobilenetJson();
  const config = json.modelTopology.model_config.config;
  // Cut the network after its first convolution: no classifier head remains.
  config.output_layers = [[config.layers[1].name, 0, 0]];
  const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(await mobilenetParts(json)) });
  const body = assertProblem(res, 422, 'model');
  assert.match(body.detail, /no usable source head/);
  await assertNothingStored('models');
});

test('a model with a missing weight shard is refused with 422 naming the weights', async () => {
  const parts = (await mobilenetParts()).filter((p) => p.filename !== 'group3-shard1of1');
  const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(parts) });
  const body = assertProblem(res, 422, 'weights');
  assert.match(body.detail, /group3-shard1of1/);
  await assertNothingStored('models');
});

test('a .tar.gz split-folder dataset is stored with classes, counts and a Location', async () => {
  const archive = await readFile(await tarGz(flowers, join(work, 'flowers.tar.gz')));
  const res = await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(archive, 'flowers.tar.gz') });
  assert.equal(res.statusCode, 201, res.body);
  const ds = res.json();
  assert.equal(res.headers.location, `/v1/datasets/${ds.id}`);
  assert.equal(ds.layout, 'split-folders');
  assert.deepEqual(ds.classes, ['daisy', 'dandelion', 'sunflower']);
  assert.deepEqual(ds.counts.train, { daisy: 2, dandelion: 2, sunflower: 2 });
  assert.equal(ds.images, 9);
  assert.deepEqual((await app.inject({ url: `/v1/datasets/${ds.id}` })).json(), ds);
  assert.equal((await app.inject({ url: '/v1/datasets' })).json().items[0].id, ds.id);
  const del = await app.inject({ method: 'DELETE', url: `/v1/datasets/${ds.id}` });
  assert.equal(del.statusCode, 204);
  assertProblem(await app.inject({ url: `/v1/datasets/${ds.id}` }), 404);
  await assertNothingStored('datasets');
});

test('the MobileNet upload reports its input shape and 1000-class 1x1-conv head', async () => {
  const classNames = JSON.parse(await readFile(join((await import('../helpers/shared-data.js')).IMAGENET_CLASSES), 'utf8'));
  const parts = await mobilenetParts();
  parts.push({ name: 'classNames', filename: 'classes.json', contentType: 'application/json', data: JSON.stringify(classNames) });
  const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(parts) });
  assert.equal(res.statusCode, 201, res.body);
  const model = res.json();
  assert.deepEqual(model.inputShape, [224, 224, 3]);
  assert.equal(model.headKind, 'conv1x1');
  assert.equal(model.numSourceClasses, 1000);
  assert.equal(model.hasClassNames, true);
  const wrong = await mobilenetParts();
  wrong.push({ name: 'classNames', filename: 'c.json', data: '["only","two"]' });
  assertProblem(await app.inject({ method: 'POST', url: '/v1/models', ...multipart(wrong) }), 422, 'classNames');
});

test('strict defaults to true; strict=false stores the dataset and lists the undecodable file', async () => {
  const { cp, rm } = await import('node:fs/promises');
  const bad = join(work, 'bad-lenient');
  await cp(flowers, join(bad, 'flowers'), { recursive: true });
  const victim = join(bad, 'flowers', 'train', 'daisy', (await readdir(join(bad, 'flowers', 'train', 'daisy')))[0]);
  await writeFile(victim, (await readFile(victim)).subarray(0, 200));
  const archive = await zipDir(join(bad, 'flowers'));
  assertProblem(await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(archive) }), 422, 'file:');
  const res = await app.inject({ method: 'POST', url: '/v1/datasets?strict=false', ...archivePart(archive) });
  assert.equal(res.statusCode, 201, res.body);
  const ds = res.json();
  assert.equal(ds.rejected.length, 1);
  assert.match(ds.rejected[0].path, /daisy/);
  assert.equal((await app.inject({ method: 'DELETE', url: `/v1/datasets/${ds.id}` })).statusCode, 204);
  await rm(bad, { recursive: true, force: true });
});
