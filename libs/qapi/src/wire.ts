/**
 * The one place where the QAPI vocabulary meets the protobuf wire types of
 * `handoff.migration.v1` (generated in `@handoff/proto`). Everything else in
 * this package is free of generated code; import this module as
 * `@handoff/qapi/wire` at the gRPC edge of a service.
 *
 * Rules:
 * - Enum values UNSPECIFIED (0), UNRECOGNIZED (-1) and numbers unknown to
 *   this build are rejected with `QAPI_INVALID_WIRE_VALUE`.
 * - uint64 fields travel as bigint; domain values are JS numbers, so a wire
 *   value above 2^53 − 1 is rejected with `QAPI_INVALID_WIRE_VALUE`.
 * - A capability list on the wire names exactly the enabled capabilities;
 *   any capability not listed is off.
 * - A parameter of 0 on the wire means "not set, use the default" (the
 *   proto's convention); a set parameter is range-checked both ways.
 * - `mbps` travels as `mbps_x1000` (fixed point, rounded to 0.001).
 *
 * @packageDocumentation
 */
import { migration } from '@handoff/proto';

import {
  MIGRATION_CAPABILITIES,
  isMigrationCapability,
  type MigrationCapabilities,
  type MigrationCapability,
} from './capabilities.js';
import { QapiError } from './errors.js';
import type {
  LeaseMove,
  MigrationInfo,
  MigrationRoute,
  MigrationTimeline,
  MigrationTransport,
  PostcopyStats,
  RamStats,
  StateEncoding,
} from './info.js';
import {
  MIGRATION_PARAMETERS,
  checkParameterValue,
  type MigrationParameterName,
  type MigrationParameterOverrides,
} from './parameters.js';
import { MIGRATION_STATUSES, isMigrationStatus, type MigrationStatus } from './status.js';

/** The generated capability enum (`handoff.migration.v1.MigrationCapability`). */
export type WireMigrationCapability = migration.MigrationCapability;
/** The generated status enum (`handoff.migration.v1.MigrationStatus`). */
export type WireMigrationStatus = migration.MigrationStatus;
/** The generated parameters message. */
export type WireMigrationParameters = migration.MigrationParameters;
/** The generated info message. */
export type WireMigrationInfo = migration.MigrationInfo;
/** The generated RAM statistics message. */
export type WireRamStats = migration.RamStats;

const Cap = migration.MigrationCapability;
const Status = migration.MigrationStatus;
const Transport = migration.MigrationTransport;
const Lease = migration.LeaseMove;
const Encoding = migration.StateEncoding;

/** Route names → wire enum values, one table per enum (and back). */
const TRANSPORT_TO_WIRE: { readonly [K in MigrationTransport]: migration.MigrationTransport } = {
  'switchover-slot': Transport.MIGRATION_TRANSPORT_SWITCHOVER_SLOT,
  'data-channel': Transport.MIGRATION_TRANSPORT_DATA_CHANNEL,
  grpc: Transport.MIGRATION_TRANSPORT_GRPC,
};
const LEASE_MOVE_TO_WIRE: { readonly [K in LeaseMove]: migration.LeaseMove } = {
  none: Lease.LEASE_MOVE_NONE,
  armed: Lease.LEASE_MOVE_ARMED,
  'lease-channel': Lease.LEASE_MOVE_LEASE_CHANNEL,
  stream: Lease.LEASE_MOVE_STREAM,
  'page-source': Lease.LEASE_MOVE_PAGE_SOURCE,
};
const ENCODING_TO_WIRE: { readonly [K in StateEncoding]: migration.StateEncoding } = {
  compact: Encoding.STATE_ENCODING_COMPACT,
  container: Encoding.STATE_ENCODING_CONTAINER,
};
const inverse = <K extends string>(m: { readonly [key in K]: number }): ReadonlyMap<number, K> =>
  new Map(Object.entries(m).map(([k, v]) => [v as number, k as K]));
const TRANSPORT_FROM_WIRE = inverse(TRANSPORT_TO_WIRE);
const LEASE_MOVE_FROM_WIRE = inverse(LEASE_MOVE_TO_WIRE);
const ENCODING_FROM_WIRE = inverse(ENCODING_TO_WIRE);

