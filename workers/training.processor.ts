/**
 * Sandboxed BullMQ processor: runs in its own child process so CPU-bound training never
 * starves the parent's lock renewal. Re-validates job.data, resolves inputs from storage,
 * runs the core library, reports progress and events, writes the artifact list.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { WaitingError, type SandboxedJob } from 'bullmq';
import type { Redis } from 'ioredis';
import { Value } from 'typebox/value';
import { loadConfig } from '../src/config.js';
import { JobData, type JobDataValue, type JobProgressValue, type JobResultValue } from '../src/contracts/jobs.js';
import { runJob } from '../src/cotuning/index.js';
import type { Progress } from '../src/cotuning/types.js';
import { createLogger } from '../src/logger.js';
import { EventLog } from '../src/queue/events.js';
import { Records } from '../src/queue/records.js';
import { createWorkerRedis } from '../src/queue/redis.js';
import { createDirStore } from '../src/storage/blob-store.js';
import { describeArtifacts, zipModels } from './artifacts.js';
import { attemptFailure, unrecoverable } from './failure.js';

// If the worker process dies (even by SIGKILL) this child must not keep training on its own.
process.on('disconnect', () => process.exit(1));

const config = loadConfig();
const log = createLogger(config, 'cotune-processor');
const store = createDirStore(config.dataDir);
let redis: Redis | undefined;
const conn = () => (redis ??= createWorkerRedis(config.redisUrl));

const EVENT_INTERVAL_MS = 1000;
const CANCEL_POLL_MS = 500;

async function hasFiles(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir, { recursive: true })).length > 0;
  } catch {
    return false;
  }
}

export default async function process_(job: SandboxedJob<JobDataValue, JobResultValue>, token?: string, bullSignal?: AbortSignal): Promise<JobResultValue> {
  const jobId = String(job.id);
  const jlog = log.child({ jobId, attempt: (job.attemptsStarted ?? job.attemptsMade ?? 0) + 0 });
  if (!Value.Check(JobData, job.data)) {
    const first = [...Value.Errors(JobData, job.data)][0];
    throw unrecoverable('invalid_input', `job data ${first?.instancePath || ''} ${first?.message ?? 'is invalid'}`.trim());
  }
  const data = job.data;
  const records = new Records(conn(), config.queuePrefix);
  const events = new EventLog(conn(), config.queuePrefix);
  if (await records.isCancelRequested(jobId)) throw unrecoverable('cancelled', 'cancelled before it started');

  const dataset = await records.getDataset(data.datasetId);
  const model = await records.getModel(data.modelId);
  if (!dataset) throw unrecoverable('input_missing', `dataset ${data.datasetId} no longer exists`);
  if (!model) throw unrecoverable('input_missing', `model ${data.modelId} no longer exists`);

  const jobDir = store.dir('jobs', jobId);
  const outDir = join(jobDir, 'artifacts');
  const checkpointDir = join(jobDir, 'checkpoints');
  const resuming = await hasFiles(checkpointDir);

  // Our own abort: cancel requests (flag polled + BullMQ cancel) and shutdown (BullMQ cancel with reason).
  const controller = new AbortController();
  const onBullAbort = () => controller.abort(bullSignal?.reason ?? 'cancelled');
  if (bullSignal?.aborted) onBullAbort();
  bullSignal?.addEventListener('abort', onBullAbort, { once: true });

  // Progress callbacks are synchronous; writes are chained so events keep their order.
  let chain = Promise.resolve();
  const later = (work: () => Promise<unknown>) => {
    chain = chain.then(work).then(
      () => undefined,
      (err: unknown) => jlog.warn({ err }, 'progress write failed'),
    );
  };
  let lastEvent = 0;
  let lastPhase = '';
  let lastEpoch: number | undefined;
  let lastCancelPoll = 0;
  const onProgress = (p: Progress) => {
    const now = Date.now();
    if (now - lastCancelPoll >= CANCEL_POLL_MS) {
      lastCancelPoll = now;
      later(async () => {
        if (await records.isCancelRequested(jobId)) controller.abort('cancelled');
      });
    }
    const important = p.phase !== lastPhase || p.epoch !== lastEpoch || p.fraction >= 1 || p.message !== undefined;
    if (!important && now - lastEvent < EVENT_INTERVAL_MS) return;
    lastEvent = now;
    lastPhase = p.phase;
    lastEpoch = p.epoch;
    const metrics = Object.fromEntries(
      (['loss', 'lossTarget', 'lossSource', 'lr', 'valTop1', 'imagesPerSec', 'etaSeconds'] as const).filter((k) => typeof p[k] === 'number' && Number.isFinite(p[k])).map((k) => [k, p[k]]),
    );
    const value: JobProgressValue = {
      phase: p.phase,
      fraction: Math.max(0, Math.min(1, p.fraction)),
      ...(p.method ? { method: p.method } : {}),
      ...(p.epoch !== undefined ? { epoch: p.epoch } : {}),
      ...(p.epochs !== undefined ? { epochs: p.epochs } : {}),
      ...(p.step !== undefined ? { step: p.step } : {}),
      ...(p.steps !== undefined ? { steps: p.steps } : {}),
      ...(Object.keys(metrics).length ? { metrics } : {}),
    };
    later(() => job.updateProgress(value as unknown as object));
    later(() => events.append(jobId, 'progress', { ...value, ...(p.message ? { message: p.message } : {}) }));
  };

  await events.append(jobId, 'status', { status: 'running', attempt: (job.attemptsStarted ?? 0) || job.attemptsMade + 1, resuming });
  jlog.info({ method: data.method, resuming }, 'job started');
  try {
    const result = await runJob(
      {
        modelDir: store.dir('models', model.id),
        dataPath: join(store.dir('datasets', dataset.id), dataset.dataPath),
        method: data.method,
        hyperparameters: data.hyperparameters,
        seed: data.seed,
        outDir,
        checkpointDir,
        cacheDir: join(config.dataDir, 'cache', 'relationship'),
        ...(model.hasClassNames ? { sourceClassNamesPath: join(store.dir('models', model.id), 'class-names.json') } : {}),
        ...(config.tfBackend ? { backend: config.tfBackend } : {}),
        wasmThreads: config.wasmThreads,
      },
      {
        signal: controller.signal,
        onProgress,
        log: (message) => later(() => events.append(jobId, 'log', { message })),
        onCheckpoint: ({ method, step }) => later(() => events.append(jobId, 'checkpoint', { method, step })),
      },
    );
    await chain;
    const names = [...result.artifacts];
    names.push(...(await zipModels(outDir, names)));
    const artifacts = await describeArtifacts(outDir, names);
    await rm(checkpointDir, { recursive: true, force: true });
    jlog.info({ seconds: result.seconds, artifacts: artifacts.length }, 'job finished');
    return {
      backend: result.backend,
      seconds: result.seconds,
      ...(result.gain !== undefined ? { gain: result.gain } : {}),
      results: result.results.map((r) => ({ method: r.method, top1: r.test.top1, top5: r.test.top5, bestValTop1: r.bestValTop1, bestStep: r.bestStep, seconds: r.seconds })),
      artifacts,
    };
  } catch (err) {
    await chain;
    const e = err as Error;
    if (e.name === 'AbortError' || controller.signal.aborted) {
      if (controller.signal.reason === 'shutdown' && !(await records.isCancelRequested(jobId))) {
        // Worker shutting down: hand the job back; the next worker resumes from the last checkpoint.
        await events.append(jobId, 'log', { message: 'worker shutting down; job released and will resume from its last checkpoint' });
        await job.moveToWait(token);
        const waiting = new WaitingError();
        waiting.name = 'WaitingError';
        throw waiting;
      }
      throw unrecoverable('cancelled', 'cancelled by request');
    }
    const failure = attemptFailure(err);
    jlog.error({ err, retry: failure.name !== 'UnrecoverableError' }, 'job attempt failed');
    throw failure;
  } finally {
    bullSignal?.removeEventListener('abort', onBullAbort);
  }
}
