import type { ApiContext } from '../context.js';
import { snapshot } from '../job-view.js';
import { HttpProblem } from '../problem.js';

/** Refuse deleting an input that a queued or running job still needs. */
export async function assertUnused(ctx: ApiContext, jobIds: string[], what: string): Promise<void> {
  const records = await ctx.records.getJobs(jobIds);
  for (const record of records) {
    if (!record) continue;
    const { status } = await snapshot(ctx, record);
    if (status === 'queued' || status === 'running') {
      throw new HttpProblem(409, 'in_use', `job ${record.id} (${status}) uses this ${what}; cancel it or wait for it to finish`);
    }
  }
}
