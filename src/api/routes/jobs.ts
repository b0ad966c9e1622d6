import { createHash } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { ref } from '../../contracts/common.js';
import { ArtifactList, CreateJob, EventPage, EventQuery, Job, JobListQuery, JobPage, TERMINAL_STATUSES, type JobDataValue, type JobValue } from '../../contracts/jobs.js';
import { resolveHyperparameters } from '../../cotuning/inspect.js';
import type { JobRecord } from '../../queue/records.js';
import { enqueueTraining } from '../../queue/training-queue.js';
import { isId, newId } from '../../storage/ids.js';
import type { ApiContext } from '../context.js';
import { artifactHref, snapshot, toJobView } from '../job-view.js';
import { HttpProblem, invalid, notFound } from '../problem.js';
import type { EventHub } from '../sse.js';
import { ID_PARAMS, json, problems } from './common.js';
import { sendArtifact } from './download.js';

/** Stable JSON (sorted keys) so equal bodies hash equally for Idempotency-Key checks. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'Retry-safe submit: a repeat with the same key and body returns the same job; the same key with a different body is refused with 422. Keys are kept 24 h.' })),
});

const Accept = Type.Object({ accept: Type.Optional(Type.String({ description: '`text/event-stream` for Server-Sent Events, otherwise JSON.' })), 'last-event-id': Type.Optional(Type.String({ description: 'SSE resume point (overrides `after`).' })) });

/**
 * The SSE resume point. Checked before the stream starts: an id past what Redis can count would
 * otherwise make every read fail and the stream wait forever.
 */
function lastEventId(header: string | undefined): number | undefined {
  const value = header?.trim();
  if (!value) return undefined;
  const id = /^[0-9]{1,16}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(id)) throw invalid('header last-event-id', `Last-Event-ID must be an event id (an integer from 0 to ${Number.MAX_SAFE_INTEGER})`, 400, 'validation_failed');
  return id;
}

