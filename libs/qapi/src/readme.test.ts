/**
 * Keeps libs/qapi/README.md in step with the registries: the tables between
 * `<!-- BEGIN GENERATED: x -->` and `<!-- END GENERATED: x -->` are rendered
 * from code. After changing a registry, regenerate them with
 * `QAPI_UPDATE_README=1 npx vitest run libs/qapi/src/readme.test.ts`.
 *
 * Also guards the package boundary: only wire.ts may import generated code.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { CAPABILITY_REGISTRY, MIGRATION_CAPABILITIES } from './capabilities.js';
import { QAPI_ERROR_CODES } from './errors.js';
import {
  MIGRATION_PARAMETERS,
  PARAMETER_REGISTRY,
  formatParameterValue,
  unitLabel,
} from './parameters.js';
import {
  LEGAL_TRANSITIONS,
  MIGRATION_STATUSES,
  STATUS_DESCRIPTIONS,
  isTerminal,
} from './status.js';
import { VALIDATION_RULES } from './validate.js';

const here = dirname(fileURLToPath(import.meta.url));
const readmePath = join(here, '..', 'README.md');

const cell = (text: string): string => text.replace(/\|/g, '\\|');
const row = (cells: readonly string[]): string => `| ${cells.map(cell).join(' | ')} |`;
const table = (header: readonly string[], rows: readonly (readonly string[])[]): string =>
  [row(header), row(header.map(() => '---')), ...rows.map(row)].join('\n');

const rangeOf = (n: number): string => (n === Number.MAX_SAFE_INTEGER ? '2^53−1' : String(n));

const SECTIONS: Readonly<Record<string, () => string>> = {
  capabilities: () =>
    table(
      ['capability', 'default', 'since', 'QEMU', 'description'],
      MIGRATION_CAPABILITIES.map((name) => {
        const c = CAPABILITY_REGISTRY[name];
        return [
          `\`${name}\``,
          c.default ? 'on' : 'off',
          c.since,
          c.qemu === null ? '—' : `\`${c.qemu}\``,
          c.description,
        ];
      }),
    ),
  parameters: () =>
    table(
      ['parameter', 'unit', 'default', 'range', 'since', 'QEMU', 'description'],
      MIGRATION_PARAMETERS.map((name) => {
        const p = PARAMETER_REGISTRY[name];
        const zero = p.zeroMeans === undefined ? '' : ` (0 = ${p.zeroMeans})`;
        return [
          `\`${name}\``,
          unitLabel(p.unit),
          `\`${formatParameterValue(name, p.default)}\``,
          `${rangeOf(p.min)} – ${rangeOf(p.max)}${zero}`,
          p.since,
          p.qemu === null ? '—' : `\`${p.qemu}\``,
          p.description,
        ];
      }),
    ),
  rules: () =>
    table(
      ['rule', 'severity', 'code', 'fires when'],
      VALIDATION_RULES.map((r) => [`\`${r.id}\``, r.severity, `\`${r.code}\``, r.summary]),
    ),
  transitions: () =>
    table(
      ['status', 'may move to', 'meaning'],
      MIGRATION_STATUSES.map((s) => [
        `\`${s}\``,
        isTerminal(s) ? '— (terminal)' : LEGAL_TRANSITIONS[s].map((t) => `\`${t}\``).join(', '),
        STATUS_DESCRIPTIONS[s],
      ]),
    ),
  'error-codes': () => QAPI_ERROR_CODES.map((c) => `\`${c}\``).join(', '),
};

function section(text: string, name: string): { start: number; end: number } | undefined {
  const begin = `<!-- BEGIN GENERATED: ${name} -->\n`;
  const start = text.indexOf(begin);
  const end = text.indexOf(`<!-- END GENERATED: ${name} -->`);
  if (start < 0 || end < start) return undefined;
  return { start: start + begin.length, end };
}

describe('README.md', () => {
  it('has generated sections that match the registries', () => {
    let text = readFileSync(readmePath, 'utf8');
    const update = process.env['QAPI_UPDATE_README'] === '1';
    for (const [name, render] of Object.entries(SECTIONS)) {
      const at = section(text, name);
      expect(at, `README.md lacks the markers of section '${name}'`).toBeDefined();
      if (at === undefined) continue;
      const want = `${render()}\n`;
      if (update) {
        text = text.slice(0, at.start) + want + text.slice(at.end);
      } else {
        expect(
          text.slice(at.start, at.end),
          `README section '${name}' is stale: run QAPI_UPDATE_README=1 npx vitest run libs/qapi/src/readme.test.ts`,
        ).toBe(want);
      }
    }
    if (update) writeFileSync(readmePath, text);
  });

  it('names every capability, parameter and status', () => {
    const text = readFileSync(readmePath, 'utf8');
    for (const name of [
      ...MIGRATION_CAPABILITIES,
      ...MIGRATION_PARAMETERS,
      ...MIGRATION_STATUSES,
    ]) {
      expect(text).toContain(`\`${name}\``);
    }
  });
});

describe('package boundary', () => {
  it('only wire.ts imports generated or gRPC code', () => {
    const offenders = readdirSync(here)
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && f !== 'wire.ts')
      .filter((f) =>
        /from\s+'(@handoff\/proto|@grpc\/|@bufbuild\/)/.test(readFileSync(join(here, f), 'utf8')),
      );
    expect(offenders).toEqual([]);
  });

  it('the index does not re-export wire.ts', () => {
    expect(readFileSync(join(here, 'index.ts'), 'utf8')).not.toMatch(/from '\.\/wire\.js'/);
  });
});
