import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { EventLog } from '../queue/events.js';
import { Records } from '../queue/records.js';
import type { TrainingQueue } from '../queue/training-queue.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { ApiMetrics } from './metrics.js';

/** What every route needs, built once by buildApp and decorated onto the instance. */
export interface ApiContext {
  config: Config;
  redis: Redis;
  queue: TrainingQueue;
  records: Records;
  events: EventLog;
  store: BlobStore;
  metrics: ApiMetrics;
  /** Lazily created pub/sub connection for SSE wake-ups. */
  subscriber(): Redis;
}

export function makeContext(config: Config, redis: Redis, queue: TrainingQueue, store: BlobStore, metrics: ApiMetrics): ApiContext & { closeSubscriber(): Promise<void> } {
  let sub: Redis | undefined;
  return {
    config,
    redis,
    queue,
    store,
    metrics,
    records: new Records(redis, config.queuePrefix),
    events: new EventLog(redis, config.queuePrefix),
    subscriber() {
      // Subscriptions must survive reconnects, so this one keeps ioredis' offline queue.
      sub ??= redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined });
      return sub;
    },
    async closeSubscriber() {
      if (sub) await sub.quit().catch(() => sub?.disconnect());
    },
  };
}
