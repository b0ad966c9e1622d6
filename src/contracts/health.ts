import { Type } from 'typebox';

export const WorkerInfo = Type.Object(
  {
    id: Type.String(),
    host: Type.String(),
    pid: Type.Integer(),
    backend: Type.String({ description: 'TF.js backend the worker selected at start.' }),
    concurrency: Type.Integer(),
    startedAt: Type.String({ format: 'date-time' }),
    lastSeenAt: Type.String({ format: 'date-time' }),
  },
  { $id: 'WorkerInfo', additionalProperties: false },
);

export const Health = Type.Object(
  {
    status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')], { description: '`degraded` when no worker was seen recently.' }),
    redis: Type.Object({ ok: Type.Boolean(), latencyMs: Type.Number() }),
    queue: Type.Object({ waiting: Type.Integer(), active: Type.Integer(), delayed: Type.Integer(), failed: Type.Integer(), completed: Type.Integer() }),
    workers: Type.Array(Type.Unsafe<unknown>({ $ref: 'WorkerInfo#' })),
  },
  { $id: 'Health', additionalProperties: false },
);
