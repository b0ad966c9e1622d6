import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import type { Readable } from 'node:stream';

/** Areas of the store; every key is (area, generated id), never a user-supplied path. */
export type Area = 'datasets' | 'models' | 'jobs';

export interface BlobStat {
  size: number;
  mtimeMs: number;
}

/**
 * Blob storage shared by the API and the workers. The core library works on directories, so
 * the store hands out real paths for a key; a remote store would sync those directories.
 */
export interface BlobStore {
  readonly root: string;
  /** Absolute directory of a key (created on demand by writers). */
  dir(area: Area, id: string): string;
  /** Absolute path of a file inside a key; rejects paths that leave the key. */
  file(area: Area, id: string, relative: string): string;
  /** A fresh staging directory on the same file system, so commit() is an atomic rename. */
  staging(): Promise<string>;
  /** Move a staging directory into place as (area, id). */
  commit(stagingDir: string, area: Area, id: string): Promise<void>;
  remove(area: Area, id: string): Promise<void>;
  discard(stagingDir: string): Promise<void>;
  stat(area: Area, id: string, relative: string): Promise<BlobStat | undefined>;
  read(area: Area, id: string, relative: string, range?: { start: number; end: number }): Readable;
}

const ID = /^[a-z]{1,4}_[0-9a-z]{8,40}$/;

/** Reject absolute paths, `..` segments and NUL bytes; returns the normalised relative path. */
export function safeRelative(relative: string): string {
  if (relative.includes('\0') || isAbsolute(relative) || /^[a-zA-Z]:/.test(relative)) throw new Error(`unsafe path: ${relative}`);
  const normalised = normalize(relative.replaceAll('\\', '/'));
  if (normalised === '..' || normalised.startsWith(`..${sep}`) || normalised.split(sep).includes('..')) throw new Error(`unsafe path: ${relative}`);
  return normalised;
}

export function createDirStore(root: string): BlobStore {
  const check = (id: string) => {
    if (!ID.test(id)) throw new Error(`invalid storage id: ${id}`);
  };
  const store: BlobStore = {
    root,
    dir(area, id) {
      check(id);
      return join(root, area, id);
    },
    file(area, id, relative) {
      return join(store.dir(area, id), safeRelative(relative));
    },
    async staging() {
      const base = join(root, 'staging');
      await mkdir(base, { recursive: true });
      return mkdtemp(join(base, 'up-'));
    },
    async commit(stagingDir, area, id) {
      await mkdir(join(root, area), { recursive: true });
      await rename(stagingDir, store.dir(area, id));
    },
    async remove(area, id) {
      await rm(store.dir(area, id), { recursive: true, force: true });
    },
    async discard(stagingDir) {
      await rm(stagingDir, { recursive: true, force: true });
    },
    async stat(area, id, relative) {
      try {
        const s = await stat(store.file(area, id, relative));
        return s.isFile() ? { size: s.size, mtimeMs: s.mtimeMs } : undefined;
      } catch {
        return undefined;
      }
    },
    read(area, id, relative, range) {
      return createReadStream(store.file(area, id, relative), range ? { start: range.start, end: range.end } : {});
    },
  };
  return store;
}
