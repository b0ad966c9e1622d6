import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The shared read-only data folder (../shared/data next to the repository), or COTUNE_SHARED_DATA. */
export const SHARED_DATA =
  process.env.COTUNE_SHARED_DATA ?? fileURLToPath(new URL('../../../shared/data', import.meta.url));

export const MOBILENET_DIR = `${SHARED_DATA}/mobilenet_v1_0.25_224`;
export const IMAGENET_CLASSES = `${SHARED_DATA}/imagenet-classes/imagenet_classes.json`;
export const CUB_DIR = `${SHARED_DATA}/cub100-birds-227`;
export const FLOWERS_DIR = `${SHARED_DATA}/oxford-flowers12-224`;

if (!existsSync(MOBILENET_DIR)) {
  throw new Error(`shared data not found at ${SHARED_DATA}; set COTUNE_SHARED_DATA`);
}
