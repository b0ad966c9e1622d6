/**
 * Worker entry: one BullMQ Worker whose processor runs sandboxed (a child process per
 * concurrent job), a cancel listener, a heartbeat for /v1/health, and graceful shutdown.
 */
import { hostname } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'bullmq';
import { loadConfigOrExit } from '../src/config.js';
import type { JobDataValue, JobResultValue } from '../src/contracts/jobs.js';
import { selectBackend } from '../src/cotuning/backend/select.js';
import { createLogger, safeRedisUrl } from '../src/logger.js';
import { EventLog } from '../src/queue/events.js';
import { keys } from '../src/queue/keys.js';
import { TRAINING_QUEUE } from '../src/queue/names.js';
import { beat, forget } from '../src/queue/records.js';
import { createWorkerRedis, evictionPolicy } from '../src/queue/redis.js';
import { newId } from '../src/storage/ids.js';

const config = loadConfigOrExit('cotune-worker');
const log = createLogger(config, 'cotune-worker');
const workerId = newId('job').replace(/^job_/, 'wkr_');

// The processor child selects its own backend; selecting here reports what this machine offers.
const backend = await selectBackend({ ...(config.tfBackend ? { preferred: config.tfBackend } : {}), wasmThreads: config.wasmThreads });
log.info({ workerId, backend: backend.name, tfBackend: backend.tfBackend, threads: backend.threads, fusedMultiplyAdd: backend.fusedMultiplyAdd, redis: safeRedisUrl(config.redisUrl), concurrency: config.worker.concurrency }, 'worker starting');

const connection = createWorkerRedis(config.redisUrl);
connection.on('error', (err: Error) => log.warn({ err: { message: err.message } }, 'redis connection error'));
const policy = await evictionPolicy(connection);
if (policy !== 'noeviction') log.warn({ policy }, 'Redis maxmemory-policy is not noeviction; jobs may be lost');

const events = new EventLog(connection, config.queuePrefix);
// Same extension as this file: .ts under tsx, .js when built.
const processorFile = fileURLToPath(new URL(`./training.processor${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

const worker = new Worker<JobDataValue, JobResultValue>(TRAINING_QUEUE, processorFile, {
  connection,
  prefix: config.queuePrefix,
  concurrency: config.worker.concurrency,
  useWorkerThreads: false,
  lockDuration: config.worker.lockDurationMs,
  stalledInterval: config.worker.stalledIntervalMs,
  maxStalledCount: 2,
});

worker.on('error', (err) => log.error({ err }, 'worker error'));
worker.on('active', (job) => log.info({ jobId: job.id, attempt: job.attemptsStarted }, 'job active'));
worker.on('completed', (job) => {
  log.info({ jobId: job.id }, 'job succeeded');
  void events.append(String(job.id), 'status', { status: 'succeeded' }).catch(() => undefined);
});
worker.on('failed', (job, err) => {
  if (!job) return;
  void (async () => {
    const final = (await job.getState()) === 'failed';
    const cancelled = /^cancelled: /.test(err.message);
    const status = !final ? 'retrying' : cancelled ? 'cancelled' : 'failed';
    log.warn({ jobId: job.id, status, reason: err.message }, 'job attempt failed');
    await events.append(String(job.id), 'status', { status, error: err.message });
  })().catch(() => undefined);
});

// Cross-process cancel: the API publishes job ids; the processor also polls the durable flag.
const k = keys(config.queuePrefix);
const subscriber = connection.duplicate();
subscriber.on('error', () => undefined);
await subscriber.subscribe(k.cancelChannel);
subscriber.on('message', (_channel: string, jobId: string) => {
  if (worker.cancelJob(jobId, 'cancelled')) log.info({ jobId }, 'cancel signalled to processor');
});

const startedAt = new Date().toISOString();
const heartbeat = () =>
  beat(connection, config.queuePrefix, {
    id: workerId,
    host: hostname(),
    pid: process.pid,
    backend: backend.name,
    concurrency: config.worker.concurrency,
    startedAt,
    lastSeenAt: new Date().toISOString(),
  }).catch((err: Error) => log.warn({ err: { message: err.message } }, 'heartbeat failed'));
await heartbeat();
const heartbeatTimer = setInterval(heartbeat, 10_000);
log.info({ workerId, queue: TRAINING_QUEUE, prefix: config.queuePrefix }, 'worker ready');

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'shutting down: releasing running jobs');
  clearInterval(heartbeatTimer);
  // Running jobs get an abort with reason 'shutdown': the processor hands them back to the queue.
  worker.cancelAllJobs('shutdown');
  const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), config.worker.shutdownTimeoutMs).unref());
  const result = await Promise.race([worker.close().then(() => 'closed' as const), timeout]);
  if (result === 'timeout') {
    log.error('graceful close timed out; forcing (the job will be recovered as stalled)');
    await worker.close(true).catch(() => undefined);
  }
  await forget(connection, config.queuePrefix, workerId).catch(() => undefined);
  await subscriber.quit().catch(() => undefined);
  await connection.quit().catch(() => undefined);
  log.info('worker stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
