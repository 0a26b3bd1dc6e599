/**
 * A machine's device state as bytes: {@link encodeDeviceState} on save, {@link decodeDeviceState}
 * on restore, {@link inspectDeviceState} for tools. The bytes are a container (container.ts)
 * whose sections (sections.ts) carry UTF-8 JSON of each component's plain-data state model,
 * checked by a per-section schema before anything reaches a device.
 *
 * The same bytes travel in the migration stream (`DeviceState.container`) and in snapshot files;
 * this module neither knows nor cares which.
 *
 * @packageDocumentation
 */

import type { MachineState } from '../machine/state.js';
import {
  CONTAINER_VERSION_MAJOR,
  CONTAINER_VERSION_MINOR,
  decodeContainer,
  encodeContainer,
  type ContainerEntry,
  type ContainerHeader,
  type ContainerSection,
} from './container.js';
import { SnapshotError, describe } from './errors.js';
import { SchemaViolation } from './schemas/check.js';
import {
  MACHINE_SECTIONS,
  findSection,
  type MachineStateDraft,
  type SectionSpec,
} from './sections.js';

/**
 * An extra section written after the machine's own: always optional, so readers that do not
 * know it skip it. Its data must survive `JSON.stringify`.
 */
export interface ExtraSection {
  /** Section name (see FORMAT.md); must not be one of the machine's sections. */
  readonly name: string;
  /** The section's own version, ≥ 1. */
  readonly version: number;
  /** JSON-serialisable data. */
  readonly data: unknown;
}

/** An optional section the reader did not know and skipped. */
export interface SkippedSection {
  readonly name: string;
  readonly version: number;
  readonly bodyLength: number;
}

/** Result of {@link decodeDeviceState}. */
export interface DecodedDeviceState {
  /** The validated machine state, ready for `Machine.restore`. */
  readonly state: MachineState;
  /** Optional sections this build does not know, in container order. */
  readonly skipped: readonly SkippedSection[];
  /** Format version the container was written with. */
  readonly format: { readonly major: number; readonly minor: number };
}

/** One entry of the section table, as {@link inspectDeviceState} reports it. */
export interface SectionInfo {
  readonly name: string;
  readonly version: number;
  /** The writer marked the section optional. */
  readonly optional: boolean;
  /** Offset of the body in the container, and its length in bytes. */
  readonly bodyOffset: number;
  readonly bodyLength: number;
  /** Versions of this section this build reads, or null when it does not know the section. */
  readonly readable: { readonly min: number; readonly max: number } | null;
}

