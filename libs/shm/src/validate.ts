/**
 * Argument checks shared by the public functions. Every check throws a {@link ShmError} whose
 * message names the operation, the argument, the bad value and the valid range.
 *
 * @internal
 * @packageDocumentation
 */
import { ShmError, describe } from './errors.js';
import { native } from './native.js';

/** Size of one page in bytes, as reported by the kernel (`sysconf(_SC_PAGESIZE)`). */
export const PAGE_SIZE: number = native.constants.pageSize;

/** @internal Round `n` up to a multiple of {@link PAGE_SIZE}. */
export function roundUpToPage(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}

/** @internal A whole number in [min, max]; otherwise SHM_INVALID_ARGUMENT. */
export function checkInteger(
  op: string,
  name: string,
  value: unknown,
  min: number,
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: ${name} ${describe(value)} is not a whole number in [${min}, ${max}]; pass one.`,
    );
  }
  return value;
}

/** @internal A multiple of the page size; otherwise SHM_INVALID_ARGUMENT. */
export function checkPageAligned(op: string, name: string, value: number): void {
  if (value % PAGE_SIZE !== 0) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: ${name} ${value} is not a multiple of the page size (${PAGE_SIZE}); ` +
        `round it to a page boundary (e.g. ${Math.floor(value / PAGE_SIZE) * PAGE_SIZE}).`,
    );
  }
}

/** @internal An open file descriptor number; otherwise SHM_INVALID_ARGUMENT. */
export function checkFd(op: string, fd: unknown): number {
  return checkInteger(op, 'fd', fd, 0, 2 ** 31 - 1);
}

/** @internal A boolean or undefined; otherwise SHM_INVALID_ARGUMENT. */
export function checkFlag(op: string, name: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: option ${name} is ${describe(value)}; pass true or false.`,
    );
  }
  return value;
}

/** @internal One of `allowed` (default when undefined); otherwise SHM_INVALID_ARGUMENT. */
export function checkChoice<T extends string>(
  op: string,
  name: string,
  value: unknown,
  allowed: readonly T[],
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: ${name} ${describe(value)} is not one of ${allowed.map((a) => `'${a}'`).join(', ')}.`,
    );
  }
  return value as T;
}

/** @internal An options object (or undefined); otherwise SHM_INVALID_ARGUMENT. */
export function checkOptions<T extends object>(op: string, options: T | undefined): Partial<T> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: options must be an object, got ${describe(options)}.`,
    );
  }
  return options;
}
