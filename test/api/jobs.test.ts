import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildTestApp } from '../helpers/app.js';
import { archivePart, flowerSlice, mobilenetParts, multipart, tempDir, zipDir } from '../helpers/fixtures.js';

// No worker runs in this file: jobs stay queued, which is what these tests need.
const { app } = await buildTestApp();
const ds = (await app.inject({ method: 'POST', url: '/v1/datasets', ...archivePart(await zipDir(await flowerSlice(await tempDir(), 2, 1))) })).json();
const model = (await app.inject({ method: 'POST', url: '/v1/models', ...multipart(await mobilenetParts()) })).json();
const body = (extra: object = {}) => ({ datasetId: ds.id, modelId: model.id, method: 'co-tuning', hyperparameters: { imageSize: 64, iterations: 3, batchSize: 4 }, seed: 1, ...extra });

test('POST /v1/jobs answers 202 with the job, resolved hyperparameters and a Location', async () => {
  const res = await app.inject({ method: 'POST', url: '/v1/jobs', payload: body() });
  assert.equal(res.statusCode, 202, res.body);
  const job = res.json();
  assert.equal(res.headers.location, `/v1/jobs/${job.id}`);
  assert.equal(job.status, 'queued');
  assert.equal(job.hyperparameters.imageSize, 64);
  assert.equal(job.hyperparameters.lambda, 2.3, 'library default filled in');
  assert.equal(job.hyperparameters.lrTargetHead, 0.01);
  assert.deepEqual((await app.inject({ url: job.links.self })).json(), job);
  const events = (await app.inject({ url: job.links.events })).json();
  assert.deepEqual(events.items.map((e: { id: number; type: string }) => [e.id, e.type]), [[1, 'status']]);
  assert.equal(events.done, false);
});

test('a model without explicit imageSize gets the model input size', async () => {
  const job = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: body({ hyperparameters: {} }) })).json();
  assert.equal(job.hyperparameters.imageSize, 224);
});

test('Idempotency-Key: a repeat returns the same job, a different body is 422', async () => {
  const headers = { 'idempotency-key': `k-${Math.random()}` };
  const first = await app.inject({ method: 'POST', url: '/v1/jobs', headers, payload: body() });
  const again = await app.inject({ method: 'POST', url: '/v1/jobs', headers, payload: { ...body(), seed: 1 } });
  assert.equal(first.statusCode, 202);
  assert.equal(again.statusCode, 202);
  assert.equal(again.json().id, first.json().id);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  const queued = await app.cotune.queue.getJobCounts('waiting');
  const other = await app.inject({ method: 'POST', url: '/v1/jobs', headers, payload: body({ seed: 2 }) });
  assert.equal(other.statusCode, 422);
  assert.match(String(other.headers['content-type']), /^application\/problem\+json/);
  assert.equal(other.json().errors[0].field, 'header idempotency-key');
  assert.deepEqual(await app.cotune.queue.getJobCounts('waiting'), queued, 'nothing new was queued');
  // Two keys in one request are refused, not joined into a third key "a, b".
  const twice = await app.inject({ method: 'POST', url: '/v1/jobs', headers: { 'idempotency-key': ['k-a', 'k-b'] as unknown as string }, payload: body({ seed: 3 }) });
  assert.equal(twice.statusCode, 400, twice.body);
  assert.equal(twice.json().errors[0].field, 'header idempotency-key');
  assert.deepEqual(await app.cotune.queue.getJobCounts('waiting'), queued, 'nothing new was queued');
});

