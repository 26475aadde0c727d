import { defineGitSuite } from './git-suite.js';

defineGitSuite('a local directory target', async () => ({
  spec: (dir) => dir,
  options: {},
  copyData: true,
  stop: async () => undefined,
}));
