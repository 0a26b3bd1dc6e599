#!/usr/bin/env node
// The one entry point of the benchmark harness: `npm run bench [-- NAME...]`.
// Each suite is a compiled module exporting `run()` that resolves to a table
// (or several): { title, columns, rows, notes? }. Results print to stdout and
// are written as Markdown to bench/<suite>.md with the machine and date, so a
// run's numbers can be committed and compared as ratios within one run. A table
// may carry `charts` (vega-lite specs); they are drawn to bench/<file> (charts.js).
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { renderCharts } from './charts.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Suites in the order they run; `module` is relative to the repository root. */
const SUITES = [
  { name: 'bitmap', module: 'libs/bitmap/dist/bitmap.bench.js' },
  { name: 'shm', module: 'libs/shm/dist/shm.bench.js' },
  { name: 'cpu', module: 'apps/vmm/dist/machine/cpu.bench.js' },
  { name: 'vcpu', module: 'apps/vmm/dist/vcpu/many-vms.bench.js' },
  { name: 'page-fault', module: 'apps/vmm/dist/vcpu/page-fault.bench.js' },
  { name: 'migration', module: 'tools/cluster/dist/bench/migration.bench.js' },
  { name: 'converge', module: 'tools/cluster/dist/bench/converge.bench.js' },
  { name: 'postcopy', module: 'tools/cluster/dist/bench/postcopy.bench.js' },
  { name: 'memstore', module: 'apps/memstore/dist/memstore.bench.js' },
  { name: 'lazy', module: 'apps/memstore/dist/lazy/lazy.bench.js' },
  { name: 'clones', module: 'tools/cluster/dist/bench/clones.bench.js' },
  { name: 'kill-loop', module: 'tools/cluster/dist/bench/kill-loop.bench.js', onlyByName: true },
];

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
if (process.argv.includes('--help')) {
  console.log(
    `Usage: npm run bench [-- SUITE...]\nSuites: ${SUITES.map((s) => s.name).join(', ')}`,
  );
  process.exit(0);
}
const unknown = wanted.filter((w) => !SUITES.some((s) => s.name === w));
if (unknown.length > 0) {
  console.error(
    `unknown suite(s): ${unknown.join(', ')}; known: ${SUITES.map((s) => s.name).join(', ')}`,
  );
  process.exit(2);
}

function markdown(table) {
  const head = `| ${table.columns.join(' | ')} |\n|${table.columns.map(() => '---').join('|')}|\n`;
  const body = table.rows.map((r) => `| ${r.join(' | ')} |`).join('\n');
  const notes = table.notes ? `\n\n${table.notes}` : '';
  return `### ${table.title}\n\n${head}${body}${notes}\n`;
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
let failed = false;
for (const suite of SUITES.filter((s) =>
  wanted.length === 0 ? s.onlyByName !== true : wanted.includes(s.name),
)) {
  process.stdout.write(`\n== ${suite.name} ==\n`);
  try {
    const mod = await import(pathToFileURL(join(root, suite.module)).href);
    const result = await mod.run();
    const tables = Array.isArray(result) ? result : [result];
    const charts = await renderCharts(tables, join(root, 'bench'));
    const text = tables.map(markdown).join('\n') + charts.map((f) => `\n![${f}](${f})\n`).join('');
    process.stdout.write(text);
    const header = `# Benchmark: ${suite.name}\n\nMeasured ${new Date().toISOString().slice(0, 10)} on ${machine} by \`npm run bench -- ${suite.name}\`.\nTimings on a shared machine are noisy: compare ratios within one run.\n\n`;
    writeFileSync(join(root, 'bench', `${suite.name}.md`), header + text);
  } catch (err) {
    failed = true;
    console.error(`${suite.name} failed: ${err instanceof Error ? err.stack : err}`);
  }
}
process.exit(failed ? 1 : 0);
