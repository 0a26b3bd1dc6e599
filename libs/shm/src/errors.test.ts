import { closeSync, mkdirSync, openSync, rmdirSync } from 'node:fs';

import { afterAll, describe, expect, it } from 'vitest';

import {
  PAGE_SIZE,
  SHM_ERROR_CODES,
  ShmError,
  addSeals,
  createMemfd,
  fallocate,
  getSeals,
  isShmError,
  mapFd,
  mapFile,
  type MapFileOptions,
  type ShmErrorCode,
} from './index.js';
import { expectShmError, removeScratchFiles, scratchFile, scratchPath } from './testing/helpers.js';

afterAll(removeScratchFiles);

const SIZE = 4 * PAGE_SIZE;

describe('ShmError', () => {
  it('carries a stable code, errno and syscall, and is recognised by name', () => {
    const err = expectShmError(() => mapFile(scratchPath('missing')), 'SHM_NOT_FOUND');
    expect(err).toBeInstanceOf(ShmError);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('ShmError');
    expect(err.errno).toBe('ENOENT');
    expect(err.syscall).toBe('open');
    expect(err.message).toMatch(/mapFile\(\/dev\/shm\/.*\): open failed with ENOENT/);
    expect(err.message).toMatch(/create: true/);

    const lookAlike = { name: 'ShmError', code: 'SHM_CLOSED', message: 'x' };
    expect(isShmError(lookAlike)).toBe(true);
    expect(isShmError({ name: 'ShmError', code: 'NOPE' })).toBe(false);
    expect(isShmError(new Error('x'))).toBe(false);
    expect(ShmError.from(err)).toBe(err);
    expect(ShmError.from(lookAlike).code).toBe('SHM_CLOSED');
    const wrapped = ShmError.from(new RangeError('boom'));
    expect(wrapped.code).toBe('SHM_SYSCALL_FAILED');
    expect(wrapped.cause).toBeInstanceOf(RangeError);
    expect(new Set(SHM_ERROR_CODES).size).toBe(SHM_ERROR_CODES.length);
  });
});

describe('mapFile and mapFd reject bad arguments before mapping', () => {
  const cases: [string, () => unknown, ShmErrorCode][] = [
    ['an empty path', () => mapFile(''), 'SHM_INVALID_ARGUMENT'],
    ['a path with NUL', () => mapFile('/dev/shm/a\0b'), 'SHM_INVALID_ARGUMENT'],
    ['a non-object options', () => mapFile('/x', 5 as MapFileOptions), 'SHM_INVALID_ARGUMENT'],
    [
      'an unknown sharing',
      () => mapFile('/x', { sharing: 'both' } as unknown as MapFileOptions),
      'SHM_INVALID_ARGUMENT',
    ],
    [
      'an unknown buffer kind',
      () => mapFile('/x', { bufferKind: 'huge' } as unknown as MapFileOptions),
      'SHM_INVALID_ARGUMENT',
    ],
    ['an unaligned offset', () => mapFile('/x', { offset: 100 }), 'SHM_INVALID_ARGUMENT'],
    ['a negative offset', () => mapFile('/x', { offset: -PAGE_SIZE }), 'SHM_INVALID_ARGUMENT'],
    ['a fractional length', () => mapFile('/x', { length: 1.5 }), 'SHM_INVALID_ARGUMENT'],
    ['a zero length', () => mapFile('/x', { length: 0 }), 'SHM_INVALID_ARGUMENT'],
    ['create without size', () => mapFile('/x', { create: true }), 'SHM_INVALID_ARGUMENT'],
    ['exclusive without create', () => mapFile('/x', { exclusive: true }), 'SHM_INVALID_ARGUMENT'],
    [
      'a private mapping that would size the file',
      () => mapFile('/x', { sharing: 'private', size: SIZE }),
      'SHM_INVALID_ARGUMENT',
    ],
    [
      'a private mapping that would populate (copy) every page',
      () => mapFile('/x', { sharing: 'private', populate: true }),
      'SHM_INVALID_ARGUMENT',
    ],
    [
      'a private mapping that would create the file',
      () => mapFile('/x', { sharing: 'private', create: true }),
      'SHM_INVALID_ARGUMENT',
    ],
    [
      'a mode that is not a permission',
      () => mapFile('/x', { mode: 0o70000 }),
      'SHM_INVALID_ARGUMENT',
    ],
    [
      'a non-boolean flag',
      () => mapFile('/x', { populate: 1 as unknown as boolean }),
      'SHM_INVALID_ARGUMENT',
    ],
    ['a negative fd', () => mapFd(-1), 'SHM_INVALID_ARGUMENT'],
    ['a non-integer fd', () => mapFd(3.5), 'SHM_INVALID_ARGUMENT'],
    ['a closed fd', () => mapFd(987_654), 'SHM_INVALID_ARGUMENT'],
  ];
  it.each(cases)('%s', (_what, call, code) => {
    expectShmError(call, code);
  });
});