/** The wire form of a lease move (the stream's header answer carries one). */
export function leaseMoveToWire(move: LeaseMove): migration.LeaseMove {
  return LEASE_MOVE_TO_WIRE[move];
}

/** A lease move from the wire; null for UNSPECIFIED (an older peer said nothing). @throws QapiError */
export function leaseMoveFromWire(value: migration.LeaseMove | number): LeaseMove | null {
  if (value === Lease.LEASE_MOVE_UNSPECIFIED) return null;
  const move = LEASE_MOVE_FROM_WIRE.get(value);
  if (move === undefined) throw wireError(`unknown lease move ${String(value)} on the wire`);
  return move;
}

function routeToWire(r: MigrationRoute): migration.MigrationRoute {
  return {
    transport: TRANSPORT_TO_WIRE[r.transport],
    leaseMove: LEASE_MOVE_TO_WIRE[r.leaseMove],
    stateEncoding:
      r.stateEncoding === undefined
        ? Encoding.STATE_ENCODING_UNSPECIFIED
        : ENCODING_TO_WIRE[r.stateEncoding],
    targetPrebuilt: r.targetPrebuilt,
  };
}

function routeFromWire(r: migration.MigrationRoute): MigrationRoute {
  const transport = TRANSPORT_FROM_WIRE.get(r.transport);
  const leaseMove = LEASE_MOVE_FROM_WIRE.get(r.leaseMove);
  if (transport === undefined || leaseMove === undefined) {
    throw wireError(
      `MigrationInfo.route: transport ${r.transport} or lease move ${r.leaseMove} is unknown`,
    );
  }
  const stateEncoding = ENCODING_FROM_WIRE.get(r.stateEncoding);
  if (stateEncoding === undefined && r.stateEncoding !== Encoding.STATE_ENCODING_UNSPECIFIED) {
    throw wireError(`MigrationInfo.route: state encoding ${r.stateEncoding} is unknown`);
  }
  return {
    transport,
    leaseMove,
    ...(stateEncoding !== undefined ? { stateEncoding } : {}),
    targetPrebuilt: r.targetPrebuilt,
  };
}

function throttleFromWire(v: number): number {
  if (!Number.isFinite(v) || v < 0 || v >= 100) {
    throw wireError(`MigrationInfo.cpuThrottlePercentage is ${v}; it must be in [0, 100)`);
  }
  return v;
}

function timelineFromWire(t: migration.MigrationTimeline): MigrationTimeline {
  const ms = (v: number, field: string): number => {
    if (!Number.isFinite(v) || v < 0) throw wireError(`MigrationInfo.timeline.${field} is ${v}`);
    return v;
  };
  return {
    stoppedMs: ms(t.stoppedMs, 'stoppedMs'),
    statePublishedMs: ms(t.statePublishedMs, 'statePublishedMs'),
    targetRunningMs: ms(t.targetRunningMs, 'targetRunningMs'),
  };
}

/** QAPI capability name → wire enum value (every name has one). */
export const CAPABILITY_TO_WIRE: { readonly [K in MigrationCapability]: WireMigrationCapability } =
  Object.freeze({
    'bypass-shared-memory': Cap.MIGRATION_CAPABILITY_BYPASS_SHARED_MEMORY,
    'postcopy-ram': Cap.MIGRATION_CAPABILITY_POSTCOPY_RAM,
    'zero-blocks': Cap.MIGRATION_CAPABILITY_ZERO_BLOCKS,
    events: Cap.MIGRATION_CAPABILITY_EVENTS,
    'return-path': Cap.MIGRATION_CAPABILITY_RETURN_PATH,
    'pause-before-switchover': Cap.MIGRATION_CAPABILITY_PAUSE_BEFORE_SWITCHOVER,
    'auto-converge': Cap.MIGRATION_CAPABILITY_AUTO_CONVERGE,
  });