test('validation errors are problem+json naming the field', async () => {
  const cases: [object, number, string][] = [
    [body({ hyperparameters: { lambda: -1 } }), 400, 'hyperparameters.lambda'],
    [body({ hyperparameters: { nope: 1 } }), 400, 'hyperparameters.nope'],
    [body({ method: 'magic' }), 400, 'method'],
    [{ modelId: model.id, method: 'co-tuning' }, 400, 'datasetId'],
    [body({ datasetId: 'ds_0000000000000000000000' }), 422, 'datasetId'],
    // The schema carries the core library's bounds, so this is caught at validation like any other bound.
    [body({ hyperparameters: { momentum: 0.9999 } }), 400, 'hyperparameters.momentum'],
    // A JSON body is checked as sent: no value is converted to the schema's type (null would become 0).
    [body({ hyperparameters: { lambda: null } }), 400, 'hyperparameters.lambda'],
    [body({ hyperparameters: { lrTargetHead: false } }), 400, 'hyperparameters.lrTargetHead'],
    [body({ hyperparameters: { imageSize: '64' } }), 400, 'hyperparameters.imageSize'],
    [body({ hyperparameters: { imageSize: [64] } }), 400, 'hyperparameters.imageSize'],
    [body({ hyperparameters: { augment: 'false' } }), 400, 'hyperparameters.augment'],
    [body({ hyperparameters: { lrDecayAt: 0.5 } }), 400, 'hyperparameters.lrDecayAt'],
    [body({ hyperparameters: { freezeBelow: 7 } }), 400, 'hyperparameters.freezeBelow'],
    [body({ seed: '5' }), 400, 'seed'],
    [body({ method: ['co-tuning'] }), 400, 'method'],
    [body({ datasetId: null }), 400, 'datasetId'],
  ];
  for (const [payload, status, field] of cases) {
    const res = await app.inject({ method: 'POST', url: '/v1/jobs', payload });
    assert.equal(res.statusCode, status, `${field}: ${res.body}`);
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
    const problem = res.json();
    assert.equal(problem.status, status);
    assert.ok(problem.type && problem.title && problem.detail);
    assert.ok(problem.errors.some((e: { field: string }) => e.field === field), `${field} in ${JSON.stringify(problem.errors)}`);
  }
});

test('unknown ids and routes are 404 problem+json; the request id is echoed', async () => {
  for (const url of ['/v1/jobs/job_nope', '/v1/datasets/ds_nope', '/v1/models/mdl_nope', '/v1/nothing', '/v1/jobs/job_nope/events']) {
    const res = await app.inject({ url, headers: { 'x-request-id': 'req-123' } });
    assert.equal(res.statusCode, 404, url);
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
    assert.equal(res.headers['x-request-id'], 'req-123');
    assert.equal(res.json().requestId, 'req-123');
  }
});

test('a body that is neither JSON nor multipart is 415 problem+json, text/plain too', async () => {
  const res = await app.inject({ method: 'POST', url: '/v1/jobs', headers: { 'content-type': 'text/plain' }, payload: JSON.stringify(body()) });
  assert.equal(res.statusCode, 415, res.body);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
});

test('job list: newest first, cursor pagination, status filter', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await app.inject({ method: 'POST', url: '/v1/jobs', payload: body({ seed: 100 + i }) })).json().id);
  const page1 = (await app.inject({ url: '/v1/jobs?limit=2' })).json();
  assert.deepEqual(page1.items.map((j: { id: string }) => j.id), [ids[2], ids[1]]);
  assert.ok(page1.nextCursor);
  const page2 = (await app.inject({ url: `/v1/jobs?limit=2&after=${page1.nextCursor}` })).json();
  assert.equal(page2.items[0].id, ids[0]);
  const cancelled = await app.inject({ method: 'POST', url: `/v1/jobs/${ids[1]}/cancel` });
  assert.equal(cancelled.statusCode, 200);
  const filtered = (await app.inject({ url: '/v1/jobs?status=cancelled&limit=10' })).json();
  assert.deepEqual(filtered.items.map((j: { id: string }) => j.id), [ids[1]]);
  assert.equal(filtered.nextCursor, null);
  // Only a job id is a cursor: a dataset id or another string would page from where no job sorts.
  for (const after of ['garbage', 'ds_000000000000000000000', 'job_00000000']) {
    const res = await app.inject({ url: `/v1/jobs?after=${after}` });
    assert.equal(res.statusCode, 400, `${after}: ${res.body}`);
    assert.equal(res.json().errors[0].field, 'after');
  }
});

