import { defineConfig } from 'vitest/config';

// `npm run test:swarm`: the production shape on a real single-node Docker Swarm. Not part of
// `npm test` (its files end in .swarm.ts): the global setup runs scripts/swarm-up, which builds every
// image and deploys the stack, and the teardown scripts/swarm-down. The scenarios share that one
// stack and run in order, one file, one worker.
export default defineConfig({
  test: {
    include: ['tests/swarm/**/*.swarm.ts'],
    globalSetup: ['tests/swarm/setup.ts'],
    testTimeout: 240_000,
    hookTimeout: 600_000,
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
  },
});
