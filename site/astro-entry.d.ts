/** Astro's server entry (`astro build` output, site/dist/server/entry.mjs), resolved by scripts/build.ts. */
declare module 'flagmeter:astro-entry' {
  import type { Server } from 'node:http';

  /** Starts the standalone server on HOST and PORT. */
  export function startServer(): { server: { server: Server }; done: Promise<void> };
}
