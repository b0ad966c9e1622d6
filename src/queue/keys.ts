/**
 * Our own Redis keys, next to BullMQ's under the same hash-tagged prefix so that one Redis
 * (or one Cluster slot) holds everything for a deployment.
 */
export function keys(prefix: string) {
  const k = (...parts: string[]) => [prefix, 'ct', ...parts].join(':');
  return {
    datasets: k('datasets'),
    dataset: (id: string) => k('dataset', id),
    datasetJobs: (id: string) => k('dataset', id, 'jobs'),
    models: k('models'),
    model: (id: string) => k('model', id),
    modelJobs: (id: string) => k('model', id, 'jobs'),
    jobs: k('jobs'),
    job: (id: string) => k('job', id),
    idempotency: (key: string) => k('idem', key),
    events: (jobId: string) => k('events', jobId),
    cancel: (jobId: string) => k('cancel', jobId),
    workers: k('workers'),
    worker: (id: string) => k('worker', id),
    /** Pub/sub channels. */
    cancelChannel: k('ch', 'cancel'),
    eventsChannel: k('ch', 'events'),
  };
}
export type Keys = ReturnType<typeof keys>;
