import { loadConfigOrExit } from '../config.js';
import { createLogger, safeRedisUrl } from '../logger.js';
import { buildApp } from './app.js';

/** Entry point: config → app → listen; SIGTERM/SIGINT close gracefully within the shutdown timeout. */
const config = loadConfigOrExit('cotune-api');
const log = createLogger(config, 'cotune-api');
const app = await buildApp(config);

let closing = false;
const shutdown = async (signal: string) => {
  if (closing) return;
  closing = true;
  log.info({ signal }, 'shutting down');
  const timer = setTimeout(() => {
    log.error('graceful close timed out; exiting');
    process.exit(1);
  }, config.worker.shutdownTimeoutMs).unref();
  try {
    await app.close();
    clearTimeout(timer);
    process.exit(0);
  } catch (err) {
    log.error({ err }, 'close failed');
    process.exit(1);
  }
};
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

try {
  await app.listen({ host: config.host, port: config.port });
  log.info({ redis: safeRedisUrl(config.redisUrl), dataDir: config.dataDir, auth: config.apiKeys.length > 0 }, 'api ready');
} catch (err) {
  log.fatal({ err }, 'api failed to start');
  await app.close().catch(() => undefined);
  process.exit(1);
}
