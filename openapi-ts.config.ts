// Generates openapi/client/ from the committed openapi/openapi.json (`npm run openapi:client`).
// openapi/drift.ts reuses this object to regenerate into a temp folder for the drift check.
import { fileURLToPath } from 'node:url';
import { defineConfig, type UserConfig } from '@hey-api/openapi-ts';

// Absolute paths: a bare `openapi/openapi.json` would be read as a registry shorthand.
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export const clientConfig = {
  input: here('openapi/openapi.json'),
  output: {
    path: here('openapi/client'),
    // NodeNext resolution needs explicit `.js` specifiers.
    module: { extension: '.js' },
    clean: true,
    tsConfigPath: here('tsconfig.json'),
  },
  plugins: [
    // fetch client: no runtime dependency (bundled into the output), SSE support.
    '@hey-api/client-fetch',
    // Types from the named component schemas; enums as TS unions.
    '@hey-api/typescript',
    // One function per operationId.
    '@hey-api/sdk',
  ],
  logs: { file: false, level: 'warn' },
} satisfies UserConfig;

export default defineConfig(clientConfig);
