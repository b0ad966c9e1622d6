import { createReadStream, createWriteStream } from 'node:fs';
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
  let inflight: Promise<void> = Promise.resolve();
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
        inflight = work().then(
          () => zip.readEntry(),
          (err: unknown) => reject(entryConflict(err, entry.fileName)),
        );
      });
      zip.readEntry();
    });
  } finally {
    // A zip error can arrive while an entry is still being written; let it settle before cleanup.
    await inflight;
    zip.close();
  }
}

/** A file-system refusal while writing an entry: the archive itself is inconsistent (never leaks server paths). */
function entryConflict(err: unknown, name: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (err instanceof HttpProblem || !code) return err;
  const why: Record<string, string> = {
    EEXIST: 'collides with another entry of the same name (a duplicate, or a file and a folder both called that)',
    ENOTDIR: 'sits under a path that is also a file',
    EISDIR: 'names a folder, not a file',
    ENOENT: 'has no usable file name',
  };
  return why[code] ? badArchive(`archive entry "${name}" ${why[code]}`) : err;
}

const TAR_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory']);

/**
 * One streaming pass: every header is checked (type, name, count, running declared size) before
 * its body is read, so a bomb is refused at its first oversize header and nothing is
 * decompressed past it. Files are written one at a time through back-pressure, and the promise
 * settles only once no write is pending, so the caller can delete the destination safely.
 */
async function extractTgz(file: string, dest: string, limits: ArchiveLimits): Promise<void> {
  // Small reads bound what one chunk can inflate to (gzip expands at most ~1000x).
  const input = createReadStream(file, { highWaterMark: 16 * 1024 });
  const parser = new tar.Parser({ strict: true });
  let failure: unknown;
  let entries = 0;
  let declared = 0;
  let chain: Promise<void> = Promise.resolve();
  let writing: NodeJS.WritableStream & { destroy(err?: Error): void } | undefined;

  const fail = (err: unknown) => {
    if (failure !== undefined) return;
    failure = err;
    input.destroy();
    parser.abort(err instanceof Error ? err : new Error(String(err)));
    // The aborted parser never ends the entry being written; end its file here.
    writing?.destroy(new Error('extraction aborted'));
  };

  const writeEntry = async (entry: tar.ReadEntry, name: string) => {
    const target = join(dest, name);
    if (entry.type === 'Directory') {
      entry.resume();
      await mkdir(target, { recursive: true });
      return;
    }
    await mkdir(dirname(target), { recursive: true });
    const out = createWriteStream(target, { flags: 'wx' });
    writing = out;
    await new Promise<void>((resolve, reject) => {
      out.on('error', (err) => {
        entry.unpipe(out);
        reject(err);
      });
      out.on('close', () => resolve());
      entry.pipe(out);
    }).finally(() => (writing = undefined));
  };

  parser.on('entry', (entry: tar.ReadEntry) => {
    if (failure !== undefined) return entry.resume();
    entries += 1;
    declared += entry.size ?? 0;
    let name: string;
    try {
      if (entries > limits.entries) throw tooMany(limits.entries);
      if (declared > limits.extractedBytes) throw tooBig(limits.extractedBytes);
      if (!TAR_TYPES.has(entry.type)) throw badArchive(`archive entry "${entry.path}" is a ${entry.type}, only files and folders are allowed`);
      name = checkName(entry.path);
    } catch (err) {
      entry.resume();
      return fail(err);
    }
    chain = chain.then(() => {
      if (failure !== undefined) {
        entry.resume();
        return;
      }
      return writeEntry(entry, name).catch((err: unknown) => {
        entry.resume();
        fail(entryConflict(err, entry.path));
      });
    });
  });

  await new Promise<void>((resolve) => {
    const done = () => resolve();
    parser.on('error', (err: Error) => {
      fail(/decompression ratio/i.test(err.message) ? tooBig(limits.extractedBytes) : badArchive(`corrupt .tar.gz: ${err.message}`));
      done();
    });
    parser.on('abort', done);
    parser.on('end', done);
    input.on('error', (err) => {
      fail(badArchive(`cannot read the archive: ${err.message}`));
      done();
    });
    input.pipe(parser);
  });
  // Wait for the entry being written (if any) before reporting, so cleanup never races a write.
  await chain;
  if (failure !== undefined) throw failure;
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
