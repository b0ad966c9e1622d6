/**
 * Public types of the core library. The service (API, queue, worker) and the CLI speak to
 * src/cotuning only through these and the functions exported from index.ts.
 */

/** `co-tuning` keeps the source head and adds λ·softCE(source head, R[y]); `fine-tune` is the λ = 0 baseline. */
export type TrainMethod = 'co-tuning' | 'fine-tune';
/** `compare` runs both methods on the same split and seed. */
export type RunMethod = TrainMethod | 'compare';
export type RelationshipMethod = 'direct' | 'reverse';

/** Every tunable of a run. Defaults live in DEFAULT_HYPERPARAMETERS (config.ts). */
export interface Hyperparameters {
  /** λ: weight of the source-head term. */
  lambda: number;
  lrBackbone: number;
  lrSourceHead: number;
  lrTargetHead: number;
  momentum: number;
  weightDecay: number;
  batchSize: number;
  /** Optimiser steps; when epochs is set it wins. */
  iterations: number;
  epochs?: number;
  /** Learning rates are multiplied by lrDecayFactor once this fraction of the steps has run. */
  lrDecayAt: number[];
  lrDecayFactor: number;
  /** Square input size in pixels; default: the model's own input size. */
  imageSize?: number;
  /** Fraction of each training class kept (stratified, seeded). */
  samplingRate: number;
  /** Fraction of each training class held out for model selection when the data has no val split. */
  valFraction: number;
  relationship: RelationshipMethod;
  /** Temperature applied to source logits before softmax when estimating the relationship. */
  temperature: number;
  /** Random resized crop + horizontal flip during training. */
  augment: boolean;
  /** Smallest random-resized-crop area fraction. */
  cropScaleMin: number;
  /** Freeze every backbone layer before this layer name (partial fine-tuning). */
  freezeBelow?: string;
  /** Source classifier layer name; default: the last Dense / 1x1 Conv before the final softmax. */
  headLayer?: string;
  /** Validation passes per run (model selection); at least one at the end. */
  evalEvery: number;
}

export type Phase = 'loading' | 'relationship' | 'training' | 'evaluating' | 'exporting';

export interface Progress {
  phase: Phase;
  method?: TrainMethod;
  /** 0..1 over the whole run (both methods for compare). */
  fraction: number;
  epoch?: number;
  epochs?: number;
  step?: number;
  steps?: number;
  loss?: number;
  lossTarget?: number;
  lossSource?: number;
  lr?: number;
  imagesPerSec?: number;
  etaSeconds?: number;
  valTop1?: number;
  message?: string;
}

export interface RunHooks {
  onProgress?: (progress: Progress) => void;
  /** Aborting stops the run within one training step with an AbortError. */
  signal?: AbortSignal;
  /** Called after each checkpoint is written to options.checkpointDir. */
  onCheckpoint?: (info: { dir: string; method: TrainMethod; step: number }) => void | Promise<void>;
  log?: (message: string) => void;
}

export interface RunOptions {
  /** Directory with model.json + weight shards. */
  modelDir: string;
  /** Image-folder root, split-folder root, or a CSV manifest path. */
  dataPath: string;
  method: RunMethod;
  hyperparameters?: Partial<Hyperparameters>;
  seed: number;
  outDir: string;
  /** JSON array of source class names (e.g. ImageNet) for labels in relationship.json / plots. */
  sourceClassNamesPath?: string;
  /** Relationship cache directory; entries are keyed by weights, data subset, preprocessing and method. */
  cacheDir?: string;
  /** Where per-epoch checkpoints go; when it already holds one, the run resumes from it. */
  checkpointDir?: string;
  /** Backend to force ('wasm', 'cpu', 'tensorflow', 'tensorflow-gpu'); default: the fastest available. */
  backend?: string;
  /** XNNPACK threads when the backend is WASM (default: defaultWasmThreads(), 2 on 2 cores). */
  wasmThreads?: number;
}

export interface ClassificationMetrics {
  top1: number;
  top5: number;
  perClass: Record<string, number>;
  /** confusion[true][predicted] counts, rows and columns in `classes` order. */
  confusion: number[][];
  classes: string[];
  count: number;
}

export interface MethodResult {
  method: TrainMethod;
  test: ClassificationMetrics;
  bestValTop1: number;
  bestStep: number;
  seconds: number;
  /** Output files, relative to RunResult.outDir. */
  artifacts: string[];
}

export interface RunResult {
  outDir: string;
  backend: string;
  seconds: number;
  results: MethodResult[];
  /** Only for compare: co-tuning top-1 minus fine-tune top-1 (fractions). */
  gain?: number;
  /** All output files, relative to outDir. */
  artifacts: string[];
}

/** What a dataset scan finds, without decoding every pixel. */
export interface DatasetScan {
  layout: 'image-folder' | 'split-folders' | 'csv-manifest';
  classes: string[];
  /** Image count per split per class. */
  counts: Record<string, Record<string, number>>;
  rejected: { path: string; reason: string }[];
}

/** What the model inspector finds in model.json, without loading weights into TF.js. */
export interface ModelInspection {
  inputShape: number[];
  headLayer: string;
  headKind: 'dense' | 'conv1x1';
  featureDim: number;
  numSourceClasses: number;
  /** Preprocessing inferred for the model. */
  normalization: 'minus1to1' | 'zero1' | 'imagenet';
}
