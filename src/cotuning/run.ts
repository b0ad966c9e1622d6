import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { selectBackend } from './backend/select.js';
import { dataRoot, indexDataset, planSplits, type DatasetIndex, type SplitPlan } from './dataset.js';
import { InvalidInputError, throwIfAborted } from './errors.js';
import { classificationMetrics, predictLogits } from './evaluate.js';
import { resolveHyperparameters } from './hyperparameters.js';
import { decodeImages, type ImageSet } from './images.js';
import { readModelJson, saveLayersModel } from './model-io.js';
import { inspectModelJson, resolveImageSize } from './model-spec.js';
import { buildNet, checkFreezeBelow, disposeNet, exportTargetModel, type CoTuningNet } from './network.js';
import { renderCurvesPng, renderRelationshipPng } from './plots.js';
import { directRelationship, fitReverseRelationship, relationshipStats, softmaxRows } from './relationship.js';
import { hashFiles, readCachedRelationship, relationshipCacheKey, writeCachedRelationship, type RelationshipKey } from './relationship-cache.js';
import { train, type TrainResult } from './train.js';
import type { Hyperparameters, MethodResult, ModelInspection, Phase, RunHooks, RunOptions, RunResult, TrainMethod } from './types.js';

/** Inputs shared by every method of a run: decoded once. */
interface RunContext {
  options: RunOptions;
  hooks: RunHooks;
  hp: Hyperparameters;
  backend: string;
  /** WASM threads in use (1 on other backends). */
  threads: number;
  index: DatasetIndex;
  plan: SplitPlan;
  inspection: ModelInspection;
  imageSize: number;
  weightsHash: string;
  sourceClasses: string[] | null;
  sets: { train: ImageSet; trainEval: ImageSet; val: ImageSet; test: ImageSet };
}

export interface RelationshipResult {
  matrix: Float32Array;
  key: RelationshipKey;
  cacheKey: string;
  fromCache: boolean;
  seconds: number;
  extra: Record<string, unknown>;
}

function progress(hooks: RunHooks, phase: Phase, fraction: number, extra: Record<string, unknown> = {}) {
  hooks.onProgress?.({ phase, fraction: Math.min(1, Math.max(0, fraction)), ...extra });
}

async function readSourceClasses(path: string | undefined, numSource: number): Promise<string[] | null> {
  if (!path) return null;
  let names: unknown;
  try {
    names = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw new InvalidInputError('sourceClassNames', `source class names: cannot read a JSON array from ${path}`);
  }
  if (!Array.isArray(names) || names.length !== numSource || names.some((n) => typeof n !== 'string')) {
    throw new InvalidInputError('sourceClassNames', `source class names: expected a JSON array of ${numSource} strings in ${path}`);
  }
  return names as string[];
}

async function modelWeightsHash(modelDir: string): Promise<string> {
  const json = await readModelJson(modelDir);
  const files = [{ path: join(modelDir, 'model.json') }, ...json.weightsManifest.flatMap((g) => g.paths.map((p) => ({ path: join(modelDir, p) })))];
  return hashFiles(files);
}

/** Resolve inputs, split the data and decode every image the run needs, once. */
async function prepare(options: RunOptions, hooks: RunHooks): Promise<RunContext> {
  const hp = resolveHyperparameters(options.hyperparameters);
  const backend = await selectBackend({ preferred: options.backend, wasmThreads: options.wasmThreads });
  hooks.log?.(`backend: ${backend.name} (threads ${backend.threads}${backend.fusedMultiplyAdd ? ', fused multiply-add' : ''})`);
  progress(hooks, 'loading', 0, { message: 'reading dataset and model' });
  const inspection = inspectModelJson(await readModelJson(options.modelDir), hp.headLayer);
  const imageSize = resolveImageSize(inspection, hp.imageSize);
  // Before the data is read: a layer that cannot cut the network fails now, not after decoding.
  if (hp.freezeBelow) {
    const net = await buildNet(options.modelDir, { numClasses: 1, imageSize, headLayer: hp.headLayer, seed: options.seed });
    try {
      checkFreezeBelow(net, hp.freezeBelow);
    } finally {
      disposeNet(net);
    }
  }
  const index = await indexDataset(options.dataPath, options.seed);
  for (const r of index.rejected) hooks.log?.(`data: skipped ${r.path}: ${r.reason}`);
  const plan = planSplits(index, { seed: options.seed, samplingRate: hp.samplingRate, valFraction: hp.valFraction });
  hooks.log?.(`data: ${index.classes.length} classes; train ${plan.train.length}, val ${plan.val.length}, test ${plan.test.length} images`);
  const [weightsHash, sourceClasses] = await Promise.all([
    modelWeightsHash(options.modelDir),
    readSourceClasses(options.sourceClassNamesPath, inspection.numSourceClasses),
  ]);
  progress(hooks, 'loading', 0.005, { message: 'decoding images' });
  const [trainSet, trainEval, val, test] = [
    await decodeImages(plan.train, imageSize, 'train'),
    await decodeImages(plan.train, imageSize, 'eval'),
    await decodeImages(plan.val, imageSize, 'eval'),
    await decodeImages(plan.test, imageSize, 'eval'),
  ];
  throwIfAborted(hooks.signal);
  return {
    options,
    hooks,
    hp,
    backend: backend.name,
    threads: backend.threads,
    index,
    plan,
    inspection,
    imageSize,
    weightsHash,
    sourceClasses,
    sets: { train: trainSet, trainEval, val, test },
  };
}