/** QAPI status name → wire enum value (every name has one). */
export const STATUS_TO_WIRE: { readonly [S in MigrationStatus]: WireMigrationStatus } =
  Object.freeze({
    none: Status.MIGRATION_STATUS_NONE,
    setup: Status.MIGRATION_STATUS_SETUP,
    active: Status.MIGRATION_STATUS_ACTIVE,
    'postcopy-active': Status.MIGRATION_STATUS_POSTCOPY_ACTIVE,
    'pre-switchover': Status.MIGRATION_STATUS_PRE_SWITCHOVER,
    device: Status.MIGRATION_STATUS_DEVICE,
    completed: Status.MIGRATION_STATUS_COMPLETED,
    failed: Status.MIGRATION_STATUS_FAILED,
    cancelling: Status.MIGRATION_STATUS_CANCELLING,
    cancelled: Status.MIGRATION_STATUS_CANCELLED,
    'postcopy-paused': Status.MIGRATION_STATUS_POSTCOPY_PAUSED,
    'postcopy-recover': Status.MIGRATION_STATUS_POSTCOPY_RECOVER,
  });

const CAPABILITY_FROM_WIRE: ReadonlyMap<number, MigrationCapability> = new Map(
  MIGRATION_CAPABILITIES.map((name) => [CAPABILITY_TO_WIRE[name] as number, name]),
);
const STATUS_FROM_WIRE: ReadonlyMap<number, MigrationStatus> = new Map(
  MIGRATION_STATUSES.map((name) => [STATUS_TO_WIRE[name] as number, name]),
);

function wireError(message: string): QapiError {
  return new QapiError('QAPI_INVALID_WIRE_VALUE', message);
}

function describeEnum(value: unknown, toJson: (v: number) => string): string {
  const label = typeof value === 'number' ? toJson(value) : 'not a number';
  return label === 'UNRECOGNIZED' ? `${String(value)}` : `${String(value)} (${label})`;
}

/**
 * The wire enum value of a capability.
 *
 * @throws QapiError `QAPI_INVALID_CAPABILITY` when `name` is not a capability
 */
export function capabilityToWire(name: MigrationCapability): WireMigrationCapability {
  if (!isMigrationCapability(name)) {
    throw new QapiError(
      'QAPI_INVALID_CAPABILITY',
      `cannot encode unknown migration capability '${String(name)}'. Known capabilities: ${MIGRATION_CAPABILITIES.join(', ')}.`,
    );
  }
  return CAPABILITY_TO_WIRE[name];
}

/**
 * The capability name of a wire enum value.
 *
 * @throws QapiError `QAPI_INVALID_WIRE_VALUE` for UNSPECIFIED, UNRECOGNIZED or an unknown number
 */
export function capabilityFromWire(value: WireMigrationCapability | number): MigrationCapability {
  const name = CAPABILITY_FROM_WIRE.get(value);
  if (name === undefined) {
    throw wireError(
      `migration capability ${describeEnum(value, migration.migrationCapabilityToJSON)} has no meaning: the sender must name a capability (UNSPECIFIED is not one). If the peer is newer, upgrade this side.`,
    );
  }
  return name;
}

/** The wire list of a capability set: exactly the enabled capabilities, in registry order. */
export function capabilitiesToWire(caps: MigrationCapabilities): WireMigrationCapability[] {
  return MIGRATION_CAPABILITIES.filter((name) => caps[name] === true).map(
    (name) => CAPABILITY_TO_WIRE[name],
  );
}

/**
 * The capability set of a wire list: listed capabilities are on, all others
 * off (defaults do not apply on the wire). Repeats are harmless.
 *
 * @throws QapiError `QAPI_INVALID_WIRE_VALUE` for any value without a capability
 */
export function capabilitiesFromWire(
  values: readonly (WireMigrationCapability | number)[],
): MigrationCapabilities {
  const out = {} as Record<MigrationCapability, boolean>;
  for (const name of MIGRATION_CAPABILITIES) out[name] = false;
  for (const value of values) out[capabilityFromWire(value)] = true;
  return out;
}

/**
 * The wire enum value of a status.
 *
 * @throws QapiError `QAPI_INVALID_STATUS` when `status` is not a status name
 */
