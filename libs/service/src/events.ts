import type { EventEmitter } from 'node:events';

/**
 * Resolves at the first of `names` that `emitter` emits, and removes its listeners then (e.g.
 * a stream's `drain`, or the events after which no `drain` will come). Never rejects: an
 * `error` among `names` only ends the wait; whoever owns the stream handles the error.
 */
export function anyEvent(emitter: EventEmitter, names: readonly string[]): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      for (const n of names) emitter.off(n, done);
      resolve();
    };
    for (const n of names) emitter.on(n, done);
  });
}
