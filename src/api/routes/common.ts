import { Type, type TSchema } from 'typebox';
import { Problem, ref } from '../../contracts/common.js';

const DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid request; `errors` names the offending fields.',
  401: 'Missing or unknown API key.',
  404: 'No such resource.',
  406: 'The Accept header asks for a representation this route does not serve.',
  409: 'The resource is in a state that does not allow this.',
  413: 'Upload or archive too large.',
  415: 'Unsupported upload type.',
  416: 'Range not satisfiable.',
  422: 'Well-formed but unusable input; `errors` names the offending fields.',
  500: 'Unexpected server error (details only in logs, by request id).',
  503: 'The job store (Redis) is unreachable; retry after the Retry-After delay.',
};

function problemResponses(statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(
    [...new Set(statuses)]
      .sort()
      .map((s) => [s, Type.Unsafe({ description: DESCRIPTIONS[s] ?? 'Error.', content: { 'application/problem+json': { schema: ref(Problem) } } })]),
  );
}

/** Problem+json responses for the given statuses (plus 401/500/503, which any keyed route can return). */
export function problems(...statuses: number[]): Record<number, TSchema> {
  return problemResponses([...statuses, 401, 500, 503]);
}

/** For routes with `security: []`: the key check skips them, so they never answer 401. */
export function openProblems(...statuses: number[]): Record<number, TSchema> {
  return problemResponses([...statuses, 500, 503]);
}

/** JSON success response with a description (what generated clients show). */
export function json<T extends TSchema>(schema: T, description: string): T {
  return Type.Unsafe({ description, content: { 'application/json': { schema } } }) as unknown as T;
}

export const ID_PARAMS = Type.Object({ id: Type.String({ maxLength: 64, description: 'Resource id.' }) });