/**
 * p(y_s | y_t) from the untouched pre-trained net in inference mode on eval-preprocessed training
 * images (plus validation images for the reverse method), through the cache when one is given.
 */
async function estimateRelationship(ctx: RunContext, net: CoTuningNet): Promise<RelationshipResult> {
  const { hp, plan, sets } = ctx;
  const usesVal = hp.relationship === 'reverse';
  const dataHash = await hashFiles([...plan.train, ...(usesVal ? plan.val : [])].map((i) => ({ path: i.path, label: `${i.split}:${i.label}` })));
  const key: RelationshipKey = {
    weightsHash: ctx.weightsHash,
    dataHash,
    imageSize: ctx.imageSize,
    normalization: ctx.inspection.normalization,
    method: hp.relationship,
    temperature: hp.temperature,
    classes: ctx.index.classes,
    numSource: ctx.inspection.numSourceClasses,
  };
  const cacheKey = relationshipCacheKey(key);
  const started = Date.now();
  if (ctx.options.cacheDir) {
    const cached = await readCachedRelationship(ctx.options.cacheDir, key);
    if (cached) {
      ctx.hooks.log?.(`relationship: reused cache entry ${cacheKey.slice(0, 12)}`);
      return { matrix: Float32Array.from(cached.matrix), key, cacheKey, fromCache: true, seconds: 0, extra: cached.extra };
    }
  }
  const S = ctx.inspection.numSourceClasses;
  const C = ctx.index.classes.length;
  const trainLogits = await predictLogits(net, sets.trainEval, ctx.inspection.normalization, 'source', ctx.hooks.signal);
  const trainProbs = softmaxRows(trainLogits, sets.trainEval.count, S, hp.temperature);
  let matrix: Float32Array;
  let extra: Record<string, unknown> = {};
  if (hp.relationship === 'direct') {
    matrix = directRelationship(trainProbs, sets.trainEval.labels, C, S, ctx.index.classes);
  } else {
    if (sets.val.count === 0) throw new InvalidInputError('hyperparameters.relationship', 'the reverse relationship needs validation images');
    const valLogits = await predictLogits(net, sets.val, ctx.inspection.normalization, 'source', ctx.hooks.signal);
    const valProbs = softmaxRows(valLogits, sets.val.count, S, hp.temperature);
    const fit = fitReverseRelationship({
      trainProbs,
      trainLabels: sets.trainEval.labels,
      valProbs,
      valLabels: sets.val.labels,
      numClasses: C,
      numSource: S,
      classNames: ctx.index.classes,
    });
    matrix = fit.matrix;
    extra = { C: fit.C, scale: fit.scale, valAccuracy: fit.valAccuracy };
  }
  if (ctx.options.cacheDir) await writeCachedRelationship(ctx.options.cacheDir, key, matrix, extra);
  return { matrix, key, cacheKey, fromCache: false, seconds: (Date.now() - started) / 1000, extra };
}

async function writeRelationshipArtifacts(ctx: RunContext, dir: string, rel: RelationshipResult): Promise<string[]> {
  const C = ctx.index.classes.length;
  const S = ctx.inspection.numSourceClasses;
  const stats = relationshipStats(rel.matrix, C, S, 5);
  const rows = Array.from({ length: C }, (_, c) => Array.from(rel.matrix.subarray(c * S, (c + 1) * S)));
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'relationship.json'),
    JSON.stringify({
      method: ctx.hp.relationship,
      temperature: ctx.hp.temperature,
      shape: [C, S],
      targetClasses: ctx.index.classes,
      sourceClasses: ctx.sourceClasses,
      weightsHash: rel.key.weightsHash,
      dataHash: rel.key.dataHash,
      cacheKey: rel.cacheKey,
      imageSize: ctx.imageSize,
      ...rel.extra,
      top: stats.top.map((t, c) => ({
        targetClass: ctx.index.classes[c],
        source: t.indices.map((j, k) => ({ index: j, name: ctx.sourceClasses?.[j] ?? null, p: t.probs[k] })),
      })),
      matrix: rows,
    }),
  );
  await renderRelationshipPng(join(dir, 'relationship.png'), {
    matrix: rel.matrix,
    targetClasses: ctx.index.classes,
    sourceClasses: ctx.sourceClasses ?? undefined,
  });
  return ['relationship.json', 'relationship.png'];
}

