/**
 * Migration capabilities: boolean switches of one migration, named as in
 * QEMU's `qapi/migration.json` (kebab-case), with a registry carrying each
 * one's description, `since` version and default.
 *
 * @packageDocumentation
 */
import { QapiError } from './errors.js';
import { didYouMean } from './suggest.js';

/**
 * Every capability name, in registry (and wire enum) order. This array is the
 * source of truth for {@link MigrationCapability}.
 */
export const MIGRATION_CAPABILITIES = [
  'bypass-shared-memory',
  'postcopy-ram',
  'zero-blocks',
  'events',
  'return-path',
  'pause-before-switchover',
  'auto-converge',
] as const;

/** A migration capability name (QAPI `MigrationCapability`), e.g. `bypass-shared-memory`. */
export type MigrationCapability = (typeof MIGRATION_CAPABILITIES)[number];

/** What the registry knows about one capability. */
export interface CapabilityInfo {
  /** The kebab-case QAPI name. */
  readonly name: MigrationCapability;
  /** One line: what turning it on does. */
  readonly description: string;
  /** Handoff version that introduced it. */
  readonly since: string;
  /** State when the user says nothing. */
  readonly default: boolean;
  /** The closest QEMU capability, for readers who know QEMU (`null` if none). */
  readonly qemu: string | null;
}

/** Capability states, one boolean per capability (a resolved set: nothing is missing). */
export type MigrationCapabilities = { readonly [K in MigrationCapability]: boolean };

/** Capability states the user chose; missing ones take their registry default. */
export type MigrationCapabilityOverrides = Partial<MigrationCapabilities>;

const info = (
  name: MigrationCapability,
  def: boolean,
  qemu: string | null,
  description: string,
): CapabilityInfo => Object.freeze({ name, description, since: '0.1', default: def, qemu });

/**
 * The capability registry, keyed by name. The README table is generated from
 * it (a test keeps the two in sync).
 */
export const CAPABILITY_REGISTRY: { readonly [K in MigrationCapability]: CapabilityInfo } =
  Object.freeze({
    'bypass-shared-memory': info(
      'bypass-shared-memory',
      true,
      'x-ignore-shared',
      'RAM blocks backed by a shared memstore region are handed off by reference (RegionRef) instead of copied; only private blocks and device state are sent.',
    ),
    'postcopy-ram': info(
      'postcopy-ram',
      false,
      'postcopy-ram',
      'The target starts before all RAM has arrived and fetches missing pages on demand while the rest streams in the background.',
    ),
    'zero-blocks': info(
      'zero-blocks',
      true,
      null,
      'Pages never written since the block was created travel as zero runs without being read or scanned.',
    ),
    events: info(
      'events',
      false,
      'events',
      'Emit a MIGRATION event on every status change so coordinators need not poll.',
    ),
    'return-path': info(
      'return-path',
      true,
      'return-path',
      'The target sends acknowledgements and page requests back to the source over the same bidirectional stream.',
    ),
    'pause-before-switchover': info(
      'pause-before-switchover',
      false,
      'pause-before-switchover',
      'After the last pre-copy pass, stop in status pre-switchover and wait for an explicit continue before device state moves.',
    ),
    'auto-converge': info(
      'auto-converge',
      true,
      'auto-converge',
      "Throttle the guest vCPU when pre-copy does not converge (cpu-throttle-initial, then cpu-throttle-increment per pass, or more when the measured dirty rate outruns the link), so a busy guest's copy finishes; on by default (QEMU: off). Off: such a migration fails after max-iterations.",
    ),
  });

/** True when `name` is a known capability name (exact, kebab-case). */
export function isMigrationCapability(name: unknown): name is MigrationCapability {
  return typeof name === 'string' && Object.hasOwn(CAPABILITY_REGISTRY, name);
}

/** Aliases users may type, with the name to use instead (never accepted silently). */
const KNOWN_ALIASES: Readonly<Record<string, MigrationCapability>> = {
  'x-ignore-shared': 'bypass-shared-memory',
  'ignore-shared': 'bypass-shared-memory',
  bypass: 'bypass-shared-memory',
  postcopy: 'postcopy-ram',
};

/**
 * Parses a capability name typed by a user.
 *
 * @param input - the name, e.g. `postcopy-ram`
 * @returns the capability
 * @throws QapiError `QAPI_INVALID_CAPABILITY` for an unknown name, with a hint
 */
