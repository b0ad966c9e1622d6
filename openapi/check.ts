// `npm run openapi:check`: fail when openapi/openapi.json or openapi/client/ differ from what
// the code generates now. Nothing in the repository is written.
import { findDrift } from './drift.js';

const { document, client } = await findDrift();
const problems = [...document, ...client];
if (problems.length > 0) {
  console.error('OpenAPI drift (run `npm run openapi:export && npm run openapi:client` and commit):');
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log('openapi/openapi.json and openapi/client/ are up to date');
