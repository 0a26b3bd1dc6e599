import type { SupervisionEvent } from './supervisor.js';

/** How a process ended: `exit code 1`, `signal SIGKILL`. */
function ending(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `signal ${signal}` : `exit code ${code ?? '?'}`;
}

const seconds = (ms: number): string => `${Number((ms / 1000).toFixed(1))} s`;

/**
 * One line for the terminal of `npm start` about a supervision event: which service, how it
 * ended, which restart this is and when the next one comes.
 */
export function describeEvent(e: SupervisionEvent): string {
  switch (e.kind) {
    case 'exited':
      return e.restart === null
        ? `launcher: ${e.service} exited unexpectedly (${ending(e.code, e.signal)}); it stays down`
        : `launcher: ${e.service} exited unexpectedly (${ending(e.code, e.signal)}); ` +
            `restart ${e.restart} in ${seconds(e.delayMs)}`;
    case 'restarted':
      return `launcher: ${e.service} is back (restart ${e.restart}, pid ${e.pid}, ${e.address})`;
    case 'restart-failed':
      return (
        `launcher: restart ${e.restart} of ${e.service} failed: ${e.error.split('\n')[0]}` +
        (e.next === null ? '' : `; restart ${e.next} in ${seconds(e.delayMs)}`)
      );
    case 'gave-up':
      return (
        `launcher: ${e.service} died ${e.crashes} times within ${seconds(e.windowMs)}; not ` +
        'restarting it any more. The rest of the cluster keeps running; Ctrl-C stops it ' +
        '(see its log above for why it dies)'
      );
  }
}