export function statusToWire(status: MigrationStatus): WireMigrationStatus {
  if (!isMigrationStatus(status)) {
    throw new QapiError(
      'QAPI_INVALID_STATUS',
      `cannot encode unknown migration status '${String(status)}'. Known statuses: ${MIGRATION_STATUSES.join(', ')}.`,
    );
  }
  return STATUS_TO_WIRE[status];
}

/**
 * The status name of a wire enum value.
 *
 * @throws QapiError `QAPI_INVALID_WIRE_VALUE` for UNSPECIFIED, UNRECOGNIZED or an unknown number
 */
export function statusFromWire(value: WireMigrationStatus | number): MigrationStatus {
  const name = STATUS_FROM_WIRE.get(value);
  if (name === undefined) {
    throw wireError(
      `migration status ${describeEnum(value, migration.migrationStatusToJSON)} has no meaning: the sender must set a status (UNSPECIFIED is not one). If the peer is newer, upgrade this side.`,
    );
  }
  return name;
}

/** A wire uint64 as a JS number, or a clear error when it does not fit. */
function fromUint64(value: bigint, field: string): number {
  if (typeof value !== 'bigint' || value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw wireError(
      `${field} = ${String(value)} is outside 0..2^53-1, the range this side can represent. The sender is broken or hostile; nothing was applied.`,
    );
  }
  return Number(value);
}

/** A JS number as a wire uint64, or a clear error when it is not a non-negative whole number. */
function toUint64(value: number, field: string): bigint {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw wireError(
      `cannot encode ${field} = ${String(value)} as uint64: it must be a whole number from 0 to 2^53-1. Fix the code that produced it.`,
    );
  }
  return BigInt(value);
}

/** A JS number as a wire uint32, or a clear error. */
function toUint32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw wireError(
      `cannot encode ${field} = ${String(value)} as uint32: it must be a whole number from 0 to 4294967295. Fix the code that produced it.`,
    );
  }
  return value;
}

/** A wire uint32 as a JS number (checked: decoded messages can be built by hand). */
function fromUint32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw wireError(
      `${field} = ${String(value)} is not a uint32. The sender is broken; nothing was applied.`,
    );
  }
  return value;
}

type WireParamField =
  | 'downtimeLimitMs'
  | 'maxBandwidth'
  | 'maxPostcopyBandwidth'
  | 'maxIterations'
  | 'cpuThrottleInitial'
  | 'cpuThrottleIncrement';

/** QAPI parameter name → field of the wire message. */
const PARAMETER_FIELDS: { readonly [K in MigrationParameterName]: WireParamField } = {
  'downtime-limit': 'downtimeLimitMs',
  'max-bandwidth': 'maxBandwidth',
  'max-postcopy-bandwidth': 'maxPostcopyBandwidth',
  'max-iterations': 'maxIterations',
  'cpu-throttle-initial': 'cpuThrottleInitial',
  'cpu-throttle-increment': 'cpuThrottleIncrement',
};

function checkedParameter(name: MigrationParameterName, value: number): number {
  const bad = checkParameterValue(name, value);
  if (bad !== undefined) throw new QapiError('QAPI_INVALID_PARAMETER', bad.message);
  return value;
}

/**
 * The wire message of a parameter set. Parameters not given travel as 0
 * ("use the default"). Pass overrides to let the receiver apply its
 * defaults, or a resolved set to pin every value.
 *
 * @throws QapiError `QAPI_INVALID_PARAMETER` for a value outside its range
 */
export function parametersToWire(params: MigrationParameterOverrides): WireMigrationParameters {
  const out: WireMigrationParameters = {
    downtimeLimitMs: 0n,
    maxBandwidth: 0n,
    maxPostcopyBandwidth: 0n,
    maxIterations: 0,
    cpuThrottleInitial: 0,
    cpuThrottleIncrement: 0,
  };
  for (const name of MIGRATION_PARAMETERS) {
    const value = params[name];
    if (value === undefined) continue;
    checkedParameter(name, value);
    const field = PARAMETER_FIELDS[name];
    if (
      field === 'downtimeLimitMs' ||
      field === 'maxBandwidth' ||
      field === 'maxPostcopyBandwidth'
    ) {
      out[field] = BigInt(value);
    } else {
      out[field] = value;
    }
  }
  return out;
}

