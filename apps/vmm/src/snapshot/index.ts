/**
 * Device state as bytes: a versioned, checksummed container of named sections, one per machine
 * component, validated before anything reaches a device. Used by save/restore (snapshot files)
 * and by migration (`DeviceState.container`). A second encoding, the compact hand-off state,
 * carries the same state between two vmm processes that agreed on its layout (never stored,
 * never on the stream) and is validated by the same rules: every section is declared once, as a
 * field table (schemas/), and both codecs are generated from the tables. Layouts and rules:
 * FORMAT.md beside this file.
 *
 * @packageDocumentation
 */
export {
  decodeDeviceState,
  encodeDeviceState,
  inspectDeviceState,
  warmUpDeviceStateCodec,
  type DecodedDeviceState,
  type DeviceStateInfo,
  type ExtraSection,
  type SectionInfo,
  type SkippedSection,
} from './device-state.js';
export {
  COMPACT_ENTROPY_WORDS,
  COMPACT_GENERATION_ID_LIMIT,
  COMPACT_HOST_ARGS_LIMIT,
  COMPACT_LAYOUT_FINGERPRINT,
  COMPACT_RX_LIMIT,
  COMPACT_STATE_HEADER_BYTES,
  COMPACT_STATE_MAGIC,
  COMPACT_STATE_MAX_BYTES,
  COMPACT_STATE_SECTIONS,
  COMPACT_STATE_VERSION,
  compactStateCurrent,
  decodeCompactState,
  encodeCompactState,
  isCompactState,
} from './compact-state.js';
export {
  CONTAINER_HEADER_BYTES,
  CONTAINER_MAGIC,
  CONTAINER_VERSION_MAJOR,
  CONTAINER_VERSION_MINOR,
  MAX_CONTAINER_BYTES,
  MAX_SECTIONS,
  MAX_SECTION_NAME_BYTES,
  SECTION_ENTRY_BYTES,
  SECTION_FLAG_OPTIONAL,
  decodeContainer,
  encodeContainer,
  isValidSectionName,
  type ContainerEntry,
  type ContainerHeader,
  type ContainerSection,
  type DecodedContainer,
  type EncodeContainerOptions,
} from './container.js';
export {
  SNAPSHOT_ERROR_CODES,
  SnapshotError,
  isSnapshotError,
  type SnapshotErrorCode,
} from './errors.js';
export { MACHINE_SECTIONS, type SectionSpec } from './sections.js';
