import type { Redis } from 'ioredis';
import type { EventValue } from '../contracts/jobs.js';
import { keys } from './keys.js';

type EventType = EventValue['type'];
interface Stored {
  type: EventType;
  time: string;
  data: Record<string, unknown>;
}

/**
 * Per-job event log: a Redis list whose 1-based index is the event id (RPUSH returns it
 * atomically), so ids increase without gaps and `after` is an LRANGE offset. A pub/sub
 * notification wakes SSE readers; the list is the source of truth.
 */
export class EventLog {
  private readonly k;
  constructor(private readonly redis: Redis, prefix: string) {
    this.k = keys(prefix);
  }

  async append(jobId: string, type: EventType, data: Record<string, unknown>): Promise<number> {
    const stored: Stored = { type, time: new Date().toISOString(), data };
    const id = await this.redis.rpush(this.k.events(jobId), JSON.stringify(stored));
    await this.redis.publish(this.k.eventsChannel, `${jobId} ${id}`);
    return id;
  }

  async read(jobId: string, after: number, limit: number): Promise<EventValue[]> {
    const rows = await this.redis.lrange(this.k.events(jobId), after, after + limit - 1);
    return rows.map((row, i) => {
      const stored = JSON.parse(row) as Stored;
      return { id: after + i + 1, type: stored.type, time: stored.time, data: stored.data };
    });
  }

  async count(jobId: string): Promise<number> {
    return this.redis.llen(this.k.events(jobId));
  }
}
