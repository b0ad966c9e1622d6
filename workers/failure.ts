import { UnrecoverableError } from 'bullmq';

/** Errors BullMQ must not retry; the "<code>: " prefix becomes the job's error code. */
export function unrecoverable(code: string, message: string): UnrecoverableError {
  const err = new UnrecoverableError(`${code}: ${message}`);
  // The sandbox sends errors to the parent by name; BullMQ checks the name there.
  err.name = 'UnrecoverableError';
  return err;
}

/**
 * What a failed training attempt hands to BullMQ. Bad input (InvalidInputError) and numerical
 * divergence (the core's "train: …" errors, e.g. a NaN loss) fail the same way on every attempt,
 * so they are final. Anything else (Redis, I/O, a crashed backend) may pass on a retry.
 */
export function attemptFailure(err: unknown): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  if (e.name === 'InvalidInputError') {
    const field = (e as { field?: unknown }).field;
    const named = typeof field === 'string' && field !== '' && !e.message.startsWith(field);
    return unrecoverable('invalid_input', named ? `${field}: ${e.message}` : e.message);
  }
  if (e.message.startsWith('train:')) return unrecoverable('training_error', e.message);
  return new Error(`training_error: ${e.message}`, { cause: err });
}