test('cancel of a queued job: removed from the queue, cancelled, idempotent', async () => {
  const job = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: body({ seed: 7 }) })).json();
  const first = await app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel` });
  assert.equal(first.statusCode, 200);
  assert.equal(first.json().status, 'cancelled');
  assert.equal(first.json().error.code, 'cancelled');
  assert.equal(await app.cotune.queue.getJob(job.id), undefined, 'removed from BullMQ');
  const second = await app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel` });
  assert.equal(second.statusCode, 200);
  assert.equal(second.json().status, 'cancelled');
  const events = (await app.inject({ url: `/v1/jobs/${job.id}/events` })).json();
  assert.deepEqual(events.items.map((e: { data: { status: string } }) => e.data.status), ['queued', 'cancelled']);
  assert.equal(events.done, true);
  // The SSE form ends at once for a finished job, replaying after Last-Event-ID.
  const sse = await app.inject({ url: `/v1/jobs/${job.id}/events`, headers: { accept: 'text/event-stream', 'last-event-id': '1' } });
  assert.match(String(sse.headers['content-type']), /^text\/event-stream/);
  assert.doesNotMatch(sse.body, /^id: 1$/m);
  assert.match(sse.body, /^id: 2\nevent: status\n/m);
  assert.match(sse.body, /event: end\ndata: {"status":"cancelled"}/);
  // A dataset in use by a queued job cannot be deleted; the cancelled one does not count.
  const other = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: body({ seed: 8 }) })).json();
  assert.equal((await app.inject({ method: 'DELETE', url: `/v1/datasets/${ds.id}` })).statusCode, 409);
  await app.inject({ method: 'POST', url: `/v1/jobs/${other.id}/cancel` });
});

test('artifacts of an unfinished job: empty list, any name is 404', async () => {
  const job = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: body({ seed: 9 }) })).json();
  assert.deepEqual((await app.inject({ url: `/v1/jobs/${job.id}/artifacts` })).json(), { items: [] });
  assert.equal((await app.inject({ url: `/v1/jobs/${job.id}/artifacts/metrics.json` })).statusCode, 404);
  assert.equal((await app.inject({ url: `/v1/jobs/${job.id}/artifacts/..%2F..%2Fconfig.ts` })).statusCode, 404);
});

test('health reports Redis, queue depth and no workers; metrics are Prometheus text', async () => {
  const health = await app.inject({ url: '/v1/health' });
  assert.equal(health.statusCode, 200);
  const h = health.json();
  assert.equal(h.redis.ok, true);
  assert.equal(h.status, 'degraded');
  assert.deepEqual(h.workers, []);
  assert.ok(h.queue.waiting >= 1);
  const metrics = await app.inject({ url: '/metrics' });
  assert.equal(metrics.statusCode, 200);
  assert.match(metrics.body, /cotune_jobs_created_total\{method="co-tuning"\} \d+/);
  assert.match(metrics.body, /cotune_queue_jobs\{state="waiting"\} [1-9]/);
});

test('the OpenAPI document: named components, operationIds, tags, problem+json errors', async () => {
  const doc = (await app.inject({ url: '/openapi.json' })).json();
  assert.equal(doc.openapi, '3.1.0');
  const text = JSON.stringify(doc);
  assert.doesNotMatch(text, /def-\d/);
  for (const name of ['Job', 'JobStatus', 'Hyperparameters', 'Dataset', 'Model', 'Artifact', 'Event', 'Problem', 'CreateJob']) assert.ok(doc.components.schemas[name], name);
  const ops: string[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, { operationId: string; tags: string[]; summary: string; responses: Record<string, { content?: Record<string, unknown> }> }>>)) {
    for (const [method, op] of Object.entries(item)) {
      assert.match(op.operationId, /^[a-z][A-Za-z]+$/, `${method} ${path}`);
      assert.ok(op.tags?.length && op.summary, `${op.operationId} has tag and summary`);
      for (const [status, response] of Object.entries(op.responses)) {
        if (Number(status) >= 400) assert.ok(response.content?.['application/problem+json'], `${op.operationId} ${status} is problem+json`);
      }
      ops.push(op.operationId);
    }
  }
  assert.equal(new Set(ops).size, ops.length, 'operationIds are unique');
  for (const id of ['uploadDataset', 'listDatasets', 'getDataset', 'deleteDataset', 'uploadModel', 'createJob', 'listJobs', 'getJob', 'cancelJob', 'listJobEvents', 'listJobArtifacts', 'downloadArtifact', 'getHealth']) assert.ok(ops.includes(id), id);
  assert.ok(doc.paths['/v1/datasets'].post.requestBody.content['multipart/form-data']);
  assert.ok(doc.paths['/v1/jobs/{id}/events'].get.responses['200'].content['text/event-stream']);
  assert.ok(doc.paths['/v1/jobs/{id}/artifacts/{name}'].get.responses['206']);
  assert.ok(doc.paths['/v1/jobs'].post.parameters.some((p: { name: string; in: string }) => p.in === 'header' && p.name === 'idempotency-key'));
  assert.equal((await app.inject({ url: '/docs' })).statusCode < 400, true);
  // Swagger UI runs on the API's own origin; the exported document leads with localhost for generated clients.
  assert.deepEqual((await app.inject({ url: '/docs/json' })).json().servers.map((s: { url: string }) => s.url), ['/', 'http://localhost:3000']);
  assert.equal(doc.servers[0].url, 'http://localhost:3000');
});

