import { Type, type Static } from 'typebox';
import { Id, ref } from './common.js';

export const Model = Type.Object(
  {
    id: Id('Model id.'),
    name: Type.String(),
    inputShape: Type.Array(Type.Union([Type.Integer(), Type.Null()]), { description: 'Input shape without the batch dimension, e.g. [224, 224, 3].' }),
    headLayer: Type.String({ description: 'Detected source classifier layer.' }),
    headKind: Type.Union([Type.Literal('dense'), Type.Literal('conv1x1')]),
    featureDim: Type.Integer(),
    numSourceClasses: Type.Integer(),
    normalization: Type.Union([Type.Literal('minus1to1'), Type.Literal('zero1'), Type.Literal('imagenet')]),
    hasClassNames: Type.Boolean({ description: 'Whether source class names were uploaded.' }),
    files: Type.Array(Type.String()),
    bytes: Type.Integer(),
    createdAt: Type.String({ format: 'date-time' }),
  },
  { $id: 'Model', additionalProperties: false },
);
export type ModelValue = Static<typeof Model>;

export const ModelPage = Type.Object(
  { items: Type.Array(ref(Model)), nextCursor: Type.Union([Type.String(), Type.Null()]) },
  { $id: 'ModelPage', additionalProperties: false },
);

export const ModelUpload = Type.Object(
  {
    model: Type.String({ format: 'binary', contentMediaType: 'application/json', description: 'A TF.js layers-model `model.json`.' }),
    weights: Type.Array(Type.String({ format: 'binary', contentMediaType: 'application/octet-stream' }), {
      description: 'Every weight shard named in model.json `weightsManifest`, each as its own part, with its file name.',
    }),
    classNames: Type.Optional(Type.String({ format: 'binary', contentMediaType: 'application/json', description: 'JSON array of source class names.' })),
    name: Type.Optional(Type.String({ maxLength: 200 })),
  },
  { $id: 'ModelUpload', required: ['model', 'weights'] },
);
