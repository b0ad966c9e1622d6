/**
 * cotune core library: Co-Tuning transfer learning (You et al., NeurIPS 2020) and its plain
 * fine-tuning baseline on TensorFlow.js. Knows nothing about HTTP, queues or Redis.
 */
export * from './types.js';
export { runJob, runRelationship } from './run.js';
export { selectBackend, currentBackend, BACKEND_PREFERENCE, type BackendInfo } from './backend/select.js';
export { MAX_WASM_THREADS, defaultWasmThreads } from './backend/wasm-threads.js';
export { fusedMultiplyAddSetting } from './backend/wasm-fma.js';
export { scanDataset, indexDataset, planSplits, type DatasetIndex, type SplitPlan } from './dataset.js';
export { inspectModel } from './inspect.js';
export { DEFAULT_HYPERPARAMETERS, resolveHyperparameters } from './hyperparameters.js';
export { InvalidInputError, AbortError } from './errors.js';
export { loadLayersModel, saveLayersModel } from './model-io.js';
export { buildNet, features, sourceLogits, targetLogits, exportTargetModel, type CoTuningNet } from './network.js';
export { coTuningLoss, crossEntropy, softCrossEntropy } from './loss.js';
export { trainStep, train, stepPlan, type TrainResult } from './train.js';
export { directRelationship, fitReverseRelationship, softmaxRows } from './relationship.js';