export function jobRoutes(ctx: ApiContext, hub: EventHub): FastifyPluginAsyncTypebox {
  const loadRecord = async (id: string): Promise<JobRecord> => {
    const record = await ctx.records.getJob(id);
    if (!record) throw notFound('job', id);
    return record;
  };
  const view = async (record: JobRecord): Promise<JobValue> => toJobView(await snapshot(ctx, record));

  return async (app) => {
    app.post(
      '/v1/jobs',
      {
        schema: {
          operationId: 'createJob',
          summary: 'Submit a training job',
          description: 'Validates the inputs, resolves every hyperparameter default (returned in the job), and queues the run. Responds 202 with the job and a Location header.',
          tags: ['jobs'],
          headers: IdempotencyHeaders,
          body: ref(CreateJob),
          response: {
            // Response headers are plain JSON schemas: @fastify/swagger wraps each in `{ schema }`.
            202: Type.Unsafe({
              description: 'Accepted; poll the Location or stream its events.',
              headers: { Location: { type: 'string', description: 'URL of the job.' }, 'Idempotent-Replayed': { type: 'string', description: '`true` when this is a replay of an earlier submit.' } },
              content: { 'application/json': { schema: ref(Job) } },
            }),
            ...problems(400, 422),
          },
        },
      },
      async (request, reply) => {
        // Node joins a repeated header with ", ": two keys would silently become a third.
        const keyHeaders = request.raw.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === 'idempotency-key').length;
        if (keyHeaders > 1) throw invalid('header idempotency-key', 'send one Idempotency-Key header, not several', 400);
        const body = request.body;
        const [dataset, model] = await Promise.all([ctx.records.getDataset(body.datasetId), ctx.records.getModel(body.modelId)]);
        const errors: { field: string; message: string }[] = [];
        if (!dataset) errors.push({ field: 'datasetId', message: `dataset ${body.datasetId} does not exist` });
        if (!model) errors.push({ field: 'modelId', message: `model ${body.modelId} does not exist` });
        if (errors.length) throw new HttpProblem(422, 'unknown_reference', errors.map((e) => e.message).join('; '), errors);
        let hyperparameters;
        try {
          hyperparameters = resolveHyperparameters(body.hyperparameters ?? {});
        } catch (err) {
          const e = err as Error & { field?: string };
          throw invalid(e.field ?? 'hyperparameters', e.message);
        }
        // The library's default image size is the model's own; resolve it here so the job shows it.
        const side = model!.inputShape[0];
        if (hyperparameters.imageSize === undefined && typeof side === 'number') hyperparameters.imageSize = side;

        const key = request.headers['idempotency-key'];
        const bodyHash = createHash('sha256').update(canonical(body)).digest('hex');
        const id = newId('job');
        if (key) {
          const existing = await ctx.records.claimIdempotencyKey(key, bodyHash, id);
          if (existing) {
            if (existing.bodyHash !== bodyHash) {
              throw new HttpProblem(422, 'idempotency_key_reused', 'this Idempotency-Key was used with a different request body', [{ field: 'header idempotency-key', message: 'already used with a different body' }]);
            }
            // The first request may still be writing its record.
            let record: JobRecord | undefined;
            for (let i = 0; i < 20 && !(record = await ctx.records.getJob(existing.jobId)); i++) await new Promise((r) => setTimeout(r, 50));
            if (!record) throw new HttpProblem(409, 'idempotency_in_progress', 'a request with this Idempotency-Key is still being processed; retry');
            return reply.code(202).header('location', `/v1/jobs/${record.id}`).header('idempotent-replayed', 'true').send(await view(record));
          }
        }
        const record: JobRecord = {
          id,
          datasetId: body.datasetId,
          modelId: body.modelId,
          method: body.method,
          hyperparameters,
          seed: body.seed ?? 0,
          createdAt: new Date().toISOString(),
          requestId: String(request.id),
          ...(key ? { idempotencyKey: key } : {}),
        };
        const data: JobDataValue = { datasetId: body.datasetId, modelId: body.modelId, method: body.method, hyperparameters, seed: body.seed ?? 0, requestId: String(request.id) };
        try {
          await ctx.records.putJob(record);
          await ctx.events.append(id, 'status', { status: 'queued' });
          await enqueueTraining(ctx.queue, id, data);
        } catch (err) {
          if (key) await ctx.records.releaseIdempotencyKey(key).catch(() => undefined);
          throw err;
        }
        ctx.metrics.jobsCreated.inc({ method: body.method });
        request.log.info({ jobId: id, method: body.method }, 'job queued');
        return reply.code(202).header('location', `/v1/jobs/${id}`).send(await view(record));
      },
    );

    app.get(
      '/v1/jobs',
      {
        schema: {
          operationId: 'listJobs',
          summary: 'List jobs, newest first',
          description: 'Cursor pagination; with `status`, pages may hold fewer than `limit` items while `nextCursor` is not null.',
          tags: ['jobs'],
          querystring: JobListQuery,
          response: { 200: json(ref(JobPage), 'A page of jobs.'), ...problems(400) },
        },
      },
      async (request) => {
        const { after, status } = request.query;
        // Any other cursor would page from where no job sorts: an empty page that reads as the end of the list.
        if (after !== undefined && !isId('job', after)) throw invalid('after', 'must be the nextCursor of an earlier page (a job id)', 400);
        const limit = request.query.limit ?? 20;
        const items: JobValue[] = [];
        let cursor = after;
        // A status filter scans a bounded number of ids per request.
        for (let scanned = 0; items.length < limit && scanned < 1000; ) {
          const { ids, next } = await ctx.records.jobIdsPage(status ? 100 : limit, cursor);
          scanned += ids.length;
          const records = await ctx.records.getJobs(ids);
          const views = await Promise.all(records.filter((r): r is JobRecord => Boolean(r)).map(view));
          for (let i = 0; i < views.length; i++) {
            if (!status || views[i].status === status) items.push(views[i]);
            cursor = views[i].id;
            if (items.length === limit) {
              const rest = i < views.length - 1 || next !== null;
              return { items, nextCursor: rest ? cursor : null };
            }
          }
          if (next === null) return { items, nextCursor: null };
          cursor = next;
        }
        return { items, nextCursor: cursor ?? null };
      },
    );

    app.get(
      '/v1/jobs/:id',
      { schema: { operationId: 'getJob', summary: 'Get a job', tags: ['jobs'], params: ID_PARAMS, response: { 200: json(ref(Job), 'The job.'), ...problems(404) } } },
      async (request) => view(await loadRecord(request.params.id)),
    );

    app.post(
      '/v1/jobs/:id/cancel',
      {
        schema: {
          operationId: 'cancelJob',
          summary: 'Cancel a job',
          description: 'Idempotent. A queued job is removed and ends `cancelled` (200); a running job stops within one training step (202, then `cancelled`) and is never retried. A job that already succeeded or failed answers 409.',
          tags: ['jobs'],
          params: ID_PARAMS,
          response: { 200: json(ref(Job), 'The job is cancelled.'), 202: json(ref(Job), 'Cancellation requested; the job stops within one step.'), ...problems(404, 409) },
        },
      },
      async (request, reply) => {
        let record = await loadRecord(request.params.id);
        let snap = await snapshot(ctx, record);
        if (snap.status === 'cancelled') return reply.code(200).send(toJobView(snap));
        if (snap.status === 'succeeded' || snap.status === 'failed') throw new HttpProblem(409, 'already_finished', `job ${record.id} already ${snap.status}`);
        if (!record.cancelRequestedAt) record = (await ctx.records.updateJob(record.id, { cancelRequestedAt: new Date().toISOString() })) ?? record;
        await ctx.records.requestCancel(record.id);
        if (snap.status === 'queued' && snap.job) {
          const removed = await snap.job.remove().then(
            () => true,
            () => false, // became active meanwhile: the worker sees the flag
          );
          if (removed) {
            record = (await ctx.records.updateJob(record.id, { cancelledAt: new Date().toISOString() })) ?? record;
            await ctx.events.append(record.id, 'status', { status: 'cancelled' });
          }
        }
        snap = await snapshot(ctx, record);
        request.log.info({ jobId: record.id, status: snap.status }, 'cancel requested');
        return reply.code(snap.status === 'cancelled' ? 200 : 202).send(toJobView(snap));
      },
    );

    app.get(
      '/v1/jobs/:id/events',
      {
        schema: {
          operationId: 'listJobEvents',
          summary: 'Job events (JSON page or Server-Sent Events)',
          description:
            'Progress, log, checkpoint and status events with increasing integer ids. JSON: a page after `after`. With `Accept: text/event-stream`: an SSE stream (`id`, `event` = type, `data` = the Event as JSON) that resumes after `Last-Event-ID` and ends with an `end` event once the job is finished.',
          tags: ['jobs'],
          params: ID_PARAMS,
          querystring: EventQuery,
          headers: Accept,
          response: {
            200: Type.Unsafe({
              description: 'Events after `after` (JSON) or a live stream (SSE).',
              content: {
                'application/json': { schema: ref(EventPage) },
                'text/event-stream': { schema: { type: 'string', description: 'SSE frames: `id: <n>`, `event: <type>`, `data: <Event JSON>`; a final `event: end`.' } },
              },
            }),
            ...problems(400, 404),
          },
        },
      },
      async (request, reply) => {
        const record = await loadRecord(request.params.id);
        const wantsSse = (request.headers.accept ?? '').includes('text/event-stream');
        if (wantsSse) {
          return hub.stream(request, reply, record, lastEventId(request.headers['last-event-id']) ?? request.query.after ?? 0);
        }
        const after = request.query.after ?? 0;
        const limit = request.query.limit ?? 100;
        const items = await ctx.events.read(record.id, after, limit);
        const nextAfter = items.length ? items[items.length - 1].id : after;
        const { status } = await snapshot(ctx, record);
        const done = TERMINAL_STATUSES.includes(status) && (await ctx.events.count(record.id)) <= nextAfter;
        return { items, nextAfter, done };
      },
    );

    app.get(
      '/v1/jobs/:id/artifacts',
      {
        schema: {
          operationId: 'listJobArtifacts',
          summary: 'List the outputs of a job',
          description: 'Empty until the job succeeded.',
          tags: ['artifacts'],
          params: ID_PARAMS,
          response: { 200: json(ref(ArtifactList), 'Artifacts with size, sha256 and content type.'), ...problems(404) },
        },
      },
      async (request) => {
        const snap = await snapshot(ctx, await loadRecord(request.params.id));
        const list = snap.status === 'succeeded' ? (snap.job?.returnvalue?.artifacts ?? []) : [];
        return { items: list.map((a) => ({ ...a, href: artifactHref(snap.record.id, a.name) })) };
      },
    );

    app.get(
      '/v1/jobs/:id/artifacts/:name',
      {
        schema: {
          operationId: 'downloadArtifact',
          summary: 'Download one artifact',
          description: 'Streams the file (`application/octet-stream`; the real type is in the artifact list). Supports `Range` (206) and `If-None-Match` with the sha256 ETag (304). Names are percent-encoded paths from the artifact list; anything else is 404.',
          tags: ['artifacts'],
          params: Type.Object({ id: Type.String({ maxLength: 64 }), name: Type.String({ maxLength: 512, description: 'Artifact name, percent-encoded (e.g. `co-tuning%2Fmodel%2Fmodel.json`).' }) }),
          headers: Type.Object({ range: Type.Optional(Type.String({ description: 'A single byte range, e.g. `bytes=0-1023`.' })), 'if-none-match': Type.Optional(Type.String()) }),
          response: {
            200: Type.Unsafe({ description: 'The whole file.', headers: { ETag: { type: 'string', description: 'The sha256 in quotes.' }, 'Accept-Ranges': { type: 'string' } }, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }),
            206: Type.Unsafe({ description: 'The requested range.', headers: { 'Content-Range': { type: 'string' }, ETag: { type: 'string', description: 'The sha256 in quotes.' } }, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }),
            304: Type.Null({ description: 'Not modified (ETag matches).' }),
            ...problems(404, 416),
          },
        },
      },
      async (request, reply) => {
        const snap = await snapshot(ctx, await loadRecord(request.params.id));
        const artifact = snap.status === 'succeeded' ? snap.job?.returnvalue?.artifacts.find((a) => a.name === request.params.name) : undefined;
        if (!artifact) throw notFound('artifact', request.params.name);
        return sendArtifact(ctx, request, reply, snap.record.id, artifact);
      },
    );
  };
}
