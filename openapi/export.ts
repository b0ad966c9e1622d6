// `npm run openapi:export [-- <file>]`: write the OpenAPI document (default openapi/openapi.json).
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { renderDocument } from './document.js';
import { SPEC_PATH } from './paths.js';

const target = resolve(process.argv[2] ?? SPEC_PATH);
await writeFile(target, await renderDocument());
console.log(`wrote ${target}`);
