/**
 * The embedded default for `npm run demo`: a small pre-trained source classifier and a small
 * related target dataset, both generated here so the demo needs no network and no shared data.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tar from 'tar';
import { selectBackend } from '../cotuning/backend/select.js';
import { saveLayersModel } from '../cotuning/model-io.js';
import { buildSourceModel, type PretrainReport, pretrainSourceModel } from './pretrain.js';
import { type ClassSpec, SOURCE_CLASSES, TARGET_CLASSES, drawShape, itemSeed } from './shapes.js';

/** Bump when drawing, the model or the layout changes: cached assets are then regenerated. */
export const DEMO_ASSETS_VERSION = 6;

export interface DemoAssetOptions {
  seed?: number;
  /** Square image size in pixels (model input and dataset images). */
  imageSize?: number;
  /** Source images drawn per class for pre-training. */
  sourcePerClass?: number;
  /** Target images per class in train/, val/ and test/. */
  trainPerClass?: number;
  valPerClass?: number;
  testPerClass?: number;
  /** Pre-training stops after this many seconds or maxEpochs, whichever comes first. */
  pretrainSeconds?: number;
  maxEpochs?: number;
  log?: (message: string) => void;
}

export type ResolvedDemoAssetOptions = Required<Omit<DemoAssetOptions, 'log'>>;

export const DEFAULT_DEMO_ASSET_OPTIONS: ResolvedDemoAssetOptions = {
  seed: 1,
  imageSize: 32,
  sourcePerClass: 400,
  trainPerClass: 8,
  valPerClass: 4,
  testPerClass: 40,
  // Three epochs take ~25 s on two idle cores and 60-100 s on busy ones; the time cap is only a
  // safety net, since stopping by time makes the weights depend on the machine.
  pretrainSeconds: 150,
  maxEpochs: 3,
};

export interface DemoAssets {
  /** model.json + weights.bin. */
  modelDir: string;
  /** train/, val/ and test/<class>/*.png, packed as .tar.gz. */
  datasetArchive: string;
  /** The same dataset unpacked. */
  datasetDir: string;
  /** JSON array of the source head's class names, in output order. */
  sourceClassNamesPath: string;
  sourceClasses: string[];
  targetClasses: string[];
  /** Whether this call generated the assets (false: reused from the cache). */
  generated: boolean;
  pretrain: PretrainReport;
}

interface Stamp {
  version: number;
  options: ResolvedDemoAssetOptions;
  pretrain: PretrainReport;
}

const STAMP = 'assets.json';
/** Fixed mtime keeps the archive byte-identical across runs. */
const ARCHIVE_MTIME = new Date('2020-01-01T00:00:00Z');

function paths(dir: string) {
  return {
    modelDir: join(dir, 'model'),
    datasetDir: join(dir, 'dataset'),
    datasetArchive: join(dir, 'dataset.tar.gz'),
    sourceClassNamesPath: join(dir, 'source-classes.json'),
    stamp: join(dir, STAMP),
  };
}

async function readStamp(file: string): Promise<Stamp | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Stamp;
  } catch {
    return undefined;
  }
}

function sameOptions(a: ResolvedDemoAssetOptions, b: ResolvedDemoAssetOptions): boolean {
  return (Object.keys(DEFAULT_DEMO_ASSET_OPTIONS) as (keyof ResolvedDemoAssetOptions)[]).every(
    (k) => a[k] === b[k],
  );
}

/**
 * Write `perClass` PNGs of every target class into `<root>/<split>/<class>/NNN.png`; returns the
 * relative paths in a stable order. Each image's seed depends only on (seed, split, class, index).
 */
export async function writeTargetSplit(
  root: string,
  split: 'train' | 'val' | 'test',
  classes: readonly ClassSpec[],
  size: number,
  perClass: number,
  seed: number,
): Promise<string[]> {
  const files: string[] = [];
  const stream = { train: 2000, val: 2500, test: 3000 }[split];
  for (const [c, spec] of classes.entries()) {
    const folder = join(root, split, spec.name);
    await mkdir(folder, { recursive: true });
    const writes: Promise<unknown>[] = [];
    for (let k = 0; k < perClass; k += 1) {
      const rel = `${split}/${spec.name}/${String(k).padStart(3, '0')}.png`;
      const pixels = drawShape(spec, size, itemSeed(seed, stream + c, k));
      writes.push(
        sharp(Buffer.from(pixels), { raw: { width: size, height: size, channels: 3 } })
          .png()
          .toFile(join(root, rel)),
      );
      files.push(rel);
    }
    await Promise.all(writes);
  }
  return files;
}