/** Train and evaluate one method on a fresh copy of the pre-trained net; writes its artifacts into `dir`. */
async function runMethod(
  ctx: RunContext,
  method: TrainMethod,
  dir: string,
  range: [number, number],
  relationship: (pretrained: CoTuningNet) => Promise<RelationshipResult>,
): Promise<{ result: MethodResult; train: TrainResult; relationship?: RelationshipResult }> {
  const { hp, hooks } = ctx;
  const started = Date.now();
  const span = range[1] - range[0];
  const at = (f: number) => range[0] + span * f;
  const net = await buildNet(ctx.options.modelDir, {
    numClasses: ctx.index.classes.length,
    imageSize: ctx.imageSize,
    headLayer: hp.headLayer,
    seed: ctx.options.seed,
  });
  try {
    let rel: RelationshipResult | undefined;
    if (method === 'co-tuning') {
      progress(hooks, 'relationship', at(0), { method, message: `estimating the ${hp.relationship} relationship` });
      rel = await relationship(net);
    }
    const trained = await train({
      net,
      method,
      hp,
      seed: ctx.options.seed,
      train: ctx.sets.train,
      val: ctx.sets.val,
      relationship: rel?.matrix ?? null,
      normalization: ctx.inspection.normalization,
      checkpointDir: ctx.options.checkpointDir ? join(ctx.options.checkpointDir, method) : undefined,
      fingerprint: [ctx.weightsHash, ctx.plan.hash, ctx.imageSize, rel?.cacheKey ?? ''].join('/'),
      hooks,
      progressRange: [at(0.05), at(0.93)],
    });
    progress(hooks, 'evaluating', at(0.93), { method, message: `testing on ${ctx.sets.test.count} images` });
    const evalStarted = Date.now();
    const logits = await predictLogits(net, ctx.sets.test, ctx.inspection.normalization, 'target', hooks.signal);
    const test = classificationMetrics(logits, ctx.sets.test.labels, ctx.index.classes);
    const evalSeconds = (Date.now() - evalStarted) / 1000;

    progress(hooks, 'exporting', at(0.98), { method });
    await mkdir(dir, { recursive: true });
    const artifacts: string[] = [];
    const model = exportTargetModel(net);
    const modelFiles = await saveLayersModel(model, join(dir, 'model'), {
      cotune: { classes: ctx.index.classes, normalization: ctx.inspection.normalization, imageSize: ctx.imageSize, method } as object,
    });
    artifacts.push(...modelFiles.map((f) => `model/${f}`));
    if (rel) artifacts.push(...(await writeRelationshipArtifacts(ctx, dir, rel)));
    await writeFile(
      join(dir, 'split.json'),
      JSON.stringify({
        seed: ctx.options.seed,
        rule: ctx.plan.rule,
        hash: ctx.plan.hash,
        classes: ctx.index.classes,
        train: ctx.plan.train.map((i) => relative(dataRoot(ctx.index), i.path)),
        val: ctx.plan.val.map((i) => relative(dataRoot(ctx.index), i.path)),
        testCount: ctx.plan.test.length,
      }),
    );
    artifacts.push('split.json');
    const seconds = (Date.now() - started) / 1000;
    await writeFile(
      join(dir, 'metrics.json'),
      JSON.stringify(
        {
          method,
          backend: ctx.backend,
          threads: ctx.threads,
          config: {
            seed: ctx.options.seed,
            imageSize: ctx.imageSize,
            hyperparameters: hp,
            model: ctx.options.modelDir,
            data: ctx.options.dataPath,
            classes: ctx.index.classes,
            counts: { train: ctx.plan.train.length, val: ctx.plan.val.length, test: ctx.plan.test.length },
          },
          curves: trained.curves,
          bestValTop1: trained.bestValTop1,
          bestStep: trained.bestStep,
          test,
          timings: {
            relationshipSeconds: rel?.seconds ?? 0,
            relationshipFromCache: rel?.fromCache ?? false,
            trainSeconds: trained.seconds,
            evalSeconds,
            totalSeconds: seconds,
            trainImagesPerSec: trained.imagesPerSec,
            resumedFromStep: trained.resumedFromStep,
          },
        },
        null,
        2,
      ),
    );
    artifacts.push('metrics.json');
    await renderCurvesPng(join(dir, 'curves.png'), [
      {
        title: `${method}: training loss`,
        xLabel: 'epoch',
        yLabel: 'loss',
        series: [
          { name: 'total', points: trained.curves.epochs.map((e) => ({ x: e.epoch, y: e.loss })) },
          { name: 'target CE', points: trained.curves.epochs.map((e) => ({ x: e.epoch, y: e.lossTarget })) },
          ...(method === 'co-tuning' ? [{ name: 'source soft CE', points: trained.curves.epochs.map((e) => ({ x: e.epoch, y: e.lossSource })) }] : []),
        ],
      },
      {
        title: `${method}: validation top-1`,
        xLabel: 'epoch',
        yLabel: 'accuracy',
        series: [{ name: 'val top-1', points: trained.curves.validation.map((v) => ({ x: v.epoch, y: v.valTop1 })) }],
      },
    ]);
    artifacts.push('curves.png');
    return {
      result: { method, test, bestValTop1: trained.bestValTop1, bestStep: trained.bestStep, seconds, artifacts },
      train: trained,
      relationship: rel,
    };
  } finally {
    disposeNet(net);
  }
}

