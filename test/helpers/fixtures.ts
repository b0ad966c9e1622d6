import { cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar';
import yazl from 'yazl';
import { FLOWERS_DIR, MOBILENET_DIR } from './shared-data.js';

/** A temp dir removed after the test file. */
export async function tempDir(prefix = 'cotune-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export const FLOWER_CLASSES = ['daisy', 'dandelion', 'sunflower'];

/**
 * A split-folder slice of the shared flowers: `<root>/flowers/{train,test}/<class>/*.jpg`,
 * `perClass` train and `testPerClass` test images of each class.
 */
export async function flowerSlice(root: string, perClass = 4, testPerClass = 2, classes = FLOWER_CLASSES): Promise<string> {
  const dir = join(root, 'flowers');
  for (const [split, n] of [['train', perClass], ['test', testPerClass]] as const) {
    for (const cls of classes) {
      const files = (await readdir(join(FLOWERS_DIR, split, cls))).filter((f) => f.endsWith('.jpg')).sort().slice(0, n);
      await mkdir(join(dir, split, cls), { recursive: true });
      for (const f of files) await cp(join(FLOWERS_DIR, split, cls, f), join(dir, split, cls, f));
    }
  }
  return dir;
}

export async function tarGz(dir: string, out: string): Promise<string> {
  const parent = join(dir, '..');
  const name = dir.slice(parent.length + 1);
  await tar.c({ gzip: true, file: out, cwd: parent, portable: true }, [name]);
  return out;
}

/** Zip a map of entry name → content. */
export async function zipOf(entries: Record<string, Buffer | string>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, content] of Object.entries(entries)) zip.addBuffer(Buffer.isBuffer(content) ? content : Buffer.from(content), name, { compress: false });
  zip.end();
  const chunks: Buffer[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Zip a directory tree, entries relative to `dir`'s parent (so the folder itself is the top entry). */
export async function zipDir(dir: string): Promise<Buffer> {
  const parent = join(dir, '..');
  const entries: Record<string, Buffer> = {};
  for (const rel of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!rel.isFile()) continue;
    const abs = join(rel.parentPath, rel.name);
    entries[abs.slice(parent.length + 1)] = await readFile(abs);
  }
  return zipOf(entries);
}

/**
 * A zip with an entry `../evil.txt`. yazl refuses such names, so the archive is built with a
 * same-length safe name and the name bytes are patched (CRCs cover content, not names).
 */
export async function zipSlip(good: Record<string, Buffer | string>): Promise<Buffer> {
  const buf = await zipOf({ ...good, 'zz/evil.txt': 'escaped' });
  const from = Buffer.from('zz/evil.txt');
  const to = Buffer.from('../evil.txt');
  let at = buf.indexOf(from);
  while (at !== -1) {
    to.copy(buf, at);
    at = buf.indexOf(from, at + 1);
  }
  return buf;
}

export interface Part {
  name: string;
  filename?: string;
  contentType?: string;
  data: Buffer | string;
}

/** A multipart/form-data body for inject() or fetch(). */
export function multipart(parts: Part[]): { payload: Buffer; headers: Record<string, string> } {
  const boundary = `----cotune${Math.random().toString(16).slice(2)}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"`;
    if (part.filename !== undefined) head += `; filename="${part.filename}"`;
    head += '\r\n';
    if (part.contentType) head += `Content-Type: ${part.contentType}\r\n`;
    chunks.push(Buffer.from(`${head}\r\n`), Buffer.isBuffer(part.data) ? part.data : Buffer.from(part.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

export function archivePart(data: Buffer, filename = 'dataset.zip'): ReturnType<typeof multipart> {
  return multipart([{ name: 'file', filename, contentType: 'application/octet-stream', data }]);
}

/** The shared MobileNet as upload parts (model.json + every shard). */
export async function mobilenetParts(modelJson?: object): Promise<Part[]> {
  const json = modelJson ?? JSON.parse(await readFile(join(MOBILENET_DIR, 'model.json'), 'utf8'));
  const shards = (json as { weightsManifest: { paths: string[] }[] }).weightsManifest.flatMap((g) => g.paths);
  const parts: Part[] = [{ name: 'model', filename: 'model.json', contentType: 'application/json', data: JSON.stringify(json) }];
  for (const shard of shards) parts.push({ name: 'weights', filename: shard, contentType: 'application/octet-stream', data: await readFile(join(MOBILENET_DIR, shard)) });
  return parts;
}

export async function mobilenetJson(): Promise<{ modelTopology: { model_config: { config: { layers: { class_name: string; name: string }[]; output_layers?: unknown } } }; weightsManifest: { paths: string[] }[] }> {
  return JSON.parse(await readFile(join(MOBILENET_DIR, 'model.json'), 'utf8'));
}


export interface TarEntry {
  name: string;
  data?: Buffer | string;
  /** Header size when it should differ from the data (a bomb declares more than follows). */
  size?: number;
  type?: 'file' | 'dir';
}

/**
 * A .tar.gz built header by header, for archives `tar` refuses to create (a file and a folder
 * of the same name, duplicates, headers that lie about their size).
 */
export function tarGzOf(entries: TarEntry[], { end = true }: { end?: boolean } = {}): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    const size = e.size ?? data.length;
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100, 'utf8');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
    h.write('00000000000\0', 136);
    h.write(e.type === 'dir' ? '5' : '0', 156);
    h.write('ustar\0', 257);
    h.write('00', 263);
    h.fill(' ', 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(h, data);
    if (data.length % 512) blocks.push(Buffer.alloc(512 - (data.length % 512)));
  }
  if (end) blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

/** A zip from (name, content) pairs in order; unlike zipOf, names may repeat. */
export async function zipList(entries: [string, Buffer | string][]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, content] of entries) zip.addBuffer(Buffer.isBuffer(content) ? content : Buffer.from(content), name, { compress: false });
  zip.end();
  const chunks: Buffer[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
