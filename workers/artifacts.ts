import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import yazl from 'yazl';
import type { Static } from 'typebox';
import type { ArtifactShape } from '../src/contracts/jobs.js';

type Artifact = Static<typeof ArtifactShape>;

const TYPES: Record<string, string> = {
  '.json': 'application/json',
  '.png': 'image/png',
  '.csv': 'text/csv',
  '.txt': 'text/plain',
  '.zip': 'application/zip',
  '.bin': 'application/octet-stream',
};

export function contentTypeOf(name: string): string {
  return TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream';
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/** Zip every folder that holds a model.json into `<folder>.zip`, so a model downloads as one file. */
export async function zipModels(outDir: string, names: string[]): Promise<string[]> {
  const dirs = [...new Set(names.filter((n) => posix.basename(n) === 'model.json').map((n) => posix.dirname(n)))];
  const zips: string[] = [];
  for (const dir of dirs) {
    if (dir === '.') continue;
    const members = names.filter((n) => posix.dirname(n) === dir);
    const zipName = `${dir}.zip`;
    const zip = new yazl.ZipFile();
    for (const member of members) zip.addFile(join(outDir, member), posix.basename(member));
    zip.end();
    await pipeline(zip.outputStream, createWriteStream(join(outDir, zipName)));
    zips.push(zipName);
  }
  return zips;
}

/** Size, sha256 and content type of each output (names relative to outDir, '/'-separated). */
export async function describeArtifacts(outDir: string, names: string[]): Promise<Artifact[]> {
  const out: Artifact[] = [];
  for (const name of names) {
    const file = join(outDir, name);
    const info = await stat(file);
    if (!info.isFile()) continue;
    out.push({ name, size: info.size, sha256: await sha256(file), contentType: contentTypeOf(name) });
  }
  return out;
}

