import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface ApiMetrics {
  registry: Registry;
  requests: Histogram<'method' | 'route' | 'status'>;
  jobsCreated: Counter<'method'>;
  /** Set by the caller's collect callback on each scrape. */
  queueJobs: Gauge<'state'>;
}

/** A registry per app instance, so several apps (tests) never share counters. */
export function createMetrics(collectQueue: () => Promise<Record<string, number>>): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'cotune_api_' });
  const requests = new Histogram({
    name: 'cotune_http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const jobsCreated = new Counter({ name: 'cotune_jobs_created_total', help: 'Jobs accepted by POST /v1/jobs', labelNames: ['method'] as const, registers: [registry] });
  const queueJobs = new Gauge({
    name: 'cotune_queue_jobs',
    help: 'Training queue jobs by state',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      try {
        const counts = await collectQueue();
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      } catch {
        // Redis down: keep the last values rather than failing the scrape.
      }
    },
  });
  return { registry, requests, jobsCreated, queueJobs };
}
