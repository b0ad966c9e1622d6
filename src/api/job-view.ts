import type { ArtifactValue, JobProgressValue, JobStatusValue, JobValue } from '../contracts/jobs.js';
import type { JobRecord } from '../queue/records.js';
import type { TrainingJob } from '../queue/training-queue.js';
import type { ApiContext } from './context.js';

export interface JobSnapshot {
  record: JobRecord;
  job: TrainingJob | undefined;
  state: string;
  status: JobStatusValue;
}

const iso = (ms: number | undefined | null) => (ms ? new Date(ms).toISOString() : null);

export function artifactHref(jobId: string, name: string): string {
  return `/v1/jobs/${jobId}/artifacts/${encodeURIComponent(name)}`;
}

/** Failure reasons are written by the processor as "<code>: <message>". */
export function parseFailure(reason: string | undefined): { code: string; message: string } {
  const text = reason ?? 'unknown failure';
  const match = /^([a-z][a-z_]*): ([\s\S]*)$/.exec(text);
  if (match) return { code: match[1], message: match[2] };
  if (/stalled/i.test(text)) return { code: 'stalled', message: text };
  return { code: 'training_error', message: text };
}

/** Status comes from BullMQ's job state plus our own cancel marks, never from queue events. */
export function deriveStatus(record: JobRecord, job: TrainingJob | undefined, state: string): JobStatusValue {
  if (record.cancelledAt) return 'cancelled';
  if (!job) return record.cancelRequestedAt ? 'cancelled' : 'failed';
  switch (state) {
    case 'completed':
      return 'succeeded';
    case 'failed':
      return record.cancelRequestedAt || parseFailure(job.failedReason).code === 'cancelled' ? 'cancelled' : 'failed';
    case 'active':
      return 'running';
    default:
      return 'queued';
  }
}

export async function snapshot(ctx: ApiContext, record: JobRecord): Promise<JobSnapshot> {
  // State before the job hash: BullMQ writes failedReason/returnvalue in the same script that
  // moves a job to failed/completed, so a finished state is never paired with a hash that lacks them.
  let state: string = await ctx.queue.getJobState(record.id);
  const job = (await ctx.queue.getJob(record.id)) as TrainingJob | undefined;
  if (!job) state = 'missing';
  else if (state === 'unknown') state = await job.getState();
  return { record, job, state, status: deriveStatus(record, job, state) };
}

export function toJobView({ record, job, status }: JobSnapshot): JobValue {
  const progress = (job && typeof job.progress === 'object' ? job.progress : undefined) as JobProgressValue | undefined;
  const result = status === 'succeeded' ? job?.returnvalue : undefined;
  const base = `/v1/jobs/${record.id}`;
  let error: JobValue['error'] = null;
  if (status === 'failed') error = job ? parseFailure(job.failedReason) : { code: 'expired', message: 'the queue no longer holds this job' };
  if (status === 'cancelled') error = { code: 'cancelled', message: 'the job was cancelled' };
  const artifacts: ArtifactValue[] = (result?.artifacts ?? []).map((a) => ({ ...a, href: artifactHref(record.id, a.name) }));
  return {
    id: record.id,
    status,
    phase: status === 'queued' ? null : (progress?.phase ?? null),
    progress: status === 'succeeded' ? 1 : Math.max(0, Math.min(1, progress?.fraction ?? 0)),
    epoch: progress?.epoch ?? null,
    epochs: progress?.epochs ?? null,
    step: progress?.step ?? null,
    steps: progress?.steps ?? null,
    metrics: progress?.metrics ?? null,
    attempts: job ? Math.max(job.attemptsStarted ?? 0, job.attemptsMade ?? 0) : 0,
    cancelRequested: Boolean(record.cancelRequestedAt),
    datasetId: record.datasetId,
    modelId: record.modelId,
    method: record.method,
    hyperparameters: record.hyperparameters,
    seed: record.seed,
    createdAt: record.createdAt,
    startedAt: iso(job?.processedOn),
    finishedAt: status === 'cancelled' && record.cancelledAt ? record.cancelledAt : iso(job?.finishedOn),
    error,
    result: result ? { backend: result.backend, seconds: result.seconds, results: result.results, ...(result.gain !== undefined ? { gain: result.gain } : {}) } : null,
    links: { self: base, events: `${base}/events`, artifacts: `${base}/artifacts`, cancel: `${base}/cancel` },
    artifacts,
  };
}
