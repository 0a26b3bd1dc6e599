import { Counter, Gauge, Histogram, type Registry } from '@handoff/service';
import type { RegionRow } from './catalog/rows.js';
import type { Memstore } from './memstore.js';
import { statRegionFile } from './regions/files.js';

/** A region's state for the regions gauge: its row state, or `lost` once its file was lost. */
function regionState(row: RegionRow): string {
  return row.lostAt !== null ? 'lost' : row.state;
}

/** A region's lease for the leases gauge: `held`, `fenced` (taken from a holder), or `free`. */
function leaseState(row: RegionRow): 'held' | 'fenced' | 'free' {
  if (row.leaseHolder !== null) return 'held';
  return row.fenced !== null ? 'fenced' : 'free';
}

/**
 * Registers the memstore's gauges on `registry`. Each is read from the catalog when scraped
 * (one pass over the region rows, one over the snapshot rows), never kept by hand: regions by
 * kind and state, bytes reserved (summed sizes) and allocated (each file's blocks, one stat per
 * region, as GetInfo), leases by state, snapshots by kind and whether they are templates.
 */
export function registerMemstoreMetrics(registry: Registry, memstore: Memstore): void {
  // Registered first, so its collect runs before the other two are read: one pass over the rows
  // sets all three.
  new Gauge({
    name: 'handoff_memstore_regions',
    help: 'regions in the catalog, by kind (volatile, persistent) and state (active, sealed, lost)',
    labelNames: ['kind', 'state'],
    registers: [registry],
    collect() {
      if (!memstore.isOpen) return;
      this.reset();
      let reserved = 0;
      let allocated = 0;
      const lease = { held: 0, fenced: 0, free: 0 };
      for (const row of memstore.catalog.listRegions()) {
        this.inc({ kind: row.kind, state: regionState(row) });
        reserved += row.size;
        if (row.lostAt === null) allocated += statRegionFile(row.path)?.allocatedBytes ?? 0;
        if (row.state === 'active') lease[leaseState(row)]++;
      }
      bytes.set({ kind: 'reserved' }, reserved);
      bytes.set({ kind: 'allocated' }, allocated);
      for (const [state, n] of Object.entries(lease)) leases.set({ state }, n);
    },
  });
  const bytes = new Gauge({
    name: 'handoff_memstore_bytes',
    help: 'bytes of all regions: reserved (summed sizes) and allocated (blocks backing the files)',
    labelNames: ['kind'],
    registers: [registry],
  });
  const leases = new Gauge({
    name: 'handoff_memstore_leases',
    help: 'leases of unsealed regions by state: held, fenced (taken from a holder), free',
    labelNames: ['state'],
    registers: [registry],
  });
  new Gauge({
    name: 'handoff_memstore_snapshots',
    help: 'snapshots in the catalog, by kind (bypass, full, imported) and template (true, false)',
    labelNames: ['kind', 'template'],
    registers: [registry],
    collect() {
      if (!memstore.isOpen) return;
      this.reset();
      for (const s of memstore.catalog.snapshots.list()) {
        this.inc({ kind: s.kind, template: String(s.template) });
      }
    },
  });
  registerLazyMetrics(registry, memstore);
}

/**
 * Lazy regions (post-copy across hosts): how many by fill state, pages fetched by kind (demand:
 * a vmm asked; background: the address-order fill) and how long page requests waited.
 */
function registerLazyMetrics(registry: Registry, memstore: Memstore): void {
  new Gauge({
    name: 'handoff_memstore_lazy_regions',
    help: 'lazy regions being filled from another memstore, by state (waiting, filling, paused, complete, failed)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      if (!memstore.isOpen) return;
      this.reset();
      for (const [state, n] of Object.entries(memstore.lazy.counts())) this.set({ state }, n);
    },
  });
  const pages = new Counter({
    name: 'handoff_memstore_lazy_pages_total',
    help: 'pages of lazy regions fetched from their source, by kind (demand, background)',
    labelNames: ['kind'],
    registers: [registry],
  });
  const faults = new Histogram({
    name: 'handoff_memstore_lazy_fault_seconds',
    help: 'how long a page request (FetchPages) of a missing page waited for it to arrive',
    buckets: [50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.25, 1, 5],
    registers: [registry],
  });
  memstore.lazy.observer = {
    pages: (kind, n) => pages.inc({ kind }, n),
    fault: (seconds) => faults.observe(seconds),
  };
}
