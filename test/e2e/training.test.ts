import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildTestApp } from '../helpers/app.js';
import { archivePart, flowerSlice, mobilenetParts, multipart, tarGz, tempDir } from '../helpers/fixtures.js';
import { spawnWorker, workerEnv, type WorkerProcess } from '../helpers/worker.js';

// Short locks so a killed worker's job is taken over in seconds; quick retries.
const { app, config } = await buildTestApp({ COTUNE_LOCK_DURATION_MS: '3000', COTUNE_STALLED_INTERVAL_MS: '1000', COTUNE_BACKOFF_MS: '300', COTUNE_SHUTDOWN_TIMEOUT_MS: '10000' });
const base = await app.listen({ host: '127.0.0.1', port: 0 });
let worker: WorkerProcess = await spawnWorker(workerEnv(config));

const work = await tempDir();
const archive = await readFile(await tarGz(await flowerSlice(work, 4, 2), join(work, 'flowers.tar.gz')));
const ds = (await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(archive, 'flowers.tar.gz') })).json();
const model = (await app.inject({ method: 'POST', url: '/v1/models', ...multipart(await mobilenetParts()) })).json();
const tiny = { imageSize: 64, batchSize: 4, evalEvery: 1 };


interface JobEvent {
  id: number;
  type: string;
  data: Record<string, unknown>;
}

async function submit(hyperparameters: object, method = 'co-tuning') {
  const res = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { datasetId: ds.id, modelId: model.id, method, hyperparameters: { ...tiny, ...hyperparameters }, seed: 3 } });
  assert.equal(res.statusCode, 202, res.body);
  return res.json() as { id: string };
}