describe('mapFile reports file problems with the right code', () => {
  it('an existing file with exclusive create: SHM_ALREADY_EXISTS', () => {
    const path = scratchFile('exists', SIZE);
    const err = expectShmError(
      () => mapFile(path, { create: true, exclusive: true, size: SIZE }),
      'SHM_ALREADY_EXISTS',
    );
    expect(err.errno).toBe('EEXIST');
  });

  it('a directory: SHM_OPEN_FAILED', () => {
    const dir = scratchPath('dir');
    mkdirSync(dir);
    try {
      expect(expectShmError(() => mapFile(dir), 'SHM_OPEN_FAILED').errno).toBe('EISDIR');
    } finally {
      rmdirSync(dir);
    }
  });

  it('an empty file, or a range past its end (SIGBUS territory): SHM_OUT_OF_RANGE', () => {
    const empty = scratchFile('empty', 0);
    expect(expectShmError(() => mapFile(empty), 'SHM_OUT_OF_RANGE').message).toMatch(/size/);
    const path = scratchFile('short', SIZE);
    expectShmError(() => mapFile(path, { length: SIZE + 1 }), 'SHM_OUT_OF_RANGE');
    expectShmError(() => mapFile(path, { offset: SIZE }), 'SHM_OUT_OF_RANGE');
    expectShmError(() => mapFile(path, { offset: PAGE_SIZE, length: SIZE }), 'SHM_OUT_OF_RANGE');
  });

  it('a size below the file size (would shrink it): SHM_INVALID_ARGUMENT', () => {
    const path = scratchFile('shrink', SIZE);
    expectShmError(() => mapFile(path, { size: PAGE_SIZE }), 'SHM_INVALID_ARGUMENT');
  });

  it('a read-only fd for a shared mapping: SHM_PERMISSION_DENIED', () => {
    const path = scratchFile('rdonly', SIZE);
    const fd = openSync(path, 'r');
    try {
      const err = expectShmError(() => mapFd(fd), 'SHM_PERMISSION_DENIED');
      expect(err.errno).toBe('EACCES');
      expect(err.syscall).toBe('mmap');
      mapFd(fd, { sharing: 'private' }).close();
    } finally {
      closeSync(fd);
    }
  });

  it('a failed exclusive create leaves no file behind', () => {
    const path = scratchPath('cleanup');
    expectShmError(
      () => mapFile(path, { create: true, exclusive: true, size: SIZE, length: 2 * SIZE }),
      'SHM_OUT_OF_RANGE',
    );
    expectShmError(() => mapFile(path), 'SHM_NOT_FOUND');
  });
});

describe('Mapping methods check their ranges', () => {
  it('throw SHM_OUT_OF_RANGE or SHM_INVALID_ARGUMENT before calling the kernel', () => {
    const m = mapFile(scratchFile('ranges', SIZE));
    try {
      expectShmError(() => m.advise('dontneed', 0, SIZE + PAGE_SIZE), 'SHM_OUT_OF_RANGE');
      expectShmError(() => m.advise('dontneed', SIZE + PAGE_SIZE), 'SHM_OUT_OF_RANGE');
      expectShmError(() => m.advise('dontneed', 10), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => m.advise('dontneed', 0, 100), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => m.advise('dontneed', 0, -1), 'SHM_OUT_OF_RANGE');
      expectShmError(() => m.advise('dontneed', -PAGE_SIZE), 'SHM_OUT_OF_RANGE');
      expectShmError(() => m.advise('dontneed', 0.5), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => m.advise('forget' as unknown as 'dontneed'), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => m.sync(1), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => m.residentPages(PAGE_SIZE + 1), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => m.residency(0, SIZE, new Uint8Array(2)), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => m.bytes(0, SIZE + 1), 'SHM_OUT_OF_RANGE');
      expect(m.bytes(SIZE, 0).length).toBe(0);
    } finally {
      m.close();
    }
  });
});

describe('memfd functions', () => {
  it('reject bad names, seals and ranges', () => {
    expectShmError(() => createMemfd('x'.repeat(250)), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => createMemfd('a\0b'), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => createMemfd('x', { size: -1 }), 'SHM_INVALID_ARGUMENT');
    const fd = createMemfd('handoff-test-errors', { size: SIZE });
    try {
      expectShmError(() => addSeals(fd, ['glue' as unknown as 'seal']), 'SHM_INVALID_ARGUMENT');
      // Not created with allowSealing: the kernel pre-seals it with F_SEAL_SEAL.
      expect(getSeals(fd)).toEqual(['seal']);
      expect(expectShmError(() => addSeals(fd, ['grow']), 'SHM_PERMISSION_DENIED').errno).toBe(
        'EPERM',
      );
      expectShmError(() => fallocate(fd, 0, 0), 'SHM_INVALID_ARGUMENT');
      expectShmError(() => fallocate(fd, -1, 10), 'SHM_INVALID_ARGUMENT');
    } finally {
      closeSync(fd);
    }
    expectShmError(() => getSeals(987_654), 'SHM_INVALID_ARGUMENT');
  });
});
