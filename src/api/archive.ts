import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import yauzl from 'yauzl';
import { safeRelative } from '../storage/blob-store.js';
import { HttpProblem } from './problem.js';

export interface ArchiveLimits {
  /** Total uncompressed bytes (zip-bomb guard). */
  extractedBytes: number;
  entries: number;
}

const unsafe = (name: string) =>
  new HttpProblem(400, 'unsafe_archive', `archive entry "${name}" points outside the archive (absolute path or ".." segment)`, [
    { field: 'file', message: `entry "${name}" escapes the archive root` },
  ]);
const tooBig = (limit: number) =>
  new HttpProblem(413, 'too_large', `archive expands to more than ${limit} bytes`, [{ field: 'file', message: `uncompressed size exceeds ${limit} bytes` }]);
const tooMany = (limit: number) => new HttpProblem(413, 'too_large', `archive has more than ${limit} entries`, [{ field: 'file', message: `more than ${limit} entries` }]);
const badArchive = (message: string) => new HttpProblem(400, 'invalid_archive', message, [{ field: 'file', message }]);

function checkName(name: string): string {
  try {
    return safeRelative(name);
  } catch {
    throw unsafe(name);
  }
}

/** Counts bytes through a stream and fails once the running total passes the limit. */
function byteBudget(budget: { left: number }, limit: number): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      budget.left -= chunk.length;
      if (budget.left < 0) done(tooBig(limit));
      else done(null, chunk);
    },
  });
}

async function kindOf(file: string): Promise<'zip' | 'tgz' | undefined> {
  const handle = await open(file, 'r');
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    if (bytesRead >= 4 && buffer.readUInt32LE(0) === 0x04034b50) return 'zip';
    if (bytesRead >= 2 && buffer[0] === 0x1f && buffer[1] === 0x8b) return 'tgz';
    return undefined;
  } finally {
    await handle.close();
  }
}

async function extractZip(file: string, dest: string, limits: ArchiveLimits): Promise<void> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.open(file, { lazyEntries: true, validateEntrySizes: true, strictFileNames: false, decodeStrings: true }, (err, z) => (err ? reject(badArchive(`not a readable zip: ${err.message}`)) : resolve(z))),
  );
  const budget = { left: limits.extractedBytes };
  let entries = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on('error', (err: Error) => reject(/invalid relative path|absolute path/i.test(err.message) ? unsafe(err.message.replace(/^.*: /, '')) : badArchive(`corrupt zip: ${err.message}`)));
      zip.on('end', () => resolve());
      zip.on('entry', (entry: yauzl.Entry) => {
        const work = async () => {
          entries += 1;
          if (entries > limits.entries) throw tooMany(limits.entries);
          const name = checkName(entry.fileName);
          const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
          if (mode === 0o120000) throw badArchive(`archive entry "${entry.fileName}" is a symbolic link`);
          if (entry.fileName.endsWith('/')) {
            await mkdir(join(dest, name), { recursive: true });
            return;
          }
          if (entry.uncompressedSize > budget.left) throw tooBig(limits.extractedBytes);
          await mkdir(dirname(join(dest, name)), { recursive: true });
          const input = await new Promise<NodeJS.ReadableStream>((res, rej) => zip.openReadStream(entry, (err, s) => (err ? rej(badArchive(`corrupt zip entry "${entry.fileName}": ${err.message}`)) : res(s))));
          await pipeline(input, byteBudget(budget, limits.extractedBytes), createWriteStream(join(dest, name), { flags: 'wx' }));
        };
        work().then(() => zip.readEntry(), reject);
      });
      zip.readEntry();
    });
  } finally {
    zip.close();
  }
}

async function extractTgz(file: string, dest: string, limits: ArchiveLimits): Promise<void> {
  // First pass: validate every header before anything is written.
  let problem: HttpProblem | undefined;
  let entries = 0;
  let declared = 0;
  try {
    await tar.t({
      file,
      strict: true,
      onReadEntry: (entry) => {
        if (problem) return;
        entries += 1;
        declared += entry.size ?? 0;
        if (entries > limits.entries) problem = tooMany(limits.entries);
        else if (declared > limits.extractedBytes) problem = tooBig(limits.extractedBytes);
        else if (!['File', 'OldFile', 'ContiguousFile', 'Directory'].includes(entry.type)) problem = badArchive(`archive entry "${entry.path}" is a ${entry.type}, only files and folders are allowed`);
        else {
          try {
            checkName(entry.path);
          } catch (err) {
            problem = err as HttpProblem;
          }
        }
      },
    });
  } catch (err) {
    throw badArchive(`not a readable .tar.gz: ${(err as Error).message}`);
  }
  if (problem) throw problem;
  try {
    await tar.x({ file, cwd: dest, strict: true, preservePaths: false, noChmod: true });
  } catch (err) {
    throw badArchive(`corrupt .tar.gz: ${(err as Error).message}`);
  }
}

/** Extract a .zip or .tar.gz into `dest`, refusing path traversal, links and oversize content. */
export async function extractArchive(file: string, dest: string, limits: ArchiveLimits): Promise<'zip' | 'tgz'> {
  const kind = await kindOf(file);
  if (!kind) throw new HttpProblem(415, 'unsupported_archive', 'the upload is neither a .zip nor a .tar.gz', [{ field: 'file', message: 'expected a .zip or .tar.gz archive' }]);
  await mkdir(dest, { recursive: true });
  if (kind === 'zip') await extractZip(file, dest, limits);
  else await extractTgz(file, dest, limits);
  return kind;
}

const IGNORED = new Set(['__MACOSX', '.DS_Store']);

/**
 * The dataset root inside an extracted archive: descend through single wrapper folders; a
 * lone CSV at the root is a manifest. Returns a path relative to `dir`.
 */
export async function findDatasetRoot(dir: string): Promise<string> {
  let rel = '';
  for (let depth = 0; depth < 8; depth++) {
    const names = (await readdir(join(dir, rel))).filter((n) => !IGNORED.has(n) && !n.startsWith('._'));
    const csv = names.filter((n) => n.toLowerCase().endsWith('.csv'));
    if (csv.length === 1 && !names.includes('train')) return join(rel, csv[0]);
    if (names.length === 1 && (await stat(join(dir, rel, names[0]))).isDirectory()) {
      rel = join(rel, names[0]);
      continue;
    }
    return rel || '.';
  }
  return rel;
}
