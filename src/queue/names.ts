/** The only place the queue and job names live. */
export const TRAINING_QUEUE = 'training';
export const TRAIN_JOB = 'train';
