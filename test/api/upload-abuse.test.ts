import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildTestApp } from '../helpers/app.js';
import { archivePart, tarGzOf, zipList } from '../helpers/fixtures.js';
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
