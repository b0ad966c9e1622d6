import { Type, type Static } from 'typebox';
import { Id, ref } from './common.js';
import { Hyperparameters, HyperparametersInput, HyperparametersShape } from './hyperparameters.js';

const method = () =>
  Type.Union([Type.Literal('co-tuning'), Type.Literal('fine-tune'), Type.Literal('compare')], {
    description: '`compare` runs co-tuning and fine-tune on the same split and seed.',
  });

export const JobStatus = Type.Union(
  [Type.Literal('queued'), Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed'), Type.Literal('cancelled')],
  { $id: 'JobStatus' },
);
export type JobStatusValue = Static<typeof JobStatus>;
export const TERMINAL_STATUSES: readonly JobStatusValue[] = ['succeeded', 'failed', 'cancelled'];

export const JobPhase = Type.Union(
  [Type.Literal('loading'), Type.Literal('relationship'), Type.Literal('training'), Type.Literal('evaluating'), Type.Literal('exporting')],
  { $id: 'JobPhase' },
);

/** The largest seed a job (and the cotune command) accepts. */
export const MAX_SEED = 2 ** 31 - 1;

export const CreateJob = Type.Object(
  {
    datasetId: Type.String({ maxLength: 64 }),
    modelId: Type.String({ maxLength: 64 }),
    method: method(),
    hyperparameters: Type.Optional(ref(HyperparametersInput)),
    seed: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_SEED, default: 0, description: 'Seeds the split, initialisation and augmentation.' })),
  },
  { $id: 'CreateJob', additionalProperties: false },
);
export type CreateJobValue = Static<typeof CreateJob>;

export const Metrics = Type.Object(
  {
    loss: Type.Optional(Type.Number()),
    lossTarget: Type.Optional(Type.Number()),
    lossSource: Type.Optional(Type.Number()),
    lr: Type.Optional(Type.Number()),
    valTop1: Type.Optional(Type.Number()),
    imagesPerSec: Type.Optional(Type.Number()),
    etaSeconds: Type.Optional(Type.Number()),
  },
  { $id: 'Metrics', description: 'Latest training metrics reported by the run.' },
);

export const JobError = Type.Object(
  {
    code: Type.String({ description: 'invalid_input, cancelled, stalled, training_error, …' }),
    message: Type.String(),
  },
  { $id: 'JobError', additionalProperties: false },
);

export const MethodSummary = Type.Object(
  {
    method: Type.Union([Type.Literal('co-tuning'), Type.Literal('fine-tune')]),
    top1: Type.Number(),
    top5: Type.Number(),
    bestValTop1: Type.Number(),
    bestStep: Type.Integer(),
    seconds: Type.Number(),
  },
  { $id: 'MethodSummary', additionalProperties: false },
);

const artifactProps = {
  name: Type.String({ description: 'Path relative to the job output, e.g. `co-tuning/model/model.json`.' }),
  size: Type.Integer(),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  contentType: Type.String(),
};
export const ArtifactShape = Type.Object(artifactProps, { additionalProperties: false });
export const Artifact = Type.Object(
  { ...artifactProps, href: Type.String({ description: 'Download URL (name percent-encoded).' }) },
  { $id: 'Artifact', additionalProperties: false },
);
export type ArtifactValue = Static<typeof Artifact>;

export const ArtifactList = Type.Object({ items: Type.Array(ref(Artifact)) }, { $id: 'ArtifactList', additionalProperties: false });

export const JobResultSummary = Type.Object(
  {
    backend: Type.String(),
    seconds: Type.Number(),
    gain: Type.Optional(Type.Number({ description: 'compare only: co-tuning top-1 minus fine-tune top-1.' })),
    results: Type.Array(ref(MethodSummary)),
  },
  { $id: 'JobResultSummary', additionalProperties: false },
);

const nullable = <T extends ReturnType<typeof Type.String>>(s: T) => Type.Union([s, Type.Null()]);

