import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildTestApp } from '../helpers/app.js';
import { archivePart, mobilenetJson, mobilenetParts, multipart, tarGzOf, zipList } from '../helpers/fixtures.js';
import { assertNothingStored, assertProblem } from '../helpers/problems.js';
import { FLOWERS_DIR } from '../helpers/shared-data.js';

// A low extraction limit keeps the bomb fixtures tiny.
const LIMIT = 64 * 1024;
const { app, config: { dataDir } } = await buildTestApp({ COTUNE_MAX_EXTRACTED_BYTES: String(LIMIT) });
const { readdir } = await import('node:fs/promises');
const jpg = await readFile(join(FLOWERS_DIR, 'train', 'daisy', (await readdir(join(FLOWERS_DIR, 'train', 'daisy'))).find((f) => f.endsWith('.jpg'))!));
const upload = (archive: Buffer, filename = 'd.tar.gz') => app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(archive, filename) });

test('a .tar.gz whose first header declares more than the extraction limit is refused at that header (413)', async () => {
  // The header declares 1 GiB but only 4 KiB follow: a scan that reads past the header would hit
  // the truncation (400) or spend its time inflating; stopping at the header answers 413 at once.
  const bomb = tarGzOf([{ name: 'train/a/big.jpg', size: 1024 ** 3, data: Buffer.alloc(4096) }], { end: false });
  const started = Date.now();
  const res = await upload(bomb);
  const body = assertProblem(res, 413, 'file');
  assert.equal(body.code, 'too_large');
  assert.ok(Date.now() - started < 10_000);
  await assertNothingStored(app, dataDir, 'datasets');
});

test('a .tar.gz whose running total passes the limit is refused with 413 and nothing is stored', async () => {
  const entries = Array.from({ length: 5 }, (_, i) => ({ name: `train/a/${i}.bin`, data: Buffer.alloc(LIMIT / 4, 1) }));
  const res = await upload(tarGzOf(entries));
  assertProblem(res, 413, 'file');
  await assertNothingStored(app, dataDir, 'datasets');
});

test('a .tar.gz with a file "train" and then "train/a/0.jpg" is 400 invalid_archive and leaves nothing behind', async () => {
  const res = await upload(tarGzOf([{ name: 'train', data: 'x' }, { name: 'train/a/0.jpg', data: jpg }, { name: 'test/a/0.jpg', data: jpg }]));
  const body = assertProblem(res, 400, 'file');
  assert.equal(body.code, 'invalid_archive');
  assert.match(body.detail, /train\/a\/0\.jpg/);
  assert.doesNotMatch(body.detail, new RegExp(dataDir));
  await assertNothingStored(app, dataDir, 'datasets');
});

test('a .tar.gz with a duplicate file entry is 400 invalid_archive', async () => {
  const res = await upload(tarGzOf([{ name: 'train/a/0.jpg', data: jpg }, { name: 'train/a/0.jpg', data: 'again' }]));
  assert.equal(assertProblem(res, 400, 'file').code, 'invalid_archive');
  await assertNothingStored(app, dataDir, 'datasets');
});

for (const [label, entries] of [
  ['duplicate entry names', [['train/a/0.jpg', 'x'], ['train/a/0.jpg', 'y']]],
  ['a file "x" and then "x/y.jpg"', [['x', 'hi'], ['x/y.jpg', 'y']]],
  ['an entry named "."', [['train/a/0.jpg', 'x'], ['.', 'hi']]],
] as [string, [string, string][]][]) {
  test(`a zip with ${label} is 400 invalid_archive and nothing is stored`, async () => {
    const res = await upload(await zipList(entries), 'd.zip');
    const body = assertProblem(res, 400, 'file');
    assert.equal(body.code, 'invalid_archive');
    assert.doesNotMatch(body.detail, new RegExp(dataDir));
    await assertNothingStored(app, dataDir, 'datasets');
  });
}

test('a multipart body without a boundary or cut short is 400 problem+json, not 500', async () => {
  for (const url of ['/v1/datasets', '/v1/models']) {
    const noBoundary = await app.inject({ method: 'POST', url, payload: 'abc', headers: { 'content-type': 'multipart/form-data' } });
    assert.equal(assertProblem(noBoundary, 400, 'body').code, 'invalid_multipart');
    const whole = multipart([{ name: url.endsWith('models') ? 'model' : 'file', filename: 'x.bin', data: Buffer.alloc(5000, 1) }]);
    const cut = await app.inject({ method: 'POST', url, payload: whole.payload.subarray(0, 3000), headers: whole.headers });
    assert.equal(assertProblem(cut, 400, 'body').code, 'invalid_multipart');
  }
  await assertNothingStored(app, dataDir, 'datasets');
  await assertNothingStored(app, dataDir, 'models');
});

