import { createHash } from 'node:crypto';
import { readFile, readdir, stat } from 'node:fs/promises';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import sharp from 'sharp';
import { InvalidInputError } from './errors.js';
import { createRng, deriveSeed, shuffle } from './rng.js';
import type { DatasetScan } from './types.js';

export type Split = 'train' | 'val' | 'test';
export interface DatasetItem {
  /** Absolute path of the image file. */
  path: string;
  /** Index into DatasetIndex.classes. */
  label: number;
  split: Split;
}
export interface DatasetIndex {
  layout: DatasetScan['layout'];
  root: string;
  classes: string[];
  items: DatasetItem[];
  /** Files that are not images, or images that cannot be decoded. */
  rejected: { path: string; reason: string }[];
}

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png']);
const SPLIT_NAMES: Split[] = ['train', 'val', 'test'];
/** Share of an image-folder tree (no splits given) held out as the test set. */
export const IMAGE_FOLDER_TEST_FRACTION = 0.2;

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

async function listDirs(path: string): Promise<string[]> {
  const entries = await readdir(path, { withFileTypes: true });
  return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
}

/** Collect images of `root/<class>/*`; non-image files go to `rejected`. */
async function readClassFolders(root: string, split: Split, rejected: DatasetIndex['rejected']) {
  const classes = await listDirs(root);
  const found: { path: string; className: string; split: Split }[] = [];
  for (const className of classes) {
    const dir = join(root, className);
    const entries = await readdir(dir, { withFileTypes: true });
    let images = 0;
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (entry.name.startsWith('.')) continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        rejected.push({ path, reason: 'nested folder inside a class folder (is there an extra directory level?)' });
      } else if (IMAGE_EXTENSIONS.has(extname(entry.name).toLowerCase())) {
        found.push({ path, className, split });
        images++;
      } else {
        rejected.push({ path, reason: 'not a JPEG or PNG file' });
      }
    }
    if (images === 0) {
      throw new InvalidInputError('data', `data: class folder ${dir} holds no JPEG or PNG images (is there an extra directory level?)`);
    }
  }
  return { classes, found };
}

/** Split one CSV line, honouring double quotes ("" is a literal quote); cells are trimmed. */
export function parseCsvLine(line: string): string[] {
  const cells: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      cells.push(cell);
      cell = '';
    }
    else cell += ch;
  }
  cells.push(cell);
  return cells.map((c) => c.trim());
}

async function readManifest(csvPath: string, rejected: DatasetIndex['rejected']) {
  const text = await readFile(csvPath, 'utf8').catch(() => {
    throw new InvalidInputError('data', `data: cannot read manifest ${csvPath}`);
  });
  const root = dirname(resolve(csvPath));
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = lines.length ? parseCsvLine(lines[0]).map((h) => h.toLowerCase()) : [];
  const hasHeader = header[0] === 'path' && header[1] === 'label';
  const found: { path: string; className: string; split: Split }[] = [];
  lines.slice(hasHeader ? 1 : 0).forEach((line, i) => {
    const row = i + (hasHeader ? 2 : 1);
    const [file, label, splitCell] = parseCsvLine(line);
    if (!file || !label) throw new InvalidInputError('data', `data: ${csvPath} line ${row}: expected path,label[,split]`);
    const split = (splitCell || 'train').toLowerCase() as Split;
    if (!SPLIT_NAMES.includes(split)) {
      throw new InvalidInputError('data', `data: ${csvPath} line ${row}: split must be train, val or test (got "${splitCell}")`);
    }
    const path = resolve(root, file);
    if (path !== root && !path.startsWith(root + sep)) {
      throw new InvalidInputError('data', `data: ${csvPath} line ${row}: path "${file}" leaves the manifest's folder`);
    }
    if (!IMAGE_EXTENSIONS.has(extname(path).toLowerCase())) rejected.push({ path, reason: 'not a JPEG or PNG file' });
    else found.push({ path, className: label, split });
  });
  if (found.length === 0) throw new InvalidInputError('data', `data: manifest ${csvPath} lists no images`);
  return found;
}

