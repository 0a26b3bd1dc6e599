import { describe, expect, it } from 'vitest';
import { BITMAP_ERROR_CODES } from '@handoff/bitmap';
import { MEMSTORE_ERROR_CODES } from '@handoff/memstore';
import type { MigratorErrorCode } from '@handoff/migrator';
import { QAPI_ERROR_CODES } from '@handoff/qapi';
import { SERVICE_ERROR_CODES, STATUS_BY_CODE } from '@handoff/service';
import { SHM_ERROR_CODES } from '@handoff/shm';
import { MIGRATION_ERROR_CODES, SNAPSHOT_ERROR_CODES, VMM_ERROR_CODES } from '@handoff/vmm';

/**
 * The migrator's codes exist only as a type; this record must name every one of them and no
 * other (the typecheck fails otherwise), which makes it the migrator's list here.
 */
const MIGRATOR_CODES: Record<MigratorErrorCode, true> = {
  MIGRATOR_VMM_NOT_FOUND: true,
  MIGRATOR_VMM_UNAVAILABLE: true,
  MIGRATOR_JOB_NOT_FOUND: true,
  MIGRATOR_INVALID_ARGUMENT: true,
  MIGRATOR_VM_NOT_FOUND: true,
  MIGRATOR_VM_BUSY: true,
  MIGRATOR_JOB_FINISHED: true,
  MIGRATOR_JOURNAL_FAILED: true,
  MIGRATOR_UNIMPLEMENTED: true,
  MIGRATOR_CROSS_HOST: true,
  MIGRATOR_OWNERSHIP_CONFLICT: true,
};

/**
 * Every module whose errors can reach a gRPC status, with its code list. Not here: vmctl's
 * `CLI_*` codes (exit statuses of a client, never sent) and the vmm machine's lower-case loader
 * and memory codes (a bad guest image leaves the vmm as VMM_INVALID_GUEST; memory codes mark
 * host-side misuse inside the machine).
 */
const MODULES: [string, readonly string[]][] = [
  ['libs/service', SERVICE_ERROR_CODES],
  ['libs/shm', SHM_ERROR_CODES],
  ['libs/bitmap', BITMAP_ERROR_CODES],
  ['libs/qapi', QAPI_ERROR_CODES],
  ['apps/memstore', MEMSTORE_ERROR_CODES],
  ['apps/vmm', VMM_ERROR_CODES],
  ['apps/vmm migration', MIGRATION_ERROR_CODES],
  ['apps/vmm snapshot', SNAPSHOT_ERROR_CODES],
  ['apps/migrator', Object.keys(MIGRATOR_CODES)],
];

describe('the one error-code table', () => {
  it.each(MODULES)('maps every code of %s to a gRPC status', (_module, codes) => {
    expect(codes.length).toBeGreaterThan(0);
    const missing = codes.filter((c) => STATUS_BY_CODE[c] === undefined);
    expect(missing).toEqual([]);
  });

  it('holds no code that no module has, and no code two modules claim', () => {
    const owners = new Map<string, string[]>();
    for (const [module, codes] of MODULES) {
      for (const c of codes) owners.set(c, [...(owners.get(c) ?? []), module]);
    }
    expect(Object.keys(STATUS_BY_CODE).filter((c) => !owners.has(c))).toEqual([]);
    expect([...owners].filter(([, m]) => m.length > 1)).toEqual([]);
  });
});
