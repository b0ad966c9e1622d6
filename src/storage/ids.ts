import { randomBytes } from 'node:crypto';

export type IdKind = 'ds' | 'mdl' | 'job';

/**
 * Time-ordered ids (`ds_…`, `mdl_…`, `job_…`): lexicographic order is creation order, which
 * gives cursor pagination for free. Never integer-like and never contain ':' (BullMQ job ids).
 */
export function newId(kind: IdKind, now = Date.now()): string {
  return `${kind}_${now.toString(36).padStart(9, '0')}${randomBytes(6).toString('hex')}`;
}

export function isId(kind: IdKind, value: string): boolean {
  return new RegExp(`^${kind}_[0-9a-z]{9}[0-9a-f]{12}$`).test(value);
}
