// The generated client, and only it, drives a real service: a listening API, a real worker
// process and a private redis-server. Upload a small flowers slice and the shared MobileNet,
// train a tiny co-tuning job, follow it (polling and SSE), download every artifact and check
// its sha256.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient } from '../../openapi/client/client/index.js';
import {
  cancelJob,
  createJob,
  downloadArtifact,
  getDataset,
  getHealth,
  getJob,
  getModel,
  listDatasets,
  listJobArtifacts,
  listJobEvents,
  listJobs,
  uploadDataset,
  uploadModel,
  type Artifact,
  type Event,
  type Job,
} from '../../openapi/client/index.js';
import { buildTestApp } from '../helpers/app.js';
import { flowerSlice, tarGz, tempDir } from '../helpers/fixtures.js';
import { MOBILENET_DIR } from '../helpers/shared-data.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const API_KEY = 'e2e-test-key';
const TERMINAL = new Set<Job['status']>(['succeeded', 'failed', 'cancelled']);
const sha256 = (data: ArrayBuffer | Uint8Array) => createHash('sha256').update(new Uint8Array(data)).digest('hex');

let workerLog = '';

/** Start the real worker entry point on the API's Redis, queue prefix and data dir. */
function startWorker(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/training.worker.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (chunk: Buffer) => {
    workerLog = (workerLog + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return child;
}

async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n--- worker log ---\n${workerLog}`);
}

// Built at module level so the helpers' cleanup runs when the file ends, after the suite's own
// `after` has stopped the worker.
const { app, config } = await buildTestApp({ COTUNE_API_KEYS: API_KEY });
await app.listen({ host: '127.0.0.1', port: 0 });
const baseUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
const client = createClient({ baseUrl, auth: () => API_KEY });
const anonymous = createClient({ baseUrl });

describe('generated client against the running service', { timeout: 600_000 }, () => {
  let datasetId: string;
  let modelId: string;
  let job: Job;

  const worker = startWorker({
    REDIS_URL: config.redisUrl,
    COTUNE_DATA_DIR: config.dataDir,
    COTUNE_QUEUE_PREFIX: config.queuePrefix,
    COTUNE_WORKER_CONCURRENCY: '1',
  });
  after(() => stopWorker(worker));

  test('errors are typed problem+json: no API key gives 401', async () => {
    const res = await listJobs({ client: anonymous, query: { limit: 5 } });
    assert.equal(res.response.status, 401);
    assert.equal(res.data, undefined);
    assert.equal(res.error?.status, 401);
    assert.equal(res.error?.code, 'unauthorized');
    assert.match(res.response.headers.get('content-type') ?? '', /^application\/problem\+json/);
  });

  test('the worker registers with the service', async () => {
    const health = await waitFor('a worker heartbeat in /v1/health', 60_000, async () => {
      const { data } = await getHealth({ client });
      return data && data.workers.length > 0 ? data : undefined;
    });
    assert.equal(health.redis.ok, true);
    assert.equal(health.status, 'ok');
  });

  test('uploads a dataset archive (multipart)', async () => {
    const dir = await tempDir('cotune-e2e-');
    // 3 classes x 3 training images (+1 test image each), as a .tar.gz made with `tar`.
    const archive = await tarGz(await flowerSlice(dir, 3, 1), join(dir, 'flowers.tar.gz'));
    const file = new File([await readFile(archive)], 'flowers.tar.gz', { type: 'application/gzip' });
    const { data, error, response } = await uploadDataset({ client, body: { file }, query: { strict: true } });
    assert.equal(response.status, 201, JSON.stringify(error));
    assert.ok(data);
    assert.deepEqual([...data.classes].sort(), ['daisy', 'dandelion', 'sunflower']);
    assert.equal(data.images, 12);
    datasetId = data.id;

    const again = await getDataset({ client, path: { id: datasetId } });
    assert.equal(again.data?.id, datasetId);
    const page = await listDatasets({ client, query: { limit: 10 } });
    assert.ok(page.data?.items.some((d) => d.id === datasetId));
  });

  test('uploads the pre-trained model: model.json and every weight shard', async () => {
    const manifest = JSON.parse(await readFile(join(MOBILENET_DIR, 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
    const shards = manifest.weightsManifest.flatMap((g) => g.paths);
    const weights = await Promise.all(shards.map(async (name) => new File([await readFile(join(MOBILENET_DIR, name))], name)));
    const model = new File([await readFile(join(MOBILENET_DIR, 'model.json'))], 'model.json', { type: 'application/json' });
    const { data, error, response } = await uploadModel({ client, body: { model, weights, name: 'mobilenet_v1_0.25_224' } });
    assert.equal(response.status, 201, JSON.stringify(error));
    assert.ok(data);
    assert.equal(data.numSourceClasses, 1000);
    assert.deepEqual(data.inputShape, [224, 224, 3]);
    modelId = data.id;
    assert.equal((await getModel({ client, path: { id: modelId } })).data?.id, modelId);
  });

  test('submits a tiny co-tuning job (202, Location, Idempotency-Key replay)', async () => {
    const body = {
      datasetId,
      modelId,
      method: 'co-tuning' as const,
      seed: 7,
      hyperparameters: { imageSize: 64, iterations: 3, batchSize: 4, evalEvery: 3 },
    };
    const headers = { 'idempotency-key': `e2e-${process.pid}` };
    const first = await createJob({ client, body, headers });
    assert.equal(first.response.status, 202, JSON.stringify(first.error));
    assert.ok(first.data);
    job = first.data;
    assert.equal(first.response.headers.get('location'), `/v1/jobs/${job.id}`);
    assert.equal(job.hyperparameters.imageSize, 64);
    assert.equal(job.hyperparameters.iterations, 3);

    const replay = await createJob({ client, body, headers });
    assert.equal(replay.data?.id, job.id, 'same key and body gives the same job');
  });

  test('polls the job until it succeeds', async () => {
    job = await waitFor(`job ${job.id} to finish`, 420_000, async () => {
      const { data } = await getJob({ client, path: { id: job.id } });
      return data && TERMINAL.has(data.status) ? data : undefined;
    });
    assert.equal(job.status, 'succeeded', `${JSON.stringify(job.error)}\n--- worker log ---\n${workerLog}`);
    assert.equal(job.progress, 1);
    assert.ok(job.result && job.result.results.length > 0);
    assert.ok((await listJobs({ client, query: { limit: 10 } })).data?.items.some((j) => j.id === job.id));
  });

  test('reads the events as a JSON page and as Server-Sent Events', async () => {
    const page = await listJobEvents({ client, path: { id: job.id }, query: { after: 0, limit: 1000 } });
    assert.ok(page.data);
    assert.equal(page.data.done, true);
    const statuses = page.data.items.filter((e) => e.type === 'status').map((e) => e.data.status);
    assert.equal(statuses[0], 'queued');
    assert.equal(statuses.at(-1), 'succeeded');

    // The same events through the client's SSE support; a finished job's stream ends by itself.
    // listJobEvents is typed by its JSON form, so the stream goes through the client's `sse`
    // (same base URL and auth) with the operation's URL.
    const seen: Event[] = [];
    const errors: unknown[] = [];
    const { stream } = await client.sse.get<Event>({
      url: '/v1/jobs/{id}/events',
      path: { id: job.id },
      security: [{ scheme: 'bearer', type: 'http' }],
      headers: { accept: 'text/event-stream' },
      sseMaxRetryAttempts: 1,
      signal: AbortSignal.timeout(30_000),
      onSseError: (error) => errors.push(error),
    });
    for await (const data of stream) {
      // Frames are `data: <Event JSON>`; the final `end` frame carries no Event.
      if (data && typeof data === 'object' && 'type' in data) seen.push(data as Event);
    }
    assert.deepEqual(errors, []);
    assert.deepEqual(
      seen.map((e) => e.id),
      page.data.items.map((e) => e.id),
    );
  });

  test('lists every artifact and downloads it with a matching sha256', async () => {
    const { data } = await listJobArtifacts({ client, path: { id: job.id } });
    assert.ok(data && data.items.length > 0, 'no artifacts');
    const names = data.items.map((a) => a.name);
    assert.ok(names.some((n) => n.endsWith('model.json')), `no model.json in ${names.join(', ')}`);
    for (const artifact of data.items) {
      const res = await downloadArtifact({ client, path: { id: job.id, name: artifact.name }, parseAs: 'arrayBuffer' });
      assert.equal(res.response.status, 200, `${artifact.name}: ${JSON.stringify(res.error)}`);
      const bytes = res.data as unknown as ArrayBuffer;
      assert.equal(bytes.byteLength, artifact.size, artifact.name);
      assert.equal(sha256(bytes), artifact.sha256, artifact.name);
      assert.equal(res.response.headers.get('etag'), `"${artifact.sha256}"`);
    }
  });

  test('downloads honour Range and If-None-Match', async () => {
    const { data } = await listJobArtifacts({ client, path: { id: job.id } });
    const artifact = data!.items.reduce((a: Artifact, b: Artifact) => (b.size > a.size ? b : a));
    const whole = await downloadArtifact({ client, path: { id: job.id, name: artifact.name }, parseAs: 'arrayBuffer' });
    const part = await downloadArtifact({ client, path: { id: job.id, name: artifact.name }, headers: { range: 'bytes=0-9' }, parseAs: 'arrayBuffer' });
    assert.equal(part.response.status, 206);
    assert.equal(part.response.headers.get('content-range'), `bytes 0-9/${artifact.size}`);
    assert.deepEqual(new Uint8Array(part.data as unknown as ArrayBuffer), new Uint8Array(whole.data as unknown as ArrayBuffer).slice(0, 10));

    const cached = await downloadArtifact({ client, path: { id: job.id, name: artifact.name }, headers: { 'if-none-match': `"${artifact.sha256}"` } });
    assert.equal(cached.response.status, 304);

    const bad = await downloadArtifact({ client, path: { id: job.id, name: artifact.name }, headers: { range: `bytes=${artifact.size + 10}-` } });
    assert.equal(bad.response.status, 416);
    assert.equal(bad.error?.status, 416);
  });

  test('cancelling a finished job is refused with a typed 409', async () => {
    const res = await cancelJob({ client, path: { id: job.id } });
    assert.equal(res.response.status, 409);
    assert.equal(res.error?.code, 'already_finished');
  });
});
