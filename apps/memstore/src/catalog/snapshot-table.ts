import type Database from 'better-sqlite3';
import type { SnapshotBlockRow, SnapshotKind, SnapshotRow } from './rows.js';

interface RawSnapshotRow {
  id: string;
  name: string;
  kind: SnapshotKind;
  template: number;
  created_at: number;
  vm_name: string;
  vmm_id: string;
  vm_spec: Buffer;
  state_path: string;
  state_bytes: number;
  state_crc32c: number;
  parent_id: string | null;
}

interface RawBlockRow {
  snapshot_id: string;
  position: number;
  block_id: string;
  guest_base: number;
  size: number;
  region_id: string;
  identity: string;
  owned: number;
  layer_pages: Buffer | null;
}

/** A view of bytes as a Buffer (no copy), as better-sqlite3 binds BLOBs. */
function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function toSnapshotRow(r: RawSnapshotRow): SnapshotRow {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind,
    template: r.template === 1,
    createdAt: r.created_at,
    vmName: r.vm_name,
    vmmId: r.vmm_id,
    vmSpec: new Uint8Array(r.vm_spec),
    statePath: r.state_path,
    stateBytes: r.state_bytes,
    stateCrc32c: r.state_crc32c,
    parentId: r.parent_id,
  };
}

function toBlockRow(r: RawBlockRow): SnapshotBlockRow {
  return {
    snapshotId: r.snapshot_id,
    position: r.position,
    blockId: r.block_id,
    guestBase: r.guest_base,
    size: r.size,
    regionId: r.region_id,
    identity: r.identity,
    owned: r.owned === 1,
    layerPages: r.layer_pages === null ? null : new Uint8Array(r.layer_pages),
  };
}

/**
 * The `snapshots` and `snapshot_blocks` tables (schema version 3; layer bitmaps since 4). Plain statements: callers
 * run them inside `Catalog.transaction` when several must commit together.
 */
export class SnapshotTable {
  private readonly s: ReturnType<typeof prepare>;

  constructor(db: Database.Database) {
    this.s = prepare(db);
  }

  /** Inserts a snapshot and its blocks (call inside a transaction). Throws on a duplicate name. */
  insert(row: SnapshotRow, blocks: readonly SnapshotBlockRow[]): void {
    this.s.insert.run({
      id: row.id,
      name: row.name,
      kind: row.kind,
      template: row.template ? 1 : 0,
      created_at: row.createdAt,
      vm_name: row.vmName,
      vmm_id: row.vmmId,
      vm_spec: bufferOf(row.vmSpec),
      state_path: row.statePath,
      state_bytes: row.stateBytes,
      state_crc32c: row.stateCrc32c,
      parent_id: row.parentId,
    });
    for (const b of blocks) {
      this.s.insertBlock.run({
        snapshot_id: b.snapshotId,
        position: b.position,
        block_id: b.blockId,
        guest_base: b.guestBase,
        size: b.size,
        region_id: b.regionId,
        identity: b.identity,
        owned: b.owned ? 1 : 0,
        layer_pages: b.layerPages === null ? null : bufferOf(b.layerPages),
      });
    }
  }

  getById(id: string): SnapshotRow | undefined {
    const r = this.s.getById.get(id) as RawSnapshotRow | undefined;
    return r === undefined ? undefined : toSnapshotRow(r);
  }

  getByName(name: string): SnapshotRow | undefined {
    const r = this.s.getByName.get(name) as RawSnapshotRow | undefined;
    return r === undefined ? undefined : toSnapshotRow(r);
  }

  /** Every snapshot (or only templates), oldest first. */
  list(templatesOnly = false): SnapshotRow[] {
    const rows = (
      templatesOnly ? this.s.listTemplates.all() : this.s.list.all()
    ) as RawSnapshotRow[];
    return rows.map(toSnapshotRow);
  }

  /** The blocks of one snapshot, in block order. */
  blocksOf(snapshotId: string): SnapshotBlockRow[] {
    return (this.s.blocksOf.all(snapshotId) as RawBlockRow[]).map(toBlockRow);
  }

  /** Every block of every snapshot (one query for a whole listing). */
  allBlocks(): SnapshotBlockRow[] {
    return (this.s.allBlocks.all() as RawBlockRow[]).map(toBlockRow);
  }

  /** The blocks (of any snapshot) that name a region. */
  blocksOfRegion(regionId: string): SnapshotBlockRow[] {
    return (this.s.blocksOfRegion.all(regionId) as RawBlockRow[]).map(toBlockRow);
  }

  /** Snapshots that layer on `id` (name `id` as their parent). */
  childrenOf(id: string): SnapshotRow[] {
    return (this.s.childrenOf.all(id) as RawSnapshotRow[]).map(toSnapshotRow);
  }

  /** Deletes a snapshot and its block rows; false if absent. */
  delete(id: string): boolean {
    return this.s.delete.run(id).changes === 1;
  }
}

function prepare(db: Database.Database) {
  return {
    insert: db.prepare(
      `INSERT INTO snapshots (id, name, kind, template, created_at, vm_name, vmm_id, vm_spec,
                              state_path, state_bytes, state_crc32c, parent_id)
       VALUES (@id, @name, @kind, @template, @created_at, @vm_name, @vmm_id, @vm_spec,
               @state_path, @state_bytes, @state_crc32c, @parent_id)`,
    ),
    insertBlock: db.prepare(
      `INSERT INTO snapshot_blocks (snapshot_id, position, block_id, guest_base, size, region_id,
                                    identity, owned, layer_pages)
       VALUES (@snapshot_id, @position, @block_id, @guest_base, @size, @region_id, @identity,
               @owned, @layer_pages)`,
    ),
    getById: db.prepare('SELECT * FROM snapshots WHERE id = ?'),
    getByName: db.prepare('SELECT * FROM snapshots WHERE name = ?'),
    list: db.prepare('SELECT * FROM snapshots ORDER BY created_at, name'),
    listTemplates: db.prepare(
      'SELECT * FROM snapshots WHERE template = 1 ORDER BY created_at, name',
    ),
    blocksOf: db.prepare('SELECT * FROM snapshot_blocks WHERE snapshot_id = ? ORDER BY position'),
    allBlocks: db.prepare('SELECT * FROM snapshot_blocks ORDER BY snapshot_id, position'),
    blocksOfRegion: db.prepare(
      'SELECT * FROM snapshot_blocks WHERE region_id = ? ORDER BY snapshot_id, position',
    ),
    childrenOf: db.prepare('SELECT * FROM snapshots WHERE parent_id = ? ORDER BY created_at, name'),
    delete: db.prepare('DELETE FROM snapshots WHERE id = ?'),
  };
}