/**
 * Read a dataset's file list: a CSV manifest (`path,label[,split]`, paths relative to the CSV),
 * split folders (`root/train/<class>`, `root/test/<class>`, optional `root/val/<class>`) or an
 * image-folder tree (`root/<class>/*`, of which a seeded 20% per class becomes the test split).
 * Class lists of the splits must agree. Does not decode images (see verifyImages).
 */
export async function indexDataset(dataPath: string, seed = 0): Promise<DatasetIndex> {
  const path = resolve(dataPath);
  const rejected: DatasetIndex['rejected'] = [];
  let layout: DatasetIndex['layout'];
  let found: { path: string; className: string; split: Split }[];
  if (!(await isDirectory(path))) {
    if (extname(path).toLowerCase() !== '.csv') throw new InvalidInputError('data', `data: ${path} is neither a folder nor a .csv manifest`);
    layout = 'csv-manifest';
    found = await readManifest(path, rejected);
  } else {
    const top = await listDirs(path);
    if (top.includes('train') && top.includes('test')) {
      layout = 'split-folders';
      found = [];
      const perSplit: Partial<Record<Split, string[]>> = {};
      for (const split of SPLIT_NAMES) {
        if (!top.includes(split)) continue;
        const r = await readClassFolders(join(path, split), split, rejected);
        perSplit[split] = r.classes;
        found.push(...r.found);
      }
      const trainClasses = perSplit.train ?? [];
      for (const split of ['val', 'test'] as Split[]) {
        const other = perSplit[split];
        if (!other) continue;
        const missing = trainClasses.filter((c) => !other.includes(c));
        const extra = other.filter((c) => !trainClasses.includes(c));
        if (missing.length || extra.length) {
          throw new InvalidInputError(
            'data',
            `data: class folders of train and ${split} differ (only in train: ${missing.join(', ') || 'none'}; only in ${split}: ${extra.join(', ') || 'none'})`,
          );
        }
      }
    } else {
      const csv = (await readdir(path)).filter((f) => f.toLowerCase().endsWith('.csv'));
      if (csv.length === 1 && top.length === 0) return indexDataset(join(path, csv[0]), seed);
      layout = 'image-folder';
      const r = await readClassFolders(path, 'train', rejected);
      found = r.found;
    }
  }
  const classes = [...new Set(found.map((f) => f.className))].sort();
  if (classes.length < 2) throw new InvalidInputError('data', `data: found ${classes.length} class; at least 2 are needed`);
  const labelOf = new Map(classes.map((c, i) => [c, i]));
  let items: DatasetItem[] = found.map((f) => ({ path: f.path, label: labelOf.get(f.className)!, split: f.split }));
  if (layout === 'csv-manifest') checkManifestSplits(items, classes);
  if (layout === 'image-folder') items = holdOutTest(items, classes.length, seed);
  return { layout, root: path, classes, items, rejected };
}

function checkManifestSplits(items: DatasetItem[], classes: string[]) {
  for (const split of SPLIT_NAMES) {
    const present = new Set(items.filter((i) => i.split === split).map((i) => i.label));
    if (present.size === 0) continue;
    const missing = classes.filter((_, c) => !present.has(c));
    if (missing.length && split !== 'val') {
      throw new InvalidInputError('data', `data: the ${split} split has no image of class(es) ${missing.slice(0, 10).join(', ')}`);
    }
  }
  if (!items.some((i) => i.split === 'train')) throw new InvalidInputError('data', 'data: the manifest has no train rows');
}

function holdOutTest(items: DatasetItem[], numClasses: number, seed: number): DatasetItem[] {
  const rng = createRng(deriveSeed(seed, 'test-split'));
  const out: DatasetItem[] = [];
  for (let c = 0; c < numClasses; c++) {
    const ofClass = shuffle(items.filter((i) => i.label === c), rng);
    const nTest = ofClass.length >= 2 ? Math.max(1, Math.round(ofClass.length * IMAGE_FOLDER_TEST_FRACTION)) : 0;
    ofClass.forEach((item, i) => out.push({ ...item, split: i < nTest ? 'test' : 'train' }));
  }
  return out;
}

