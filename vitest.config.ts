import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/support/global-build.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration suites each start their own sshd; two cores do not gain from more forks.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
