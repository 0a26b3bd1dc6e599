/**
 * The catalog's schema, as an ordered list of migrations. Migration `i`
 * takes the database from `user_version = i` to `i + 1`; a new schema version
 * is a new entry at the end (never edit a shipped one).
 */

/** One schema step: SQL run inside the migration transaction. */
export interface Migration {
  /** What the step adds, for the start-up log. */
  readonly description: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    description: 'regions, clones and catalog identity',
    sql: `
      -- Key/value facts about this catalog (catalog_id: names this catalog's region files).
      CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;

      CREATE TABLE regions (
        id               TEXT PRIMARY KEY,            -- UUID, never reused
        name             TEXT NOT NULL UNIQUE,        -- user-chosen, validated
        kind             TEXT NOT NULL CHECK (kind IN ('volatile', 'persistent')),
        -- creating: row committed, file maybe not yet (rolled back at start-up)
        state            TEXT NOT NULL CHECK (state IN ('creating', 'active', 'sealed')),
        size             INTEGER NOT NULL CHECK (size > 0 AND size % 4096 = 0),
        path             TEXT NOT NULL UNIQUE,        -- absolute path of the backing file
        identity         TEXT NOT NULL,               -- random per file creation
        created_at       INTEGER NOT NULL,            -- ms since the Unix epoch
        parent_id        TEXT,                        -- template this region derives from
        lease_holder     TEXT,                        -- NULL: not leased
        lease_epoch      INTEGER NOT NULL DEFAULT 0,  -- last granted epoch; kept on release
        lease_granted_at INTEGER,
        sealed_at        INTEGER,
        lost_at          INTEGER,                     -- set when the file was found missing
        CHECK (lease_holder IS NULL OR state = 'active')
      ) STRICT;

      CREATE TABLE clones (
        template_id TEXT NOT NULL REFERENCES regions (id) ON DELETE RESTRICT,
        holder      TEXT NOT NULL,
        attached_at INTEGER NOT NULL,
        PRIMARY KEY (template_id, holder)
      ) STRICT;
    `,
  },
  {
    description: 'lease-holder processes and fenced leases',
    sql: `
      -- The process behind each vmm id's lease holders ("<vmm-id>/<vm>"), recorded when the vmm
      -- opened its session on the lease channel, so memstore can judge holders after its own
      -- restart too. One row per vmm id: a new session of another process replaces it.
      CREATE TABLE holder_processes (
        vmm_id     TEXT PRIMARY KEY,
        pid        INTEGER NOT NULL CHECK (pid >= 0),  -- 0: in a pid namespace memstore cannot see
        start_time INTEGER NOT NULL CHECK (start_time >= 0), -- /proc/<pid>/stat field 22; 0 when pid is 0
        boot_id    TEXT NOT NULL,                      -- /proc/sys/kernel/random/boot_id then
        instance   TEXT NOT NULL,                      -- random per vmm process (its hello)
        opened_at  INTEGER NOT NULL,                   -- ms since the Unix epoch
        gone_at    INTEGER                             -- when found gone (its leases fenced)
      ) STRICT;

      -- The last lease memstore fenced on the region (holder gone, or an operator), cleared when
      -- the region is leased again.
      ALTER TABLE regions ADD COLUMN fenced_holder TEXT;
      ALTER TABLE regions ADD COLUMN fenced_epoch INTEGER;
      ALTER TABLE regions ADD COLUMN fenced_at INTEGER;
      ALTER TABLE regions ADD COLUMN fenced_reason TEXT
        CHECK (fenced_reason IS NULL OR fenced_reason IN ('holder-gone', 'operator'));
    `,
  },
  {
    description: 'snapshots and their blocks',
    sql: `
      -- A snapshot: a VM's spec and device state (a file in the persistent directory, checked by
      -- its length and CRC-32C) plus one sealed region per RAM block (snapshot_blocks).
      CREATE TABLE snapshots (
        id            TEXT PRIMARY KEY,             -- UUID, never reused
        name          TEXT NOT NULL UNIQUE,         -- region naming rules
        kind          TEXT NOT NULL CHECK (kind IN ('bypass', 'full', 'imported')),
        template      INTEGER NOT NULL CHECK (template IN (0, 1)),
        created_at    INTEGER NOT NULL,             -- ms since the Unix epoch
        vm_name       TEXT NOT NULL,
        vmm_id        TEXT NOT NULL,                -- '' for an imported snapshot
        vm_spec       BLOB NOT NULL,                -- handoff.vmm.v1.VmSpec, opaque here
        state_path    TEXT NOT NULL UNIQUE,         -- the device-state file
        state_bytes   INTEGER NOT NULL CHECK (state_bytes >= 0),
        state_crc32c  INTEGER NOT NULL CHECK (state_crc32c BETWEEN 0 AND 4294967295),
        parent_id     TEXT REFERENCES snapshots (id) ON DELETE RESTRICT -- chained templates
      ) STRICT;

      -- One row per RAM block, in the VM's block order. A region is pinned by every snapshot
      -- that names it and deleted with the one that owns it.
      CREATE TABLE snapshot_blocks (
        snapshot_id TEXT NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
        position    INTEGER NOT NULL CHECK (position >= 0),
        block_id    TEXT NOT NULL,
        guest_base  INTEGER NOT NULL CHECK (guest_base >= 0 AND guest_base % 4096 = 0),
        size        INTEGER NOT NULL CHECK (size > 0 AND size % 4096 = 0),
        region_id   TEXT NOT NULL REFERENCES regions (id) ON DELETE RESTRICT,
        identity    TEXT NOT NULL,                  -- the region's identity at the save
        owned       INTEGER NOT NULL CHECK (owned IN (0, 1)),
        PRIMARY KEY (snapshot_id, position),
        UNIQUE (snapshot_id, block_id)
      ) STRICT;
      CREATE INDEX snapshot_blocks_by_region ON snapshot_blocks (region_id);
    `,
  },
  {
    description: 'layer bitmaps of snapshot blocks (chained snapshots)',
    sql: `
      -- For a block of a layer (a snapshot with a parent_id): the pages its region holds, one
      -- bit per page of the block, least significant bit first (ceil(pages / 8) bytes); every
      -- other page is the parent's block's. NULL for a standalone snapshot's block, whose region
      -- holds the whole block. Rows written before this step are standalone (NULL).
      ALTER TABLE snapshot_blocks ADD COLUMN layer_pages BLOB;
    `,
  },
  {
    description: 'lazy regions and page sources (post-copy across hosts)',
    sql: `
      -- Target host: a region filled from a region of another memstore (apps/memstore/LAZY.md).
      -- Kept while the fill runs and, once complete, until the next start (which drops it after
      -- the source has been told). The present map file lives beside the region's file.
      CREATE TABLE lazy_regions (
        region_id        TEXT PRIMARY KEY REFERENCES regions (id) ON DELETE CASCADE,
        source_memstore  TEXT NOT NULL,               -- host:port of the source memstore
        source_region_id TEXT NOT NULL,
        source_identity  TEXT NOT NULL,
        source_size      INTEGER NOT NULL CHECK (source_size > 0),
        source_epoch     INTEGER NOT NULL CHECK (source_epoch >= 0),
        source_id        TEXT NOT NULL,               -- the page source on the source memstore
        state            TEXT NOT NULL
          CHECK (state IN ('waiting', 'filling', 'paused', 'complete', 'failed')),
        present_path     TEXT NOT NULL,
        started_at       INTEGER,
        completed_at     INTEGER,
        source_closed    INTEGER NOT NULL DEFAULT 0 CHECK (source_closed IN (0, 1)),
        error            TEXT NOT NULL DEFAULT ''
      ) STRICT;

      -- Source host: a reader (another memstore) of one region. Claimed: the page source holds
      -- the region's writer lease (holder '<reader>/lazy/<id>') at claimed_epoch.
      CREATE TABLE page_sources (
        id            TEXT PRIMARY KEY,
        region_id     TEXT NOT NULL REFERENCES regions (id) ON DELETE CASCADE,
        reader        TEXT NOT NULL,
        opened_at     INTEGER NOT NULL,
        claimed_epoch INTEGER,
        UNIQUE (region_id, reader)
      ) STRICT;
    `,
  },
];

/** The schema version this build writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;