test('a model.json that is null or has a malformed weightsManifest is 422 naming the model', async () => {
  for (const json of ['null', '[]', '{"weightsManifest":5}', '{"weightsManifest":{}}', '{"weightsManifest":[null]}', '{"weightsManifest":[{"paths":["a"],"weights":[{"name":"w"}]}]}']) {
    const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart([{ name: 'model', filename: 'model.json', data: json }]) });
    assertProblem(res, 422, 'model');
  }
  await assertNothingStored(app, dataDir, 'models');
});

test('weight shards that do not match the manifest sizes are 422 naming the weights', async () => {
  const json = await mobilenetJson();
  type Groups = { paths: string[]; weights: { shape: number[] }[] }[];
  // A changed shape: the shards now hold fewer bytes than model.json describes.
  const reshaped = structuredClone(json) as typeof json;
  const w = (reshaped.weightsManifest as unknown as Groups)[0].weights[0];
  w.shape = [w.shape[0] * 2, ...w.shape.slice(1)];
  assertProblem(await app.inject({ method: 'POST', url: '/v1/models', ...multipart(await mobilenetParts(reshaped)) }), 422, 'weights');
  // A shard swapped for another file of a different size.
  const parts = await mobilenetParts();
  const shards = parts.filter((p) => p.name === 'weights');
  const a = shards[0];
  const b = shards.find((p) => p.data.length !== a.data.length)!;
  const swapped = parts.map((p) => (p === a ? { ...p, data: b.data } : p));
  assert.notEqual(a.data.length, b.data.length);
  const res = await app.inject({ method: 'POST', url: '/v1/models', ...multipart(swapped) });
  assert.match(assertProblem(res, 422, 'weights').detail, new RegExp(a.filename!));
  await assertNothingStored(app, dataDir, 'models');
});

test('422 messages name paths relative to the upload, never the server data dir', async () => {
  const csv = await zipList([['m/manifest.csv', 'path,label,split\n../../etc/passwd.jpg,a,train\n'], ['m/img/0.jpg', jpg]]);
  const unusable = assertProblem(await upload(csv, 'd.zip'), 422, 'file');
  assert.match(unusable.detail, /m\/manifest\.csv line 2/);
  const missing = await zipList([['manifest.csv', 'path,label,split\nimg/0.jpg,a,train\nimg/nope.jpg,b,train\nimg/0.jpg,a,test\nimg/0.jpg,b,test\n'], ['img/0.jpg', jpg]]);
  const undecodable = assertProblem(await upload(missing, 'd.zip'), 422, 'file:');
  assert.match(JSON.stringify(undecodable.errors), /img\/nope\.jpg/);
  const model = assertProblem(await app.inject({ method: 'POST', url: '/v1/models', ...multipart([{ name: 'model', filename: 'model.json', data: '{}' }]) }), 422, 'model');
  assert.match(model.detail, /model\.json/);
  for (const body of [unusable, undecodable, model]) {
    const text = JSON.stringify(body);
    assert.doesNotMatch(text, new RegExp(dataDir));
    assert.doesNotMatch(text, /staging|up-[A-Za-z0-9]{6}/);
  }
  await assertNothingStored(app, dataDir, 'datasets');
});

test('a CSV manifest without test rows is 422 at upload, naming the file', async () => {
  const csv = await zipList([['manifest.csv', 'path,label,split\nimg/0.jpg,a,train\nimg/1.jpg,b,train\n'], ['img/0.jpg', jpg], ['img/1.jpg', jpg]]);
  const body = assertProblem(await upload(csv, 'd.zip'), 422, 'file');
  assert.match(body.detail, /manifest needs test rows/);
  await assertNothingStored(app, dataDir, 'datasets');
});

test('classNames as a text field and unknown model fields are 400, not silently dropped', async () => {
  const parts = await mobilenetParts();
  for (const extra of [{ name: 'classNames', data: '["a"]' }, { name: 'colour', data: 'blue' }]) {
    assertProblem(await app.inject({ method: 'POST', url: '/v1/models', ...multipart([...parts, extra]) }), 400, extra.name);
  }
  await assertNothingStored(app, dataDir, 'models');
});

test('a dataset upload with an extra field or a second file part is 400 naming it', async () => {
  const archive = tarGzOf([{ name: 'train/a/0.jpg', data: jpg }, { name: 'test/a/0.jpg', data: jpg }]);
  const file = { name: 'file', filename: 'd.tar.gz', contentType: 'application/octet-stream', data: archive };
  assertProblem(await app.inject({ method: 'POST', url: '/v1/datasets', ...multipart([file, { name: 'strict', data: 'false' }]) }), 400, 'strict');
  assertProblem(await app.inject({ method: 'POST', url: '/v1/datasets', ...multipart([file, file]) }), 400, 'file');
  await assertNothingStored(app, dataDir, 'datasets');
});
