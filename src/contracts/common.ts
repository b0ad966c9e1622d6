import { Type, type Static, type TSchema } from 'typebox';

/**
 * A `$ref` to a registered component schema, typed as that schema. Routes use refs so that
 * @fastify/swagger emits named components (Job, Problem, ...) rather than inline copies.
 */
export function ref<T extends TSchema & { $id?: string }>(schema: T): T {
  if (!schema.$id) throw new Error('ref(): schema has no $id');
  return Type.Unsafe<Static<T>>({ $ref: `${schema.$id}#` }) as unknown as T;
}

export const Id = (description: string) => Type.String({ pattern: '^[a-z]{1,4}_[0-9a-z]{8,40}$', description, maxLength: 48 });

export const FieldError = Type.Object(
  {
    field: Type.String({ description: 'Offending field: a body path such as `hyperparameters.lambda`, a header, or a multipart field name.' }),
    message: Type.String(),
  },
  { $id: 'FieldError', additionalProperties: false },
);

/** RFC 9457 problem details; `errors` names the offending fields. */
export const Problem = Type.Object(
  {
    type: Type.String({ description: 'URI reference that identifies the problem type.' }),
    title: Type.String(),
    status: Type.Integer({ minimum: 400, maximum: 599 }),
    detail: Type.Optional(Type.String()),
    instance: Type.Optional(Type.String()),
    code: Type.Optional(Type.String({ description: 'Stable machine-readable code.' })),
    requestId: Type.Optional(Type.String()),
    errors: Type.Optional(Type.Array(ref(FieldError))),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details (`application/problem+json`).' },
);
export type ProblemBody = Static<typeof Problem>;

export const PageQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Page size.' })),
    after: Type.Optional(Type.String({ maxLength: 64, description: 'Cursor: `nextCursor` of the previous page.' })),
  },
  { additionalProperties: false },
);

export const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