export function parseCapability(input: string): MigrationCapability {
  const name = input.trim();
  if (isMigrationCapability(name)) return name;
  const alias = KNOWN_ALIASES[name.toLowerCase()];
  const hint =
    alias !== undefined ? ` Did you mean '${alias}'?` : didYouMean(name, MIGRATION_CAPABILITIES);
  throw new QapiError(
    'QAPI_INVALID_CAPABILITY',
    `unknown migration capability '${input}'.${hint} Known capabilities: ${MIGRATION_CAPABILITIES.join(', ')}.`,
  );
}

const ON = new Set(['on', 'true', 'yes', '1']);
const OFF = new Set(['off', 'false', 'no', '0']);

/**
 * Parses a capability list typed by a user: comma-separated items, each
 * `name` (turn it on), `name=on|off` (also `true|false`, `yes|no`, `1|0`), or
 * `no-name` (turn it off). Whitespace around items is ignored; an empty
 * string is an empty override.
 *
 * @example `parseCapabilitySettings('postcopy-ram, events=off, no-bypass-shared-memory')`
 * @returns the overrides; resolve them with {@link resolveCapabilities}
 * @throws QapiError `QAPI_INVALID_CAPABILITY` for an unknown name, a bad
 *   state, or a capability given twice with different states
 */
export function parseCapabilitySettings(input: string): MigrationCapabilityOverrides {
  const out: Partial<Record<MigrationCapability, boolean>> = {};
  for (const raw of input.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    let name: string;
    let state: boolean;
    const eq = item.indexOf('=');
    if (eq >= 0) {
      name = item.slice(0, eq).trim();
      const value = item
        .slice(eq + 1)
        .trim()
        .toLowerCase();
      if (ON.has(value)) state = true;
      else if (OFF.has(value)) state = false;
      else {
        throw new QapiError(
          'QAPI_INVALID_CAPABILITY',
          `capability '${name}' has state '${item.slice(eq + 1).trim()}': write on or off (e.g. '${name}=on').`,
        );
      }
    } else if (item.startsWith('no-') && !isMigrationCapability(item)) {
      name = item.slice(3);
      state = false;
    } else {
      name = item;
      state = true;
    }
    const cap = parseCapability(name);
    const prior = out[cap];
    if (prior !== undefined && prior !== state) {
      throw new QapiError(
        'QAPI_INVALID_CAPABILITY',
        `capability '${cap}' is turned both on and off in '${input}': give it once.`,
      );
    }
    out[cap] = state;
  }
  return out;
}

/** The default state of every capability (a fresh object). */
export function defaultCapabilities(): MigrationCapabilities {
  const out = {} as Record<MigrationCapability, boolean>;
  for (const name of MIGRATION_CAPABILITIES) out[name] = CAPABILITY_REGISTRY[name].default;
  return out;
}

/**
 * Fills in defaults for capabilities the user did not set. Checks only that
 * each key is a known capability with a boolean state; combinations are
 * checked by `validateMigrationConfig`.
 *
 * @param overrides - the user's choices (e.g. from {@link parseCapabilitySettings} or JSON)
 * @throws QapiError `QAPI_INVALID_CAPABILITY` for an unknown key or a non-boolean state
 */
export function resolveCapabilities(
  overrides: MigrationCapabilityOverrides = {},
): MigrationCapabilities {
  const out = defaultCapabilities() as Record<MigrationCapability, boolean>;
  for (const [key, value] of Object.entries(overrides) as [string, unknown][]) {
    if (value === undefined) continue;
    const cap = parseCapability(key);
    if (typeof value !== 'boolean') {
      throw new QapiError(
        'QAPI_INVALID_CAPABILITY',
        `capability '${cap}' has state ${JSON.stringify(value)}: a capability is true (on) or false (off).`,
      );
    }
    out[cap] = value;
  }
  return out;
}

/** The enabled capabilities of a set, in registry order. */
export function enabledCapabilities(caps: MigrationCapabilities): MigrationCapability[] {
  return MIGRATION_CAPABILITIES.filter((name) => caps[name]);
}

/** A QAPI `MigrationCapabilityStatus` entry, as `query-migrate-capabilities` prints it. */
export interface QapiCapabilityStatus {
  /** The capability name. */
  readonly capability: MigrationCapability;
  /** Whether it is on. */
  readonly state: boolean;
}

/**
 * The QAPI JSON form of a capability set (`query-migrate-capabilities`):
 * one `{capability, state}` entry per capability, in registry order.
 */
export function capabilitiesToQapi(caps: MigrationCapabilities): QapiCapabilityStatus[] {
  return MIGRATION_CAPABILITIES.map((capability) => ({ capability, state: caps[capability] }));
}
