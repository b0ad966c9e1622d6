import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import type { TSchema } from 'typebox';

/**
 * OpenAPI 3.1 from the route schemas. Components keep their `$id` names (no def-N), multipart
 * bodies (which Fastify does not validate as JSON) come from `config.openapiBody`.
 */
export async function registerSwagger(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'cotune',
        version,
        description: 'Co-Tuning transfer learning as a REST job service: upload a dataset and a pre-trained model, submit a job, follow its events, download the artifacts.',
      },
      // The first server is the generated client's default baseUrl; '/' is the same origin.
      servers: [
        { url: 'http://localhost:3000', description: 'Local API (npm run dev:api, docker compose)' },
        { url: '/', description: 'The API that serves this document' },
      ],
      tags: [
        { name: 'datasets', description: 'Training data uploads' },
        { name: 'models', description: 'Pre-trained source models' },
        { name: 'jobs', description: 'Training jobs, their events and cancellation' },
        { name: 'artifacts', description: 'Job outputs' },
        { name: 'health', description: 'Health and metrics' },
      ],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API key from COTUNE_API_KEYS (when set).' },
          apiKeyHeader: { type: 'apiKey', in: 'header', name: 'x-api-key' },
        },
      },
      security: [{ bearerAuth: [] }, { apiKeyHeader: [] }],
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `Schema${i}`),
    },
    transform: ({ schema, url, route }) => {
      const body = (route.config as { openapiBody?: TSchema } | undefined)?.openapiBody;
      return { schema: body ? { ...schema, body } : schema, url };
    },
  });
  // Swagger UI runs in the browser on the API's own origin: offer that server first, not localhost.
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    transformSpecification: (spec) => {
      const servers = (spec.servers ?? []) as { url: string }[];
      return { ...spec, servers: [...servers.filter((s) => s.url === '/'), ...servers.filter((s) => s.url !== '/')] };
    },
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
