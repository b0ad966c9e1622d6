// The committed OpenAPI document: in step with the code, valid OpenAPI 3.1, and shaped so that a
// generated client gets named types, typed problem+json errors, binary downloads and SSE.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { findDrift } from '../../openapi/drift.js';
import { SPEC_PATH } from '../../openapi/paths.js';
import { NUMBER_RULES } from '../../src/cotuning/hyperparameters.js';

interface Schema {
  $ref?: string;
  type?: string | string[];
  format?: string;
  contentMediaType?: string;
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  default?: unknown;
}
interface MediaType {
  schema?: Schema;
}
interface Header {
  schema?: Schema;
  description?: string;
}
interface Response {
  description?: string;
  headers?: Record<string, Header>;
  content?: Record<string, MediaType>;
}
interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  schema?: Schema;
}
interface Operation {
  operationId?: string;
  summary?: string;
  tags?: string[];
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content: Record<string, MediaType> };
  responses: Record<string, Response>;
  security?: Record<string, string[]>[];
}
interface Document {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema>; securitySchemes?: Record<string, { type: string; scheme?: string }> };
  security?: Record<string, string[]>[];
  servers?: { url: string; description?: string }[];
}

const text = readFileSync(SPEC_PATH, 'utf8');
const doc = JSON.parse(text) as Document;
const METHODS = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace']);
const operations = Object.entries(doc.paths).flatMap(([path, item]) =>
  Object.entries(item)
    .filter(([method]) => METHODS.has(method))
    .map(([method, op]) => ({ path, method, op, label: `${method.toUpperCase()} ${path}` })),
);
const byId = (id: string): Operation => {
  const found = operations.find((o) => o.op.operationId === id);
  assert.ok(found, `no operation ${id}`);
  return found.op;
};
const componentOf = (schema: Schema | undefined): string | undefined => /^#\/components\/schemas\/(.+)$/.exec(schema?.$ref ?? '')?.[1];

/** The operations the service offers (project issue 4); a new route must be added here on purpose. */
const EXPECTED_ROUTES = [
  'POST /v1/datasets', 'GET /v1/datasets', 'GET /v1/datasets/{id}', 'DELETE /v1/datasets/{id}',
  'POST /v1/models', 'GET /v1/models', 'GET /v1/models/{id}', 'DELETE /v1/models/{id}',
  'POST /v1/jobs', 'GET /v1/jobs', 'GET /v1/jobs/{id}', 'GET /v1/jobs/{id}/events', 'POST /v1/jobs/{id}/cancel',
  'GET /v1/jobs/{id}/artifacts', 'GET /v1/jobs/{id}/artifacts/{name}',
  'GET /v1/health', 'GET /metrics',
];

