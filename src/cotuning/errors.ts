/**
 * Raised for input the caller must fix (bad hyperparameter, unusable dataset or model).
 * `field` names the offending input so the service can report it; retrying never helps.
 */
export class InvalidInputError extends Error {
  override name = 'InvalidInputError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** Raised when a run is aborted through its AbortSignal. */
export class AbortError extends Error {
  override name = 'AbortError';
  constructor(message = 'run aborted') {
    super(message);
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError(typeof signal.reason === 'string' ? signal.reason : 'run aborted');
}
