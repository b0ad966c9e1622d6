/**
 * The light half of the core library: checks of datasets, models and hyperparameters that need
 * no TensorFlow.js, for processes (like the API) that only validate input.
 */
import { inspectModelJson, readModelJson } from './model-spec.js';
import type { ModelInspection } from './types.js';

export { scanDataset } from './dataset.js';
export { DEFAULT_HYPERPARAMETERS, resolveHyperparameters } from './hyperparameters.js';
export { InvalidInputError } from './errors.js';
export { weightBytes } from './model-spec.js';

/** Input shape, source head and class count of the model in `dir`; throws "no usable source head" when there is none. */
export async function inspectModel(dir: string, headLayer?: string): Promise<ModelInspection> {
  return inspectModelJson(await readModelJson(dir), headLayer);
}
