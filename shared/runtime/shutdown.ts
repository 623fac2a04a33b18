import type { Logger } from '../platform/logger.ts';

/** Longer than a batch or a request takes, shorter than Swarm's stop grace period, so a stuck stop still exits on its own. */
const FORCE_EXIT_MS = 15_000;

/**
 * On SIGTERM or SIGINT: logs `message`, runs `steps` one after the other (stop taking work, finish
 * what is in flight, close connections) and exits 0; exits 1 when a step fails or all of them take
 * longer than 15 s. A second signal while stopping changes nothing.
 */
export function stopOnSignal(logger: Logger, message: string, steps: (() => Promise<unknown>)[]): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, message);
    setTimeout(() => process.exit(1), FORCE_EXIT_MS).unref();
    steps
      .reduce<Promise<unknown>>((previous, step) => previous.then(step), Promise.resolve())
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
