#!/usr/bin/env node
// Writes the golden file of the device-state format this build writes, once:
// src/snapshot/fixtures/device-state-v<major>.<minor>.bin (the container of the sample state)
// and .json (that state), for golden.test.ts to load from then on. Runs against the build
// (`npm run golden:write` in apps/vmm builds first). Refuses to overwrite a golden file: they
// never change. An optional argument writes into another folder instead (to compare a build's
// output with a committed file). See src/snapshot/fixtures/README.md.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { URL, fileURLToPath } from 'node:url';

import { format, resolveConfig } from 'prettier';

import { CONTAINER_VERSION_MAJOR, CONTAINER_VERSION_MINOR } from '../dist/snapshot/container.js';
import { decodeDeviceState, encodeDeviceState } from '../dist/snapshot/device-state.js';
import { sampleState } from '../dist/snapshot/sample-state.js';

const fixtures = fileURLToPath(new URL('../src/snapshot/fixtures/', import.meta.url));
const folder = resolve(process.argv[2] ?? fixtures);
const name = `device-state-v${CONTAINER_VERSION_MAJOR}.${CONTAINER_VERSION_MINOR}`;
const bin = join(folder, `${name}.bin`);
const json = join(folder, `${name}.json`);

if (existsSync(bin) || existsSync(json)) {
  console.error(
    `${name} exists in ${folder}, and golden files never change. If the writer's output ` +
      `changed, bump CONTAINER_VERSION_MINOR (or MAJOR) in src/snapshot/container.ts first ` +
      `(src/snapshot/FORMAT.md, "Versioning").`,
  );
  process.exit(1);
}

const state = sampleState();
const bytes = encodeDeviceState(state);
// The file must load back to its state, or it is no golden file.
if (JSON.stringify(decodeDeviceState(bytes).state) !== JSON.stringify(state)) {
  console.error(`${name}: the container does not decode to the state it was written from`);
  process.exit(1);
}
// Formatted as the repository formats the fixtures, wherever the file goes.
const text = await format(JSON.stringify(state, null, 2), {
  ...(await resolveConfig(join(fixtures, `${name}.json`))),
  parser: 'json',
});
mkdirSync(folder, { recursive: true });
writeFileSync(bin, bytes);
writeFileSync(json, text);
console.log(`wrote ${bin} (${bytes.length} bytes) and ${json}`);
