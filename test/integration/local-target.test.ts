import { defineSyncSuite } from './sync-suite.js';

defineSyncSuite('a local target (no SSH)', async () => ({
  spec: (dir) => dir,
  options: {},
  stop: async () => undefined,
}));
