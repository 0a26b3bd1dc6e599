import { MigratorError } from '../errors.js';

/** A vmm instance as the migrator knows it. */
export interface VmmRecord {
  id: string;
  address: string;
  version: string;
  vmCount: number;
  lastSeen: Date;
  alive: boolean;
}

const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * The registry of vmm instances. Instances register on start and repeat the
 * call as a heartbeat; one not heard from within `expiryMs` is reported not
 * alive (kept, so its VMs can still be found). State is in memory: after a
 * migrator restart every instance re-registers within one heartbeat.
 */
export class VmmRegistry {
  private readonly records = new Map<string, Omit<VmmRecord, 'alive'>>();

  constructor(
    private readonly expiryMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a registration or heartbeat; returns true when the instance is new. */
  register(entry: { id: string; address: string; version: string; vmCount: number }): boolean {
    if (!ID_PATTERN.test(entry.id)) {
      throw new MigratorError(
        'MIGRATOR_INVALID_ARGUMENT',
        `vmm id "${entry.id}" is invalid: use lower-case letters, digits and dashes (e.g. vmm-a)`,
      );
    }
    if (entry.address === '') {
      throw new MigratorError(
        'MIGRATOR_INVALID_ARGUMENT',
        `vmm ${entry.id} registered without an address`,
      );
    }
    const isNew = !this.records.has(entry.id);
    this.records.set(entry.id, { ...entry, lastSeen: new Date(this.now()) });
    return isNew;
  }

  /** Every known instance, sorted by id. */
  list(): VmmRecord[] {
    return [...this.records.values()]
      .map((r) => this.withLiveness(r))
      .sort((a, b) => a.id.localeCompare(b.id));
  }

  /** One instance; MIGRATOR_VMM_NOT_FOUND if unknown. */
  get(id: string): VmmRecord {
    const r = this.records.get(id);
    if (r === undefined) {
      const known = [...this.records.keys()].sort().join(', ') || 'none';
      throw new MigratorError(
        'MIGRATOR_VMM_NOT_FOUND',
        `no vmm instance "${id}" is registered (known: ${known}); check the id with \`vmctl status\``,
      );
    }
    return this.withLiveness(r);
  }

  private withLiveness(r: Omit<VmmRecord, 'alive'>): VmmRecord {
    return { ...r, alive: this.now() - r.lastSeen.getTime() <= this.expiryMs };
  }
}
