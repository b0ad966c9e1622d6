import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Everything a relationship depends on; the cache key is its hash, and a stored entry must match it field by field. */
export interface RelationshipKey {
  weightsHash: string;
  /** Hash of the images (contents) and labels the relationship was estimated from. */
  dataHash: string;
  imageSize: number;
  normalization: string;
  method: string;
  temperature: number;
  classes: string[];
  numSource: number;
}

export interface CachedRelationship {
  key: RelationshipKey;
  matrix: number[];
  extra: Record<string, unknown>;
}

export function relationshipCacheKey(key: RelationshipKey): string {
  return createHash('sha256').update(JSON.stringify(key)).digest('hex');
}

/** The cached matrix for `key`, or null. Entries whose stored key or shape disagree are never used. */
export async function readCachedRelationship(cacheDir: string, key: RelationshipKey): Promise<CachedRelationship | null> {
  const file = join(cacheDir, `relationship-${relationshipCacheKey(key)}.json`);
  let entry: CachedRelationship;
  try {
    entry = JSON.parse(await readFile(file, 'utf8')) as CachedRelationship;
  } catch {
    return null;
  }
  const expectedSize = key.classes.length * key.numSource;
  if (JSON.stringify(entry.key) !== JSON.stringify(key) || !Array.isArray(entry.matrix) || entry.matrix.length !== expectedSize) return null;
  if (entry.matrix.some((v) => typeof v !== 'number' || !Number.isFinite(v))) return null;
  return entry;
}

export async function writeCachedRelationship(
  cacheDir: string,
  key: RelationshipKey,
  matrix: Float32Array,
  extra: Record<string, unknown> = {},
): Promise<void> {
  await mkdir(cacheDir, { recursive: true });
  const file = join(cacheDir, `relationship-${relationshipCacheKey(key)}.json`);
  const tmp = `${file}.${process.pid}.tmp`;
  const entry: CachedRelationship = { key, matrix: Array.from(matrix), extra };
  await writeFile(tmp, JSON.stringify(entry));
  await rename(tmp, file);
}

/** sha256 over files' bytes and the labels that go with them, in the given order. */
export async function hashFiles(files: { path: string; label?: string | number }[]): Promise<string> {
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(`${file.label ?? ''}\u0000`);
    hash.update(await readFile(file.path));
  }
  return hash.digest('hex');
}
