import { createWriteStream } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { PageQuery, ref } from '../../contracts/common.js';
import { Model, ModelPage, ModelUpload, type ModelValue } from '../../contracts/models.js';
import { inspectModel, weightBytes } from '../../cotuning/inspect.js';
import { newId } from '../../storage/ids.js';
import type { ApiContext } from '../context.js';
import { HttpProblem, invalid, notFound, scrubPaths } from '../problem.js';
import { ID_PARAMS, json, problems } from './common.js';
import { assertUnused } from './usage.js';

const SHARD_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const CLASS_NAMES_FILE = 'class-names.json';

interface ManifestGroup {
  paths: string[];
  weights: { name: string; shape: number[]; dtype: string; quantization?: { dtype?: string } }[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The weightsManifest of model.json, checked for the shape the loader relies on. */
function parseManifest(json: unknown): ManifestGroup[] {
  if (!isObject(json)) throw invalid('model', 'model.json must be a JSON object with modelTopology and weightsManifest');
  const manifest = json.weightsManifest ?? [];
  if (!Array.isArray(manifest)) throw invalid('model', 'model.json weightsManifest must be an array of {paths, weights} groups');
  return manifest.map((group: unknown, i) => {
    const where = `model.json weightsManifest[${i}]`;
    if (!isObject(group) || !Array.isArray(group.paths) || !Array.isArray(group.weights)) throw invalid('model', `${where} must be an object with "paths" and "weights" arrays`);
    if (!group.paths.every((p) => typeof p === 'string')) throw invalid('model', `${where}.paths must hold file names`);
    group.weights.forEach((w: unknown, j) => {
      const ok =
        isObject(w) &&
        typeof w.name === 'string' &&
        typeof w.dtype === 'string' &&
        Array.isArray(w.shape) &&
        w.shape.every((d) => Number.isSafeInteger(d) && d >= 0) &&
        (w.quantization === undefined || isObject(w.quantization));
      if (!ok) throw invalid('model', `${where}.weights[${j}] needs a name, a dtype and a shape of non-negative integers`);
    });
    return group as unknown as ManifestGroup;
  });
}

export function modelRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post(
      '/v1/models',
      {
        schema: {
          operationId: 'uploadModel',
          summary: 'Upload a pre-trained TF.js layers model',
          description:
            'Multipart: `model` (model.json), one `weights` part per shard named in its weightsManifest (the part file name must match), optional `classNames` (a file part holding a JSON array of source class names) and `name` (text). Other parts are refused with 400. The shards of each weight group must hold exactly the bytes its manifest entries describe (422 `weights`). A model without a usable source classifier head is refused with 422.',
          tags: ['models'],
          consumes: ['multipart/form-data'],
          response: { 201: json(ref(Model), 'The stored model with its detected source head.'), ...problems(400, 413, 415, 422) },
        },
        config: { openapiBody: ref(ModelUpload) },
      },
      async (request, reply) => {
        if (!request.isMultipart()) throw new HttpProblem(415, 'unsupported_media_type', 'send the model as multipart/form-data');
        const limit = ctx.config.limits.modelBytes;
        const staging = await ctx.store.staging();
        try {
          const shards = new Set<string>();
          let hasModel = false;
          let hasClassNames = false;
          let name = 'model';
          let total = 0;
          for await (const part of request.parts({ limits: { fileSize: limit, files: 1000, fields: 10, parts: 1100 } })) {
            if (part.type === 'field') {
              // Only `name` is a text field; dropping others (e.g. classNames as text) would lose input silently.
              if (part.fieldname === 'name') name = String(part.value).slice(0, 200);
              else if (part.fieldname === 'classNames') throw invalid('classNames', 'send classNames as a file part (a JSON array of class names), not a text field', 400);
              else throw invalid(part.fieldname, `unexpected multipart field "${part.fieldname}" (expected model, weights, classNames, name)`, 400);
              continue;
            }
            let target: string;
            if (part.fieldname === 'model') {
              if (hasModel) throw invalid('model', 'only one model.json part is allowed', 400);
              hasModel = true;
              target = 'model.json';
            } else if (part.fieldname === 'classNames') {
              hasClassNames = true;
              target = CLASS_NAMES_FILE;
            } else if (part.fieldname === 'weights') {
              const file = part.filename ?? '';
              if (!SHARD_NAME.test(file) || file === 'model.json' || file === CLASS_NAMES_FILE) throw invalid('weights', `weight file name "${file}" is not allowed (letters, digits, . _ - only)`, 400);
              if (shards.has(file)) throw invalid('weights', `weight file "${file}" was sent twice`, 400);
              shards.add(file);
              target = file;
            } else {
              throw invalid(part.fieldname, `unexpected multipart part "${part.fieldname}" (expected model, weights, classNames, name)`, 400);
            }
            await pipeline(part.file, createWriteStream(join(staging, target)));
            total += part.file.bytesRead;
            if (part.file.truncated || total > limit) throw new HttpProblem(413, 'too_large', `model upload larger than ${limit} bytes`, [{ field: part.fieldname, message: 'too large' }]);
          }
          if (!hasModel) throw invalid('model', 'the `model` part (model.json) is required', 400);

          let modelJson: unknown;
          try {
            modelJson = JSON.parse(await readFile(join(staging, 'model.json'), 'utf8'));
          } catch (err) {
            throw invalid('model', `model.json is not valid JSON: ${(err as Error).message}`);
          }
          const groups = parseManifest(modelJson);
          const needed = groups.flatMap((g) => g.paths);
          const missing = needed.filter((p) => !shards.has(p));
          if (missing.length) throw invalid('weights', `weight shard(s) named in model.json are missing: ${missing.slice(0, 10).join(', ')}`);
          const extra = [...shards].filter((s) => !needed.includes(s));
          if (extra.length) throw invalid('weights', `file(s) not named in model.json weightsManifest: ${extra.slice(0, 10).join(', ')}`);
          // A group's shards are its weights concatenated; a wrong size means a swapped or stale file.
          for (const group of groups) {
            const expected = group.weights.reduce((n, w) => n + weightBytes(w), 0);
            let actual = 0;
            for (const p of group.paths) actual += (await stat(join(staging, p))).size;
            if (actual !== expected) {
              throw invalid('weights', `weight file(s) ${group.paths.join(', ')} hold ${actual} bytes but model.json describes ${expected} for them (wrong or stale shard?)`);
            }
          }

          let inspection;
          try {
            inspection = await inspectModel(staging);
          } catch (err) {
            throw invalid('model', scrubPaths((err as Error).message, [staging], ctx.config.dataDir));
          }
          if (hasClassNames) {
            let names: unknown;
            try {
              names = JSON.parse(await readFile(join(staging, CLASS_NAMES_FILE), 'utf8'));
            } catch {
              throw invalid('classNames', 'classNames is not valid JSON');
            }
            if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw invalid('classNames', 'classNames must be a JSON array of strings');
            if (names.length !== inspection.numSourceClasses) throw invalid('classNames', `classNames has ${names.length} entries but the source head has ${inspection.numSourceClasses} classes`);
            await writeFile(join(staging, CLASS_NAMES_FILE), JSON.stringify(names));
          }
          const id = newId('mdl');
          const record: ModelValue = {
            id,
            name,
            inputShape: inspection.inputShape,
            headLayer: inspection.headLayer,
            headKind: inspection.headKind,
            featureDim: inspection.featureDim,
            numSourceClasses: inspection.numSourceClasses,
            normalization: inspection.normalization,
            hasClassNames,
            files: ['model.json', ...needed, ...(hasClassNames ? [CLASS_NAMES_FILE] : [])],
            bytes: total,
            createdAt: new Date().toISOString(),
          };
          await ctx.store.commit(staging, 'models', id);
          try {
            await ctx.records.putModel(record);
          } catch (err) {
            await ctx.store.remove('models', id);
            throw err;
          }
          request.log.info({ modelId: id, head: inspection.headLayer, sourceClasses: inspection.numSourceClasses }, 'model stored');
          return reply.code(201).header('location', `/v1/models/${id}`).send(record);
        } finally {
          await ctx.store.discard(staging);
        }
      },
    );

    app.get(
      '/v1/models',
      { schema: { operationId: 'listModels', summary: 'List models, newest first', tags: ['models'], querystring: PageQuery, response: { 200: json(ref(ModelPage), 'A page of models.'), ...problems(400) } } },
      async (request) => ctx.records.listModels(request.query.limit ?? 20, request.query.after),
    );

    app.get(
      '/v1/models/:id',
      { schema: { operationId: 'getModel', summary: 'Get a model', tags: ['models'], params: ID_PARAMS, response: { 200: json(ref(Model), 'The model.'), ...problems(404) } } },
      async (request) => {
        const record = await ctx.records.getModel(request.params.id);
        if (!record) throw notFound('model', request.params.id);
        return record;
      },
    );

    app.delete(
      '/v1/models/:id',
      {
        schema: {
          operationId: 'deleteModel',
          summary: 'Delete a model',
          description: 'Refused (409) while a queued or running job uses it.',
          tags: ['models'],
          params: ID_PARAMS,
          response: { 204: Type.Null({ description: 'Deleted.' }), ...problems(404, 409) },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        if (!(await ctx.records.getModel(id))) throw notFound('model', id);
        await assertUnused(ctx, await ctx.records.jobsUsingModel(id), 'model');
        await ctx.records.deleteModel(id);
        await ctx.store.remove('models', id);
        return reply.code(204).send(null);
      },
    );
  };
}
