import { FieldError, Problem } from './common.js';
import { Dataset, DatasetPage, DatasetUpload, RejectedFile } from './datasets.js';
import { Health, WorkerInfo } from './health.js';
import { Hyperparameters, HyperparametersInput } from './hyperparameters.js';
import { Artifact, ArtifactList, CreateJob, Event, EventPage, EventType, Job, JobError, JobPage, JobPhase, JobResultSummary, JobStatus, MethodSummary, Metrics } from './jobs.js';
import { Model, ModelPage, ModelUpload } from './models.js';

export * from './common.js';
export * from './datasets.js';
export * from './health.js';
export * from './hyperparameters.js';
export * from './jobs.js';
export * from './models.js';

/** Every named component schema, registered once with the API (and so in the OpenAPI document). */
export const componentSchemas = [
  FieldError, Problem,
  RejectedFile, Dataset, DatasetPage, DatasetUpload,
  Model, ModelPage, ModelUpload,
  Hyperparameters, HyperparametersInput,
  JobStatus, JobPhase, CreateJob, Metrics, JobError, MethodSummary, Artifact, ArtifactList, JobResultSummary, Job, JobPage, EventType, Event, EventPage,
  WorkerInfo, Health,
];
