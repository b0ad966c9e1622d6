import { Type, type Static } from 'typebox';
import { Id, ref } from './common.js';

export const RejectedFile = Type.Object(
  { path: Type.String({ description: 'Path inside the archive.' }), reason: Type.String() },
  { $id: 'RejectedFile', additionalProperties: false },
);

export const Dataset = Type.Object(
  {
    id: Id('Dataset id.'),
    name: Type.String({ description: 'Original archive file name.' }),
    layout: Type.Union([Type.Literal('image-folder'), Type.Literal('split-folders'), Type.Literal('csv-manifest')]),
    classes: Type.Array(Type.String()),
    counts: Type.Record(Type.String(), Type.Record(Type.String(), Type.Integer()), { description: 'Image count per split per class.' }),
    images: Type.Integer({ description: 'Accepted images over all splits.' }),
    rejected: Type.Array(ref(RejectedFile), { description: 'Files that were skipped, with the reason.' }),
    bytes: Type.Integer({ description: 'Size of the uploaded archive.' }),
    createdAt: Type.String({ format: 'date-time' }),
  },
  { $id: 'Dataset', additionalProperties: false },
);
export type DatasetValue = Static<typeof Dataset>;

export const DatasetPage = Type.Object(
  {
    items: Type.Array(ref(Dataset)),
    nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `after` for the next page; null on the last page.' }),
  },
  { $id: 'DatasetPage', additionalProperties: false },
);

export const DatasetUpload = Type.Object(
  {
    file: Type.String({
      format: 'binary',
      contentMediaType: 'application/octet-stream',
      description: 'A .zip or .tar.gz of an image-folder tree (class/…), split folders (train|val|test/class/…), or a CSV manifest with its images.',
    }),
  },
  { $id: 'DatasetUpload', required: ['file'] },
);

export const DatasetUploadQuery = Type.Object(
  {
    strict: Type.Optional(Type.Boolean({
      default: true,
      description: 'When true (default) any undecodable image refuses the whole upload (422); when false such files are skipped and listed in `rejected`.',
    })),
  },
  { additionalProperties: false },
);
