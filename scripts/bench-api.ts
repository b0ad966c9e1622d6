/**
 * POST /v1/jobs throughput and latency (p50/p99) against raw BullMQ Queue.add on the same
 * Redis, in one run. Bounded loops, loopback only. REDIS_URL or a private redis-server.
 * Usage: npm run bench:api [-- --jobs 2000 --concurrency 16]
 */
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { buildApp } from '../src/api/app.js';
import { loadConfig } from '../src/config.js';
import { Records } from '../src/queue/records.js';
import { newId } from '../src/storage/ids.js';
import { DEFAULT_HYPERPARAMETERS } from '../src/cotuning/inspect.js';
import { startRedis, type LocalRedis } from './lib/redis-server.js';

const { values } = parseArgs({ options: { jobs: { type: 'string', default: '2000' }, concurrency: { type: 'string', default: '16' } } });
const total = Math.min(Math.max(Number(values.jobs), 10), 100_000);
const concurrency = Math.min(Math.max(Number(values.concurrency), 1), 256);

let owned: LocalRedis | undefined;
const url = process.env.REDIS_URL ?? (owned = await startRedis()).url;
const dataDir = await mkdtemp(join(tmpdir(), 'cotune-bench-'));
const prefix = `{bench-${Date.now()}}`;
const config = loadConfig({ REDIS_URL: url, COTUNE_DATA_DIR: dataDir, COTUNE_QUEUE_PREFIX: prefix, LOG_LEVEL: 'silent', HOST: '127.0.0.1', PORT: '0' });

// Seed a dataset and model record so submits pass validation (no files: nothing trains).
const seed = new Redis(url);
const records = new Records(seed, prefix);
const datasetId = newId('ds');
const modelId = newId('mdl');
const now = new Date().toISOString();
await records.putDataset({ id: datasetId, name: 'bench', layout: 'image-folder', classes: ['a', 'b'], counts: {}, images: 0, rejected: [], bytes: 0, createdAt: now, dataPath: 'data' });
await records.putModel({ id: modelId, name: 'bench', inputShape: [224, 224, 3], headLayer: 'h', headKind: 'dense', featureDim: 8, numSourceClasses: 10, normalization: 'zero1', hasClassNames: false, files: [], bytes: 0, createdAt: now });
await mkdir(join(dataDir, 'datasets'), { recursive: true });

const app = await buildApp(config);
const base = await app.listen({ host: '127.0.0.1', port: 0 });
const body = JSON.stringify({ datasetId, modelId, method: 'co-tuning', hyperparameters: { iterations: 10 } });

async function run(name: string, once: () => Promise<void>) {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next++;
        const t = performance.now();
        await once();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))].toFixed(2);
  console.log(`${name.padEnd(22)} ${String(total).padStart(6)} jobs  ${(total / seconds).toFixed(0).padStart(6)} jobs/s  p50 ${pct(50)} ms  p99 ${pct(99)} ms`);
}

console.log(`bench:api  concurrency ${concurrency}, ${total} jobs each, Redis ${owned ? 'private' : 'REDIS_URL'}`);
await run('POST /v1/jobs (HTTP)', async () => {
  const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  if (res.status !== 202) throw new Error(`POST /v1/jobs answered ${res.status}: ${await res.text()}`);
  await res.arrayBuffer();
});
const raw = new Queue('bench-raw', { connection: new Redis(url, { maxRetriesPerRequest: null }), prefix });
const data = { datasetId, modelId, method: 'co-tuning', hyperparameters: { ...DEFAULT_HYPERPARAMETERS, iterations: 10 }, seed: 0 };
await run('Queue.add (raw BullMQ)', async () => {
  await raw.add('train', data);
});

await raw.obliterate({ force: true });
await raw.close();
await app.cotune.queue.obliterate({ force: true });
await app.close();
await seed.quit();
await rm(dataDir, { recursive: true, force: true });
await owned?.stop();
process.exit(0);