/**
 * The parameter overrides of a wire message: fields at 0 are left out (they
 * mean "use the default"); others are range-checked.
 *
 * @returns overrides; resolve them with `resolveParameters`
 * @throws QapiError `QAPI_INVALID_WIRE_VALUE` for a uint64 beyond 2^53 − 1,
 *   `QAPI_INVALID_PARAMETER` for a value outside its range
 */
export function parametersFromWire(msg: WireMigrationParameters): MigrationParameterOverrides {
  const out: Partial<Record<MigrationParameterName, number>> = {};
  for (const name of MIGRATION_PARAMETERS) {
    const field = PARAMETER_FIELDS[name];
    const raw = msg[field];
    const value =
      typeof raw === 'bigint'
        ? fromUint64(raw, `MigrationParameters.${field}`)
        : fromUint32(raw, `MigrationParameters.${field}`);
    if (value === 0) continue;
    out[name] = checkedParameter(name, value);
  }
  return out;
}

const RAM_FIELDS = [
  'transferred',
  'remaining',
  'total',
  'duplicate',
  'zeroPages',
  'normal',
  'normalBytes',
  'dirtyPagesRate',
  'dirtySyncCount',
  'bypassedBytes',
] as const satisfies readonly (keyof RamStats & keyof WireRamStats)[];

/** The wire message of RAM statistics (`mbps` becomes `mbpsX1000`, rounded). */
export function ramStatsToWire(ram: RamStats): WireRamStats {
  const out = { mbpsX1000: 0n } as WireRamStats;
  for (const field of RAM_FIELDS) out[field] = toUint64(ram[field], `RamStats.${field}`);
  if (!Number.isFinite(ram.mbps) || ram.mbps < 0) {
    throw wireError(
      `cannot encode RamStats.mbps = ${String(ram.mbps)}: it must be a finite, non-negative rate. Fix the code that produced it.`,
    );
  }
  out.mbpsX1000 = toUint64(Math.round(ram.mbps * 1000), 'RamStats.mbps × 1000');
  for (const field of POSTCOPY_FIELDS) out[field] = 0n;
  return out;
}

/** PostcopyStats fields carried in the wire RamStats (`fillMs` is MigrationInfo's). */
const POSTCOPY_WIRE = {
  requests: 'postcopyRequests',
  backgroundPages: 'postcopyBackgroundPages',
  presentPages: 'postcopyPresentPages',
  faultP50Us: 'postcopyFaultP50Us',
  faultP99Us: 'postcopyFaultP99Us',
} as const satisfies Partial<Record<keyof PostcopyStats, keyof WireRamStats>>;
const POSTCOPY_FIELDS = Object.values(POSTCOPY_WIRE);

function postcopyToWire(p: PostcopyStats | undefined, ram: WireRamStats): void {
  if (p === undefined) return;
  for (const [field, wire] of Object.entries(POSTCOPY_WIRE) as [
    keyof typeof POSTCOPY_WIRE,
    (typeof POSTCOPY_FIELDS)[number],
  ][]) {
    ram[wire] = toUint64(p[field], `PostcopyStats.${field}`);
  }
}

/** The post-copy stats a wire message carries; undefined when every counter is zero. */
function postcopyFromWire(msg: WireMigrationInfo): PostcopyStats | undefined {
  const ram = msg.ram;
  // All zero reads as no post-copy: a post-copy reports its counters from its first report on.
  const any =
    msg.postcopyFillMs > 0n || (ram !== undefined && POSTCOPY_FIELDS.some((f) => ram[f] > 0n));
  if (!any) return undefined;
  const out = { fillMs: fromUint64(msg.postcopyFillMs, 'MigrationInfo.postcopyFillMs') } as {
    -readonly [K in keyof PostcopyStats]: number;
  };
  for (const [field, wire] of Object.entries(POSTCOPY_WIRE) as [
    keyof typeof POSTCOPY_WIRE,
    (typeof POSTCOPY_FIELDS)[number],
  ][]) {
    out[field] = ram === undefined ? 0 : fromUint64(ram[wire], `RamStats.${wire}`);
  }
  return out;
}

