import { Queue, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import type { JobDataValue, JobResultValue } from '../contracts/jobs.js';
import { TRAIN_JOB, TRAINING_QUEUE } from './names.js';

export type TrainingJob = Job<JobDataValue, JobResultValue, typeof TRAIN_JOB>;
export type TrainingQueue = Queue<JobDataValue, JobResultValue, typeof TRAIN_JOB>;

export function defaultJobOptions(config: Pick<Config, 'jobs'>): JobsOptions {
  return {
    attempts: config.jobs.attempts,
    backoff: { type: 'exponential', delay: config.jobs.backoffMs },
    // Our own job records outlive these; BullMQ's copy is kept long enough to read results.
    removeOnComplete: { age: 30 * 24 * 3600 },
    removeOnFail: { age: 30 * 24 * 3600 },
  };
}

/** The API's producer side of the training queue, on the caller's (fail-fast) connection. */
export function createTrainingQueue(config: Pick<Config, 'queuePrefix' | 'jobs'>, connection: Redis): TrainingQueue {
  return new Queue<JobDataValue, JobResultValue, typeof TRAIN_JOB>(TRAINING_QUEUE, {
    connection,
    prefix: config.queuePrefix,
    defaultJobOptions: defaultJobOptions(config),
  });
}

export async function enqueueTraining(queue: TrainingQueue, jobId: string, data: JobDataValue): Promise<TrainingJob> {
  return queue.add(TRAIN_JOB, data, { jobId });
}
