import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createClient } from '@hey-api/openapi-ts';
import { clientConfig } from '../openapi-ts.config.js';
import { renderDocument } from './document.js';
import { CLIENT_DIR, SPEC_PATH } from './paths.js';

/** Every file under `dir`, keyed by its path relative to `dir`. */
export async function readTree(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    files.set(relative(dir, path), await readFile(path, 'utf8'));
  }
  return files;
}

/** Human-readable differences between two file trees (empty when identical). */
export function compareTrees(committed: Map<string, string>, generated: Map<string, string>): string[] {
  const problems: string[] = [];
  for (const [path, text] of generated) {
    if (!committed.has(path)) problems.push(`${path}: generated but not committed`);
    else if (committed.get(path) !== text) problems.push(`${path}: ${firstDifference(committed.get(path)!, text)}`);
  }
  for (const path of committed.keys()) if (!generated.has(path)) problems.push(`${path}: committed but no longer generated`);
  return problems.sort();
}

/** Where two texts first differ, as "line N: committed … / generated …". */
export function firstDifference(committed: string, generated: string): string {
  const a = committed.split('\n');
  const b = generated.split('\n');
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) return `line ${i + 1}: committed ${JSON.stringify(a[i] ?? '<end>')} / generated ${JSON.stringify(b[i] ?? '<end>')}`;
  }
  return 'identical';
}

/** Generate the client from `specPath` into a fresh temp folder; returns its files. */
export async function generateClientTree(specPath: string): Promise<Map<string, string>> {
  const out = await mkdtemp(join(tmpdir(), 'cotune-client-'));
  try {
    await createClient({ ...clientConfig, input: specPath, output: { ...clientConfig.output, path: out }, logs: { ...clientConfig.logs, level: 'silent' } });
    return await readTree(out);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/**
 * Drift of the committed artifacts: the document against a fresh export from buildApp(), and
 * the client against a fresh generation from the committed document.
 */
export async function findDrift(): Promise<{ document: string[]; client: string[] }> {
  const [committedSpec, generatedSpec] = await Promise.all([readFile(SPEC_PATH, 'utf8').catch(() => ''), renderDocument()]);
  const document = committedSpec === generatedSpec ? [] : [`openapi/openapi.json: ${firstDifference(committedSpec, generatedSpec)}`];
  const client = compareTrees(await readTree(CLIENT_DIR).catch(() => new Map<string, string>()), await generateClientTree(SPEC_PATH)).map((p) => `openapi/client/${p}`);
  return { document, client };
}
