// Which failed attempts BullMQ retries, seen through the API: a real queue, a real in-process
// worker whose processor fails with the errors the training processor classifies.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Worker } from 'bullmq';
import type { JobDataValue } from '../../src/contracts/jobs.js';
import { InvalidInputError } from '../../src/cotuning/errors.js';
import { TRAINING_QUEUE } from '../../src/queue/names.js';
import { createWorkerRedis } from '../../src/queue/redis.js';
import { attemptFailure } from '../../workers/failure.js';
import { buildTestApp } from '../helpers/app.js';
import { archivePart, flowerSlice, mobilenetParts, multipart, tempDir, zipDir } from '../helpers/fixtures.js';

const { app, config } = await buildTestApp({ COTUNE_JOB_ATTEMPTS: '3', COTUNE_BACKOFF_MS: '20' });
const ds = (await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(await zipDir(await flowerSlice(await tempDir(), 2, 1))) })).json();
const model = (await app.inject({ method: 'POST', url: '/v1/models', ...multipart(await mobilenetParts()) })).json();

/** What each job's attempt throws, keyed by the request id that created it (known before the worker sees the job). */
const causes = new Map<string, unknown>();
const connection = createWorkerRedis(config.redisUrl);
const worker = new Worker<JobDataValue>(
  TRAINING_QUEUE,
  async (job) => {
    throw attemptFailure(causes.get(String(job.data.requestId)));
  },
  { connection, prefix: config.queuePrefix, concurrency: 3 },
);
after(async () => {
  await worker.close();
  await connection.quit();
});

async function failWith(cause: unknown): Promise<{ attempts: number; error: { code: string; message: string } }> {
  const requestId = `fail-${causes.size}`;
  causes.set(requestId, cause);
  const res = await app.inject({ method: 'POST', url: '/v1/jobs', headers: { 'x-request-id': requestId }, payload: { datasetId: ds.id, modelId: model.id, method: 'fine-tune' } });
  assert.equal(res.statusCode, 202, res.body);
  const { id } = res.json() as { id: string };
  const deadline = Date.now() + 20_000;
  for (;;) {
    const job = (await app.inject({ url: `/v1/jobs/${id}` })).json();
    if (job.status === 'failed') return job;
    if (job.status !== 'queued' && job.status !== 'running') assert.fail(`job ${id}: ${JSON.stringify(job)}`);
    assert.ok(Date.now() < deadline, `job ${id} still ${job.status}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a diverged run (the core\'s "train: loss became NaN") fails after one attempt as training_error', async () => {
  const job = await failWith(new Error('train: loss became NaN at step 3; lower the learning rates'));
  assert.equal(job.attempts, 1, JSON.stringify(job.error));
  assert.deepEqual(job.error, { code: 'training_error', message: 'train: loss became NaN at step 3; lower the learning rates' });
});

test('invalid input from the core fails after one attempt as invalid_input', async () => {
  const job = await failWith(new InvalidInputError('data', 'data: found 1 class; at least 2 are needed'));
  assert.equal(job.attempts, 1, JSON.stringify(job.error));
  assert.deepEqual(job.error, { code: 'invalid_input', message: 'data: found 1 class; at least 2 are needed' });
});

test('an I/O error is retried COTUNE_JOB_ATTEMPTS times', async () => {
  const enoent = await readFile(join(await tempDir(), 'missing.bin')).catch((err: unknown) => err);
  const job = await failWith(enoent);
  assert.equal(job.attempts, 3, JSON.stringify(job.error));
  assert.equal(job.error.code, 'training_error');
  assert.match(job.error.message, /ENOENT/);
});
