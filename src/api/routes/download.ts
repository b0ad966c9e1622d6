import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Static } from 'typebox';
import type { ArtifactShape } from '../../contracts/jobs.js';
import type { ApiContext } from '../context.js';
import { HttpProblem } from '../problem.js';

/** Artifacts live under jobs/<id>/artifacts/<name>; `name` comes from the job's manifest, never the URL. */
export async function sendArtifact(ctx: ApiContext, request: FastifyRequest, reply: FastifyReply, jobId: string, artifact: Static<typeof ArtifactShape>) {
  const file = `artifacts/${artifact.name}`;
  const stat = await ctx.store.stat('jobs', jobId, file);
  if (!stat) throw new HttpProblem(404, 'not_found', `artifact ${artifact.name} is listed but its file is gone`);
  const etag = `"${artifact.sha256}"`;
  const basename = artifact.name.split('/').pop() ?? 'artifact';
  reply.header('etag', etag).header('accept-ranges', 'bytes').header('content-disposition', `attachment; filename="${basename.replace(/"/g, '')}"`);
  reply.type('application/octet-stream');
  const ifNoneMatch = request.headers['if-none-match'];
  if (ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === etag || t.trim() === '*')) return reply.code(304).send();

  const range = request.headers.range;
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    let start: number;
    let end: number;
    if (!m || (m[1] === '' && m[2] === '')) throw rangeProblem(stat.size);
    if (m[1] === '') {
      start = Math.max(0, stat.size - Number(m[2]));
      end = stat.size - 1;
    } else {
      start = Number(m[1]);
      end = m[2] === '' ? stat.size - 1 : Math.min(Number(m[2]), stat.size - 1);
    }
    if (start > end || start >= stat.size) throw rangeProblem(stat.size);
    reply.code(206).header('content-range', `bytes ${start}-${end}/${stat.size}`).header('content-length', end - start + 1);
    return reply.send(ctx.store.read('jobs', jobId, file, { start, end }));
  }
  reply.header('content-length', stat.size);
  return reply.send(ctx.store.read('jobs', jobId, file));
}

const rangeProblem = (size: number) => new HttpProblem(416, 'range_not_satisfiable', `the file has ${size} bytes`, [{ field: 'header range', message: 'unsatisfiable range' }], { 'content-range': `bytes */${size}` });
