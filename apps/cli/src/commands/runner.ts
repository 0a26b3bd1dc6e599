import type { Command } from 'commander';
import type { CommandContext } from '../context.js';

/**
 * Wraps a command body into a commander action: the runner resolves global
 * options, runs the body, and records the exit code.
 */
export type CommandRunner = <A extends unknown[]>(
  body: (ctx: CommandContext, ...args: A) => Promise<number | void>,
) => (...args: [...A, Record<string, unknown>, Command]) => Promise<void>;
