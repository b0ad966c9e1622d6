import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Imports follow the data flow: api -> queue -> workers -> cotuning. The core library
// never learns about HTTP, Redis or the service, and nothing imports the entry points.
const serviceModules = ['**/api/**', '**/queue/**', '**/storage/**', '**/contracts/**', '**/workers/**', 'fastify', 'bullmq', 'ioredis', 'pino'];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'openapi/client/**', 'coverage/**', 'scratch/**', 'demo-output/**', 'data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/cotuning/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: serviceModules.map((group) => ({ group: [group], message: 'src/cotuning is the core library: it knows nothing about the service.' })) }],
    },
  },
  {
    files: ['src/**/*.ts', 'workers/**/*.ts'],
    ignores: ['src/api/server.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/api/**', '!./**'], message: 'Nothing imports the API.' }] }],
    },
  },
  {
    files: ['bin/**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