describe('openapi/openapi.json', () => {
  test('is what the code generates, and openapi/client/ is what the document generates', async () => {
    const drift = await findDrift();
    assert.deepEqual(drift.document, [], 'run `npm run openapi:export` and commit');
    assert.deepEqual(drift.client, [], 'run `npm run openapi:client` and commit');
  });

  test('is stable JSON: sorted keys, 2-space indent, final newline', () => {
    const sorted = (value: unknown): boolean =>
      Array.isArray(value)
        ? value.every(sorted)
        : value !== null && typeof value === 'object'
          ? Object.keys(value).every((k, i, keys) => i === 0 || keys[i - 1] < k) && Object.values(value).every(sorted)
          : true;
    assert.ok(sorted(doc), 'keys are not sorted');
    assert.equal(text, `${JSON.stringify(doc, null, 2)}\n`);
  });

  test('is valid OpenAPI 3.1', async () => {
    assert.match(doc.openapi, /^3\.1\./);
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc) as unknown as Record<string, unknown>);
    assert.equal(validator.version, '3.1');
    assert.ok(result.valid, JSON.stringify(result.errors, null, 2));
  });

  test('has exactly the service routes', () => {
    assert.deepEqual(operations.map((o) => o.label).sort(), [...EXPECTED_ROUTES].sort());
  });

  test('every operation has a unique camelCase operationId, a summary and a tag', () => {
    const ids = operations.map((o) => o.op.operationId);
    for (const { op, label } of operations) {
      assert.match(op.operationId ?? '', /^[a-z][a-zA-Z0-9]*$/, `${label}: operationId`);
      assert.ok(op.summary?.trim(), `${label}: summary`);
      assert.ok(op.tags?.length, `${label}: tags`);
    }
    assert.equal(new Set(ids).size, ids.length, `duplicate operationIds: ${ids.join(', ')}`);
  });

  test('component schemas have real names and every $ref resolves', () => {
    const names = Object.keys(doc.components.schemas);
    for (const name of names) assert.doesNotMatch(name, /^(def-\d+|Schema\d+)$/, `anonymous component ${name}`);
    for (const wanted of ['Job', 'JobStatus', 'Hyperparameters', 'HyperparametersInput', 'CreateJob', 'Dataset', 'Model', 'Artifact', 'Event', 'EventPage', 'Problem']) {
      assert.ok(names.includes(wanted), `missing component ${wanted}`);
    }
    const refs = [...text.matchAll(/"\$ref": "([^"]+)"/g)].map((m) => m[1]);
    assert.ok(refs.length > 0);
    for (const ref of refs) {
      const name = /^#\/components\/schemas\/(.+)$/.exec(ref)?.[1];
      assert.ok(name && names.includes(name), `dangling $ref ${ref}`);
    }
  });

  test('JSON and multipart bodies are named component schemas', () => {
    for (const { op, label } of operations) {
      for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) {
        assert.ok(componentOf(media.schema), `${label} request ${type} is not a $ref`);
      }
      for (const [status, response] of Object.entries(op.responses)) {
        const json = response.content?.['application/json'];
        if (json) assert.ok(componentOf(json.schema), `${label} ${status} application/json is not a $ref`);
      }
    }
    assert.equal(componentOf(byId('createJob').requestBody?.content['application/json']?.schema), 'CreateJob');
    assert.equal(componentOf(byId('getJob').responses['200'].content?.['application/json']?.schema), 'Job');
  });

  test('responses without a body (204, 304) declare no content', () => {
    for (const { op, label } of operations) {
      for (const status of ['204', '304']) {
        const response = op.responses[status];
        if (response) assert.equal(response.content, undefined, `${label} ${status} declares a body`);
      }
    }
  });

  test('every 4xx/5xx response is application/problem+json with the Problem schema', () => {
    for (const { op, label } of operations) {
      const errors = Object.entries(op.responses).filter(([status]) => /^[45]/.test(status));
      if (label !== 'GET /metrics') assert.ok(errors.length > 0, `${label} declares no error responses`);
      for (const [status, response] of errors) {
        assert.deepEqual(Object.keys(response.content ?? {}), ['application/problem+json'], `${label} ${status}`);
        assert.equal(componentOf(response.content?.['application/problem+json'].schema), 'Problem', `${label} ${status}`);
      }
    }
    const problem = doc.components.schemas.Problem;
    for (const field of ['type', 'title', 'status']) assert.ok(problem.required?.includes(field), `Problem.${field} must be required`);
    assert.ok(problem.properties?.detail && problem.properties.errors, 'Problem has detail and errors');
  });

  test('every response header has a typed schema', () => {
    for (const { op, label } of operations) {
      for (const [status, response] of Object.entries(op.responses)) {
        for (const [name, header] of Object.entries(response.headers ?? {})) {
          assert.ok(typeof header.schema?.type === 'string', `${label} ${status} header ${name}: ${JSON.stringify(header)}`);
        }
      }
    }
  });

  test('uploads are multipart with binary file parts', () => {
    const files: Record<string, string[]> = { uploadDataset: ['file'], uploadModel: ['model', 'weights'] };
    for (const [id, parts] of Object.entries(files)) {
      const body = byId(id).requestBody;
      assert.ok(body?.required, `${id}: body required`);
      assert.deepEqual(Object.keys(body.content), ['multipart/form-data'], id);
      const schema = doc.components.schemas[componentOf(body.content['multipart/form-data'].schema) ?? ''];
      for (const part of parts) {
        const prop = schema?.properties?.[part];
        const file = prop?.type === 'array' ? prop.items : prop;
        assert.ok(file?.type === 'string' && (file.format === 'binary' || file.contentMediaType), `${id}.${part} is not a binary part`);
        assert.ok(schema.required?.includes(part), `${id}.${part} required`);
      }
    }
  });

  test('artifact downloads are binary, with Range, ETag, 206 and 416', () => {
    const op = byId('downloadArtifact');
    for (const status of ['200', '206']) {
      const content = op.responses[status]?.content ?? {};
      const binary = Object.values(content).map((m) => m.schema);
      assert.ok(binary.length > 0 && binary.every((s) => s?.type === 'string' && s.format === 'binary'), `${status} is not binary`);
      assert.ok(op.responses[status].headers?.ETag, `${status} has no ETag header`);
    }
    assert.ok(op.responses['206'].headers?.['Content-Range'], '206 has no Content-Range');
    assert.ok(op.responses['416'], 'no 416 for an unsatisfiable range');
    const headers = (op.parameters ?? []).filter((p) => p.in === 'header').map((p) => p.name.toLowerCase());
    assert.ok(headers.includes('range') && headers.includes('if-none-match'), `header parameters: ${headers.join(', ')}`);
    assert.ok(byId('listJobArtifacts').responses['200'], 'artifacts are listed');
    assert.ok(doc.components.schemas.Artifact.properties?.sha256, 'Artifact carries a sha256');
  });

  test('job events are offered as Server-Sent Events', () => {
    const op = byId('listJobEvents');
    const content = op.responses['200'].content ?? {};
    assert.ok(content['text/event-stream'], 'no text/event-stream response');
    assert.equal(componentOf(content['application/json']?.schema), 'EventPage');
    const headers = (op.parameters ?? []).filter((p) => p.in === 'header').map((p) => p.name.toLowerCase());
    assert.ok(headers.includes('last-event-id'), 'SSE resume (Last-Event-ID) is documented');
  });

  test('job submission documents Idempotency-Key, 202 and Location', () => {
    const op = byId('createJob');
    assert.ok((op.parameters ?? []).some((p) => p.in === 'header' && p.name.toLowerCase() === 'idempotency-key'));
    assert.ok(op.responses['202']?.headers?.Location, '202 Location header');
  });

  test('fields and parameters with a default are optional, so clients may omit them', () => {
    const query = (id: string, name: string) => {
      const param = (byId(id).parameters ?? []).find((p) => p.in === 'query' && p.name === name);
      assert.ok(param, `${id} has no query parameter ${name}`);
      return param;
    };
    const expected: [string, string, unknown][] = [
      ['listDatasets', 'limit', 20],
      ['listModels', 'limit', 20],
      ['listJobs', 'limit', 20],
      ['listJobEvents', 'limit', 100],
      ['listJobEvents', 'after', 0],
      ['uploadDataset', 'strict', true],
    ];
    for (const [id, name, value] of expected) {
      const param = query(id, name);
      assert.notEqual(param.required, true, `${id} ?${name} is required`);
      assert.equal(param.schema?.default, value, `${id} ?${name} default`);
    }
    const createJob = doc.components.schemas.CreateJob;
    assert.equal(createJob.properties?.seed?.default, 0);
    assert.ok(!createJob.required?.includes('seed'), 'CreateJob.seed is required');
    // The same rule everywhere: a default that the caller must still send is no default.
    for (const { op, label } of operations) {
      for (const p of op.parameters ?? []) if (p.schema?.default !== undefined) assert.notEqual(p.required, true, `${label} ${p.in} ${p.name}`);
    }
    for (const [name, schema] of Object.entries(doc.components.schemas)) {
      for (const [prop, value] of Object.entries(schema.properties ?? {})) {
        if (value.default !== undefined) assert.ok(!schema.required?.includes(prop), `${name}.${prop} has a default but is required`);
      }
    }
  });

  test('operations that need no key (security: []) do not document 401', () => {
    const open = operations.filter((o) => o.op.security?.length === 0);
    assert.deepEqual(open.map((o) => o.op.operationId).sort(), ['getHealth', 'getMetrics']);
    for (const { op, label } of open) assert.equal(op.responses['401'], undefined, `${label} can never answer 401`);
  });

  test('servers give clients a base URL', () => {
    const urls = (doc.servers ?? []).map((s) => s.url);
    assert.ok(urls.length > 0, 'no servers');
    // The generated client takes the first server as its default baseUrl; fetch needs it absolute.
    assert.match(urls[0], /^https?:\/\/[^/]+$/, `first server ${urls[0]}`);
    assert.ok(urls.includes('/'), 'a same-origin server for Swagger UI and browsers');
  });

  test('the API-key security schemes are declared and applied', () => {
    const schemes = doc.components.securitySchemes ?? {};
    assert.ok(Object.values(schemes).some((s) => s.type === 'http' && s.scheme === 'bearer'), 'bearer scheme');
    const used = (doc.security ?? []).flatMap((s) => Object.keys(s));
    assert.ok(used.length > 0, 'no global security requirement');
    for (const name of used) assert.ok(name in schemes, `security uses undeclared scheme ${name}`);
    // src/api/app.ts checks keys on /v1/* except /v1/health; /metrics is outside /v1.
    for (const id of ['getHealth', 'getMetrics']) assert.deepEqual(byId(id).security, [], `${id} needs no key: security: []`);
    for (const { op, label } of operations) {
      if (op.security?.length === 0) continue;
      assert.ok(op.responses['401'], `${label} can answer 401`);
    }
  });
});

test('hyperparameter bounds in the contract are the core library’s, so the API and the worker agree', () => {
  const input = (doc.components?.schemas as Record<string, { properties: Record<string, Record<string, number>> }>).HyperparametersInput;
  for (const [name, rule] of Object.entries(NUMBER_RULES)) {
    const property = input.properties[name];
    assert.ok(property, `HyperparametersInput.${name} is documented`);
    assert.equal(property.maximum, rule.max, `${name} maximum`);
    assert.equal(rule.minExclusive ? property.exclusiveMinimum : property.minimum, rule.min, `${name} minimum`);
  }
});