export const Job = Type.Object(
  {
    id: Id('Job id.'),
    status: ref(JobStatus),
    phase: Type.Union([ref(JobPhase), Type.Null()]),
    progress: Type.Number({ minimum: 0, maximum: 1 }),
    epoch: Type.Union([Type.Integer(), Type.Null()]),
    epochs: Type.Union([Type.Integer(), Type.Null()]),
    step: Type.Union([Type.Integer(), Type.Null()]),
    steps: Type.Union([Type.Integer(), Type.Null()]),
    metrics: Type.Union([ref(Metrics), Type.Null()]),
    attempts: Type.Integer({ description: 'Attempts started so far (a resumed job counts again).' }),
    cancelRequested: Type.Boolean(),
    datasetId: Type.String(),
    modelId: Type.String(),
    method: method(),
    hyperparameters: ref(Hyperparameters),
    seed: Type.Integer(),
    createdAt: Type.String({ format: 'date-time' }),
    startedAt: nullable(Type.String({ format: 'date-time' })),
    finishedAt: nullable(Type.String({ format: 'date-time' })),
    error: Type.Union([ref(JobError), Type.Null()]),
    result: Type.Union([ref(JobResultSummary), Type.Null()]),
    links: Type.Object({
      self: Type.String(),
      events: Type.String(),
      artifacts: Type.String(),
      cancel: Type.String(),
    }),
    artifacts: Type.Array(ref(Artifact), { description: 'Downloadable outputs; empty until the job succeeded.' }),
  },
  { $id: 'Job', additionalProperties: false },
);
export type JobValue = Static<typeof Job>;

export const JobPage = Type.Object(
  { items: Type.Array(ref(Job)), nextCursor: Type.Union([Type.String(), Type.Null()]) },
  { $id: 'JobPage', additionalProperties: false },
);

export const JobListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
    after: Type.Optional(Type.String({ maxLength: 64, description: 'Cursor: `nextCursor` of the previous page (a job id).' })),
    status: Type.Optional(Type.Union([Type.Literal('queued'), Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed'), Type.Literal('cancelled')])),
  },
  { additionalProperties: false },
);

export const EventType = Type.Union([Type.Literal('status'), Type.Literal('progress'), Type.Literal('log'), Type.Literal('checkpoint')], { $id: 'EventType' });

export const Event = Type.Object(
  {
    id: Type.Integer({ minimum: 1, description: 'Increasing per job; use as `after` or SSE `Last-Event-ID`.' }),
    type: ref(EventType),
    time: Type.String({ format: 'date-time' }),
    data: Type.Record(Type.String(), Type.Unknown(), { description: 'status: {status, attempt?, error?}; progress: {phase, fraction, epoch, step, loss, …}; log: {message}; checkpoint: {method, step}.' }),
  },
  { $id: 'Event', additionalProperties: false },
);
export type EventValue = Static<typeof Event>;

export const EventPage = Type.Object(
  {
    items: Type.Array(ref(Event)),
    nextAfter: Type.Integer({ description: 'Pass as `after` to continue.' }),
    done: Type.Boolean({ description: 'True when the job is finished and no events follow.' }),
  },
  { $id: 'EventPage', additionalProperties: false },
);

export const EventQuery = Type.Object(
  {
    after: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 0, description: 'Return events with id > after.' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
  },
  { additionalProperties: false },
);

/** Queue payload; the worker re-validates it. References only, never files. */
export const JobData = Type.Object(
  {
    datasetId: Type.String({ pattern: '^ds_[0-9a-z]+$' }),
    modelId: Type.String({ pattern: '^mdl_[0-9a-z]+$' }),
    method: method(),
    hyperparameters: HyperparametersShape,
    seed: Type.Integer({ minimum: 0 }),
    requestId: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
export type JobDataValue = Static<typeof JobData>;

/** Worker return value, kept by BullMQ as the job's returnvalue. */
export const JobResult = Type.Object({
  backend: Type.String(),
  seconds: Type.Number(),
  gain: Type.Optional(Type.Number()),
  results: Type.Array(MethodSummary),
  artifacts: Type.Array(ArtifactShape),
});
export type JobResultValue = Static<typeof JobResult>;

/** What the processor reports through job.updateProgress(). */
export interface JobProgressValue {
  phase: Static<typeof JobPhase>;
  fraction: number;
  method?: string;
  epoch?: number;
  epochs?: number;
  step?: number;
  steps?: number;
  metrics?: Static<typeof Metrics>;
}
