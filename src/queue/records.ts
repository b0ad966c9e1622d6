import type { Redis } from 'ioredis';
import type { DatasetValue } from '../contracts/datasets.js';
import type { CreateJobValue, HyperparametersValue } from '../contracts/index.js';
import type { ModelValue } from '../contracts/models.js';
import { keys, type Keys } from './keys.js';

/** Dataset metadata plus where the scanned root lives inside the stored directory. */
export interface DatasetRecord extends DatasetValue {
  /** Path of the dataset root (folder or CSV) relative to the dataset's storage dir. */
  dataPath: string;
}
export type ModelRecord = ModelValue;

export interface JobRecord {
  id: string;
  datasetId: string;
  modelId: string;
  method: CreateJobValue['method'];
  hyperparameters: HyperparametersValue;
  seed: number;
  createdAt: string;
  requestId?: string;
  idempotencyKey?: string;
  /** Set when a cancel was requested; the job ends `cancelled` unless it had already finished. */
  cancelRequestedAt?: string;
  /** Set when the job was removed from the queue before it ran. */
  cancelledAt?: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** Newest-first pages over a lex-ordered set of time-ordered ids. */
async function pageIds(redis: Redis, set: string, limit: number, after?: string): Promise<{ ids: string[]; next: string | null }> {
  const ids = await redis.zrevrangebylex(set, after ? `(${after}` : '+', '-', 'LIMIT', 0, limit + 1);
  const more = ids.length > limit;
  const page = ids.slice(0, limit);
  return { ids: page, next: more ? page[page.length - 1] : null };
}

async function getJson<T>(redis: Redis, key: string): Promise<T | undefined> {
  const raw = await redis.get(key);
  return raw ? (JSON.parse(raw) as T) : undefined;
}

export class Records {
  readonly k: Keys;
  constructor(readonly redis: Redis, prefix: string) {
    this.k = keys(prefix);
  }

  async putDataset(record: DatasetRecord): Promise<void> {
    await this.redis.multi().set(this.k.dataset(record.id), JSON.stringify(record)).zadd(this.k.datasets, 0, record.id).exec();
  }
  getDataset(id: string): Promise<DatasetRecord | undefined> {
    return getJson(this.redis, this.k.dataset(id));
  }
  async listDatasets(limit: number, after?: string): Promise<Page<DatasetRecord>> {
    return this.page(this.k.datasets, (id) => this.k.dataset(id), limit, after);
  }
  async deleteDataset(id: string): Promise<void> {
    await this.redis.multi().del(this.k.dataset(id), this.k.datasetJobs(id)).zrem(this.k.datasets, id).exec();
  }

  async putModel(record: ModelRecord): Promise<void> {
    await this.redis.multi().set(this.k.model(record.id), JSON.stringify(record)).zadd(this.k.models, 0, record.id).exec();
  }
  getModel(id: string): Promise<ModelRecord | undefined> {
    return getJson(this.redis, this.k.model(id));
  }
  async listModels(limit: number, after?: string): Promise<Page<ModelRecord>> {
    return this.page(this.k.models, (id) => this.k.model(id), limit, after);
  }
  async deleteModel(id: string): Promise<void> {
    await this.redis.multi().del(this.k.model(id), this.k.modelJobs(id)).zrem(this.k.models, id).exec();
  }