/**
 * Run Co-Tuning, plain fine-tuning, or both on the same split and seed (`compare`), writing the
 * fine-tuned model, relationship, metrics, split and plots into options.outDir.
 */
export async function runJob(options: RunOptions, hooks: RunHooks = {}): Promise<RunResult> {
  const started = Date.now();
  const ctx = await prepare(options, hooks);
  const methods: TrainMethod[] = options.method === 'compare' ? ['fine-tune', 'co-tuning'] : [options.method];
  const results: MethodResult[] = [];
  const artifacts: string[] = [];
  let cachedRel: Promise<RelationshipResult> | undefined;
  for (const [i, method] of methods.entries()) {
    const sub = methods.length > 1 ? method : '';
    const dir = join(options.outDir, sub);
    const range: [number, number] = [0.01 + (0.98 * i) / methods.length, 0.01 + (0.98 * (i + 1)) / methods.length];
    // The method's fresh net still has the untouched pre-trained weights when the relationship is estimated.
    const { result } = await runMethod(ctx, method, dir, range, (pretrained) => (cachedRel ??= estimateRelationship(ctx, pretrained)));
    results.push({ ...result, artifacts: result.artifacts.map((a) => (sub ? `${sub}/${a}` : a)) });
    artifacts.push(...results[results.length - 1].artifacts);
  }
  const seconds = (Date.now() - started) / 1000;
  const out: RunResult = { outDir: options.outDir, backend: ctx.backend, seconds, results, artifacts };
  if (options.method === 'compare') {
    const ft = results.find((r) => r.method === 'fine-tune')!;
    const ct = results.find((r) => r.method === 'co-tuning')!;
    out.gain = ct.test.top1 - ft.test.top1;
    await writeFile(
      join(options.outDir, 'compare.json'),
      JSON.stringify(
        {
          'fine-tune': { top1: ft.test.top1, top5: ft.test.top5 },
          'co-tuning': { top1: ct.test.top1, top5: ct.test.top5 },
          gain: out.gain,
          backend: ctx.backend,
          seconds,
        },
        null,
        2,
      ),
    );
    artifacts.push('compare.json');
  }
  progress(hooks, 'exporting', 1, { message: 'done' });
  return out;
}

/**
 * Estimate and write only the relationship (relationship.json, relationship.png) for a dataset
 * and model, as `cotune relationship` does.
 */
export async function runRelationship(options: Omit<RunOptions, 'method'>, hooks: RunHooks = {}): Promise<{ outDir: string; backend: string; seconds: number; artifacts: string[]; fromCache: boolean }> {
  const started = Date.now();
  const ctx = await prepare({ ...options, method: 'co-tuning' }, hooks);
  const net = await buildNet(options.modelDir, { numClasses: ctx.index.classes.length, imageSize: ctx.imageSize, headLayer: ctx.hp.headLayer, seed: options.seed });
  try {
    progress(hooks, 'relationship', 0.1, { message: `estimating the ${ctx.hp.relationship} relationship` });
    const rel = await estimateRelationship(ctx, net);
    const artifacts = await writeRelationshipArtifacts(ctx, options.outDir, rel);
    progress(hooks, 'exporting', 1, { message: 'done' });
    return { outDir: options.outDir, backend: ctx.backend, seconds: (Date.now() - started) / 1000, artifacts, fromCache: rel.fromCache };
  } finally {
    disposeNet(net);
  }
}
