import { describe, expect, it } from 'vitest';

import { QAPI_ERROR_CODES, QapiError, isQapiError, type QapiIssue } from './errors.js';

describe('QapiError', () => {
  it('carries a stable code, its name and the message', () => {
    const err = new QapiError('QAPI_INVALID_PARAMETER', 'bad value: do this instead');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('QapiError');
    expect(err.code).toBe('QAPI_INVALID_PARAMETER');
    expect(err.message).toBe('bad value: do this instead');
    expect(err.issues).toEqual([]);
    expect(err.cause).toBeUndefined();
  });

  it('keeps the cause and a frozen copy of the issues', () => {
    const cause = new Error('inner');
    const issue: QapiIssue = {
      severity: 'error',
      code: 'QAPI_INCOMPATIBLE',
      rule: 'postcopy-needs-return-path',
      names: ['postcopy-ram', 'return-path'],
      message: 'm',
    };
    const issues = [issue];
    const err = new QapiError('QAPI_INCOMPATIBLE', 'x', { cause, issues });
    issues.push(issue);
    expect(err.cause).toBe(cause);
    expect(err.issues).toEqual([issue]);
    expect(Object.isFrozen(err.issues)).toBe(true);
  });

  it('codes are upper-snake with the QAPI_ prefix (the @handoff/service convention)', () => {
    for (const code of QAPI_ERROR_CODES) expect(code).toMatch(/^QAPI(_[A-Z0-9]+)+$/);
  });
});

describe('isQapiError', () => {
  it('recognises QapiError instances', () => {
    expect(isQapiError(new QapiError('QAPI_ILLEGAL_TRANSITION', 'x'))).toBe(true);
  });

  it('recognises a QapiError from another copy of the package by name and code', () => {
    const foreign = Object.assign(new Error('x'), { name: 'QapiError', code: 'QAPI_INCOMPATIBLE' });
    expect(isQapiError(foreign)).toBe(true);
  });

  it('rejects other errors, unknown codes and non-errors', () => {
    expect(isQapiError(new Error('x'))).toBe(false);
    expect(isQapiError(Object.assign(new Error('x'), { name: 'QapiError', code: 'NOPE' }))).toBe(
      false,
    );
    expect(isQapiError({ name: 'QapiError', code: 'QAPI_INCOMPATIBLE', message: 'x' })).toBe(false);
    expect(isQapiError(undefined)).toBe(false);
  });
});