/** Decode every image (downscaled, so it is cheap); returns the ones that fail with the reason. */
export async function verifyImages(paths: string[], concurrency = 8): Promise<{ path: string; reason: string }[]> {
  const bad: { path: string; reason: string }[] = [];
  let next = 0;
  const work = async () => {
    while (next < paths.length) {
      const path = paths[next++];
      try {
        const meta = await sharp(path).metadata();
        if (meta.format !== 'jpeg' && meta.format !== 'png') throw new Error(`format ${meta.format ?? 'unknown'} is not JPEG or PNG`);
        await sharp(path, { failOn: 'truncated' }).resize(16, 16, { fit: 'fill' }).raw().toBuffer();
      } catch (err) {
        bad.push({ path, reason: `cannot decode image: ${(err as Error).message}` });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, paths.length) }, work));
  return bad.sort((a, b) => a.path.localeCompare(b.path));
}

/** The folder image paths are relative to: the manifest's folder, or the dataset root. */
export function dataRoot(index: DatasetIndex): string {
  return index.layout === 'csv-manifest' ? dirname(index.root) : index.root;
}

/** Index and fully decode-check a dataset, summarised per split and class (used for uploads). */
export async function scanDataset(dataPath: string): Promise<DatasetScan> {
  const index = await indexDataset(dataPath);
  const broken = await verifyImages(index.items.map((i) => i.path));
  const brokenSet = new Set(broken.map((b) => b.path));
  const counts: DatasetScan['counts'] = {};
  for (const item of index.items) {
    if (brokenSet.has(item.path)) continue;
    const perClass = (counts[item.split] ??= Object.fromEntries(index.classes.map((c) => [c, 0])));
    perClass[index.classes[item.label]]++;
  }
  const rel = (p: string) => relative(dataRoot(index), p);
  return {
    layout: index.layout,
    classes: index.classes,
    counts,
    rejected: [...index.rejected, ...broken].map((r) => ({ path: rel(r.path), reason: r.reason })),
  };
}

/** The images of one run: who trains, who selects the model, who is the test. */
export interface SplitPlan {
  train: DatasetItem[];
  val: DatasetItem[];
  test: DatasetItem[];
  /** sha256 over the sorted train/val/test paths and labels: two runs with the same plan have the same hash. */
  hash: string;
  rule: string;
}

/**
 * Split off validation (a given val split, or `valFraction` of each train class, seeded) and then
 * keep round(samplingRate·n_c) ≥ 1 training images per class, seeded. The test set is never sampled
 * or used for selection.
 */
export function planSplits(index: DatasetIndex, opts: { seed: number; samplingRate: number; valFraction: number }): SplitPlan {
  const hasVal = index.items.some((i) => i.split === 'val');
  const rng = createRng(deriveSeed(opts.seed, 'splits'));
  const train: DatasetItem[] = [];
  const val: DatasetItem[] = index.items.filter((i) => i.split === 'val');
  for (let c = 0; c < index.classes.length; c++) {
    let ofClass = shuffle(index.items.filter((i) => i.split === 'train' && i.label === c), rng);
    if (!hasVal && opts.valFraction > 0 && ofClass.length >= 2) {
      const nVal = Math.min(ofClass.length - 1, Math.max(1, Math.round(ofClass.length * opts.valFraction)));
      val.push(...ofClass.slice(0, nVal));
      ofClass = ofClass.slice(nVal);
    }
    if (ofClass.length === 0) {
      throw new InvalidInputError('data', `data: class "${index.classes[c]}" has no training image`);
    }
    const keep = Math.max(1, Math.round(ofClass.length * opts.samplingRate));
    train.push(...ofClass.slice(0, keep));
  }
  const test = index.items.filter((i) => i.split === 'test');
  if (test.length === 0) throw new InvalidInputError('data', 'data: there is no test split');
  const byPath = (a: DatasetItem, b: DatasetItem) => a.path.localeCompare(b.path);
  train.sort(byPath);
  val.sort(byPath);
  const hash = createHash('sha256');
  for (const [name, items] of [['train', train], ['val', val], ['test', test]] as const) {
    for (const item of items) hash.update(`${name}\u0000${item.path}\u0000${item.label}\n`);
  }
  return {
    train,
    val,
    test,
    hash: hash.digest('hex'),
    rule: `seed ${opts.seed}; val: ${hasVal ? 'given val split' : `round(${opts.valFraction}·n_c) ≥ 1 per train class`}; train: round(${opts.samplingRate}·n_c) ≥ 1 per class`,
  };
}
