import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The committed OpenAPI document. */
export const SPEC_PATH = fileURLToPath(new URL('openapi.json', import.meta.url));
/** The committed generated client. */
export const CLIENT_DIR = fileURLToPath(new URL('client', import.meta.url));