/**
 * Return the embedded demo assets in `dir`, generating them when missing or when the version
 * or options differ from the cached ones. Pre-training runs on the current TF.js backend
 * (selectBackend() is called if none was chosen yet).
 */
export async function ensureDemoAssets(dir: string, options: DemoAssetOptions = {}): Promise<DemoAssets> {
  const { log, ...rest } = options;
  const resolved: ResolvedDemoAssetOptions = { ...DEFAULT_DEMO_ASSET_OPTIONS };
  for (const [key, value] of Object.entries(rest) as [keyof ResolvedDemoAssetOptions, number | undefined][]) {
    if (value !== undefined) resolved[key] = value;
  }
  const p = paths(dir);
  const result = (pretrain: PretrainReport, generated: boolean): DemoAssets => ({
    modelDir: p.modelDir,
    datasetArchive: p.datasetArchive,
    datasetDir: p.datasetDir,
    sourceClassNamesPath: p.sourceClassNamesPath,
    sourceClasses: SOURCE_CLASSES.map((c) => c.name),
    targetClasses: TARGET_CLASSES.map((c) => c.name),
    generated,
    pretrain,
  });

  const stamp = await readStamp(p.stamp);
  const complete = [p.modelDir, p.datasetArchive, p.datasetDir, p.sourceClassNamesPath].every((f) =>
    existsSync(f),
  );
  if (stamp && complete && stamp.version === DEMO_ASSETS_VERSION && sameOptions(stamp.options, resolved)) {
    return result(stamp.pretrain, false);
  }

  // The stamp goes last: a half-written cache is never mistaken for a complete one.
  await rm(p.stamp, { force: true });
  await Promise.all(
    [p.modelDir, p.datasetDir, p.datasetArchive].map((f) => rm(f, { recursive: true, force: true })),
  );
  await mkdir(dir, { recursive: true });

  const started = Date.now();
  const files: string[] = [];
  const perSplit = { train: resolved.trainPerClass, val: resolved.valPerClass, test: resolved.testPerClass };
  for (const [split, perClass] of Object.entries(perSplit) as ['train' | 'val' | 'test', number][]) {
    if (perClass === 0) continue;
    files.push(
      ...(await writeTargetSplit(
        p.datasetDir,
        split,
        TARGET_CLASSES,
        resolved.imageSize,
        perClass,
        resolved.seed,
      )),
    );
  }
  await tar.create(
    {
      gzip: true,
      file: p.datasetArchive,
      cwd: p.datasetDir,
      portable: true,
      mtime: ARCHIVE_MTIME,
      noDirRecurse: true,
    },
    files,
  );
  log?.(
    `demo dataset: ${files.length} images of ${TARGET_CLASSES.length} classes (${Date.now() - started} ms)`,
  );

  await selectBackend();
  const model = buildSourceModel(resolved.imageSize, SOURCE_CLASSES.length, resolved.seed);
  try {
    const pretrain = await pretrainSourceModel(model, {
      size: resolved.imageSize,
      classes: SOURCE_CLASSES,
      perClass: resolved.sourcePerClass,
      seed: resolved.seed,
      seconds: resolved.pretrainSeconds,
      maxEpochs: resolved.maxEpochs,
      log,
    });
    log?.(
      `demo source model: ${pretrain.epochs} epochs in ${pretrain.seconds.toFixed(0)} s on ${pretrain.backend}, ` +
        `held-out top-1 ${(pretrain.heldOutTop1 * 100).toFixed(1)}% over ${SOURCE_CLASSES.length} classes`,
    );
    // The library reads the pixel range from here; the net was trained on [-1, 1].
    await saveLayersModel(model, p.modelDir, { cotune: { normalization: 'minus1to1' } });
    await writeFile(p.sourceClassNamesPath, JSON.stringify(SOURCE_CLASSES.map((c) => c.name)));
    const next: Stamp = { version: DEMO_ASSETS_VERSION, options: resolved, pretrain };
    await writeFile(p.stamp, JSON.stringify(next, null, 2));
    return result(pretrain, true);
  } finally {
    model.dispose();
  }
}
