import { defineGitSuite } from './git-suite.js';

defineGitSuite('a local directory target', async () => ({
  spec: (dir) => dir,
  options: {},
  stop: async () => undefined,
}));
