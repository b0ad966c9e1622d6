import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import * as tar from 'tar';
import { parseCsvLine as splitCsvLine } from '../cotuning/dataset.js';
import { UsageError } from './args.js';

const ARCHIVE = /\.(zip|tar\.gz|tgz)$/i;

/** The manifest plus every image it names, relative to the manifest's folder. */
async function manifestEntries(csvPath: string): Promise<string[]> {
  const root = dirname(csvPath);
  const lines = (await readFile(csvPath, 'utf8')).split(/\r?\n/).filter((l) => l.trim() !== '');
  const first = lines.length ? splitCsvLine(lines[0]).map((h) => h.toLowerCase()) : [];
  const rows = first[0] === 'path' ? lines.slice(1) : lines;
  const files = new Set<string>();
  for (const row of rows) {
    const file = splitCsvLine(row)[0];
    if (!file) continue;
    const rel = relative(root, resolve(root, file));
    if (rel.startsWith('..') || rel.startsWith(sep)) {
      throw new UsageError(`--data: ${csvPath} names "${file}", which is outside the manifest's folder`);
    }
    files.add(rel);
  }
  if (files.size === 0) throw new UsageError(`--data: ${csvPath} lists no images`);
  return [basename(csvPath), ...[...files].sort()];
}

/**
 * Turn --data into something the upload endpoint takes: archives go as they are; a folder is
 * packed whole; a CSV manifest is packed with the images it names. Returns the archive path.
 */
export async function packDataset(dataPath: string, workDir: string): Promise<string> {
  const path = resolve(dataPath);
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new UsageError(`--data: ${dataPath} does not exist`);
  if (info.isFile() && ARCHIVE.test(path)) return path;
  const archive = join(workDir, 'dataset.tar.gz');
  let cwd: string;
  let entries: string[];
  if (info.isDirectory()) {
    cwd = path;
    entries = (await readdir(path)).filter((name) => !name.startsWith('.')).sort();
    if (entries.length === 0) throw new UsageError(`--data: ${dataPath} is an empty folder`);
  } else if (info.isFile() && /\.csv$/i.test(path)) {
    cwd = dirname(path);
    entries = await manifestEntries(path);
  } else {
    throw new UsageError(`--data: ${dataPath} is not a folder, a .csv manifest or a .zip/.tar.gz archive`);
  }
  await tar.create({ gzip: true, file: archive, cwd, portable: true }, entries);
  return archive;
}