  async putJob(record: JobRecord): Promise<void> {
    await this.redis
      .multi()
      .set(this.k.job(record.id), JSON.stringify(record))
      .zadd(this.k.jobs, 0, record.id)
      .sadd(this.k.datasetJobs(record.datasetId), record.id)
      .sadd(this.k.modelJobs(record.modelId), record.id)
      .exec();
  }
  getJob(id: string): Promise<JobRecord | undefined> {
    return getJson(this.redis, this.k.job(id));
  }
  async updateJob(id: string, patch: Partial<JobRecord>): Promise<JobRecord | undefined> {
    const current = await this.getJob(id);
    if (!current) return undefined;
    const next = { ...current, ...patch };
    await this.redis.set(this.k.job(id), JSON.stringify(next));
    return next;
  }
  jobIdsPage(limit: number, after?: string) {
    return pageIds(this.redis, this.k.jobs, limit, after);
  }
  async getJobs(ids: string[]): Promise<(JobRecord | undefined)[]> {
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(ids.map((id) => this.k.job(id)));
    return raws.map((raw) => (raw ? (JSON.parse(raw) as JobRecord) : undefined));
  }
  jobsUsingDataset(id: string): Promise<string[]> {
    return this.redis.smembers(this.k.datasetJobs(id));
  }
  jobsUsingModel(id: string): Promise<string[]> {
    return this.redis.smembers(this.k.modelJobs(id));
  }

  /**
   * Claim an idempotency key for a request body hash. Returns the job id already bound to
   * the key (and its hash), or binds `jobId` and returns undefined. Keys live 24 h.
   */
  async claimIdempotencyKey(key: string, bodyHash: string, jobId: string): Promise<{ jobId: string; bodyHash: string } | undefined> {
    const value = JSON.stringify({ jobId, bodyHash });
    const set = await this.redis.set(this.k.idempotency(key), value, 'EX', 24 * 3600, 'NX');
    if (set === 'OK') return undefined;
    const existing = await getJson<{ jobId: string; bodyHash: string }>(this.redis, this.k.idempotency(key));
    return existing ?? { jobId, bodyHash };
  }
  async releaseIdempotencyKey(key: string): Promise<void> {
    await this.redis.del(this.k.idempotency(key));
  }

  /** Cross-process cancel: a durable flag (checked by the processor) plus a pub/sub nudge. */
  async requestCancel(jobId: string): Promise<void> {
    await this.redis.set(this.k.cancel(jobId), new Date().toISOString());
    await this.redis.publish(this.k.cancelChannel, jobId);
  }
  async isCancelRequested(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.k.cancel(jobId))) === 1;
  }

  private async page<T>(set: string, key: (id: string) => string, limit: number, after?: string): Promise<Page<T>> {
    const { ids, next } = await pageIds(this.redis, set, limit, after);
    if (ids.length === 0) return { items: [], nextCursor: null };
    const raws = await this.redis.mget(ids.map(key));
    return { items: raws.filter((r): r is string => r !== null).map((r) => JSON.parse(r) as T), nextCursor: next };
  }
}

export interface WorkerHeartbeat {
  id: string;
  host: string;
  pid: number;
  backend: string;
  concurrency: number;
  startedAt: string;
  lastSeenAt: string;
}

/** Workers announce themselves every few seconds; entries older than WORKER_TTL_MS are ignored. */
export const WORKER_TTL_MS = 30_000;

export async function beat(redis: Redis, prefix: string, info: WorkerHeartbeat): Promise<void> {
  const k = keys(prefix);
  await redis
    .multi()
    .set(k.worker(info.id), JSON.stringify(info), 'PX', WORKER_TTL_MS)
    .zadd(k.workers, Date.now(), info.id)
    .zremrangebyscore(k.workers, 0, Date.now() - WORKER_TTL_MS)
    .exec();
}

export async function forget(redis: Redis, prefix: string, id: string): Promise<void> {
  const k = keys(prefix);
  await redis.multi().del(k.worker(id)).zrem(k.workers, id).exec();
}

export async function liveWorkers(redis: Redis, prefix: string): Promise<WorkerHeartbeat[]> {
  const k = keys(prefix);
  const ids = await redis.zrangebyscore(k.workers, Date.now() - WORKER_TTL_MS, '+inf');
  if (ids.length === 0) return [];
  const raws = await redis.mget(ids.map((id) => k.worker(id)));
  return raws.filter((r): r is string => r !== null).map((r) => JSON.parse(r) as WorkerHeartbeat);
}
