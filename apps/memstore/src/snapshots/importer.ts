import type { Logger } from '@handoff/service';
import { randomUUID } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Catalog } from '../catalog/catalog.js';
import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import type { RegionStore } from '../regions/region-store.js';
import { unsealFileMode, type Templates } from '../templates/templates.js';
import { ownedBlockRows } from './block-rows.js';
import { PAGE_BYTES, type ExportHeader } from './export-format.js';
import { SnapshotFileParser, type ParsedSection } from './export-parser.js';
import { stateFileName, validateSnapshotName } from './naming.js';
import type { Snapshot } from './snapshot.js';
import type { SnapshotStore } from './snapshot-store.js';
import { removeStateFile, writeStateFile } from './state-file.js';

/** What an import needs of the memstore. */
export interface ImportDeps {
  readonly catalog: Catalog;
  readonly regions: RegionStore;
  readonly templates: Templates;
  readonly snapshots: SnapshotStore;
  readonly maxRegionSize: number;
  readonly logger: Logger;
}

/** How the importing caller names the snapshot. */
export interface ImportStart {
  /** '' keeps the name in the file. */
  readonly name: string;
  /** Also mark it a template. */
  readonly template: boolean;
}

/**
 * One ImportSnapshot: bytes pushed in order, parsed as hostile input (SnapshotFileParser), each
 * checked run written into regions of the snapshot's own (persistent), then — once the trailer
 * checked out — the regions flushed, the device state written, and in one transaction the
 * regions committed, sealed and the snapshot recorded (kind imported, every region owned).
 *
 * Until that commit the regions are 'creating' rows, invisible to clients: a refused or
 * abandoned import removes them, its files and its state file ({@link abort}); a crash leaves
 * them to start-up, which rolls 'creating' rows back and removes the state file without a row.
 */
export class SnapshotImport {
  private readonly parser: SnapshotFileParser;
  private readonly id = randomUUID();
  private header: ExportHeader | undefined;
  private name = '';
  private deviceState: Uint8Array | undefined;
  private readonly pending: RegionRow[] = [];
  private readonly files: FileHandle[] = [];
  private statePath: string | undefined;
  private dataBytes = 0;

  constructor(
    private readonly deps: ImportDeps,
    private readonly start: ImportStart,
  ) {
    if (start.name !== '') validateSnapshotName(start.name);
    this.parser = new SnapshotFileParser({ maxBlockSize: deps.maxRegionSize });
  }

  /** Feeds the next bytes of the file. SNAPSHOT_FORMAT, SNAPSHOT_EXISTS, region errors. */
  async push(chunk: Uint8Array): Promise<void> {
    for (const section of this.parser.push(chunk)) await this.apply(section);
  }

  /** Ends the file: checks it is complete, then records the snapshot. Call abort() if this throws. */
  async finish(): Promise<Snapshot> {
    this.parser.finish();
    const header = this.header!;
    for (const f of this.files) await f.datasync();
    await this.closeFiles();
    const statePath = join(
      this.deps.snapshots.stateDir,
      stateFileName(this.deps.catalog.catalogId, this.id),
    );
    writeStateFile(statePath, this.deviceState!);
    this.statePath = statePath;
    failpoint('import-after-regions');
    const sealed: string[] = [];
    try {
      this.deps.catalog.transaction(() => {
        this.deps.snapshots.assertNameFree(this.name);
        const rows = this.pending.map((r) => {
          if (!this.deps.catalog.markActive(r.id))
            throw new Error(`internal: region ${r.id} is not pending`);
          const row = this.deps.templates.sealWithin(r.id, undefined);
          sealed.push(row.path);
          return row;
        });
        this.deps.snapshots.insertRecord({
          row: {
            id: this.id,
            name: this.name,
            kind: 'imported',
            template: header.template || this.start.template,
            createdAt: header.createdAt,
            vmName: header.vmName,
            vmmId: '',
            vmSpec: header.vmSpec,
            statePath,
            stateBytes: header.deviceStateBytes,
            stateCrc32c: header.deviceStateCrc32c,
            parentId: null,
          },
          blocks: ownedBlockRows(this.id, header.blocks, rows),
        });
      });
    } catch (err) {
      for (const p of sealed) unsealFileMode(p);
      throw err;
    }
    this.pending.length = 0;
    this.statePath = undefined;
    this.deps.logger.info(
      {
        snapshot: this.id,
        name: this.name,
        blocks: header.blocks.length,
        dataBytes: this.dataBytes,
      },
      'snapshot imported',
    );
    return this.deps.snapshots.get({ id: this.id }).snapshot;
  }

  /** Leaves nothing behind: closes the files, removes the regions and the state file. Idempotent. */
  async abort(): Promise<void> {
    await this.closeFiles();
    for (const r of this.pending.splice(0)) this.deps.regions.discardPending(r);
    if (this.statePath !== undefined) removeStateFile(this.statePath);
    this.statePath = undefined;
  }

  private async apply(section: ParsedSection): Promise<void> {
    switch (section.type) {
      case 'header':
        await this.begin(section.header);
        return;
      case 'deviceState':
        this.deviceState = section.bytes.slice();
        return;
      case 'run': {
        const { data } = section;
        let done = 0;
        while (done < data.length) {
          const { bytesWritten } = await this.files[section.block]!.write(
            data,
            done,
            data.length - done,
            section.firstPage * PAGE_BYTES + done,
          );
          done += bytesWritten;
        }
        this.dataBytes += data.length;
        return;
      }
      case 'end':
        return;
    }
  }

  /** The header is checked: claim the name, make a pending region per block. */
  private async begin(header: ExportHeader): Promise<void> {
    this.header = header;
    this.name = this.start.name !== '' ? this.start.name : header.name;
    this.deps.snapshots.assertNameFree(this.name);
    for (const [i, b] of header.blocks.entries()) {
      const row = this.deps.regions.createPending({
        name: `${this.name.slice(0, 45)}.b${i}-${this.id.slice(0, 8)}`,
        size: b.size,
        kind: 'persistent',
      });
      this.pending.push(row);
      try {
        this.files.push(await open(row.path, 'r+'));
      } catch (err) {
        throw MemstoreError.from(err, `opening the new region file ${row.path}`);
      }
    }
  }

  private async closeFiles(): Promise<void> {
    for (const f of this.files.splice(0)) await f.close().catch(() => undefined);
  }
}