/**
 * RAM statistics of a wire message (an absent message reads as all zeros).
 *
 * @throws QapiError `QAPI_INVALID_WIRE_VALUE` for a counter beyond 2^53 − 1
 */
export function ramStatsFromWire(msg: WireRamStats | undefined): RamStats {
  const out: Record<keyof RamStats, number> = { mbps: 0 } as Record<keyof RamStats, number>;
  for (const field of RAM_FIELDS) {
    out[field] = msg === undefined ? 0 : fromUint64(msg[field], `RamStats.${field}`);
  }
  out.mbps = msg === undefined ? 0 : fromUint64(msg.mbpsX1000, 'RamStats.mbpsX1000') / 1000;
  return out;
}

/**
 * The wire message of a MigrationInfo. An absent `errorDesc` travels as ''.
 *
 * @throws QapiError `QAPI_INVALID_STATUS` for an unknown status,
 *   `QAPI_INVALID_WIRE_VALUE` for a counter that is negative, fractional or too large
 */
export function migrationInfoToWire(info: MigrationInfo): WireMigrationInfo {
  const ram = ramStatsToWire(info.ram);
  postcopyToWire(info.postcopy, ram);
  return {
    status: statusToWire(info.status),
    ram,
    totalTimeMs: toUint64(info.totalTimeMs, 'MigrationInfo.totalTimeMs'),
    expectedDowntimeMs: toUint64(info.expectedDowntimeMs, 'MigrationInfo.expectedDowntimeMs'),
    downtimeUs: toUint64(info.downtimeUs, 'MigrationInfo.downtimeUs'),
    setupTimeMs: toUint64(info.setupTimeMs, 'MigrationInfo.setupTimeMs'),
    iteration: toUint32(info.iteration, 'MigrationInfo.iteration'),
    errorDesc: info.errorDesc ?? '',
    deviceBytes: toUint64(info.deviceBytes, 'MigrationInfo.deviceBytes'),
    cpuThrottlePercentage: info.cpuThrottlePercentage,
    route: info.route === undefined ? undefined : routeToWire(info.route),
    timeline: info.timeline === undefined ? undefined : { ...info.timeline },
    postcopyFillMs: toUint64(info.postcopy?.fillMs ?? 0, 'PostcopyStats.fillMs'),
  };
}

/**
 * The MigrationInfo of a wire message. '' as `errorDesc` means none.
 *
 * @throws QapiError `QAPI_INVALID_WIRE_VALUE` for an UNSPECIFIED or unknown
 *   status, or a counter beyond 2^53 − 1
 */
export function migrationInfoFromWire(msg: WireMigrationInfo): MigrationInfo {
  const info: MigrationInfo = {
    status: statusFromWire(msg.status),
    ram: ramStatsFromWire(msg.ram),
    totalTimeMs: fromUint64(msg.totalTimeMs, 'MigrationInfo.totalTimeMs'),
    setupTimeMs: fromUint64(msg.setupTimeMs, 'MigrationInfo.setupTimeMs'),
    expectedDowntimeMs: fromUint64(msg.expectedDowntimeMs, 'MigrationInfo.expectedDowntimeMs'),
    downtimeUs: fromUint64(msg.downtimeUs, 'MigrationInfo.downtimeUs'),
    iteration: fromUint32(msg.iteration, 'MigrationInfo.iteration'),
    deviceBytes: fromUint64(msg.deviceBytes, 'MigrationInfo.deviceBytes'),
    cpuThrottlePercentage: throttleFromWire(msg.cpuThrottlePercentage),
  };
  const postcopy = postcopyFromWire(msg);
  return {
    ...info,
    ...(msg.errorDesc !== '' ? { errorDesc: msg.errorDesc } : {}),
    ...(msg.route !== undefined ? { route: routeFromWire(msg.route) } : {}),
    ...(msg.timeline !== undefined ? { timeline: timelineFromWire(msg.timeline) } : {}),
    ...(postcopy !== undefined ? { postcopy } : {}),
  };
}
