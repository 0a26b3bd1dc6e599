import { STATUS_BY_CODE } from '@handoff/service';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { MEMSTORE_ERROR_CODES, MemstoreError } from './errors.js';

describe('MemstoreError', () => {
  it('every code has a gRPC status in the one table', () => {
    const missing = MEMSTORE_ERROR_CODES.filter((c) => STATUS_BY_CODE[c] === undefined);
    expect(missing).toEqual([]);
  });

  it('is recognised by name, with or without a code', () => {
    const e = new MemstoreError('REGION_NOT_FOUND', 'x');
    expect(MemstoreError.is(e)).toBe(true);
    expect(MemstoreError.is(e, 'REGION_NOT_FOUND')).toBe(true);
    expect(MemstoreError.is(e, 'REGION_LOST')).toBe(false);
    expect(MemstoreError.is(new Error('x'))).toBe(false);
  });

  it('normalises SQLite failures to CATALOG_FAILED', () => {
    const db = new Database(':memory:');
    let sqliteErr: unknown;
    try {
      db.exec('SELECT * FROM nowhere');
    } catch (err) {
      sqliteErr = err;
    }
    db.close();
    const e = MemstoreError.from(sqliteErr, 'listing');
    expect(e).toMatchObject({
      code: 'CATALOG_FAILED',
      message: expect.stringMatching(/^listing: /),
    });
  });

  it('normalises errno failures to REGION_IO_FAILED, ENOSPC to REGION_NO_SPACE', () => {
    const io = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    const full = Object.assign(new Error('ENOSPC: no space'), { code: 'ENOSPC' });
    expect(MemstoreError.from(io, 'x')).toMatchObject({ code: 'REGION_IO_FAILED' });
    expect(MemstoreError.from(full, 'x')).toMatchObject({ code: 'REGION_NO_SPACE' });
  });

  it('passes memstore errors and unknown values through', () => {
    const e = new MemstoreError('LEASE_HELD', 'held');
    expect(MemstoreError.from(e, 'x')).toBe(e);
    const other = new TypeError('boom');
    expect(MemstoreError.from(other, 'x')).toBe(other);
  });
});