/** Result of {@link inspectDeviceState}. */
export interface DeviceStateInfo {
  readonly header: ContainerHeader;
  readonly sections: readonly SectionInfo[];
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Encodes a machine's device state. Every section is checked by the same schema the reader
 * uses, so a container that this function writes always loads.
 *
 * @param state - from `Machine.save()`
 * @param extra - optional sections to carry along (e.g. data a newer reader understands)
 * @throws SnapshotError `SNAPSHOT_INVALID_STATE` if the state breaks a section schema (a device's
 *   model changed without its schema) or extra data is not JSON; `SNAPSHOT_MALFORMED` for a bad
 *   or clashing extra section name; `SNAPSHOT_TOO_LARGE` when a section or the whole exceeds
 *   its limit
 */
export function encodeDeviceState(
  state: MachineState,
  extra: readonly ExtraSection[] = [],
): Uint8Array {
  const sections: ContainerSection[] = [];
  for (const spec of MACHINE_SECTIONS) {
    if (spec.optional && spec.needed !== undefined && !spec.needed(state)) continue;
    const model = checked(spec, spec.version, (s: MachineState) => spec.save(s), state, 'encode');
    const body = utf8Encoder.encode(JSON.stringify(model));
    if (body.length > spec.maxBodyBytes) throw bodyTooLarge(spec, body.length, 'encode');
    sections.push({ name: spec.name, version: spec.version, optional: spec.optional, body });
  }
  for (const e of extra) {
    if (typeof e.name === 'string' && findSection(e.name) !== undefined) {
      throw new SnapshotError(
        'SNAPSHOT_MALFORMED',
        `refusing to write extra section '${e.name}': the machine writes a section of that name. ` +
          `Pick another name.`,
        { section: e.name },
      );
    }
    let json: string | undefined;
    try {
      json = JSON.stringify(e.data);
    } catch {
      json = undefined;
    }
    if (json === undefined) {
      throw new SnapshotError(
        'SNAPSHOT_INVALID_STATE',
        `refusing to write extra section '${String(e.name)}': its data (${describe(e.data)}) is not ` +
          `JSON-serialisable. Pass plain data (no bigint, functions or cycles).`,
        { section: String(e.name) },
      );
    }
    sections.push({
      name: e.name,
      version: e.version,
      optional: true,
      body: utf8Encoder.encode(json),
    });
  }
  return encodeContainer(sections);
}

/**
 * Decodes and validates device state. Nothing reaches the result unchecked: the container is
 * validated first (size, magic, version, lengths, CRC, section table), then the section table
 * against the sections this build knows, and only then each body (UTF-8, JSON, schema).
 *
 * @param bytes - untrusted container bytes (e.g. `DeviceState.container` or a snapshot file's)
 * @throws SnapshotError, and nothing else, for any input that is not loadable device state
 *   (any of its codes; FORMAT.md maps each check to its code)
 */
export function decodeDeviceState(bytes: Uint8Array): DecodedDeviceState {
  const { header, sections } = decodeContainer(bytes);
  const plan = planLoad(header, sections);
  const state = stateFromBodies(plan.load, (k) => {
    const { spec, entry } = plan.load[k]!;
    // A section newer than the container: the model the older format implies.
    return entry === null ? spec.absentModel!() : parseBody(spec, entry);
  });
  return {
    state,
    skipped: plan.skipped,
    format: { major: header.major, minor: header.minor },
  };
}

/** One section to load with {@link stateFromBodies}: its spec and the version its body has. */
export interface SectionToLoad {
  readonly spec: SectionSpec<unknown>;
  /** Section version the body was written in (within the spec's `minVersion`–`version`). */
  readonly version: number;
}

/**
 * @internal Assembles a machine state from untrusted section bodies, shared by every encoding
 * so that validity rules live in the section schemas alone. For each section in `load`, in
 * order: takes its body from `bodyOf`, runs the section's schema (`check(body, version)`) and
 * loads the checked model; a body that breaks its schema is `SNAPSHOT_INVALID_STATE` naming
 * the section. The caller has already decided which sections to load (every required one, in
 * {@link MACHINE_SECTIONS} order) and that their versions are readable.
 *
 * @param load - the sections to load, in load order
 * @param bodyOf - the untrusted body of `load[index]` (plain data shaped like the section's JSON
 *   body); called once per section, in order, just before its check; may throw a SnapshotError
 * @throws SnapshotError `SNAPSHOT_INVALID_STATE` for a body its schema rejects, or whatever
 *   SnapshotError `bodyOf` throws
 */
export function stateFromBodies(
  load: readonly SectionToLoad[],
  bodyOf: (index: number) => unknown,
): MachineState {
  const draft: MachineStateDraft = {};
  for (let k = 0; k < load.length; k++) {
    const { spec, version } = load[k]!;
    spec.load(draft, checked(spec, version, bodyOf, k, 'decode'));
  }
  return draft as MachineState;
}

/**
 * Encodes and decodes `sample` `rounds` times, a few dozen at a time on unref'd timers (never
 * blocking the event loop for long), so V8 has compiled both past its interpreter before a
 * migration needs them once, inside its downtime: measured after 20 ms idle, encode ≈0.28 →
 * 0.11 ms and decode ≈0.19 → 0.06 ms (p50). `stop` ends it early (e.g. at shutdown).
 */
export function warmUpDeviceStateCodec(
  sample: MachineState,
  rounds = 1000,
  stop: () => boolean = () => false,
): void {
  let left = rounds;
  const slice = (): void => {
    if (stop()) return;
    for (let k = 0; k < WARM_UP_SLICE && left > 0; k++, left--) {
      decodeDeviceState(encodeDeviceState(sample));
    }
    if (left > 0) setTimeout(slice, 1).unref();
  };
  setTimeout(slice, 1).unref();
}

/** Rounds of {@link warmUpDeviceStateCodec} per timer turn (≈1–3 ms). */
const WARM_UP_SLICE = 25;

/**
 * Reads the header and section table without decoding any body, for tools (`vmctl`, tests).
 * Unknown sections are reported, not rejected.
 *
 * @throws SnapshotError for a container that fails the framing checks (everything up to and
 *   including the section table; see FORMAT.md)
 */
export function inspectDeviceState(bytes: Uint8Array): DeviceStateInfo {
  const { header, sections } = decodeContainer(bytes);
  return {
    header,
    sections: sections.map((s) => {
      const spec = findSection(s.name);
      return {
        name: s.name,
        version: s.version,
        optional: s.optional,
        bodyOffset: s.bodyOffset,
        bodyLength: s.body.length,
        readable: spec === undefined ? null : { min: spec.minVersion, max: spec.version },
      };
    }),
  };
}

// ---- internals ---------------------------------------------------------------------------------

interface LoadPlan {
  /** `entry` null: a section added after the container's minor, loaded from its absent model. */
  readonly load: readonly (SectionToLoad & { readonly entry: ContainerEntry | null })[];
  readonly skipped: readonly SkippedSection[];
}

/** Table-level checks, before any body is parsed: unknown, unreadable, missing, oversized. */
function planLoad(header: ContainerHeader, entries: readonly ContainerEntry[]): LoadPlan {
  const byName = new Map<string, ContainerEntry>();
  const skipped: SkippedSection[] = [];
  const unknownRequired: string[] = [];
  for (const entry of entries) {
    if (findSection(entry.name) !== undefined) byName.set(entry.name, entry);
    else if (entry.optional) {
      skipped.push({ name: entry.name, version: entry.version, bodyLength: entry.body.length });
    } else unknownRequired.push(entry.name);
  }
  if (unknownRequired.length > 0) {
    const names = unknownRequired.map((n) => `'${n}'`).join(', ');
    const newer =
      header.minor > CONTAINER_VERSION_MINOR
        ? ` It was written by format ${header.major}.${header.minor}, newer than this build's ` +
          `${CONTAINER_VERSION_MAJOR}.${CONTAINER_VERSION_MINOR}.`
        : '';
    throw new SnapshotError(
      'SNAPSHOT_UNKNOWN_SECTION',
      `device state has required section${unknownRequired.length > 1 ? 's' : ''} ${names} that ` +
        `this build does not know.${newer} Restore it with the vmm version that saved it or a ` +
        `newer one.`,
      { section: unknownRequired[0]! },
    );
  }
  const load: (SectionToLoad & { readonly entry: ContainerEntry | null })[] = [];
  for (const spec of MACHINE_SECTIONS) {
    const entry = byName.get(spec.name);
    if (entry === undefined) {
      if (spec.optional) continue;
      if (header.minor < spec.sinceMinor && spec.absentModel !== undefined) {
        load.push({ spec, version: spec.version, entry: null });
        continue;
      }
      throw new SnapshotError(
        'SNAPSHOT_INVALID_STATE',
        `device state (format ${header.major}.${header.minor}) lacks the required section ` +
          `'${spec.name}', so the machine cannot be restored. The writer is broken; save the VM ` +
          `again.`,
        { section: spec.name },
      );
    }
    if (entry.version > spec.version || entry.version < spec.minVersion) {
      const range =
        spec.minVersion === spec.version
          ? `version ${spec.version}`
          : `versions ${spec.minVersion}–${spec.version}`;
      const advice =
        entry.version > spec.version
          ? 'Restore it with a newer vmm.'
          : 'Restore it with an older vmm, or save the VM again.';
      throw new SnapshotError(
        'SNAPSHOT_UNSUPPORTED_VERSION',
        `device-state section '${spec.name}' has version ${entry.version}, but this build reads ` +
          `${range} of it. ${advice}`,
        { section: spec.name },
      );
    }
    if (entry.body.length > spec.maxBodyBytes)
      throw bodyTooLarge(spec, entry.body.length, 'decode');
    load.push({ spec, version: entry.version, entry });
  }
  return { load, skipped };
}

function parseBody(spec: SectionSpec<unknown>, entry: ContainerEntry): unknown {
  let text: string;
  try {
    text = utf8Decoder.decode(entry.body);
  } catch (cause) {
    throw new SnapshotError(
      'SNAPSHOT_INVALID_STATE',
      `device-state section '${spec.name}' is not valid UTF-8. The writer is broken or the data ` +
        `is hostile; save the VM again.`,
      { section: spec.name, cause },
    );
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new SnapshotError(
      'SNAPSHOT_INVALID_STATE',
      `device-state section '${spec.name}' is not valid JSON (${cause instanceof Error ? cause.message.slice(0, 120) : 'parse error'}). ` +
        `The writer is broken or the data is hostile; save the VM again.`,
      { section: spec.name, cause },
    );
  }
}

/**
 * Runs `produce(arg)` then the section schema on its result; any failure but a SnapshotError
 * becomes `SNAPSHOT_INVALID_STATE`. (`produce` takes `arg` so that a loop over the sections
 * needs no closure per section.)
 */
function checked<A>(
  spec: SectionSpec<unknown>,
  version: number,
  produce: (arg: A) => unknown,
  arg: A,
  op: 'encode' | 'decode',
): unknown {
  try {
    return spec.check(produce(arg), version);
  } catch (err) {
    if (err instanceof SnapshotError) throw err;
    throw invalidSectionError(spec.name, version, err, op);
  }
}

/**
 * @internal The `SNAPSHOT_INVALID_STATE` for section `name` (of section version `version`)
 * whose schema threw `err` (a `SchemaViolation`, or anything else) while `op` ran. The compact
 * decoder words its violations with it too, so both encodings report a value alike.
 */
export function invalidSectionError(
  name: string,
  version: number,
  err: unknown,
  op: 'encode' | 'decode',
): SnapshotError {
  const what =
    err instanceof SchemaViolation
      ? `${err.path || 'the body'} must be ${err.expected}, got ${describe(err.got)}`
      : `its schema failed (${err instanceof Error ? err.message : String(err)})`;
  const advice =
    op === 'encode'
      ? `refusing to write it. The device's state model and snapshot/schemas/${name}.ts ` +
        `disagree: update the schema (and the section version or an optional section).`
      : `the machine cannot be put in this state. The writer is broken or the data is hostile; ` +
        `save the VM again.`;
  return new SnapshotError(
    'SNAPSHOT_INVALID_STATE',
    `device-state section '${name}' (version ${version}) is invalid: ${what}; ${advice}`,
    { section: name, cause: err },
  );
}

function bodyTooLarge(
  spec: SectionSpec<unknown>,
  length: number,
  op: 'encode' | 'decode',
): SnapshotError {
  const advice =
    op === 'encode'
      ? 'The device saves too much state; shrink its model or raise the limit in sections.ts.'
      : 'The data is corrupt or hostile; discard it.';
  return new SnapshotError(
    'SNAPSHOT_TOO_LARGE',
    `device-state section '${spec.name}' has a ${length}-byte body, more than its limit of ` +
      `${spec.maxBodyBytes} bytes. ${advice}`,
    { section: spec.name },
  );
}
