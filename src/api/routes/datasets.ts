import { createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { PageQuery, ref } from '../../contracts/common.js';
import { Dataset, DatasetPage, DatasetUpload, DatasetUploadQuery } from '../../contracts/datasets.js';
import { scanDataset } from '../../cotuning/inspect.js';
import type { DatasetRecord } from '../../queue/records.js';
import { newId } from '../../storage/ids.js';
import { extractArchive, findDatasetRoot } from '../archive.js';
import type { ApiContext } from '../context.js';
import { HttpProblem, invalid, notFound, scrubPaths } from '../problem.js';
import { ID_PARAMS, json, problems } from './common.js';
import { assertUnused } from './usage.js';

const publicView = ({ dataPath: _dataPath, ...view }: DatasetRecord) => view;

export function datasetRoutes(ctx: ApiContext): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post(
      '/v1/datasets',
      {
        schema: {
          operationId: 'uploadDataset',
          summary: 'Upload a dataset archive',
          description:
            'Multipart upload with one `file` part: a .zip or .tar.gz of an image-folder tree, split folders (train/val/test), or a CSV manifest with its images. Any other part is refused with 400. The archive is scanned and every image decoded; a dataset without test images is refused with 422; nothing is stored unless the upload is accepted.',
          tags: ['datasets'],
          consumes: ['multipart/form-data'],
          querystring: DatasetUploadQuery,
          response: { 201: json(ref(Dataset), 'The stored dataset.'), ...problems(400, 413, 415, 422) },
        },
        config: { openapiBody: ref(DatasetUpload) },
      },
      async (request, reply) => {
        if (!request.isMultipart()) throw new HttpProblem(415, 'unsupported_media_type', 'send the archive as multipart/form-data', [{ field: 'file', message: 'expected multipart/form-data' }]);
        const staging = await ctx.store.staging();
        try {
          const archive = join(staging, 'upload.bin');
          let filename: string | undefined;
          // Exactly one `file` part: anything else would be silently ignored, so it is refused.
          for await (const part of request.parts({ limits: { fileSize: ctx.config.limits.datasetBytes, files: 2, fields: 4 } })) {
            if (part.type === 'field' || part.fieldname !== 'file') {
              throw invalid(part.fieldname, `unexpected multipart ${part.type === 'field' ? 'field' : 'file'} "${part.fieldname}" (send only one \`file\` part with the archive)`, 400);
            }
            if (filename !== undefined) throw invalid('file', 'send exactly one `file` part', 400);
            await pipeline(part.file, createWriteStream(archive));
            if (part.file.truncated) throw new HttpProblem(413, 'too_large', `archive larger than ${ctx.config.limits.datasetBytes} bytes`, [{ field: 'file', message: 'too large' }]);
            filename = part.filename ?? '';
          }
          if (filename === undefined) throw new HttpProblem(400, 'missing_file', 'the multipart body needs a `file` part with the archive', [{ field: 'file', message: 'required' }]);
          const bytes = (await stat(archive)).size;
          const dataDir = join(staging, 'data');
          await extractArchive(archive, dataDir, { extractedBytes: ctx.config.limits.extractedBytes, entries: ctx.config.limits.archiveEntries });
          const dataPath = await findDatasetRoot(dataDir);
          // Core messages name absolute staging paths; show them relative to the archive root.
          const scrub = (message: string) => scrubPaths(message, [dataDir, staging], ctx.config.dataDir);
          let scan;
          try {
            scan = await scanDataset(join(dataDir, dataPath));
          } catch (err) {
            const message = scrub((err as Error).message);
            throw new HttpProblem(422, 'unusable_dataset', message, [{ field: 'file', message }]);
          }
          scan.rejected = scan.rejected.map((r) => ({ ...r, path: scrub(r.path), reason: scrub(r.reason) }));
          // Every job evaluates on the test split; refuse now rather than fail each job later.
          if (!Object.values(scan.counts.test ?? {}).some((n) => n > 0)) {
            const message =
              scan.layout === 'csv-manifest'
                ? 'the CSV manifest needs test rows (a split column with "test" on some rows)'
                : 'the dataset needs a test split (a test/ folder of class folders)';
            throw new HttpProblem(422, 'unusable_dataset', message, [{ field: 'file', message }]);
          }
          const undecodable = scan.rejected.filter((r) => /decode/i.test(r.reason));
          if (request.query.strict !== false && undecodable.length > 0) {
            throw new HttpProblem(
              422,
              'corrupt_images',
              `${undecodable.length} image(s) cannot be decoded; fix them or upload with strict=false to skip them`,
              undecodable.slice(0, 50).map((r) => ({ field: `file:${r.path}`, message: r.reason })),
            );
          }
          await rm(archive, { force: true });
          const id = newId('ds');
          const images = Object.values(scan.counts).reduce((n, perClass) => n + Object.values(perClass).reduce((a, b) => a + b, 0), 0);
          const record: DatasetRecord = {
            id,
            name: (filename || 'dataset').slice(0, 200),
            layout: scan.layout,
            classes: scan.classes,
            counts: scan.counts,
            images,
            rejected: scan.rejected,
            bytes,
            createdAt: new Date().toISOString(),
            dataPath: join('data', dataPath),
          };
          await ctx.store.commit(staging, 'datasets', id);
          try {
            await ctx.records.putDataset(record);
          } catch (err) {
            await ctx.store.remove('datasets', id);
            throw err;
          }
          request.log.info({ datasetId: id, images, classes: scan.classes.length }, 'dataset stored');
          return reply.code(201).header('location', `/v1/datasets/${id}`).send(publicView(record));
        } finally {
          await ctx.store.discard(staging);
        }
      },
    );

    app.get(
      '/v1/datasets',
      {
        schema: { operationId: 'listDatasets', summary: 'List datasets, newest first', tags: ['datasets'], querystring: PageQuery, response: { 200: json(ref(DatasetPage), 'A page of datasets.'), ...problems(400) } },
      },
      async (request) => {
        const page = await ctx.records.listDatasets(request.query.limit ?? 20, request.query.after);
        return { items: page.items.map(publicView), nextCursor: page.nextCursor };
      },
    );

    app.get(
      '/v1/datasets/:id',
      { schema: { operationId: 'getDataset', summary: 'Get a dataset', tags: ['datasets'], params: ID_PARAMS, response: { 200: json(ref(Dataset), 'The dataset.'), ...problems(404) } } },
      async (request) => {
        const record = await ctx.records.getDataset(request.params.id);
        if (!record) throw notFound('dataset', request.params.id);
        return publicView(record);
      },
    );

    app.delete(
      '/v1/datasets/:id',
      {
        schema: {
          operationId: 'deleteDataset',
          summary: 'Delete a dataset',
          description: 'Refused (409) while a queued or running job uses it.',
          tags: ['datasets'],
          params: ID_PARAMS,
          response: { 204: Type.Null({ description: 'Deleted.' }), ...problems(404, 409) },
        },
      },
      async (request, reply) => {
        const { id } = request.params;
        if (!(await ctx.records.getDataset(id))) throw notFound('dataset', id);
        await assertUnused(ctx, await ctx.records.jobsUsingDataset(id), 'dataset');
        await ctx.records.deleteDataset(id);
        await ctx.store.remove('datasets', id);
        return reply.code(204).send(null);
      },
    );
  };
}
