import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';

export interface ProblemJson {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  errors?: { field: string; message: string }[];
}

/** A problem+json answer with this status and, if given, an error naming `field` (prefix). */
export function assertProblem(res: { statusCode: number; headers: Record<string, unknown>; body: string }, status: number, field?: string): ProblemJson {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = JSON.parse(res.body) as ProblemJson;
  assert.equal(body.status, status);
  assert.ok(body.type && body.title && body.detail);
  if (field) assert.ok(body.errors?.some((e) => e.field.startsWith(field)), `errors name ${field}: ${JSON.stringify(body.errors)}`);
  return body;
}

/** Nothing was stored: no record, no dataset/model directory, no staging leftovers. */
export async function assertNothingStored(app: FastifyInstance, dataDir: string, kind: 'datasets' | 'models'): Promise<void> {
  const list = await app.inject({ url: `/v1/${kind}` });
  assert.deepEqual(list.json().items, []);
  const entries = async (d: string) => readdir(join(dataDir, d)).catch(() => [] as string[]);
  assert.deepEqual(await entries(kind), []);
  assert.deepEqual(await entries('staging'), []);
}