async function allEvents(id: string): Promise<JobEvent[]> {
  return (await app.inject({ url: `/v1/jobs/${id}/events?limit=1000` })).json().items;
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${worker.output().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const getJob = async (id: string) => (await app.inject({ url: `/v1/jobs/${id}` })).json();
const finished = (id: string) => waitFor(`job ${id} to finish`, async () => {
  const job = await getJob(id);
  return ['succeeded', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
}, 180_000);

test('upload → submit → SSE events → succeeded → artifacts downloaded with matching sha256', async () => {
  const job = await submit({ iterations: 6 });
  // Follow the job over real HTTP as Server-Sent Events until the server ends the stream.
  const res = await fetch(`${base}/v1/jobs/${job.id}/events`, { headers: { accept: 'text/event-stream' } });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const text = await res.text();
  const frames = text.split('\n\n').filter((f) => f.startsWith('id: '));
  const events = frames.map((f) => JSON.parse(f.split('\n').find((l) => l.startsWith('data: '))!.slice(6)) as JobEvent);
  assert.deepEqual(events.map((e) => e.id), events.map((_, i) => i + 1), 'ids increase by one from 1');
  assert.match(text, /event: end\ndata: {"status":"succeeded"}/);
  assert.ok(events.some((e) => e.type === 'progress' && e.data.phase === 'training'), 'training progress was reported');
  assert.deepEqual(events.filter((e) => e.type === 'status').map((e) => e.data.status), ['queued', 'running', 'succeeded']);

  const done = await getJob(job.id);
  assert.equal(done.status, 'succeeded');
  assert.equal(done.progress, 1);
  assert.equal(done.result.results[0].method, 'co-tuning');
  assert.ok(done.finishedAt && done.startedAt);

  const list = (await app.inject({ url: `/v1/jobs/${job.id}/artifacts` })).json().items as { name: string; size: number; sha256: string; href: string }[];
  for (const name of ['model/model.json', 'metrics.json', 'relationship.json', 'model.zip']) assert.ok(list.some((a) => a.name === name), `${name} listed`);
  for (const artifact of list) {
    const file = await fetch(`${base}${artifact.href}`);
    assert.equal(file.status, 200, artifact.name);
    const bytes = Buffer.from(await file.arrayBuffer());
    assert.equal(bytes.length, artifact.size);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), artifact.sha256, artifact.name);
    assert.equal(file.headers.get('etag'), `"${artifact.sha256}"`);
  }
  const zip = list.find((a) => a.name === 'model.zip')!;
  const partial = await fetch(`${base}${zip.href}`, { headers: { range: 'bytes=0-3' } });
  assert.equal(partial.status, 206);
  assert.equal(partial.headers.get('content-range'), `bytes 0-3/${zip.size}`);
  assert.deepEqual([...Buffer.from(await partial.arrayBuffer())], [0x50, 0x4b, 0x03, 0x04], 'a zip file');
  assert.equal((await fetch(`${base}${zip.href}`, { headers: { 'if-none-match': `"${zip.sha256}"` } })).status, 304);
  assert.equal((await fetch(`${base}${zip.href}`, { headers: { range: `bytes=${zip.size + 10}-` } })).status, 416);
  assert.equal((await fetch(`${base}/v1/jobs/${job.id}/artifacts/${encodeURIComponent('../../../package.json')}`)).status, 404);
  assert.equal((await fetch(`${base}/v1/jobs/${job.id}/artifacts/checkpoints`)).status, 404);

  const health = (await app.inject({ url: '/v1/health' })).json();
  assert.equal(health.status, 'ok');
  assert.ok(health.workers[0].backend, 'the worker reports its TF backend');
});

test('cancel of a running job: stops, ends cancelled, never retried', async () => {
  const job = await submit({ epochs: 40 });
  await waitFor('training progress', async () => ((await allEvents(job.id)).some((e) => e.type === 'progress' && e.data.phase === 'training') ? true : undefined));
  const res = await app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel` });
  assert.equal(res.statusCode, 202, res.body);
  assert.equal(res.json().cancelRequested, true);
  const again = await app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel` });
  assert.ok([200, 202].includes(again.statusCode), 'cancel is idempotent');
  const started = Date.now();
  const end = await finished(job.id);
  assert.equal(end.status, 'cancelled');
  assert.equal(end.error.code, 'cancelled');
  assert.ok(Date.now() - started < 15_000, 'stopped promptly');
  assert.ok((end.step ?? 0) < (end.steps ?? Infinity), 'stopped before the end of training');
  // Longer than the retry backoff: a retried job would be active (or have started again) by now.
  await new Promise((r) => setTimeout(r, 1500));
  const bull = await app.cotune.queue.getJob(job.id);
  assert.equal(await bull!.getState(), 'failed');
  assert.equal(bull!.attemptsStarted, 1);
  assert.equal((await getJob(job.id)).status, 'cancelled');
  assert.equal((await app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel` })).statusCode, 200);
});

test('kill -9 of the worker mid-training: a new worker resumes from the checkpoint and the job succeeds exactly once', async () => {
  const job = await submit({ epochs: 8 });
  await waitFor('a checkpoint', async () => ((await allEvents(job.id)).some((e) => e.type === 'checkpoint') ? true : undefined));
  const processorPids = [...worker.output().matchAll(/"pid":(\d+),"name":"cotune-processor"/g)].map((m) => Number(m[1]));
  await worker.kill9();
  const killedAt = (await allEvents(job.id)).length;
  // The sandboxed child must not keep training on its own.
  for (const pid of new Set(processorPids)) {
    await waitFor(`processor ${pid} to exit`, async () => {
      try {
        process.kill(pid, 0);
        return undefined;
      } catch {
        return true;
      }
    }, 5000);
  }
  assert.equal((await getJob(job.id)).status, 'running', 'still owned by the dead worker until its lock expires');

  worker = await spawnWorker(workerEnv(config));
  const end = await finished(job.id);
  assert.equal(end.status, 'succeeded', JSON.stringify(end.error));
  const events = await allEvents(job.id);
  const after = events.slice(killedAt);
  assert.ok(after.some((e) => e.type === 'log' && /resumed from checkpoint at step [1-9]/.test(String(e.data.message))), 'resumed from the checkpoint');
  assert.ok(after.some((e) => e.type === 'status' && e.data.status === 'running' && e.data.resuming === true));
  assert.equal(events.filter((e) => e.type === 'status' && e.data.status === 'succeeded').length, 1, 'succeeded exactly once');
  const bull = await app.cotune.queue.getJob(job.id);
  assert.equal(await bull!.getState(), 'completed');
  assert.equal(bull!.attemptsStarted, 2);
  assert.ok((await app.inject({ url: `/v1/jobs/${job.id}/artifacts` })).json().items.length > 0);
});

test('SIGTERM: the worker exits cleanly', async () => {
  const code = await worker.stop();
  assert.equal(code, 0, worker.output().slice(-2000));
  assert.match(worker.output(), /"worker stopped"/);
});
