/**
 * A small HTTP client for the parts of the cotune API the demo uses. It speaks only HTTP, as any
 * outside client would; the contract types keep its field names in step with the routes.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, openAsBlob } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { ProblemBody } from '../contracts/common.js';
import type { DatasetValue } from '../contracts/datasets.js';
import type { ArtifactValue, CreateJobValue, EventValue, JobValue } from '../contracts/jobs.js';
import type { ModelValue } from '../contracts/models.js';

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    message: string,
    readonly status: number,
    readonly problem?: ProblemBody,
  ) {
    super(message);
  }
}

interface EventPageValue {
  items: EventValue[];
  nextAfter: number;
  done: boolean;
}

export interface FollowOptions {
  signal?: AbortSignal;
  /** Called for every event, in id order, exactly once. */
  onEvent: (event: EventValue) => void;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });

export class CotuneClient {
  constructor(
    readonly baseUrl: string,
    private readonly apiKey?: string,
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.apiKey ? { authorization: `Bearer ${this.apiKey}`, ...extra } : extra;
  }

  private async call<T>(
    method: string,
    path: string,
    body?: FormData | object,
    signal?: AbortSignal,
  ): Promise<T> {
    const isForm = body instanceof FormData;
    const response = await fetch(new URL(path, this.baseUrl), {
      method,
      headers: this.headers(body && !isForm ? { 'content-type': 'application/json' } : {}),
      body: body === undefined ? undefined : isForm ? body : JSON.stringify(body),
      signal,
    });
    if (!response.ok) throw await this.problem(method, path, response);
    return (await response.json()) as T;
  }

  /** One line naming the request, the status and the offending fields from problem+json. */
  private async problem(method: string, path: string, response: Response): Promise<ApiError> {
    const text = await response.text().catch(() => '');
    let problem: ProblemBody | undefined;
    try {
      problem = JSON.parse(text) as ProblemBody;
    } catch {
      problem = undefined;
    }
    const fields = (problem?.errors ?? []).map((e) => `${e.field}: ${e.message}`).join('; ');
    const detail = problem
      ? [problem.detail ?? problem.title, fields].filter(Boolean).join(' — ')
      : text.slice(0, 200);
    return new ApiError(`${method} ${path} → ${response.status}: ${detail}`, response.status, problem);
  }

  health(signal?: AbortSignal): Promise<{ status: string; workers: { backend: string }[] }> {
    return this.call('GET', '/v1/health', undefined, signal);
  }

  /** POST /v1/datasets with the archive as the `file` part. */
  async uploadDataset(archivePath: string, name = basename(archivePath)): Promise<DatasetValue> {
    const form = new FormData();
    form.append('file', await openAsBlob(archivePath), name);
    return this.call('POST', '/v1/datasets', form);
  }

  /** POST /v1/models: model.json, every shard its weightsManifest names, optional class names. */
  async uploadModel(
    modelDir: string,
    options: { classNamesPath?: string; name?: string } = {},
  ): Promise<ModelValue> {
    const modelJsonPath = join(modelDir, 'model.json');
    const modelJson = JSON.parse(await readFile(modelJsonPath, 'utf8')) as {
      weightsManifest?: { paths: string[] }[];
    };
    const form = new FormData();
    form.append('model', await openAsBlob(modelJsonPath, { type: 'application/json' }), 'model.json');
    for (const shard of (modelJson.weightsManifest ?? []).flatMap((group) => group.paths)) {
      form.append('weights', await openAsBlob(join(modelDir, shard)), shard);
    }
    if (options.classNamesPath) {
      form.append(
        'classNames',
        await openAsBlob(options.classNamesPath, { type: 'application/json' }),
        'class-names.json',
      );
    }
    if (options.name) form.append('name', options.name);
    return this.call('POST', '/v1/models', form);
  }

  createJob(body: CreateJobValue): Promise<JobValue> {
    return this.call('POST', '/v1/jobs', body);
  }

  getJob(id: string): Promise<JobValue> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }

  cancelJob(id: string, signal?: AbortSignal): Promise<JobValue> {
    return this.call('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`, undefined, signal);
  }

  /**
   * Follow a job's events until it finishes: Server-Sent Events, resuming with Last-Event-ID
   * after a dropped connection; after repeated stream failures, JSON polling of the same log.
   */
  async followEvents(id: string, options: FollowOptions): Promise<void> {
    let last = 0;
    const deliver = (event: EventValue) => {
      if (event.id <= last) return;
      last = event.id;
      options.onEvent(event);
    };
    for (let failures = 0; failures < 3 && !options.signal?.aborted;) {
      try {
        if (await this.streamEvents(id, last, deliver, options.signal)) return;
      } catch (err) {
        if (options.signal?.aborted) return;
        if (err instanceof ApiError && err.status < 500) throw err;
      }
      failures += 1;
      await sleep(500 * failures, options.signal);
    }
    while (!options.signal?.aborted) {
      const page = await this.call<EventPageValue>(
        'GET',
        `/v1/jobs/${encodeURIComponent(id)}/events?after=${last}&limit=500`,
      );
      page.items.forEach(deliver);
      if (page.done) return;
      if (page.items.length === 0) await sleep(1000, options.signal);
    }
  }

  /** One SSE connection; true when the server said `end` (the job is finished). */
  private async streamEvents(
    id: string,
    after: number,
    deliver: (event: EventValue) => void,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const path = `/v1/jobs/${encodeURIComponent(id)}/events?after=${after}`;
    const response = await fetch(new URL(path, this.baseUrl), {
      headers: this.headers({
        accept: 'text/event-stream',
        ...(after > 0 ? { 'last-event-id': String(after) } : {}),
      }),
      signal,
    });
    if (!response.ok || !response.body) throw await this.problem('GET', path, response);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let cut: number;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let type = 'message';
        const data: string[] = [];
        for (const line of frame.split('\n')) {
          if (line.startsWith('event:')) type = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
        }
        if (type === 'end') return true;
        if (data.length > 0) deliver(JSON.parse(data.join('\n')) as EventValue);
      }
    }
    return false;
  }

  async listArtifacts(id: string): Promise<ArtifactValue[]> {
    const list = await this.call<{ items: ArtifactValue[] }>(
      'GET',
      `/v1/jobs/${encodeURIComponent(id)}/artifacts`,
    );
    return list.items;
  }

  /** Download one artifact under `outDir/<name>` and check its sha256. */
  async downloadArtifact(artifact: ArtifactValue, outDir: string): Promise<string> {
    const target = resolve(outDir, artifact.name);
    const rel = relative(resolve(outDir), target);
    if (rel.startsWith('..') || rel.startsWith(sep))
      throw new Error(`artifact name "${artifact.name}" leaves the output folder`);
    const response = await fetch(new URL(artifact.href, this.baseUrl), { headers: this.headers() });
    if (!response.ok || !response.body) throw await this.problem('GET', artifact.href, response);
    await mkdir(dirname(target), { recursive: true });
    const hash = createHash('sha256');
    const body = Readable.fromWeb(response.body as WebReadableStream<Uint8Array>);
    body.on('data', (chunk: Buffer) => hash.update(chunk));
    await pipeline(body, createWriteStream(target));
    const digest = hash.digest('hex');
    if (digest !== artifact.sha256)
      throw new Error(
        `artifact ${artifact.name}: sha256 ${digest} does not match the listed ${artifact.sha256}`,
      );
    return target;
  }
}
