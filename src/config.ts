import { resolve } from 'node:path';
import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';

const MiB = 1024 * 1024;

/** Environment variables the service reads; `.env.example` documents each one. */
export const EnvSchema = Type.Object({
  REDIS_URL: Type.String({ default: 'redis://127.0.0.1:6379', pattern: '^rediss?://' }),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  PORT: Type.Integer({ default: 3000, minimum: 0, maximum: 65535 }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
  COTUNE_DATA_DIR: Type.String({ default: './data', minLength: 1 }),
  COTUNE_TF_BACKEND: Type.Union([Type.Literal(''), Type.Literal('tensorflow-gpu'), Type.Literal('tensorflow'), Type.Literal('wasm'), Type.Literal('cpu')], { default: '' }),
  // At most MAX_WASM_THREADS; unset = defaultWasmThreads() (src/cotuning/backend/wasm-threads.ts).
  COTUNE_WASM_THREADS: Type.Optional(Type.Integer({ minimum: 1, maximum: 8 })),
  // Read by the WASM kernels themselves (src/cotuning/backend/wasm-fma.ts); checked here so a typo fails at start-up.
  COTUNE_WASM_FMA: Type.Union([Type.Literal(''), Type.Literal('0'), Type.Literal('1')], { default: '' }),
  COTUNE_API_KEYS: Type.String({ default: '' }),
  COTUNE_QUEUE_PREFIX: Type.String({ default: '{cotune}', pattern: '^[^:\\s]+$' }),
  COTUNE_MAX_DATASET_BYTES: Type.Integer({ default: 512 * MiB, minimum: 1024 }),
  COTUNE_MAX_MODEL_BYTES: Type.Integer({ default: 256 * MiB, minimum: 1024 }),
  COTUNE_MAX_EXTRACTED_BYTES: Type.Integer({ default: 2048 * MiB, minimum: 1024 }),
  COTUNE_MAX_ARCHIVE_ENTRIES: Type.Integer({ default: 200_000, minimum: 1 }),
  COTUNE_JOB_ATTEMPTS: Type.Integer({ default: 3, minimum: 1, maximum: 100 }),
  COTUNE_BACKOFF_MS: Type.Integer({ default: 5000, minimum: 0 }),
  COTUNE_WORKER_CONCURRENCY: Type.Integer({ default: 1, minimum: 1, maximum: 64 }),
  COTUNE_LOCK_DURATION_MS: Type.Integer({ default: 30_000, minimum: 1000 }),
  COTUNE_STALLED_INTERVAL_MS: Type.Integer({ default: 30_000, minimum: 500 }),
  COTUNE_SHUTDOWN_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 100 }),
});
export type Env = Static<typeof EnvSchema>;

export interface Config {
  readonly redisUrl: string;
  readonly host: string;
  readonly port: number;
  readonly logLevel: string;
  /** Absolute path of the blob directory shared by the API and the workers. */
  readonly dataDir: string;
  /** Forced TF.js backend; undefined = the fastest available. */
  readonly tfBackend: string | undefined;
  /** XNNPACK threads of the WASM backend (1 = its stock single-threaded build); undefined = the library's default. */
  readonly wasmThreads: number | undefined;
  /** Accepted API keys; empty = no authentication. */
  readonly apiKeys: readonly string[];
  readonly queuePrefix: string;
  readonly limits: {
    readonly datasetBytes: number;
    readonly modelBytes: number;
    readonly extractedBytes: number;
    readonly archiveEntries: number;
  };
  readonly jobs: {
    readonly attempts: number;
    readonly backoffMs: number;
  };
  readonly worker: {
    readonly concurrency: number;
    readonly lockDurationMs: number;
    readonly stalledIntervalMs: number;
    readonly shutdownTimeoutMs: number;
  };
}

export class ConfigError extends Error {
  constructor(readonly problems: { variable: string; message: string }[]) {
    super(`invalid environment: ${problems.map((p) => `${p.variable}: ${p.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

/**
 * loadConfig for a program's entry point: a bad environment is one line on stderr and exit
 * code 2 (a usage error, as the cotune command uses it), not an uncaught error's stack.
 */
export function loadConfigOrExit(program: string): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${program}: ${err.message}\n`);
    process.exit(2);
  }
}

/** Validate the environment once; throws ConfigError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const picked: Record<string, unknown> = {};
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = env[key];
    // An empty (or blank) value means "not set" for everything except the free-form lists.
    if (value !== undefined && (value.trim() !== '' || key === 'COTUNE_API_KEYS' || key === 'COTUNE_TF_BACKEND')) picked[key] = value.trim();
  }
  // Conversion would read "1.5" as 1 and "0x2" as 2: integers must be written as digits.
  const problems: { variable: string; message: string }[] = [];
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const raw = picked[key];
    if ((schema as { type?: string }).type === 'integer' && typeof raw === 'string' && !/^[0-9]+$/.test(raw)) {
      problems.push({ variable: key, message: `must be a whole number written in digits (got ${JSON.stringify(raw)})` });
      delete picked[key];
    }
  }
  const value = Value.Default(EnvSchema, Value.Convert(EnvSchema, picked));
  // Checked per variable so that every bad one is reported, not only the first.
  const record = value as Record<string, unknown>;
  const required = new Set<string>(EnvSchema.required ?? []);
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    // Optional variables (no default) may stay unset.
    if (record[key] === undefined && !required.has(key)) continue;
    if (problems.some((p) => p.variable === key)) continue;
    const first = [...Value.Errors(schema, record[key])][0];
    if (first) problems.push({ variable: key, message: `${first.message} (got ${JSON.stringify(record[key])})` });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const e = value as Env;
  const config: Config = {
    redisUrl: e.REDIS_URL,
    host: e.HOST,
    port: e.PORT,
    logLevel: e.LOG_LEVEL,
    dataDir: resolve(e.COTUNE_DATA_DIR),
    tfBackend: e.COTUNE_TF_BACKEND || undefined,
    wasmThreads: e.COTUNE_WASM_THREADS,
    apiKeys: e.COTUNE_API_KEYS.split(',').map((k) => k.trim()).filter(Boolean),
    queuePrefix: e.COTUNE_QUEUE_PREFIX,
    limits: {
      datasetBytes: e.COTUNE_MAX_DATASET_BYTES,
      modelBytes: e.COTUNE_MAX_MODEL_BYTES,
      extractedBytes: e.COTUNE_MAX_EXTRACTED_BYTES,
      archiveEntries: e.COTUNE_MAX_ARCHIVE_ENTRIES,
    },
    jobs: { attempts: e.COTUNE_JOB_ATTEMPTS, backoffMs: e.COTUNE_BACKOFF_MS },
    worker: {
      concurrency: e.COTUNE_WORKER_CONCURRENCY,
      lockDurationMs: e.COTUNE_LOCK_DURATION_MS,
      stalledIntervalMs: e.COTUNE_STALLED_INTERVAL_MS,
      shutdownTimeoutMs: e.COTUNE_SHUTDOWN_TIMEOUT_MS,
    },
  };
  return deepFreeze(config);
}

function deepFreeze<T extends object>(obj: T): T {
  for (const value of Object.values(obj)) if (value && typeof value === 'object') deepFreeze(value as object);
  return Object.freeze(obj);
}
