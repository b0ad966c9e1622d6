import type { FastifyReply, FastifyRequest } from 'fastify';
import { TERMINAL_STATUSES } from '../contracts/jobs.js';
import type { JobRecord } from '../queue/records.js';
import type { ApiContext } from './context.js';
import { snapshot } from './job-view.js';

const POLL_MS = 2000;
const KEEPALIVE_MS = 15_000;

/**
 * Wakes SSE streams when the worker appends events. Pub/sub is only a hint: streams also poll,
 * so a missed message (or a Redis restart) delays an event but never loses it.
 */
export class EventHub {
  private readonly listeners = new Map<string, Set<() => void>>();
  private readonly streams = new Set<() => void>();
  private subscribed = false;

  constructor(private readonly ctx: ApiContext) {}

  private ensureSubscribed() {
    if (this.subscribed) return;
    this.subscribed = true;
    const sub = this.ctx.subscriber();
    const channel = this.ctx.records.k.eventsChannel;
    sub.subscribe(channel).catch(() => (this.subscribed = false));
    sub.on('message', (ch: string, message: string) => {
      if (ch !== channel) return;
      const jobId = message.split(' ')[0];
      for (const wake of this.listeners.get(jobId) ?? []) wake();
    });
  }

  /** Stream events of one job after `after` until it is finished or the client goes away. */
  async stream(request: FastifyRequest, reply: FastifyReply, record: JobRecord, after: number): Promise<void> {
    this.ensureSubscribed();
    const raw = reply.raw;
    reply.hijack();
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'x-request-id': String(request.id),
    });
    raw.write('retry: 2000\n\n');
    let last = after;
    let closed = false;
    let running = false;
    let again = false;

    const flush = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          for (;;) {
            const batch = await this.ctx.events.read(record.id, last, 200);
            if (closed) return;
            for (const event of batch) raw.write(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
            if (batch.length > 0) last = batch[batch.length - 1].id;
            if (batch.length < 200) break;
          }
          const { status } = await snapshot(this.ctx, (await this.ctx.records.getJob(record.id)) ?? record);
          if (TERMINAL_STATUSES.includes(status) && (await this.ctx.events.count(record.id)) <= last) {
            raw.write(`event: end\ndata: ${JSON.stringify({ status })}\n\n`);
            finish();
            return;
          }
        } while (again && !closed);
      } catch (err) {
        // Redis down: keep the stream open and let the next poll retry.
        request.log.debug({ err }, 'sse flush failed');
      } finally {
        running = false;
      }
    };
    const wake = () => void flush();
    const poll = setInterval(wake, POLL_MS);
    const keepalive = setInterval(() => raw.write(': keep-alive\n\n'), KEEPALIVE_MS);
    const set = this.listeners.get(record.id) ?? new Set();
    set.add(wake);
    this.listeners.set(record.id, set);

    const finish = () => {
      if (closed) return;
      closed = true;
      clearInterval(poll);
      clearInterval(keepalive);
      set.delete(wake);
      if (set.size === 0) this.listeners.delete(record.id);
      this.streams.delete(finish);
      raw.end();
    };
    this.streams.add(finish);
    raw.on('close', finish);
    await flush();
  }

  /** End every open stream (server shutdown). */
  closeAll(): void {
    for (const finish of [...this.streams]) finish();
  }
}