test('with COTUNE_API_KEYS set, /v1 needs a key (health stays open)', async () => {
  const { app: secured } = await buildTestApp({ COTUNE_API_KEYS: 'k1,k2' });
  const denied = await secured.inject({ url: '/v1/jobs' });
  assert.equal(denied.statusCode, 401);
  assert.match(String(denied.headers['content-type']), /^application\/problem\+json/);
  assert.equal((await secured.inject({ url: '/v1/jobs', headers: { authorization: 'Bearer k2' } })).statusCode, 200);
  assert.equal((await secured.inject({ url: '/v1/jobs', headers: { 'x-api-key': 'k1' } })).statusCode, 200);
  assert.equal((await secured.inject({ url: '/v1/health' })).statusCode, 200);
});

test('omitted optional fields take their defaults: seed 0, list limit 20, events from the start', async () => {
  const { seed: _seed, ...withoutSeed } = body();
  const res = await app.inject({ method: 'POST', url: '/v1/jobs', payload: withoutSeed });
  assert.equal(res.statusCode, 202, res.body);
  const job = res.json();
  assert.equal(job.seed, 0);
  assert.equal((await app.cotune.queue.getJob(job.id))?.data.seed, 0, 'the worker gets the resolved seed');
  const events = await app.inject({ url: job.links.events });
  assert.equal(events.statusCode, 200, events.body);
  assert.deepEqual(events.json().items.map((e: { id: number }) => e.id), [1], 'after defaults to 0');
  // More jobs than one default page.
  for (let n = (await app.inject({ url: '/v1/jobs?limit=100' })).json().items.length; n <= 20; n++) {
    assert.equal((await app.inject({ method: 'POST', url: '/v1/jobs', payload: body({ seed: 1000 + n }) })).statusCode, 202);
  }
  const page = await app.inject({ url: '/v1/jobs' });
  assert.equal(page.statusCode, 200, page.body);
  assert.equal(page.json().items.length, 20);
  assert.ok(page.json().nextCursor, 'more jobs than the default page');
  for (const url of ['/v1/datasets', '/v1/models']) assert.equal((await app.inject({ url })).statusCode, 200, url);
});

test('an events cursor past Number.MAX_SAFE_INTEGER is 400 naming it; on SSE before the stream starts', async () => {
  const job = (await app.inject({ method: 'POST', url: '/v1/jobs', payload: body({ seed: 11 }) })).json();
  const page = await app.inject({ url: `/v1/jobs/${job.id}/events?after=100000000000000000000` });
  assert.equal(page.statusCode, 400, page.body);
  assert.match(String(page.headers['content-type']), /^application\/problem\+json/);
  assert.ok(page.json().errors.some((e: { field: string }) => e.field === 'after'));
  // Over a real socket: a stream that started would answer 200 and then never end.
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  for (const headers of [{ 'last-event-id': '100000000000000000000' }, { 'last-event-id': 'abc' }]) {
    const res = await fetch(`${address}/v1/jobs/${job.id}/events`, { headers: { accept: 'text/event-stream', ...headers }, signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, 400);
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.ok(((await res.json()) as { errors: { field: string }[] }).errors.some((e: { field: string }) => e.field === 'header last-event-id'));
  }
  const sse = await fetch(`${address}/v1/jobs/${job.id}/events?after=100000000000000000000`, { headers: { accept: 'text/event-stream' }, signal: AbortSignal.timeout(10_000) });
  assert.equal(sse.status, 400);
  await sse.body?.cancel();
  await app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel` });
});
